"""Log history benchmarks: replay against a bare pika stream consumer, the seam, retention; in one run.

Usage (from the repository root, with the project installed):

    python -m bench.bench_log_history [--reps 1] [--n 1000000] [--only replay,seam,retention]

- replay: a stream of N ~100-byte lines (prefilled by a raw pika publisher,
  through a topic exchange bound to the stream, as ``rabbitry logs retain``
  binds it) is read from its first offset by ``subscribe --since first
  --json '#' --count N > /dev/null`` (the whole command, start-up included),
  and by a bare pika consumer in a process of its own with the same prefetch
  (100, subscribe's), acking each message, stopped at offset N-1. Target:
  subscribe's rate >= 0.5x the bare consumer's, in the same run.
- seam: ``emit-log`` streams numbered lines from its standard input at
  --seam-rate lines/s for --seam-seconds; two thirds of the way in,
  ``subscribe --since 30s --json`` starts and runs until emit-log ends. Its
  window begins at the time its ``subscribed`` log line names; the lines
  kept with a timestamp from then on (read back from the stream afterwards)
  must be printed exactly once each, in order: any gap or duplicate, at the
  seam between history and live or anywhere else, is counted.
- retention: a stream kept with ``--max-bytes 200kB`` receives 10,000 lines;
  ``subscribe --since first`` must start where history now begins (an
  offset above 0) and say so, and exit 0.

It prints figures and never asserts a time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import pika

from bench.benchlib import AMQP_URL, fmt, raw_channel, save, summarize

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCHANGE = "bench.history"
STREAM = f"{EXCHANGE}.history"
PREFETCH = 100  # subscribe's DEFAULT_PREFETCH
LINE_BYTES = 100


def _env() -> dict:
    return dict(os.environ, AMQP_URL=AMQP_URL, RABBITRY_LOG_FORMAT="json", PYTHONPATH=ROOT)


def _rabbitry(*args: str) -> None:
    subprocess.run([os.path.join(BIN, "rabbitry"), *args], env=_env(), check=True, stdout=subprocess.DEVNULL)


def _retain(*limits: str) -> None:
    _rabbitry("logs", "retain", "--exchange", EXCHANGE, *limits)


def _forget() -> None:
    _rabbitry("logs", "forget", "--exchange", EXCHANGE, "--yes")
    connection, channel = raw_channel()
    channel.exchange_delete(EXCHANGE)
    connection.close()


def last_offset() -> int:
    """The stream's last offset (-1 if empty), read from a consumer at 'last'."""
    connection, channel = raw_channel()
    found = []
    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(
        STREAM,
        lambda _c, _m, properties, _b: found.append(properties.headers["x-stream-offset"]),
        arguments={"x-stream-offset": "last"},
    )
    deadline = time.monotonic() + 2
    while not found and time.monotonic() < deadline:
        connection.process_data_events(0.05)
    connection.close()
    return int(found[-1]) if found else -1


def prefill(n: int) -> None:
    """Publish n numbered lines through the exchange, without confirms; wait until the stream holds them."""
    connection, channel = raw_channel()
    properties = pika.BasicProperties(content_type="text/plain", timestamp=int(time.time()))
    for number in range(n):
        channel.basic_publish(EXCHANGE, "app.info", f"line {number:08d} ".encode().ljust(LINE_BYTES, b"x"), properties)
        if number % 10_000 == 0:
            connection.process_data_events(0)
    connection.close()
    while last_offset() < n - 1:
        time.sleep(0.2)


