"""Tasks for the benchmarks: ``bench_count`` marks one execution in the counter file."""

import os
import time

from bench.benchlib import COUNTER_PATH, mark_executed
from rabbitry.compare.server import call
from rabbitry.tasks import task

FAIR_LOG = "/tmp/rabbitry-bench-fair"


@task
def bench_count() -> None:
    mark_executed(COUNTER_PATH)


@task
def bench_sleep(seconds: float) -> None:
    """Sleep, then record when this task ended (for makespans)."""
    time.sleep(seconds)
    mark_executed(FAIR_LOG, b"%.6f\n" % time.time())


LATENCY_LOG = os.environ.setdefault("BENCH_LATENCY", "/tmp/rabbitry-bench-latency")


@task
def bench_latency(sent_ns: int) -> None:
    """Record the nanoseconds from submit() to this task's start."""
    mark_executed(LATENCY_LOG, b"%d\n" % (time.monotonic_ns() - sent_ns))


@task
def bench_io_blocking(port: int) -> None:
    """One request to the slow server on 127.0.0.1 (real I/O), from a plain function on a blocking socket."""
    call(port)
    mark_executed(COUNTER_PATH)
