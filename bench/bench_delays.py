"""How close to its due time a delayed task starts, across a broker restart (issue 14's target).

On an extra node of its own (tests/nodes.py), with ``worker --processes 2``
serving: 10 tasks delayed 1 h are queued first, then ``--tasks`` tasks with
delays drawn uniformly from 1 s to ``--longest`` seconds, and ``--baseline``
tasks with no delay (the system's own latency, measured in the same run).
Half way through the longest delay the node is restarted. Every task's start
is read from the worker's log line (``late_s``: its start minus its due time,
by the same clock), and the figures printed:

- lost and duplicated tasks (by id), and whether the 1 h tasks still wait;
- lateness percentiles, and how many tasks started later than max(1 s, 1 % of
  their delay), apart from those that fell due while the broker was down.

    python -m bench.bench_delays                      # 1,000 tasks up to 120 s
    python -m bench.bench_delays --tasks 200 --longest 30
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from bench.benchlib import save
from rabbitry.common.connect import connect
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import delay_level_names
from rabbitry.producers.submitter import TaskSubmitter
from tests.nodes import RabbitNode

QUEUE = "bench.delays"
HOUR_TASKS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--longest", type=float, default=120.0, help="longest delay, seconds")
    parser.add_argument("--baseline", type=int, default=100, help="tasks with no delay")
    parser.add_argument("--no-restart", action="store_true")
    options = parser.parse_args()

    node = RabbitNode(prefix="bench-delays").start()
    log_file = tempfile.NamedTemporaryFile("w+", prefix="bench-delays-", suffix=".log", delete=False)
    env = dict(os.environ, AMQP_URL=node.url, PYTHONUNBUFFERED="1")
    worker = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "worker"),
            "--queue",
            QUEUE,
            "--processes",
            "2",
            "--log-format",
            "json",
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        figures = run(node, options, log_file.name, worker)
    finally:
        worker.terminate()
        worker.wait(30)
        node.destroy()
    print(json.dumps(figures, indent=2))
    print("saved", save("delays", figures))


def run(node: RabbitNode, options, log_path: str, worker) -> dict:
    random.seed(14)
    settings = node.settings(reconnect_for=120.0)
    with connect(settings) as connection:  # the worker serves before anything is queued
        while (state := connection.queue_state(QUEUE)) is None or state.consumers < 2:
            time.sleep(0.1)
    now = time.time()
    hour = [TaskMessage("noop", eta=now + 3600) for _ in range(HOUR_TASKS)]
    short = [TaskMessage("noop", eta=now + random.uniform(1, options.longest)) for _ in range(options.tasks)]
    baseline = [TaskMessage("noop", eta=None) for _ in range(options.baseline)]
    with TaskSubmitter(settings, QUEUE) as submitter:
        for message in [*hour, *short, *baseline]:
            submitter.submit(message)
        submitter.flush(60)
    queued_at = time.time()
    print(
        f"queued {len(hour)} tasks of 1 h, {len(short)} of 1 s to {options.longest:g} s and "
        f"{len(baseline)} with no delay in {queued_at - now:.1f} s",
        file=sys.stderr,
    )

    down = None
    if not options.no_restart:
        time.sleep(max(0.0, now + options.longest / 2 - time.time()))
        stopped = time.time()
        node.restart()
        down = (stopped, time.time())
        print(f"restarted the node: down {down[1] - down[0]:.1f} s", file=sys.stderr)

    wanted = {message.id: message for message in [*short, *baseline]}
    deadline = now + options.longest + 120
    started = {}
    while time.time() < deadline:
        started = started_tasks(log_path)
        if wanted.keys() <= started.keys():
            break
        time.sleep(1)
    lines = started_lines(log_path)
    with connect(settings) as connection:
        waiting = sum(connection.queue_state(name).messages for name in delay_level_names())
        work = connection.queue_state(QUEUE)

    ids = [line["task_id"] for line in lines]
    late = {
        task_id: started[task_id]["late_s"] for task_id in wanted if task_id in started and "late_s" in started[task_id]
    }
    baseline_latency = [started[m.id]["at"] - queued_at for m in baseline if m.id in started]
    in_outage = set()
    if down:  # from the stop until the worker ran its first task again (its reconnect backs off)
        back = min((line["at"] for line in started.values() if line["at"] > down[1]), default=down[1])
        in_outage = {m.id for m in short if down[0] - 1 <= m.eta <= back + 1}
        figures_outage = round(back - down[0], 1)
    tolerance = {m.id: max(1.0, 0.01 * (m.eta - now)) for m in short}
    over = [task_id for task_id, value in late.items() if task_id in tolerance and abs(value) > tolerance[task_id]]
    return {
        "tasks": len(short),
        "longest_s": options.longest,
        "hour_tasks": HOUR_TASKS,
        "lost": len(wanted.keys() - started.keys()),
        "duplicated": len(ids) - len(set(ids)),
        "outage_until_worker_back_s": figures_outage if down else None,
        "hour_tasks_still_waiting": waiting,
        "work_queue_at_end": {"messages": work.messages, "consumers": work.consumers},
        "worker_running": worker.poll() is None,
        "restart": None if not down else round(down[1] - down[0], 1),
        "late_s": percentiles(list(late.values())),
        "baseline_no_delay_latency_s": percentiles(baseline_latency),
        "outside_tolerance": len(over),
        "outside_tolerance_due_in_outage": len(set(over) & in_outage),
        "outside_tolerance_otherwise": len(set(over) - in_outage),
        "due_in_outage": len(in_outage),
    }


def percentiles(values: list[float]) -> dict:
    """Median, 99th percentile, least and most of ``values``, to the millisecond."""
    if not values:
        return {}
    ordered = sorted(values)
    return {
        name: round(value, 3)
        for name, value in (
            ("median", statistics.median(ordered)),
            ("p99", ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]),
            ("min", ordered[0]),
            ("max", ordered[-1]),
        )
    }


def started_lines(log_path: str) -> list[dict]:
    """The worker's task_succeeded lines."""
    lines = []
    with open(log_path) as log:
        for line in log:
            if line.startswith("{") and '"task_succeeded"' in line:
                lines.append(json.loads(line))
    return lines


def started_tasks(log_path: str) -> dict[str, dict]:
    """Each task id's start: its log line's fields and ``at``, the start as POSIX time."""
    found = {}
    for line in started_lines(log_path):
        at = time.mktime(time.strptime(line["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        found[line["task_id"]] = {**line, "at": at + float("0." + line["timestamp"][20:26])}
    return found


if __name__ == "__main__":
    main()
