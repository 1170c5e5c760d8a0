"""Log benchmarks: emit-log, subscribe and the logging handler against raw pika, in one run.

Usage (from the repository root, with the project installed):

    python -m bench.bench_logs [--reps 3] [--n 100000] [--latency-n 2000] [--rate 500] [--only stdin,latency,handler]

- stdin: ``emit-log app.info < file`` of N ~100-byte lines (confirms; wall
  clock of the whole command, start-up included) against a raw pika
  ``basic_publish`` loop without confirms reading the same file in a process
  of its own, timed from its start until the queue holds all N. Both publish
  to the same topic exchange, bound to one queue.
- latency: publish-to-receive latency of --latency-n ~100-byte messages
  paced at --rate msg/s through a topic exchange, after the method of the
  anchor benchmark 8 (bench-peers/bench_latency.py): each body starts with
  ``time.monotonic_ns()`` taken just before publishing. Three pairs:
  raw pika publisher -> raw pika consumer (stamped at callback entry, the
  anchor's pair); raw pika publisher -> ``subscribe --json`` (stamped when a
  separate process reads the line from subscribe's standard output); and
  ``emit-log`` fed line by line on its standard input -> ``subscribe --json``.
- handler: mean cost of one ``logger.info`` call with LogExchangeHandler
  (broker up, a burst smaller than its buffer) against a logging.NullHandler
  baseline: wall clock (which includes the publishing thread's share of the
  GIL) and the calling thread's own CPU time; then the same with the broker
  unreachable and a burst twice the buffer (counted drops, bounded memory).

It prints figures and never asserts a time.
"""

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pika
import psutil

from bench.benchlib import AMQP_URL, fmt, raw_channel, save, summarize
from rabbitry.common.logconfig import configure_logging
from rabbitry.producers.log_handler import LogExchangeHandler

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCHANGE = "bench.logs.topic"
SINK_QUEUE = "bench.logs.sink"
LATENCY_EXCHANGE = "bench.logs.latency"
LATENCY_KEY = "lat.bench"
LINE_BYTES = 100


def _env() -> dict:
    return dict(os.environ, AMQP_URL=AMQP_URL, RABBITRY_LOG_FORMAT="json", PYTHONPATH=ROOT)


def _role(name: str, *args: str) -> list[str]:
    """The command that runs one of this script's helper roles in a process of its own."""
    return [sys.executable, "-m", "bench.bench_logs", name, *args]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile, as in the anchor benchmarks."""
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


# -- stdin throughput ---------------------------------------------------------
def _declare_sink() -> None:
    connection, channel = raw_channel()
    channel.exchange_declare(EXCHANGE, "topic")  # as emit-log declares it
    channel.queue_declare(SINK_QUEUE)
    channel.queue_bind(SINK_QUEUE, EXCHANGE, "#")
    channel.queue_purge(SINK_QUEUE)
    connection.close()


def _sink_count() -> int:
    connection, channel = raw_channel()
    count = channel.queue_declare(SINK_QUEUE, passive=True).method.message_count
    connection.close()
    return count


def raw_publisher_role(_args) -> None:
    """Publish each line of standard input, no confirms: the baseline's publish loop."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for line in sys.stdin.buffer:
        channel.basic_publish(EXCHANGE, "app.info", line.rstrip(b"\n"))
    connection.close()


def run_stdin(lines_path: str, n: int) -> dict:
    _declare_sink()
    with open(lines_path, "rb") as lines:
        started = time.perf_counter()
        subprocess.run(_role("raw-publisher"), stdin=lines, env=_env(), check=True)
        while (count := _sink_count()) < n:
            time.sleep(0.005)
        raw_rate = n / (time.perf_counter() - started)
    _declare_sink()
    with open(lines_path, "rb") as lines:
        started = time.perf_counter()
        subprocess.run(
            [os.path.join(BIN, "emit-log"), "--exchange", EXCHANGE, "app.info"], stdin=lines, env=_env(), check=True
        )
        emit_rate = n / (time.perf_counter() - started)
    count = _sink_count()
    assert count == n, f"the queue holds {count} of {n} messages"
    return {"raw_rate": raw_rate, "emit_log_rate": emit_rate, "ratio": emit_rate / raw_rate}


