"""Submitting tasks to a work queue, from Python or from ``new-task``."""

from collections.abc import Iterable, Iterator

from rabbitry.common.errors import PublishFailed, Unroutable
from rabbitry.common.messages import MAX_MESSAGE_BYTES, TaskMessage
from rabbitry.common.publisher import ReliablePublisher
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_QUEUE_TYPE, DEFAULT_TASK_QUEUE, work_queue


class TaskSubmitter:
    """Publishes tasks to a durable work queue; every one confirmed by the broker.

    ``submit`` pipelines: it returns before the confirm arrives. ``flush``
    (called by ``close`` and on leaving a ``with`` block) waits for every
    confirm and raises if any task was refused or had no queue to go to, so
    a clean exit means every task is safely queued.
    """

    def __init__(self, settings: BrokerSettings, queue: str = DEFAULT_TASK_QUEUE,
                 queue_type: str = DEFAULT_QUEUE_TYPE, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 on_confirmed=None):
        self.queue = queue
        self.max_message_bytes = max_message_bytes
        self._publisher = ReliablePublisher(settings, work_queue(queue, queue_type), name="rabbitry-new-task",
                                            on_confirmed=on_confirmed)

    def connect(self) -> "TaskSubmitter":
        """Connect and declare the work queue; fails at once if the broker is down."""
        self._publisher.connect()
        return self

    def submit(self, message: TaskMessage) -> str:
        """Queue one task; return its id."""
        self._publisher.publish(message.to_outgoing(self.queue, self.max_message_bytes), mandatory=True)
        return message.id

    def submit_many(self, messages: Iterable[TaskMessage]) -> Iterator[str]:
        """Queue each task in turn, yielding its id."""
        for message in messages:
            yield self.submit(message)

    def flush(self) -> None:
        """Wait for every confirm; raise PublishFailed/Unroutable for refused tasks."""
        failures = self._publisher.flush()
        if failures:
            first = failures[0]
            error = Unroutable if first.reason == "unroutable" else PublishFailed
            raise error(f"{len(failures)} task(s) not queued: {first.reason} (queue {self.queue!r}; "
                        f"first task id {first.message.message_id})")

    @property
    def confirmed_count(self) -> int:
        """Tasks the broker has confirmed so far."""
        return self._publisher.confirmed_count

    def close(self) -> None:
        self._publisher.close()

    def __enter__(self):
        return self.connect()

    def __exit__(self, exc_type, *_):
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()
