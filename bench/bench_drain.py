"""Draining a prefilled queue: rabbitry's worker against a lean pika consumer, in one run.

Usage (from the repository root, with the project installed):

    python -m bench.bench_drain [--reps 3] [--n 40000] [--systems rabbitry,lean_pika,...]

A quorum queue is filled with N no-op task messages (rabbitry's own format,
``noop``), then drained by 2 processes. The systems take turns within
each repetition:

- ``lean_pika``: 2 processes, each a pika ``BlockingConnection`` with prefetch
  200 that ``json.loads`` every body and acks with ``multiple`` every 50
  deliveries, after the work: the most a Python consumer needs to do here.
- ``rabbitry``: ``worker --processes 2`` at its defaults, one JSON log line
  per task.

Each is timed from its first task's start to its last task's end, start-up
excluded: rabbitry's from the ``task_succeeded`` lines in its own log (each
line's timestamp, less its duration for the first), the lean consumer's from
the clock readings of its processes. The CPU time each spends per task is
printed too, its own processes' (from their first delivery, or from when the
pool processes consume) and the broker's over the same drain. It prints
figures and never asserts a time.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import time

import pika
import psutil

from bench.bench_work_queue import BIN, LOG_DIR, start
from bench.benchlib import AMQP_URL, delete_queues, fmt, queue_state, save, summarize
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.compare.worker import stop_worker
from rabbitry.producers.submitter import TaskSubmitter

QUEUE = "bench.drain"
LEAN_PREFETCH = 200
LEAN_ACK_EVERY = 50


def prefill(n: int) -> None:
    """Fill the quorum queue with ``n`` no-op tasks, confirmed."""
    with TaskSubmitter(BrokerSettings.from_url(AMQP_URL), QUEUE, "quorum").connect() as submitter:
        for _ in range(n):
            submitter.submit(TaskMessage("noop"))
        submitter.flush()
    deadline = time.time() + 120
    while queue_state(QUEUE)[0] < n:
        if time.time() > deadline:
            raise TimeoutError("the queue did not fill")
        time.sleep(0.05)


# -- the lean consumer --------------------------------------------------------
def _lean_consumer(n_total: int, done, times) -> None:
    """One process of the lean consumer: consume until ``done`` counts ``n_total`` between them."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=LEAN_PREFETCH)
    state = {"seen": 0, "first": None, "last": None, "tag": 0, "cpu": 0.0}

    def on_message(channel_, method, _properties, body):
        if state["first"] is None:
            state["first"], state["cpu"] = time.time(), time.process_time()
        json.loads(body)
        state["seen"] += 1
        state["tag"] = method.delivery_tag
        if state["seen"] % LEAN_ACK_EVERY == 0:
            channel_.basic_ack(method.delivery_tag, multiple=True)
        state["last"] = time.time()

    channel.basic_consume(QUEUE, on_message)
    while True:
        connection.process_data_events(0.05)
        with done.get_lock():
            done.value += state["seen"] - state.get("counted", 0)
            state["counted"] = state["seen"]
            finished = done.value >= n_total
        if finished:
            break
    if state["seen"] % LEAN_ACK_EVERY:
        channel.basic_ack(state["tag"], multiple=True)
    channel.queue_declare(QUEUE, passive=True)  # a round trip: the last ack has arrived
    connection.close()
    times.put((state["first"], state["last"], state["seen"], time.process_time() - state["cpu"]))


def broker_cpu_s() -> float:
    """CPU seconds the local RabbitMQ node has used (0 if it is elsewhere)."""
    return sum(
        sum(process.cpu_times()[:2]) for process in psutil.process_iter(["name"]) if process.info["name"] == "beam.smp"
    )


def drain_lean(n: int) -> tuple[float, float]:
    """Tasks per second of two lean consumer processes draining ``n`` tasks, and their CPU seconds."""
    done, times = multiprocessing.Value("l", 0), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_lean_consumer, args=(n, done, times)) for _ in range(2)]
    for process in processes:
        process.start()
    readings = [times.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    first = min(reading[0] for reading in readings if reading[0] is not None)
    last = max(reading[1] for reading in readings if reading[1] is not None)
    return sum(reading[2] for reading in readings) / (last - first), sum(reading[3] for reading in readings)


# -- rabbitry's worker --------------------------------------------------------
def _stamp(line: dict) -> float:
    return datetime.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def drain_rabbitry(n: int, tag: str) -> tuple[float, float]:
    """Tasks per second of ``worker --processes 2`` draining ``n`` tasks, from its own log lines,
    and the CPU seconds of its pool processes."""
    command = [os.path.join(BIN, "worker"), "--processes", "2", "--queue", QUEUE, "--log-format", "json"]
    log_path = os.path.join(LOG_DIR, tag + ".log")
    process = start(tag, command, QUEUE, 2)
    try:
        pool = psutil.Process(process.pid).children()
        cpu_before = sum(sum(child.cpu_times()[:2]) for child in pool)
        deadline, succeeded, partial = time.time() + 600, 0, ""
        with open(log_path) as log:
            while succeeded < n:
                if time.time() > deadline:
                    raise TimeoutError("the worker did not run every task")
                time.sleep(0.1)
                *lines, partial = (partial + log.read()).split("\n")
                succeeded += sum('"task_succeeded"' in line for line in lines)
        cpu_s = sum(sum(child.cpu_times()[:2]) for child in pool) - cpu_before
    finally:
        stop_worker(process)
    ended = []
    with open(log_path) as log:
        for text in log:
            if '"task_succeeded"' in text:
                line = json.loads(text)
                ended.append((_stamp(line), line["duration_s"]))
    first_end, first_duration = min(ended)
    return len(ended) / (max(ended)[0] - (first_end - first_duration)), cpu_s


SYSTEMS = {
    "lean_pika": lambda n, tag: drain_lean(n),
    "rabbitry": drain_rabbitry,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--systems", default="lean_pika,rabbitry")
    args = parser.parse_args()
    chosen = [name for name in args.systems.split(",") if name]
    rates = {name: [] for name in chosen}
    delete_queues(QUEUE, QUEUE + ".dead-letter")
    try:
        for rep in range(args.reps):
            for name in chosen:
                prefill(args.n)
                broker_before = broker_cpu_s()
                rate, cpu_s = SYSTEMS[name](args.n, f"drain-{name}-{rep}")
                broker_us = (broker_cpu_s() - broker_before) / args.n * 1e6
                rates[name].append(rate)
                print(
                    f"rep {rep} {name:<15} drain {rate:8,.0f} tasks/s; CPU per task: its processes "
                    f"{cpu_s / args.n * 1e6:5.1f} us, the broker {broker_us:5.1f} us",
                    flush=True,
                )
                delete_queues(QUEUE, QUEUE + ".dead-letter")
    finally:
        delete_queues(QUEUE, QUEUE + ".dead-letter")
    result = {name: summarize(values) for name, values in rates.items()}
    print(f"\ndrain of {args.n:,} prefilled no-op tasks, 2 processes, median (min–max) of {args.reps}:")
    for name, summary in result.items():
        print(f"  {name:<15} {fmt(summary, ' tasks/s')}")
    if "lean_pika" in rates:
        for name in chosen:
            if name != "lean_pika":
                ratios = summarize(r / p for r, p in zip(rates[name], rates["lean_pika"], strict=True))
                result[f"ratio_{name}_vs_lean_pika"] = ratios
                print(f"  {name} / lean_pika {fmt(ratios, '×', 2)}")
    print("saved", save("drain", {"args": vars(args), **result}))


if __name__ == "__main__":
    main()
