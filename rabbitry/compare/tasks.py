"""The three workloads of ``rabbitry compare``'s concurrency experiment, and the tasks that run them.

- no-op: nothing at all, so only the form's own overhead is measured;
- CPU-bound: a fixed pure-Python loop of about 5 ms, which holds the
  interpreter lock all along;
- I/O-bound: one call to the slow server (:mod:`rabbitry.compare.server`),
  about 50 ms of waiting.

Each has a blocking form, for threads and processes (module-level, so that a
process pool can pickle it), and a coroutine form, for asyncio. The tasks
registered here run the blocking forms in rabbitry's worker and mark each
execution with one byte appended to a counter file, as the peers'
benchmarks count them; :mod:`rabbitry.compare.async_tasks` holds the
coroutine tasks.
"""

import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rabbitry.compare.server import call, call_async
from rabbitry.tasks import task

#: Steps of the CPU-bound loop: about 5 ms of one core on the 2-core VM of docs/benchmarks.md.
CPU_LOOP_STEPS = 55_000


def noop(_item=None) -> None:
    """The no-op workload."""


def spin(_item=None) -> int:
    """The CPU-bound workload: a fixed pure-Python loop."""
    total = 0
    for step in range(CPU_LOOP_STEPS):
        total += step * step
    return total


def fetch(port: int, _item=None) -> bytes:
    """The I/O-bound workload: one request to the slow server at ``port``."""
    return call(port)


async def noop_async() -> None:
    """The no-op workload as a coroutine."""


async def spin_async() -> int:
    """The CPU-bound loop in a coroutine: it never awaits, so it holds the event loop too."""
    return spin()


async def fetch_async(port: int) -> bytes:
    """The I/O-bound workload as a coroutine."""
    return await call_async(port)


@dataclass(frozen=True)
class Workload:
    """One workload in every form: blocking, coroutine, and as rabbitry tasks with their arguments."""

    label: str
    blocking: Callable[..., object]
    coroutine: Callable[[], Awaitable]
    task: str
    task_args: tuple = ()


def workloads(port: int) -> dict[str, Workload]:
    """The three workloads, the I/O-bound one calling the slow server at ``port``."""
    return {
        "noop": Workload("no-op", noop, noop_async, "compare.noop"),
        "cpu": Workload("CPU-bound, ~5 ms loop", spin, spin_async, "compare.cpu"),
        "io": Workload(
            "I/O-bound, 50 ms server",
            functools.partial(fetch, port),
            functools.partial(fetch_async, port),
            "compare.io",
            (port,),
        ),
    }


_counter_files: dict[tuple[int, str], int] = {}


def mark_executed(counter: str) -> None:
    """One unbuffered O_APPEND byte to ``counter``: atomic, so processes and threads can share it."""
    key = (os.getpid(), counter)
    if key not in _counter_files:
        _counter_files[key] = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(_counter_files[key], b"x")


@task(name="compare.noop")
def noop_task(counter: str) -> None:
    """The no-op workload in rabbitry's worker."""
    mark_executed(counter)


@task(name="compare.cpu")
def spin_task(counter: str) -> None:
    """The CPU-bound workload in rabbitry's worker."""
    spin()
    mark_executed(counter)


@task(name="compare.io")
def fetch_task(port: int, counter: str) -> None:
    """The I/O-bound workload in rabbitry's worker."""
    fetch(port)
    mark_executed(counter)
