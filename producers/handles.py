"""What ``submit()`` and ``.delay()`` return: a handle on one submitted task."""

import threading
from collections.abc import Callable
from typing import Any

from rabbitry.common.errors import ConfigurationError, RabbitryError
from rabbitry.common.replies import TaskOutcome


class TaskFailed(RabbitryError):
    """The task was dead-lettered: its retries were spent, or it could not run at all.

    ``error_type`` and ``error_message`` are the remote exception's (``"ValueError"``,
    ``"no such image"``); ``reason`` is the dead letter's (``"retries_exhausted"``, ...).
    """

    def __init__(self, outcome: TaskOutcome):
        self.task_id = outcome.task_id
        self.reason = outcome.reason
        self.error_type = outcome.error_type
        self.error_message = outcome.error_message
        super().__init__(f"task {outcome.task_id} failed ({outcome.reason}): {outcome.error}")


class ResultLost(RabbitryError):
    """The connection that was to carry the task's reply was lost: the task may
    still run, but its result can no longer reach this caller."""


class ResultNotRequested(ConfigurationError):
    """``get()`` on a task submitted without asking for its result."""


class TaskHandle:
    """A submitted task: its id, the broker's confirm, and its result if one was asked for.

    ``str(handle)`` is the task id, and a handle equals (and hashes like) its id
    string, as Celery's ``AsyncResult`` does, so code that kept the id that
    ``submit()`` used to return keeps working.
    """

    __slots__ = (
        "id",
        "wants_result",
        "_changed",
        "_confirmed",
        "_error",
        "_outcome",
        "_result_error",
        "_watchers",
        "__weakref__",
    )

    def __init__(self, task_id: str, changed: threading.Condition, wants_result: bool = False):
        self.id = task_id
        self.wants_result = wants_result
        self._changed = changed  # the submitter's: notified whenever a handle settles
        self._confirmed = False
        self._error: RabbitryError | None = None  # why the broker did not take the task
        self._outcome: TaskOutcome | None = None
        self._result_error: RabbitryError | None = None  # why no reply can come
        self._watchers: list[Callable[[], None]] = []

    # -- what the caller asks ---------------------------------------------------
    @property
    def confirmed(self) -> bool:
        """True once the broker confirmed the task is queued."""
        return self._confirmed

    @property
    def settled(self) -> bool:
        """True once the broker confirmed the task or refused it."""
        return self._confirmed or self._error is not None

    @property
    def ready(self) -> bool:
        """True once the result (or the failure that replaces it) is here."""
        return self._error is not None or self._outcome is not None or self._result_error is not None

    def wait_confirmed(self, timeout: float | None = None) -> "TaskHandle":
        """Block until the broker confirmed the task; raise PublishFailed/Unroutable if it refused it,
        TimeoutError if ``timeout`` seconds pass first."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.settled, timeout):
                raise TimeoutError(f"task {self.id} was not confirmed within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self

    def get(self, timeout: float | None = None) -> Any:
        """The task's return value (JSON), once a worker ran it.

        Raises TaskFailed once the task is dead-lettered, TimeoutError if
        ``timeout`` seconds pass first (the task still runs), ResultLost if the
        connection that was to carry the reply went away.
        """
        if not self.wants_result:
            raise ResultNotRequested(
                f"task {self.id} was submitted without asking for its result (TaskSubmitter(..., results=True))"
            )
        with self._changed:
            if not self._changed.wait_for(lambda: self.ready, timeout):
                raise TimeoutError(f"no result for task {self.id} within {timeout:g} s (it may still run)")
        return self.outcome()

    def outcome(self) -> Any:
        """The result if it is here (see :meth:`get`), without waiting."""
        for error in (self._error, self._result_error):
            if error is not None:
                raise error
        if self._outcome is None:
            raise TimeoutError(f"no result for task {self.id} yet")
        if not self._outcome.succeeded:
            raise TaskFailed(self._outcome)
        return self._outcome.value

    # -- what the submitter's I/O thread tells it (holding the submitter's lock) --
    def watch(self, watcher: Callable[[], None]) -> None:
        """Call ``watcher`` (from the submitter's I/O thread) whenever this handle changes."""
        self._watchers.append(watcher)

    def _settle(self, error: RabbitryError | None = None) -> None:
        if error is None:
            self._confirmed = True
        else:
            self._error = error

    def _answer(self, outcome: TaskOutcome | None = None, error: RabbitryError | None = None) -> None:
        self._outcome, self._result_error = outcome, error

    def _tell_watchers(self) -> None:
        for watcher in self._watchers:
            watcher()

    # -- behaving as the id string ---------------------------------------------
    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        state = "failed" if self._error else "confirmed" if self._confirmed else "pending"
        return f"<TaskHandle {self.id} {state}>"

    def __eq__(self, other) -> bool:
        if isinstance(other, TaskHandle):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)
