"""Coroutine tasks for bench/bench_coroutines.py, in a module of their own: a worker that
registers any ``async def`` task runs the event loop, so the plain tasks' benchmarks must not
import these."""

from bench.benchlib import COUNTER_PATH, mark_executed
from rabbitry.compare.server import call_async
from rabbitry.tasks import task


@task
async def bench_count_async() -> None:
    """bench_count as a coroutine."""
    mark_executed(COUNTER_PATH)


@task
async def bench_io(port: int) -> None:
    """One request to the slow server on 127.0.0.1 (real I/O), on an asyncio socket."""
    await call_async(port)
    mark_executed(COUNTER_PATH)
