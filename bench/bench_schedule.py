"""Two schedulers on one 1-second schedule, the leader killed half way (issue 14's target).

Runs two ``rabbitry schedule`` processes for ``--seconds`` seconds on a
schedule of its own, SIGKILLs whichever holds the lease half way, and counts
the ticks queued (read back from the work queue by their ids): how many, how
many twice, how many seconds had none, and how long the successor took to
queue its first tick after the kill.

    python -m bench.bench_schedule              # 60 s
    python -m bench.bench_schedule --seconds 20
"""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from bench.benchlib import delete_queues, save
from rabbitry.common.connect import connect
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import dead_letter_queue_name, schedule_lease_queue, schedule_ledger_queue

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    options = parser.parse_args()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    folder = tempfile.mkdtemp(prefix="bench-schedule-")
    path = os.path.join(folder, "schedule.toml")
    with open(path, "w") as schedule:
        schedule.write(f'name = "{name}"\n[[entry]]\nname = "beat"\ntask = "noop"\nevery = "1s"\nqueue = "{name}"\n')
    command = [os.path.join(os.path.dirname(sys.executable), "rabbitry"), "schedule", path, "--log-format", "json"]
    logs = [os.path.join(folder, f"scheduler-{n}.log") for n in range(2)]
    env = dict(os.environ, AMQP_URL=URL, PYTHONUNBUFFERED="1")
    processes = [subprocess.Popen(command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT) for log in logs]
    try:
        started = time.time()
        time.sleep(options.seconds / 2)
        leader = next(n for n, log in enumerate(logs) if events(log, "scheduler_leading"))
        processes[leader].send_signal(signal.SIGKILL)
        killed = time.time()
        time.sleep(started + options.seconds - time.time())
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    ended = time.time()
    with connect(BrokerSettings.from_url(URL)) as connection:
        ticks = []
        while (delivery := connection.get(name)) is not None:
            connection.ack(delivery.delivery_tag)
            stamp = TaskMessage.from_delivery(delivery).id.rsplit("@", 1)[1]
            ticks.append(datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    delete_queues(name, dead_letter_queue_name(name), schedule_lease_queue(name), schedule_ledger_queue(name, "beat"))

    successor = events(logs[1 - leader], "schedule_tick_queued")
    after_kill = [line for line in successor if _time(line["timestamp"]) > killed]
    figures = {
        "seconds": options.seconds,
        "ticks_queued": len(ticks),
        "distinct": len(set(ticks)),
        "queued_twice": len(ticks) - len(set(ticks)),
        "seconds_without_a_tick": sum(
            1 for n in range(1, int(max(ticks) - min(ticks))) if min(ticks) + n not in set(ticks)
        )
        if ticks
        else None,
        "ticks_due_while_running": int(ended) - int(started),
        "takeover_s": round(_time(after_kill[0]["timestamp"]) - killed, 3) if after_kill else None,
        "successor_late_s_max": max((line["late_s"] for line in after_kill), default=None),
    }
    print(json.dumps(figures, indent=2))
    print("saved", save("schedule", figures))


def events(log: str, name: str) -> list[dict]:
    with open(log) as lines:
        return [line for line in map(_json, lines) if line and line.get("event") == name]


def _json(line: str) -> dict | None:
    return json.loads(line) if line.startswith("{") else None


def _time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    main()
