"""``new-task --wait``: each task's result as one JSON line beside its id.

Ctrl-C ends the wait at once: each task whose result was not had yet gets a
line with status ``interrupted``, so every id is printed, and the summary
says how many.
"""

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from rabbitry.common.errors import RabbitryError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.producers.handles import TaskFailed, TaskHandle
from rabbitry.producers.submitter import TaskSubmitter


@dataclass
class Waited:
    """How the waited-for tasks ended."""

    planned: int
    queued: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    interrupted: int = 0  # results not waited for: Ctrl-C came first
    submitted: int = 0

    @property
    def all_succeeded(self) -> bool:
        return self.succeeded == self.planned

    def summary(self) -> str:
        """The one line that says what became of the tasks and of their results."""
        return (
            f"summary: {self.queued} queued, {self.planned - self.submitted} not sent; "
            f"{self.succeeded} succeeded, {self.failed} failed, {self.timed_out} timed out, "
            f"{self.interrupted} interrupted"
        )


def result_line(handle: TaskHandle) -> tuple[str, dict]:
    """The result of a ``handle`` that is ready: ("succeeded" | "failed", its JSON line)."""
    try:
        return "succeeded", {"id": handle.id, "status": "succeeded", "result": handle.outcome()}
    except TaskFailed as failed:
        return "failed", {
            "id": handle.id,
            "status": "failed",
            "reason": failed.reason,
            "error_type": failed.error_type,
            "error": failed.error_message,
        }
    except RabbitryError as error:  # not queued, or its reply can no longer come
        return "failed", {"id": handle.id, "status": "failed", "reason": type(error).__name__, "error": str(error)}


def settle(handle: TaskHandle, deadline: float, wake: threading.Event, interrupted: Callable[[], bool]) -> str:
    """Wait for ``handle``'s result until ``deadline`` (monotonic) or an interruption:
    "ready", "timed_out" or "interrupted". ``wake`` is set whenever either may have come."""
    handle.watch(wake.set)
    while True:
        wake.clear()  # before looking, so that what changes after the look sets it again
        if interrupted():
            return "interrupted"
        if handle.ready:
            return "ready"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timed_out"
        wake.wait(remaining)


def print_results(
    handles: list[TaskHandle],
    timeout: float,
    out: TextIO,
    waited: Waited,
    wake: threading.Event,
    interrupted: Callable[[], bool],
) -> None:
    """Print each task's result in submission order, waiting ``timeout`` seconds in all, counting in ``waited``."""
    deadline = time.monotonic() + timeout
    for handle in handles:
        state = settle(handle, deadline, wake, interrupted)
        if state == "ready":
            state, line = result_line(handle)
        else:
            line = {"id": handle.id, "status": state}
        setattr(waited, state, getattr(waited, state) + 1)
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
    waited.queued = sum(handle.confirmed for handle in handles)


def queue_and_wait(
    settings: BrokerSettings,
    queue: str,
    queue_type: str,
    messages: Iterable[TaskMessage],
    timeout: float,
    out: TextIO,
    waited: Waited,
    wake: threading.Event,
    interrupted: Callable[[], bool] = lambda: False,
    close_timeout: float | None = None,
) -> None:
    """Queue every task asking for its result, then print each result as it is had, counting in ``waited``.

    ``wake`` is set by whatever interrupts (``interrupted()`` then says so): no
    more tasks are submitted, and no more results awaited. Closing waits up to
    ``close_timeout`` (default: the submitter's) for confirms still due.
    """
    submitter = TaskSubmitter(settings, queue, queue_type, results=True).connect()
    try:
        handles = []
        for message in messages:
            if interrupted():
                break
            handles.append(submitter.submit(message))
            waited.submitted += 1
        print_results(handles, timeout, out, waited, wake, interrupted)  # before closing: replies come over it
    finally:
        # Every task whose result was printed is confirmed; the others are counted as they stand.
        submitter.close(close_timeout)
