"""Work-queue benchmarks: rabbitry against raw pika and its peers, in one run.

Usage (from the repository root, with the project installed):

    python -m bench.bench_work_queue [--reps 3] [--n 10000] [--only e2e,publish,fair,memory]
                                     [--systems rabbitry,rabbitry_metrics,...]

Install the optional peers with ``pip install -e '.[peers]'`` to measure
Celery and Dramatiq beside rabbitry; they are skipped when missing.

- e2e: N no-op tasks submitted while the worker runs, until all executed
  (the anchor benchmark's method: one O_APPEND byte per execution). rabbitry
  runs ``worker --processes 2`` at its default settings and submits with
  confirms, and again with ``--metrics-port`` on; the baseline is raw pika
  feeding multiprocessing.Pool(2).
- publish: ``new-task --count N`` (confirms, wall clock of the whole command)
  against an unconfirmed raw pika ``basic_publish`` loop to the same kind of
  queue, until the queue holds all N.
- fair: 2 pool processes with --prefetch 1 on 40 tasks, every 4th 0.5 s and
  the rest 0.01 s; makespan against the ideal max(sum / 2, longest).
- memory: resident memory of the pool processes over 100,000 tasks.

It prints figures and never asserts a time.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import time

import pika
import psutil

from bench.bench_tasks import FAIR_LOG
from bench.benchlib import (
    AMQP_URL,
    COUNTER_PATH,
    Counter,
    delete_exchanges,
    delete_queues,
    fmt,
    queue_state,
    raw_channel,
    save,
    summarize,
    wait_for_consumers,
)
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.compare.worker import stop_worker as stop
from rabbitry.producers.submitter import TaskSubmitter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
LOG_DIR = "/tmp/rabbitry-bench-logs"
BODY_100 = b"x" * 100


def env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, AMQP_URL=AMQP_URL, BENCH_COUNTER=COUNTER_PATH)


def start(name: str, command: list[str], queue: str, consumers: int) -> subprocess.Popen:
    os.makedirs(LOG_DIR, exist_ok=True)
    log = open(os.path.join(LOG_DIR, name + ".log"), "w")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_for_consumers(queue, consumers, process)
    return process


# -- the systems -------------------------------------------------------------
class Rabbitry:
    """rabbitry's own worker, at its default settings but for the queue name."""

    def __init__(
        self,
        queue_type: str = "quorum",
        extra: tuple[str, ...] = (),
        name: str | None = None,
        task: str = "bench_count",
        args: tuple = (),
        tasks: str = "bench.bench_tasks",
    ):
        self.queue = f"bench.{name or 'rabbitry'}.{queue_type}"
        self.queue_type = queue_type
        self.extra = extra
        self.task, self.args, self.tasks = task, list(args), tasks
        self.submitter = None

    def start(self, tag):
        command = [
            os.path.join(BIN, "worker"),
            "--processes",
            "2",
            "--queue",
            self.queue,
            "--queue-type",
            self.queue_type,
            "--tasks",
            self.tasks,
            "--log-format",
            "json",
            *self.extra,
        ]
        return start(tag, command, self.queue, 2)

    def submit(self, n: int) -> None:
        if self.submitter is None:
            self.submitter = TaskSubmitter(BrokerSettings.from_url(AMQP_URL), self.queue, self.queue_type).connect()
        for _ in range(n):
            self.submitter.submit(TaskMessage(self.task, self.args))
        self.submitter.flush()

    def cleanup(self):
        if self.submitter:
            self.submitter.close()
        delete_queues(self.queue, self.queue + ".dead-letter")


class RawPikaPool:
    """Raw pika + multiprocessing.Pool(2), prefetch 100: the anchor's baseline."""

    queue = "bench.pikamp"

    def __init__(self):
        self.connection = self.channel = None

    def start(self, tag):
        return start(tag, [sys.executable, "-m", "bench.peers.pika_mp_worker"], self.queue, 1)

    def submit(self, n: int) -> None:
        if self.channel is None:
            self.connection, self.channel = raw_channel()
            self.channel.queue_declare(self.queue, durable=True)
        properties = pika.BasicProperties(delivery_mode=2)
        for _ in range(n):
            self.channel.basic_publish("", self.queue, BODY_100, properties)
        self.connection.process_data_events(0)

    def cleanup(self):
        if self.connection:
            self.connection.close()
        delete_queues(self.queue)


class Celery:
    queue = "bench.celery"

    def start(self, tag):
        return start(
            tag,
            [
                os.path.join(BIN, "celery"),
                "-A",
                "bench.peers.celery_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "-O",
                "fair",
                "--loglevel=WARNING",
            ],
            self.queue,
            1,
        )

    def submit(self, n):
        from bench.peers.celery_app import noop

        for _ in range(n):
            noop.delay()

    def cleanup(self):
        delete_queues(self.queue)
        delete_exchanges(self.queue, "celery.pidbox", "celeryev", "reply.celery.pidbox")


