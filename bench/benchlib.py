"""Shared helpers for rabbitry's benchmarks, after the method of the peers' anchor benchmarks.

Completion is counted the way the anchor benchmarks count it: each task
execution appends one byte to a file opened with O_APPEND, and the driver
polls the file's size.
"""

import json
import os
import statistics
import time

import pika

AMQP_URL = os.environ.get("BENCH_AMQP_URL", os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
RESULTS_DIR = os.environ.get("BENCH_RESULTS_DIR", os.path.join(os.path.dirname(__file__), "results"))
COUNTER_PATH = os.environ.setdefault("BENCH_COUNTER", "/tmp/rabbitry-bench-counter")


def summarize(values) -> dict:
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def fmt(summary: dict, unit: str = "", digits: int = 0) -> str:
    f = f"{{:,.{digits}f}}"
    return f"{f.format(summary['median'])}{unit} ({f.format(summary['min'])}–{f.format(summary['max'])})"


def save(name: str, data: dict) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name + ".json")
    with open(path, "w") as out:
        json.dump(data, out, indent=2)
    return path


def raw_channel():
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    return connection, connection.channel()


def queue_state(queue: str) -> tuple[int | None, int]:
    """(ready messages, consumers), or (None, 0) if the queue does not exist."""
    connection, channel = raw_channel()
    try:
        result = channel.queue_declare(queue, passive=True)
        return result.method.message_count, result.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return None, 0
    finally:
        if connection.is_open:
            connection.close()


def delete_queues(*names: str) -> None:
    connection, channel = raw_channel()
    for name in names:
        channel.queue_delete(name)
    connection.close()


def delete_exchanges(*names: str) -> None:
    connection, channel = raw_channel()
    for name in names:
        channel.exchange_delete(name)
    connection.close()


def wait_for_consumers(queue: str, count: int, process=None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while queue_state(queue)[1] < count:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"worker for {queue} exited with {process.returncode}")
        if time.time() > deadline:
            raise TimeoutError(f"no {count} consumers on {queue}")
        time.sleep(0.1)


class Counter:
    """Executions counted as bytes appended to one file (atomic O_APPEND writes)."""

    def __init__(self, path: str = COUNTER_PATH):
        self.path = path

    def reset(self) -> None:
        open(self.path, "wb").close()

    def count(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def wait_for(self, n: int, timeout: float = 600, poll: float = 0.002) -> float:
        deadline = time.perf_counter() + timeout
        while (count := self.count()) < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"counter reached only {count} of {n}")
            time.sleep(poll)
        return time.perf_counter()


_fds: dict[tuple[int, str], int] = {}


def mark_executed(path: str = COUNTER_PATH, data: bytes = b"x") -> None:
    """Called inside task bodies: one unbuffered O_APPEND write."""
    key = (os.getpid(), path)
    fd = _fds.get(key)
    if fd is None:
        fd = _fds[key] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, data)
