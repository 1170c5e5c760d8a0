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


class TaskCompletion:
    """The submitter's side of one :class:`TaskHandle`: its state, and the steps that complete it.

    The submitter makes one per task, hands it to the handle, and keeps it (not
    the handle) while the task is in flight or awaits its reply; its I/O
    thread calls these methods holding the lock under ``changed``, then
    notifies ``changed`` and calls :meth:`tell_watchers` outside it. Users meet
    only the handle.
    """

    __slots__ = ("task_id", "changed", "confirmed", "error", "outcome", "result_error", "watchers", "__weakref__")

    def __init__(self, task_id: str, changed: threading.Condition):
        self.task_id = task_id
        self.changed = changed  # the submitter's: notified whenever a task is confirmed, refused or answered
        self.confirmed = False
        self.error: RabbitryError | None = None  # why the broker did not take the task
        self.outcome: TaskOutcome | None = None
        self.result_error: RabbitryError | None = None  # why no reply can come
        self.watchers: list[Callable[[], None]] = []

    @property
    def ready(self) -> bool:
        """True once the result (or the failure that replaces it) is here."""
        return self.error is not None or self.outcome is not None or self.result_error is not None

    def confirm(self) -> None:
        """The broker confirmed the task: it is queued."""
        self.confirmed = True

    def refuse(self, error: RabbitryError) -> None:
        """The broker did not take the task (or it never reached it), for ``error``."""
        self.error = error

    def answer(self, outcome: TaskOutcome) -> None:
        """The task's reply came."""
        self.outcome = outcome

    def lose_result(self, error: RabbitryError) -> None:
        """No reply can come any more, for ``error``."""
        self.result_error = error

    def tell_watchers(self) -> None:
        """Call each watcher the handle was given (see :meth:`TaskHandle.watch`)."""
        for watcher in self.watchers:
            watcher()


class TaskHandle:
    """A submitted task: its id, the broker's confirm, and its result if one was asked for.

    ``str(handle)`` is the task id, and a handle equals (and hashes like) its id
    string, as Celery's ``AsyncResult`` does, so code that kept the id that
    ``submit()`` used to return keeps working.
    """

    __slots__ = ("id", "wants_result", "_completion", "_changed", "__weakref__")

    def __init__(self, completion: TaskCompletion, wants_result: bool = False):
        self.id = completion.task_id
        self.wants_result = wants_result
        self._completion = completion  # the submitter completes it; the handle only reads it
        self._changed = completion.changed

    # -- what the caller asks ---------------------------------------------------
    @property
    def confirmed(self) -> bool:
        """True once the broker confirmed the task is queued."""
        return self._completion.confirmed

    @property
    def settled(self) -> bool:
        """True once the broker confirmed the task or refused it."""
        return self._completion.confirmed or self._completion.error is not None

    @property
    def ready(self) -> bool:
        """True once the result (or the failure that replaces it) is here."""
        return self._completion.ready

    def wait_confirmed(self, timeout: float | None = None) -> "TaskHandle":
        """Block until the broker confirmed the task; raise PublishFailed/Unroutable if it refused it,
        TimeoutError if ``timeout`` seconds pass first."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.settled, timeout):
                raise TimeoutError(f"task {self.id} was not confirmed within {timeout:g} s")
        if self._completion.error is not None:
            raise self._completion.error
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
        completion = self._completion
        for error in (completion.error, completion.result_error):
            if error is not None:
                raise error
        if completion.outcome is None:
            raise TimeoutError(f"no result for task {self.id} yet")
        if not completion.outcome.succeeded:
            raise TaskFailed(completion.outcome)
        return completion.outcome.value

    def watch(self, watcher: Callable[[], None]) -> None:
        """Call ``watcher`` (from the submitter's I/O thread) whenever this handle changes."""
        self._completion.watchers.append(watcher)

    # -- behaving as the id string ---------------------------------------------
    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        completion = self._completion
        state = "failed" if completion.error else "confirmed" if completion.confirmed else "pending"
        return f"<TaskHandle {self.id} {state}>"

    def __eq__(self, other) -> bool:
        if isinstance(other, TaskHandle):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)