def bench_stdin(reps: int, n: int) -> dict:
    with tempfile.NamedTemporaryFile("wb", prefix="rabbitry-bench-lines-", delete=False) as lines:
        for number in range(n):
            lines.write(f"line {number:08d} ".encode().ljust(LINE_BYTES - 1, b"x") + b"\n")
    results = []
    try:
        for rep in range(reps):
            result = run_stdin(lines.name, n)
            results.append(result)
            print(
                f"stdin rep {rep}: raw unconfirmed {result['raw_rate']:,.0f} msg/s | emit-log with confirms "
                f"{result['emit_log_rate']:,.0f} msg/s | ratio {result['ratio']:.2f}",
                flush=True,
            )
    finally:
        os.unlink(lines.name)
        connection, channel = raw_channel()
        channel.queue_delete(SINK_QUEUE)
        channel.exchange_delete(EXCHANGE)
        connection.close()
    summary = {key: summarize(r[key] for r in results) for key in ("raw_rate", "emit_log_rate", "ratio")}
    print(
        f"stdin: raw {fmt(summary['raw_rate'], ' msg/s')}, emit-log {fmt(summary['emit_log_rate'], ' msg/s')}, "
        f"ratio {fmt(summary['ratio'], '', 2)} (target >= 0.70)"
    )
    return {"reps": results, "summary": summary}


# -- latency ------------------------------------------------------------------
def _stamped_body() -> bytes:
    return f"{time.monotonic_ns()} ".encode().ljust(LINE_BYTES, b"x")


def raw_consumer_role(args) -> None:
    """The anchor's consumer: exclusive queue bound 'lat.#', prefetch 100, stamped at callback entry."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.exchange_declare(LATENCY_EXCHANGE, "topic")
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, LATENCY_EXCHANGE, "lat.#")
    channel.basic_qos(prefetch_count=100)
    latencies = []

    def on_message(channel_, method, _properties, body):
        now = time.monotonic_ns()
        latencies.append(now - int(body.split(b" ", 1)[0]))
        channel_.basic_ack(method.delivery_tag)
        if len(latencies) >= args.n:
            channel_.stop_consuming()

    channel.basic_consume(queue, on_message)
    connection.call_later(120, channel.stop_consuming)
    print("ready", flush=True)
    channel.start_consuming()
    with open(args.out, "w") as out:
        json.dump(latencies, out)
    connection.close()


def line_reader_role(args) -> None:
    """Stamp each ``subscribe --json`` line as it is read; the body starts with the publish time."""
    latencies = []
    for line in sys.stdin.buffer:
        now = time.monotonic_ns()
        latencies.append(now - int(json.loads(line)["body"].split(" ", 1)[0]))
    with open(args.out, "w") as out:
        json.dump(latencies, out)


def _paced(n: int, rate: float, send) -> tuple[float, int]:
    """Call ``send`` n times on an absolute schedule; return (achieved rate, late sends)."""
    interval, late = 1.0 / rate, 0
    start = time.monotonic() + 0.05
    for number in range(n):
        target = start + number * interval
        while (now := time.monotonic()) < target:
            if target - now > 0.0015:
                time.sleep(target - now - 0.001)
        late += now - target > interval
        send()
    return n / (time.monotonic() - start), late


def _wait_for_line(process: subprocess.Popen, stream, marker: str) -> None:
    for line in stream:
        if marker in line:
            return
    raise RuntimeError(f"process exited with {process.wait()} before {marker!r}")


def _start_subscribe(n: int, out_path: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    subscriber = subprocess.Popen(
        [os.path.join(BIN, "subscribe"), "--json", "--exchange", LATENCY_EXCHANGE, "lat.#", "--count", str(n)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = subprocess.Popen(_role("line-reader", "--out", out_path), stdin=subscriber.stdout, env=_env())
    subscriber.stdout.close()  # the reader owns it now
    _wait_for_line(subscriber, subscriber.stderr, '"subscribed"')
    return subscriber, reader


def _raw_publish_paced(n: int, rate: float) -> tuple[float, int]:
    connection, channel = raw_channel()
    channel.exchange_declare(LATENCY_EXCHANGE, "topic")
    result = _paced(n, rate, lambda: channel.basic_publish(LATENCY_EXCHANGE, LATENCY_KEY, _stamped_body()))
    connection.close()
    return result


def _wait_until_connected(process: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until ``process`` holds an established connection to the broker."""
    port = pika.URLParameters(AMQP_URL).port
    deadline = time.monotonic() + timeout
    while not any(
        c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        for c in psutil.Process(process.pid).net_connections("tcp")
    ):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("emit-log did not connect")
        time.sleep(0.02)
    time.sleep(0.1)  # and has declared its exchange


