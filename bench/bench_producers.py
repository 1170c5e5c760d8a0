"""Producer benchmarks: a long-lived submitter, and results, against bare pika pairs in the same run.

Usage (from the repository root, with the project installed):

    python -m bench.bench_producers [--reps 2] [--n 2000] [--rate 200] [--rpc-n 1000]
                                    [--queue-type quorum] [--only latency,rpc]

- latency: one long-lived ``TaskSubmitter`` submits a task every 1/rate
  seconds (an absolute schedule), and ``worker --processes 1`` records, at
  the start of each task, the time since ``submit()`` was called. The
  baseline is a bare pika publisher (BlockingConnection, persistent, no
  confirms) feeding a bare pika consumer process (prefetch 16, manual ack)
  on the same queue type, the time taken at the consumer's callback.
- rpc: the round trip of ``submit(noop).get()`` (direct reply-to), one at a
  time, against the tutorials' rpc_client.py / rpc_server.py shape (an
  exclusive callback queue, a server with prefetch 1) on the same queue type.

It prints percentiles and ratios, and never asserts a time.
"""

import argparse
import math
import os
import sys
import time
import uuid

import pika

from bench.bench_work_queue import BIN, start, stop
from bench.benchlib import AMQP_URL, delete_queues, fmt, raw_channel, save, summarize
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.producers.submitter import TaskSubmitter

LATENCY_LOG = os.environ.setdefault("BENCH_LATENCY", "/tmp/rabbitry-bench-latency")


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50": percentile(ordered, 50), "p99": percentile(ordered, 99), "n": len(ordered)}


def paced(n: int, rate: float):
    """Yield n times on an absolute schedule of ``rate`` per second."""
    interval, start_at = 1 / rate, time.monotonic() + 0.05
    for i in range(n):
        target = start_at + i * interval
        while (left := target - time.monotonic()) > 0:
            time.sleep(left if left > 0.002 else 0)
        yield i


def read_latencies(expected: int, timeout: float = 60) -> list[float]:
    """Milliseconds, once ``expected`` lines are in the latency log."""
    deadline = time.monotonic() + timeout
    while True:
        with open(LATENCY_LOG) as log:
            lines = log.read().split()
        if len(lines) >= expected or time.monotonic() > deadline:
            return [int(line) / 1e6 for line in lines]
        time.sleep(0.05)


# -- submit-to-start latency --------------------------------------------------------
def rabbitry_latency(n: int, rate: float, queue_type: str, tag: str) -> dict:
    queue = f"bench.producers.rabbitry.{queue_type}"
    process = start(
        tag,
        [
            os.path.join(BIN, "worker"),
            "--processes",
            "1",
            "--queue",
            queue,
            "--queue-type",
            queue_type,
            "--tasks",
            "bench.bench_tasks",
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ],
        queue,
        1,
    )
    try:
        with TaskSubmitter(BrokerSettings.from_url(AMQP_URL), queue, queue_type) as submitter:
            submitter.submit(TaskMessage("noop")).wait_confirmed(10)  # warm: connected, queue declared
            open(LATENCY_LOG, "w").close()
            for _ in paced(n, rate):
                submitter.submit(TaskMessage("bench_latency", [time.monotonic_ns()]))
            latencies = read_latencies(n)
    finally:
        stop(process)
        delete_queues(queue, queue + ".dead-letter", *(f"{queue}.retry.{d}ms" for d in (1000, 2000, 4000)))
    return percentiles(latencies)


def bare_latency(n: int, rate: float, queue_type: str, tag: str) -> dict:
    queue = f"bench.producers.bare.{queue_type}"
    open(LATENCY_LOG, "w").close()
    process = start(tag, [sys.executable, "-m", "bench.peers.pika_pair", "latency", queue, queue_type], queue, 1)
    connection, channel = raw_channel()
    try:
        properties = pika.BasicProperties(delivery_mode=2)
        for _ in paced(n, rate):
            channel.basic_publish("", queue, b"%d" % time.monotonic_ns(), properties)
        latencies = read_latencies(n)
    finally:
        connection.close()
        stop(process)
        delete_queues(queue)
    return percentiles(latencies)


