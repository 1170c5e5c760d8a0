"""``async def`` tasks for tests/test_coroutines.py (``--tasks tests.coroutine_tasks``).

The I/O ones talk to :class:`rabbitry.compare.server.SlowServer` on 127.0.0.1: real sockets, not sleeps.
"""

import asyncio
import os
import time

from rabbitry import task
from rabbitry.compare.server import call, call_async


@task(name="coro.fetch")
async def fetch(port: int, kind: str = "A") -> str:
    """Ask the slow server for an answer, on an asyncio socket."""
    return (await call_async(port, kind)).decode().strip()


@task(name="coro.fetch_blocking")
def fetch_blocking(port: int) -> str:
    """The same request from a plain function, on a blocking socket."""
    return call(port, "S").decode().strip()


@task(name="coro.too_slow", time_limit=0.5, max_retries=0)
async def too_slow(marker: str) -> None:
    """Wait past the half-second time limit; note the cancellation in ``marker``."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        with open(marker, "w") as note:
            note.write("cancelled")
        raise


@task(name="coro.block_the_loop")
async def block_the_loop(seconds: float) -> str:
    """A blocking call inside a coroutine: the mistake the worker reports."""
    time.sleep(seconds)
    return "woke up"


_attempts: dict[str, int] = {}


@task(name="coro.flaky")
async def flaky(key: str) -> str:
    """Fails on its first attempt in this process, succeeds on the next."""
    await asyncio.sleep(0)
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise ConnectionError("first attempt fails")
    return f"attempt {_attempts[key]}"


class Unfixable(Exception):
    """Raised by coro.refuse: retrying cannot help."""


@task(name="coro.refuse", dont_retry=(Unfixable,))
async def refuse() -> None:
    raise Unfixable("no retry can fix this")


@task(name="coro.wait")
async def wait(seconds: float) -> None:
    """Hold a slot of the loop for ``seconds``."""
    await asyncio.sleep(seconds)


@task(name="coro.stubborn", time_limit=1)
async def stubborn(marker: str) -> None:
    """Catch every cancellation and wait on: a coroutine its time limit cannot stop. Each attempt
    appends a line to ``marker``."""
    with open(marker, "a") as note:
        note.write("started\n")
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


@task(name="coro.large_result")
def large_result(count: int) -> list[int]:
    """A plain function with a large return value, which takes a while to encode."""
    return list(range(count))


@task(name="coro.block_the_loop_until")
async def block_the_loop_until(release: str) -> str:
    """The same mistake, for as long as the test needs: blocks the loop until the file ``release`` exists."""
    while not os.path.exists(release):
        time.sleep(0.05)
    return "released"


@task(name="coro.wait_for_release")
async def wait_for_release(release: str, seconds: float = 0.0) -> None:
    """Hold a slot of the loop, without blocking it, until the file ``release`` exists; then ``seconds`` more."""
    while not os.path.exists(release):
        await asyncio.sleep(0.05)
    await asyncio.sleep(seconds)