def bare_consumer_role(args) -> None:
    """The baseline: a bare pika consumer of the stream from its first offset, prefetch as subscribe's."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    last = args.n - 1

    def on_message(channel_, method, properties, _body):
        channel_.basic_ack(method.delivery_tag)
        if properties.headers["x-stream-offset"] >= last:
            # Done. Not stop_consuming() nor close(): pika would reject the deliveries it holds,
            # which a stream refuses by closing the connection.
            os._exit(0)

    channel.basic_consume(STREAM, on_message, arguments={"x-stream-offset": "first"})
    channel.start_consuming()


def run_replay(n: int) -> dict:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.bench_log_history", "bare-consumer", "--n", str(n), "--prefetch", str(PREFETCH)],
        env=_env(),
        check=True,
    )
    bare_rate = n / (time.perf_counter() - started)
    with open(os.devnull, "w") as devnull:
        started = time.perf_counter()
        subprocess.run(
            [
                os.path.join(BIN, "subscribe"),
                "--exchange",
                EXCHANGE,
                "--since",
                "first",
                "--json",
                "#",
                "--count",
                str(n),
            ],
            env=_env(),
            check=True,
            stdout=devnull,
            stderr=subprocess.DEVNULL,
        )
        ours = n / (time.perf_counter() - started)
    return {"bare_pika_rate": bare_rate, "subscribe_rate": ours, "ratio": ours / bare_rate}


def bench_replay(reps: int, n: int) -> dict:
    _retain()
    try:
        started = time.perf_counter()
        prefill(n)
        print(f"replay: prefilled {n:,} lines in {time.perf_counter() - started:.1f} s", flush=True)
        results = []
        for rep in range(reps):
            result = run_replay(n)
            results.append(result)
            print(
                f"replay rep {rep}: bare pika {result['bare_pika_rate']:,.0f} lines/s | subscribe --since first "
                f"--json {result['subscribe_rate']:,.0f} lines/s | ratio {result['ratio']:.2f}",
                flush=True,
            )
    finally:
        _forget()
    summary = {key: summarize(r[key] for r in results) for key in ("bare_pika_rate", "subscribe_rate", "ratio")}
    print(
        f"replay of {n:,} lines: bare pika {fmt(summary['bare_pika_rate'], ' lines/s')}, subscribe "
        f"{fmt(summary['subscribe_rate'], ' lines/s')}, ratio {fmt(summary['ratio'], '', 2)} (target >= 0.5)"
    )
    return {"reps": results, "summary": summary}


def _read_stream(count_at_least: int) -> list[dict]:
    """Every line of the stream, through subscribe --since first (offset, timestamp, body)."""
    result = subprocess.run(
        [os.path.join(BIN, "subscribe"), "--exchange", EXCHANGE, "--since", "first", "--json", "#", "--timeout", "2"],
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) >= count_at_least, (len(lines), count_at_least)
    return lines


def run_seam(rate: float, seconds: float) -> dict:
    _retain()
    try:
        emitter = subprocess.Popen(
            [os.path.join(BIN, "emit-log"), "--exchange", EXCHANGE, "app.info"], stdin=subprocess.PIPE, env=_env()
        )
        total = int(rate * seconds)
        start_subscriber_at = int(total * 2 / 3)
        subscriber = None
        out = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-bench-seam-")
        err = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-bench-seam-")
        begin = time.monotonic() + 0.1
        for number in range(total):
            target = begin + number / rate
            while (now := time.monotonic()) < target:
                time.sleep(max(0.0, min(0.002, target - now)))
            emitter.stdin.write(f"seq {number}\n".encode())
            emitter.stdin.flush()
            if number == start_subscriber_at:
                subscriber = subprocess.Popen(
                    [
                        os.path.join(BIN, "subscribe"),
                        "--exchange",
                        EXCHANGE,
                        "--since",
                        "30s",
                        "--json",
                        "#",
                        "--timeout",
                        "3",
                    ],
                    env=_env(),
                    stdout=out,
                    stderr=err,
                )
        emitter.stdin.close()
        emitter.wait(60)
        subscriber.wait(120)
        printed = [json.loads(line) for line in open(out.name)]
        events = [json.loads(line) for line in open(err.name) if line.startswith("{")]
        since = next(event["since"] for event in events if event.get("event") == "subscribed")
        since_ts = int(time.mktime(time.strptime(since, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone)
        kept = _read_stream(total)
        expected = [int(line["body"].split()[1]) for line in kept if line["properties"]["timestamp"] >= since_ts]
        got = [int(line["body"].split()[1]) for line in printed]
    finally:
        _forget()
    duplicates = len(got) - len(set(got))
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    return {
        "emitted": total,
        "window_lines": len(expected),
        "printed": len(got),
        "missing": len(missing),
        "duplicates": duplicates,
        "outside_window": len(extra),
        "in_order": got == sorted(got),
        "started_at_seq": start_subscriber_at,
        "first_printed_seq": got[0] if got else None,
        "exact": got == expected,
    }


def bench_seam(reps: int, rate: float, seconds: float) -> dict:
    results = []
    for rep in range(reps):
        result = run_seam(rate, seconds)
        results.append(result)
        print(
            f"seam rep {rep}: {result['emitted']} lines at {rate:.0f}/s; subscribe --since 30s started at seq "
            f"{result['started_at_seq']}, first printed seq {result['first_printed_seq']}; window "
            f"{result['window_lines']} lines, printed {result['printed']}: missing {result['missing']}, "
            f"duplicates {result['duplicates']}, outside the window {result['outside_window']}, "
            f"in order {result['in_order']} -> {'exact' if result['exact'] else 'NOT EXACT'}",
            flush=True,
        )
    return {"reps": results}


def bench_retention() -> dict:
    _retain("--max-bytes", "200kB")
    try:
        lines = "".join(f"retained line {number:06d} {'x' * 70}\n" for number in range(10_000))
        subprocess.run(
            [os.path.join(BIN, "emit-log"), "--exchange", EXCHANGE, "app.info"],
            input=lines.encode(),
            env=_env(),
            check=True,
        )
        result = subprocess.run(
            [
                os.path.join(BIN, "subscribe"),
                "--exchange",
                EXCHANGE,
                "--since",
                "first",
                "--json",
                "#",
                "--timeout",
                "2",
            ],
            env=_env(),
            capture_output=True,
            text=True,
        )
    finally:
        _forget()
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    said = [json.loads(line) for line in result.stderr.splitlines() if "history_begins" in line]
    figures = {
        "emitted": 10_000,
        "kept": len(printed),
        "first_offset": printed[0]["offset"] if printed else None,
        "said": said[0].get("detail") if said else None,
        "exit_status": result.returncode,
    }
    print(
        f"retention with --max-bytes 200kB: emitted 10,000 lines of ~100 bytes, {figures['kept']:,} kept from "
        f"offset {figures['first_offset']}; exit {figures['exit_status']}; subscribe said: {figures['said']}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    consumer = sub.add_parser("bare-consumer")
    consumer.add_argument("--n", type=int, required=True)
    consumer.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--n", type=int, default=1_000_000, help="lines for the replay benchmark")
    parser.add_argument("--seam-rate", type=float, default=1000)
    parser.add_argument("--seam-seconds", type=float, default=60)
    parser.add_argument("--only", default="replay,seam,retention")
    args = parser.parse_args()
    if args.role == "bare-consumer":
        bare_consumer_role(args)
        return
    only = set(args.only.split(","))
    results = {"args": vars(args)}
    if "replay" in only:
        results["replay"] = bench_replay(args.reps, args.n)
    if "seam" in only:
        results["seam"] = bench_seam(args.reps, args.seam_rate, args.seam_seconds)
    if "retention" in only:
        results["retention"] = bench_retention()
    print("saved", save("log_history", results))


if __name__ == "__main__":
    main()