# -- result round trip --------------------------------------------------------------
def rabbitry_rpc(n: int, queue_type: str, tag: str) -> dict:
    queue = f"bench.producers.rpc.rabbitry.{queue_type}"
    process = start(
        tag,
        [
            os.path.join(BIN, "worker"),
            "--processes",
            "1",
            "--queue",
            queue,
            "--queue-type",
            queue_type,
            "--log-format",
            "json",
            "--log-level",
            "warning",
        ],
        queue,
        1,
    )
    round_trips = []
    try:
        with TaskSubmitter(BrokerSettings.from_url(AMQP_URL), queue, queue_type, results=True) as submitter:
            submitter.submit(TaskMessage("noop")).get(10)  # warm
            for _ in range(n):
                started = time.perf_counter()
                submitter.submit(TaskMessage("noop")).get(10)
                round_trips.append((time.perf_counter() - started) * 1000)
    finally:
        stop(process)
        delete_queues(queue, queue + ".dead-letter", *(f"{queue}.retry.{d}ms" for d in (1000, 2000, 4000)))
    return percentiles(round_trips)


def bare_rpc(n: int, queue_type: str, tag: str) -> dict:
    """The tutorials' RpcClient: an exclusive callback queue, one call at a time."""
    queue = f"bench.producers.rpc.bare.{queue_type}"
    process = start(tag, [sys.executable, "-m", "bench.peers.pika_pair", "rpc", queue, queue_type], queue, 1)
    connection, channel = raw_channel()
    callback_queue = channel.queue_declare("", exclusive=True).method.queue
    answer = {}

    def on_response(_ch, _method, properties, body):
        answer[properties.correlation_id] = body

    channel.basic_consume(callback_queue, on_response, auto_ack=True)
    round_trips = []
    try:
        for i in range(n + 1):
            started = time.perf_counter()
            correlation_id = str(uuid.uuid4())
            channel.basic_publish(
                "",
                queue,
                b"noop",
                pika.BasicProperties(reply_to=callback_queue, correlation_id=correlation_id, delivery_mode=2),
            )
            while correlation_id not in answer:
                connection.process_data_events(time_limit=None)
            if i:  # the first call warms up
                round_trips.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
        stop(process)
        delete_queues(queue)
    return percentiles(round_trips)


# -- running and reporting ----------------------------------------------------------
def compare(name: str, runs: dict[str, list[dict]], unit: str = " ms") -> dict:
    ours, bare = runs["rabbitry"], runs["bare"]
    result = {}
    for p in ("p50", "p99"):
        result[f"rabbitry_{p}"] = summarize(r[p] for r in ours)
        result[f"bare_{p}"] = summarize(r[p] for r in bare)
        result[f"ratio_{p}"] = summarize(o[p] / b[p] for o, b in zip(ours, bare, strict=True))
        print(
            f"  {name} {p}: rabbitry {fmt(result[f'rabbitry_{p}'], unit, 2)}, bare pika "
            f"{fmt(result[f'bare_{p}'], unit, 2)}, ratio {fmt(result[f'ratio_{p}'], '×', 2)}"
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--rpc-n", type=int, default=1000)
    parser.add_argument("--queue-type", default="quorum", choices=("quorum", "classic"))
    parser.add_argument("--only", default="latency,rpc")
    args = parser.parse_args()
    chosen, results = args.only.split(","), {"args": vars(args)}
    if "latency" in chosen:
        runs = {"rabbitry": [], "bare": []}
        for rep in range(args.reps):
            runs["bare"].append(bare_latency(args.n, args.rate, args.queue_type, f"latency-bare-{rep}"))
            runs["rabbitry"].append(rabbitry_latency(args.n, args.rate, args.queue_type, f"latency-rabbitry-{rep}"))
            print(
                f"rep {rep} latency at {args.rate:g}/s: "
                + "  ".join(f"{k} p50 {v[-1]['p50']:.2f} ms p99 {v[-1]['p99']:.2f} ms" for k, v in runs.items()),
                flush=True,
            )
        print(
            f"\nsubmit-to-start latency, {args.n} tasks at {args.rate:g}/s, {args.queue_type} queue, "
            f"median (min–max) of {args.reps}:"
        )
        results["latency"] = compare("latency", runs)
    if "rpc" in chosen:
        runs = {"rabbitry": [], "bare": []}
        for rep in range(args.reps):
            runs["bare"].append(bare_rpc(args.rpc_n, args.queue_type, f"rpc-bare-{rep}"))
            runs["rabbitry"].append(rabbitry_rpc(args.rpc_n, args.queue_type, f"rpc-rabbitry-{rep}"))
            print(
                f"rep {rep} round trip: "
                + "  ".join(f"{k} p50 {v[-1]['p50']:.2f} ms p99 {v[-1]['p99']:.2f} ms" for k, v in runs.items()),
                flush=True,
            )
        print(
            f"\nresult round trip of a no-op task, {args.rpc_n} calls one at a time, {args.queue_type} queue, "
            f"median (min–max) of {args.reps}:"
        )
        results["rpc"] = compare("round trip", runs)
    print("saved", save("producers", results))


if __name__ == "__main__":
    main()