def _emit_log_paced(n: int, rate: float) -> tuple[float, int]:
    emitter = subprocess.Popen(
        [os.path.join(BIN, "emit-log"), "--exchange", LATENCY_EXCHANGE, LATENCY_KEY], stdin=subprocess.PIPE, env=_env()
    )
    _wait_until_connected(emitter)  # start-up is not latency

    def send():
        emitter.stdin.write(_stamped_body() + b"\n")
        emitter.stdin.flush()

    result = _paced(n, rate, send)
    emitter.stdin.close()
    emitter.wait(60)
    return result


def run_latency_pair(pair: str, n: int, rate: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="rabbitry-bench-latency-") as directory:
        out_path = os.path.join(directory, "latencies.json")
        if pair == "raw":
            receivers = [
                subprocess.Popen(
                    _role("raw-consumer", "--n", str(n), "--out", out_path),
                    env=_env(),
                    stdout=subprocess.PIPE,
                    text=True,
                )
            ]
            _wait_for_line(receivers[0], receivers[0].stdout, "ready")
        else:
            receivers = list(_start_subscribe(n, out_path))
        try:
            achieved, late = (_emit_log_paced if pair == "emit-log" else _raw_publish_paced)(n, rate)
            for process in receivers:
                process.wait(60)
        finally:
            for process in receivers:
                if process.poll() is None:
                    process.kill()
        with open(out_path) as latencies:
            values = sorted(ns / 1000 for ns in json.load(latencies))
    return {
        "received": len(values),
        "achieved_rate": achieved,
        "late_sends": late,
        **{f"p{p}_us": percentile(values, p) for p in (50, 95, 99)},
        "max_us": values[-1],
    }


LATENCY_PAIRS = {
    "raw": "raw pika -> raw pika consumer",
    "subscribe": "raw pika -> subscribe --json",
    "emit-log": "emit-log (stdin) -> subscribe --json",
}


def bench_latency(reps: int, n: int, rate: float) -> dict:
    results = {pair: [] for pair in LATENCY_PAIRS}
    try:
        for rep in range(reps):
            for pair in LATENCY_PAIRS:
                result = run_latency_pair(pair, n, rate)
                results[pair].append(result)
                print(
                    f"latency rep {rep} {LATENCY_PAIRS[pair]}: received {result['received']} at "
                    f"{result['achieved_rate']:.0f} msg/s | p50 {result['p50_us']:.0f} us p95 "
                    f"{result['p95_us']:.0f} us p99 {result['p99_us']:.0f} us max {result['max_us']:.0f} us "
                    f"(late sends {result['late_sends']})",
                    flush=True,
                )
    finally:
        connection, channel = raw_channel()
        channel.exchange_delete(LATENCY_EXCHANGE)
        connection.close()
    summary = {}
    for pair, label in LATENCY_PAIRS.items():
        figures = {key: summarize(r[key] for r in results[pair]) for key in ("p50_us", "p95_us", "p99_us")}
        figures["p99_ratio_to_raw"] = summarize(
            ours["p99_us"] / raw["p99_us"] for ours, raw in zip(results[pair], results["raw"], strict=True)
        )
        summary[pair] = figures
        print(
            f"latency {label}: p50 {fmt(figures['p50_us'], ' us')}, p95 {fmt(figures['p95_us'], ' us')}, "
            f"p99 {fmt(figures['p99_us'], ' us')}; p99 / raw pair {fmt(figures['p99_ratio_to_raw'], '', 2)}"
            + (" (target <= 3)" if pair != "raw" else "")
        )
    return {"reps": results, "summary": summary}


