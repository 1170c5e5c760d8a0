"""The tasks a submitter awaits a reply for, by direct reply-to, and what becomes of them.

A reply comes only on the connection that published its task, so a task
confirmed on a connection since lost can have no reply any more; one refused
never runs. Each task is held by its handle's completion, weakly: once the
caller drops the handle, nobody can read the reply, and it is dropped.
"""

import weakref

from rabbitry.common.errors import RabbitryError
from rabbitry.common.replies import TaskOutcome
from rabbitry.producers.handles import ResultLost, TaskCompletion


class AwaitedReplies:
    """The completions waiting for their task's reply; the submitter calls every method holding its lock."""

    def __init__(self) -> None:
        self._waiting: weakref.WeakValueDictionary[str, TaskCompletion] = weakref.WeakValueDictionary()

    def expect(self, completion: TaskCompletion) -> None:
        """Wait for a reply to ``completion``'s task."""
        self._waiting[completion.task_id] = completion

    def forget(self, task_id: str) -> None:
        """Stop waiting: the task was refused, so no reply will come."""
        self._waiting.pop(task_id, None)

    def answer(self, outcome: TaskOutcome) -> TaskCompletion | None:
        """Hand ``outcome`` to its task's completion and return it; None if nobody waits for it."""
        completion = self._waiting.pop(outcome.task_id, None)
        if completion is not None:
            completion.answer(outcome)
        return completion

    def lose_confirmed(self, error: ResultLost) -> None:
        """A new connection: replies to the tasks confirmed on the lost one had only it to go to."""
        for task_id, completion in list(self._waiting.items()):
            if completion.confirmed:
                del self._waiting[task_id]
                completion.lose_result(error)

    def lose_all(self, error: RabbitryError) -> list[TaskCompletion]:
        """No reply can come any more: complete every waiting task with ``error``; return those completed."""
        lost = []
        for completion in list(self._waiting.values()):
            if not completion.ready:
                completion.lose_result(error)
                lost.append(completion)
        self._waiting.clear()
        return lost