class Dramatiq:
    queue = "bench_dramatiq"

    def start(self, tag):
        return start(
            tag,
            [os.path.join(BIN, "dramatiq"), "bench.peers.dramatiq_app", "--processes", "2", "--threads", "8"],
            self.queue,
            2,
        )

    def submit(self, n):
        from bench.peers.dramatiq_app import noop

        for _ in range(n):
            noop.send()

    def cleanup(self):
        delete_queues(self.queue, self.queue + ".DQ", self.queue + ".XQ")


def systems() -> dict:
    found = {
        "rabbitry": Rabbitry("quorum"),
        "rabbitry_classic": Rabbitry("classic"),
        "rabbitry_metrics": Rabbitry("quorum", ("--metrics-port", "0"), name="rabbitry-metrics"),
        "pika_mp": RawPikaPool(),
    }
    if importlib.util.find_spec("celery"):
        found["celery"] = Celery()
    if importlib.util.find_spec("dramatiq"):
        found["dramatiq_p2t8"] = Dramatiq()
    return found


# -- the benchmarks ----------------------------------------------------------
def e2e_once(system, n: int, tag: str, warmup: int = 200) -> float:
    """Tasks per second from the first of ``n`` submits to the last execution, after a warm-up
    (connections open, pools busy once)."""
    counter = Counter()
    process = system.start(tag)
    try:
        counter.reset()
        system.submit(warmup)
        counter.wait_for(warmup, timeout=120)
        time.sleep(0.5)
        counter.reset()
        started = time.perf_counter()
        system.submit(n)
        done = counter.wait_for(n)
    finally:
        stop(process)
    left, _ = queue_state(system.queue)
    if left:
        print(f"  ! {tag}: {left} messages left in the queue after stopping")
    return n / (done - started)


def e2e_rates(chosen: dict, reps: int, n: int, tag: str = "e2e") -> dict[str, list[float]]:
    """End-to-end rates of each system, the systems taking turns within each repetition."""
    rates = {name: [] for name in chosen}
    try:
        for rep in range(reps):
            for name, system in chosen.items():
                rates[name].append(e2e_once(system, n, f"{tag}-{name}-{rep}"))
                print(f"rep {rep} {name:<17} e2e {rates[name][-1]:8,.0f} tasks/s", flush=True)
    finally:
        for system in chosen.values():
            system.cleanup()
    return rates


def bench_e2e(reps: int, n: int, only: list[str] | None = None) -> dict:
    rates = e2e_rates({name: system for name, system in systems().items() if not only or name in only}, reps, n)
    result = {name: summarize(values) for name, values in rates.items()}
    print(f"\nend to end, {n:,} no-op tasks, median (min–max) of {reps}:")
    for name, summary in result.items():
        print(f"  {name:<17} {fmt(summary, ' tasks/s')}")
    if "rabbitry_metrics" in rates and "rabbitry" in rates:  # the cost of --metrics-port
        ratios = summarize(m / r for m, r in zip(rates["rabbitry_metrics"], rates["rabbitry"], strict=True))
        result["ratio_metrics_on_vs_off"] = ratios
        print(f"  metrics on / off  {fmt(ratios, '×', 2)}")
    for peer in ("pika_mp", "dramatiq_p2t8", "celery"):
        if peer in rates:
            if "rabbitry" not in rates:
                continue
            ratios = summarize(r / p for r, p in zip(rates["rabbitry"], rates[peer], strict=True))
            result[f"ratio_vs_{peer}"] = ratios
            print(f"  rabbitry / {peer:<13} {fmt(ratios, '×', 2)}")
    return result


def raw_publish_rate(n: int, queue_type: str) -> float:
    queue = f"bench.raw.{queue_type}"
    connection, channel = raw_channel()
    channel.queue_delete(queue)
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    properties = pika.BasicProperties(delivery_mode=2)
    started = time.perf_counter()
    for _ in range(n):
        channel.basic_publish("", queue, BODY_100, properties)
    while channel.queue_declare(queue, passive=True).method.message_count < n:
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    channel.queue_delete(queue)
    connection.close()
    return n / elapsed


def new_task_rate(n: int, queue_type: str) -> float:
    queue = f"bench.new-task.{queue_type}"
    delete_queues(queue)
    started = time.perf_counter()
    subprocess.run(
        [
            os.path.join(BIN, "new-task"),
            "--task",
            "noop",
            "--count",
            str(n),
            "--quiet",
            "--queue",
            queue,
            "--queue-type",
            queue_type,
        ],
        env=env(),
        check=True,
    )
    elapsed = time.perf_counter() - started
    queued, _ = queue_state(queue)
    if queued != n:
        print(f"  ! new-task queued {queued} of {n}")
    delete_queues(queue, queue + ".dead-letter")
    return n / elapsed