# -- handler cost -------------------------------------------------------------
def _per_call(logger: logging.Logger, calls: int) -> tuple[float, float]:
    """(wall clock, calling thread's CPU time) per ``logger.info`` call, in microseconds."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for number in range(calls):
        logger.info("request %d handled in %.1f ms", number, 1.5)
    return (time.perf_counter() - wall) / calls * 1e6, (time.thread_time() - cpu) / calls * 1e6


def run_handler(calls: int, rounds: int = 5) -> dict:
    """Rounds of ``calls`` calls, NullHandler and the handler alternating; the median of the rounds."""
    logger = logging.getLogger("bench.handler")
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def measure(handler: logging.Handler) -> tuple[float, float]:
        logger.addHandler(handler)
        try:
            return _per_call(logger, calls)
        finally:
            logger.removeHandler(handler)

    def median_added(handler: LogExchangeHandler, confirmed_before: int | None) -> tuple[float, float, float]:
        """With ``confirmed_before``, wait after each round until the broker confirmed it all."""
        null, added, added_cpu = [], [], []
        for round_number in range(1, rounds + 1):
            null_wall, null_cpu = measure(logging.NullHandler())
            wall, cpu = measure(handler)
            null.append(null_wall)
            added.append(wall - null_wall)
            added_cpu.append(cpu - null_cpu)
            while confirmed_before is not None and handler.published < confirmed_before + round_number * calls:
                time.sleep(0.01)  # each round starts with an empty buffer: nothing dropped
        return statistics.median(null), statistics.median(added), statistics.median(added_cpu)

    up = LogExchangeHandler(AMQP_URL, exchange=EXCHANGE, capacity=calls)
    while up.published < 1:  # connected: the cost measured is the broker-up cost
        logger.addHandler(up)
        logger.info("warm-up")
        logger.removeHandler(up)
        time.sleep(0.05)
    null_us, up_added, up_cpu_added = median_added(up, confirmed_before=up.published)
    up.close()
    down = LogExchangeHandler("amqp://guest:guest@127.0.0.1:1/", capacity=calls, close_timeout=0.1)
    _null, down_added, _cpu = median_added(down, confirmed_before=None)
    down.close()
    return {
        "null_us": null_us,
        "up_added_us": up_added,
        "up_thread_cpu_added_us": up_cpu_added,
        "up_published": up.published,
        "up_dropped": up.dropped,
        "down_added_us": down_added,
        "down_dropped": down.dropped,
        "down_buffered_max": down.capacity,
        "calls": rounds * calls,
    }


def bench_handler(reps: int, calls: int) -> dict:
    _declare_sink()  # records go to a bound queue, as they would to a subscriber
    results = []
    try:
        for rep in range(reps):
            result = run_handler(calls)
            results.append(result)
            print(
                f"handler rep {rep}: NullHandler {result['null_us']:.2f} us/call | broker up +"
                f"{result['up_added_us']:.2f} us/call (calling thread CPU +{result['up_thread_cpu_added_us']:.2f}; "
                f"published {result['up_published']}, dropped {result['up_dropped']}) | broker down +"
                f"{result['down_added_us']:.2f} us/call (dropped {result['down_dropped']} of {result['calls']}, "
                f"buffer capped at {result['down_buffered_max']})",
                flush=True,
            )
            _declare_sink()
    finally:
        connection, channel = raw_channel()
        channel.queue_delete(SINK_QUEUE)
        channel.exchange_delete(EXCHANGE)
        connection.close()
    summary = {
        key: summarize(r[key] for r in results)
        for key in ("null_us", "up_added_us", "up_thread_cpu_added_us", "down_added_us")
    }
    print(
        f"handler: added per logger.info call with the broker up {fmt(summary['up_added_us'], ' us', 2)} "
        f"(target <= 20; calling thread CPU {fmt(summary['up_thread_cpu_added_us'], ' us', 2)}), "
        f"broker down {fmt(summary['down_added_us'], ' us', 2)}; NullHandler {fmt(summary['null_us'], ' us', 2)}"
    )
    return {"reps": results, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    sub.add_parser("raw-publisher")
    consumer = sub.add_parser("raw-consumer")
    consumer.add_argument("--n", type=int, required=True)
    consumer.add_argument("--out", required=True)
    reader = sub.add_parser("line-reader")
    reader.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=100_000, help="lines for the stdin benchmark")
    parser.add_argument("--latency-n", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--handler-calls", type=int, default=5000)
    parser.add_argument("--only", default="stdin,latency,handler")
    args = parser.parse_args()
    roles = {"raw-publisher": raw_publisher_role, "raw-consumer": raw_consumer_role, "line-reader": line_reader_role}
    if args.role:
        roles[args.role](args)
        return
    configure_logging("console", "error")  # the broker-down handler's reconnect warnings are expected
    only = set(args.only.split(","))
    results = {"args": vars(args)}
    if "stdin" in only:
        results["stdin"] = bench_stdin(args.reps, args.n)
    if "latency" in only:
        results["latency"] = bench_latency(args.reps, args.latency_n, args.rate)
    if "handler" in only:
        results["handler"] = bench_handler(args.reps, args.handler_calls)
    print("saved", save("logs", results))


if __name__ == "__main__":
    main()
