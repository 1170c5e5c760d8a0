"""Submitting tasks from asyncio programs (FastAPI, aiohttp, ...), never blocking the event loop.

:class:`AsyncTaskSubmitter` is a :class:`~rabbitry.producers.submitter.TaskSubmitter`
seen from a coroutine: the same I/O thread owns the connection, so the two
behave alike (prompt publishing, confirms, reconnecting, direct reply-to
results) on RabbitMQ and on the in-process broker. Handing a task over is a
deque append, done on the loop; whatever may wait (connecting, a full
confirm window, closing) runs in the loop's executor, and a handle's
confirm or result reaches the loop through ``call_soon_threadsafe``.
"""

import asyncio
import functools
from typing import Any

from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.producers.handles import TaskHandle
from rabbitry.producers.submitter import TaskSubmitter


class AsyncTaskHandle:
    """A :class:`~rabbitry.producers.handles.TaskHandle` whose waits are awaitable."""

    def __init__(self, handle: TaskHandle, loop: asyncio.AbstractEventLoop):
        self.handle = handle
        self.id = handle.id
        self._loop = loop
        self._changed = asyncio.Event()
        handle.watch(self._on_change)  # before looking at its state, so no change is missed

    def _on_change(self) -> None:  # on the submitter's I/O thread
        try:
            self._loop.call_soon_threadsafe(self._changed.set)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits this handle any more

    async def _until(self, predicate, timeout: float | None, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
                    self._changed.clear()
        except TimeoutError:
            raise TimeoutError(f"{what} for task {self.id} within {timeout:g} s") from None

    @property
    def confirmed(self) -> bool:
        return self.handle.confirmed

    async def wait_confirmed(self, timeout: float | None = None) -> "AsyncTaskHandle":
        """Wait until the broker confirmed the task (see :meth:`TaskHandle.wait_confirmed`)."""
        handle = self.handle
        await self._until(lambda: handle.settled, timeout, "no confirm")
        handle.wait_confirmed(0)  # raises if the broker refused it
        return self

    async def get(self, timeout: float | None = None) -> Any:
        """The task's return value (see :meth:`TaskHandle.get`)."""
        if self.handle.wants_result:
            await self._until(lambda: self.handle.ready, timeout, "no result (it may still run)")
        return self.handle.get(0)

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncTaskHandle {self.id}>"

    def __eq__(self, other) -> bool:
        return self.handle == (other.handle if isinstance(other, AsyncTaskHandle) else other)

    def __hash__(self) -> int:
        return hash(self.id)


class AsyncTaskSubmitter:
    """:class:`TaskSubmitter` for coroutines: ``await submitter.submit(message)``.

    Takes the same arguments as :class:`TaskSubmitter`; use it as
    ``async with AsyncTaskSubmitter(settings, results=True) as submitter:``.
    """

    def __init__(self, settings: BrokerSettings, *args, **options):
        self.submitter = TaskSubmitter(settings, *args, **options)

    @classmethod
    def around(cls, submitter: TaskSubmitter) -> "AsyncTaskSubmitter":
        """The asyncio face of an existing submitter (threads and coroutines may share it)."""
        wrapper = cls.__new__(cls)
        wrapper.submitter = submitter
        return wrapper

    async def _off_the_loop(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))

    async def connect(self) -> "AsyncTaskSubmitter":
        """Start the I/O thread and connect (in the executor)."""
        await self._off_the_loop(self.submitter.connect)
        return self

    async def submit(self, message: TaskMessage) -> AsyncTaskHandle:
        """Queue one task; return its handle once handed to the I/O thread."""
        submitter = self.submitter
        if submitter.ready_for_more():
            handle = submitter.submit(message)
        else:  # not connected yet, or the confirm window is full: that waits, so not on the loop
            handle = await self._off_the_loop(submitter.submit, message)
        return AsyncTaskHandle(handle, asyncio.get_running_loop())

    async def flush(self, timeout: float | None = None) -> None:
        """Wait for every confirm (see :meth:`TaskSubmitter.flush`)."""
        await self._off_the_loop(self.submitter.flush, timeout)

    async def close(self, timeout: float | None = None) -> int:
        """Flush for a bounded time and close (see :meth:`TaskSubmitter.close`)."""
        return await self._off_the_loop(self.submitter.close, timeout)

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, exc_type, *_):
        try:
            if exc_type is None:
                await self.flush(self.submitter.close_timeout)
        finally:
            await self.close()