def bench_publish(reps: int, n: int) -> dict:
    runs = {key: [] for key in ("raw_classic", "new_task_classic", "raw_quorum", "new_task_quorum")}
    for rep in range(reps):
        for queue_type in ("classic", "quorum"):
            runs[f"raw_{queue_type}"].append(raw_publish_rate(n, queue_type))
            runs[f"new_task_{queue_type}"].append(new_task_rate(n, queue_type))
        print(f"rep {rep} " + "  ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()), flush=True)
    result = {key: summarize(values) for key, values in runs.items()}
    print(f"\npublish, {n:,} persistent messages, median (min–max) of {reps}:")
    for key, summary in result.items():
        print(f"  {key:<17} {fmt(summary, ' msg/s')}")
    for queue_type in ("classic", "quorum"):
        ratios = summarize(
            t / r for t, r in zip(runs[f"new_task_{queue_type}"], runs[f"raw_{queue_type}"], strict=True)
        )
        result[f"ratio_{queue_type}"] = ratios
        print(f"  new-task (confirms) / raw unconfirmed, {queue_type}: {fmt(ratios, '×', 2)}")
    return result


def bench_fair(reps: int) -> dict:
    durations = [0.5 if i % 4 == 0 else 0.01 for i in range(40)]
    ideal = max(sum(durations) / 2, max(durations))
    system = Rabbitry("quorum", extra=("--prefetch", "1"))
    makespans = []
    try:
        for rep in range(reps):
            process = system.start(f"fair-{rep}")
            try:
                open(FAIR_LOG, "w").close()
                submitter = TaskSubmitter(BrokerSettings.from_url(AMQP_URL), system.queue).connect()
                started = time.time()
                for seconds in durations:
                    submitter.submit(TaskMessage("bench_sleep", [seconds]))
                submitter.flush()
                submitter.close()
                deadline = time.time() + 60
                while sum(1 for _ in open(FAIR_LOG)) < len(durations) and time.time() < deadline:
                    time.sleep(0.01)
                ends = [float(line) for line in open(FAIR_LOG)]
            finally:
                stop(process)
            makespans.append(max(ends) - started)
            print(
                f"rep {rep} fair makespan {makespans[-1]:.3f} s, ideal {ideal:.3f} s, "
                f"ratio {makespans[-1] / ideal:.3f}",
                flush=True,
            )
    finally:
        system.cleanup()
    result = {"makespan_s": summarize(makespans), "ideal_s": ideal, "ratio": summarize(m / ideal for m in makespans)}
    print(
        f"\nfair dispatch, 2 processes, --prefetch 1: makespan {fmt(result['makespan_s'], ' s', 3)}, "
        f"ideal {ideal:.3f} s, ratio {fmt(result['ratio'], '×', 3)}"
    )
    return result


def bench_memory(n: int = 100_000, warmup: int = 10_000) -> dict:
    system = Rabbitry("quorum")
    counter = Counter()
    process = system.start("memory")
    try:
        pool = psutil.Process(process.pid).children()
        counter.reset()
        system.submit(warmup)
        counter.wait_for(warmup)
        after_warmup = sum(p.memory_info().rss for p in pool)
        system.submit(n - warmup)
        counter.wait_for(n)
        at_end = sum(p.memory_info().rss for p in pool)
    finally:
        stop(process)
        system.cleanup()
    growth = at_end / after_warmup - 1
    print(
        f"\nmemory of the pool processes: {after_warmup / 2**20:.1f} MiB after {warmup:,} tasks, "
        f"{at_end / 2**20:.1f} MiB after {n:,}: growth {growth:+.1%}"
    )
    return {"rss_after_warmup": after_warmup, "rss_at_end": at_end, "growth": growth}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--publish-n", type=int, default=20_000)
    parser.add_argument("--only", default="e2e,publish,fair,memory")
    parser.add_argument(
        "--systems", default="", help="e2e: only these systems (comma-separated), e.g. rabbitry,rabbitry_metrics"
    )
    args = parser.parse_args()
    chosen = args.only.split(",")
    results = {"args": vars(args)}
    if "e2e" in chosen:
        results["e2e"] = bench_e2e(args.reps, args.n, [name for name in args.systems.split(",") if name])
    if "publish" in chosen:
        results["publish"] = bench_publish(args.reps, args.publish_n)
    if "fair" in chosen:
        results["fair"] = bench_fair(args.reps)
    if "memory" in chosen:
        results["memory"] = bench_memory()
    print("saved", save("work_queue", results))


if __name__ == "__main__":
    main()
