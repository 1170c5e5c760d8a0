"""The coroutine tasks of ``rabbitry compare``: the workloads as ``@task async def``.

Run by ``worker --concurrency N``, which awaits up to N of them at a time in
each pool process; a module apart from :mod:`rabbitry.compare.tasks` so that
only the coroutine worker imports it. Their names are the blocking tasks'
with ``_async`` appended.
"""

from rabbitry.compare.tasks import fetch_async, mark_executed, noop_async, spin_async
from rabbitry.tasks import task


@task(name="compare.noop_async")
async def noop_async_task(counter: str) -> None:
    """The no-op workload, awaited by the worker."""
    await noop_async()
    mark_executed(counter)


@task(name="compare.cpu_async")
async def spin_async_task(counter: str) -> None:
    """The CPU-bound loop, awaited by the worker (it never yields the loop)."""
    await spin_async()
    mark_executed(counter)


@task(name="compare.io_async")
async def fetch_async_task(port: int, counter: str) -> None:
    """The I/O-bound call, awaited by the worker."""
    await fetch_async(port)
    mark_executed(counter)
