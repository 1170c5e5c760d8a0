"""Queueing a batch of tasks, as ``new-task`` does, with an account of what became of each.

Every task ends in one of four states: queued (the broker confirmed it),
refused (a full queue said no), unconfirmed (published, but the connection
ended before the broker answered: it may or may not be queued), or not sent.
:class:`BatchAccount` keeps the count; :func:`outcome` turns it and the error
that ended the batch, if any, into an exit code.
"""

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rabbitry.common.errors import ExitCode, PublishFailed, QueueFull, RabbitryError, Unroutable
from rabbitry.common.messages import MAX_MESSAGE_BYTES, TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import work_queue
from rabbitry.common.transport.contract import OutgoingMessage, PublishFailure
from rabbitry.producers.publisher import REFUSED, ReliablePublisher

#: What ``--on-refused`` may say: stop at the first refused task, or go on with the others.
ON_REFUSED = ("stop", "continue")


@dataclass
class BatchAccount:
    """What became of the tasks of one batch."""

    planned: int
    submitted: int = 0
    queued: int = 0
    refused: int = 0
    failures: list[PublishFailure] = field(default_factory=list)  # unroutable, nacked, unpublishable

    @property
    def unconfirmed(self) -> int:
        """Published tasks the broker neither confirmed nor refused: they may or may not be queued."""
        return self.submitted - self.queued - self.refused - len(self.failures)

    @property
    def not_sent(self) -> int:
        return self.planned - self.submitted

    def summary(self) -> str:
        """The one line that says what became of the batch."""
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return (
            f"summary: {self.queued} queued, {self.refused} refused{failed}, {self.unconfirmed} unconfirmed "
            f"(may or may not be queued), {self.not_sent} not sent"
        )


def outcome(account: BatchAccount, error: RabbitryError | None) -> ExitCode:
    """The exit code of a batch: the error that ended it, else what the broker refused."""
    if error is not None:
        return error.exit_code
    if account.refused:
        return ExitCode.QUEUE_FULL
    if any(f.reason == "unroutable" for f in account.failures):
        return ExitCode.UNROUTABLE
    if account.failures or account.unconfirmed or account.not_sent:
        return ExitCode.FAILURE
    return ExitCode.OK


class TaskBatch:
    """Publishes a batch of tasks to a work queue, each confirmed by the broker, keeping ``account``.

    ``on_queued`` gets each batch of confirmed messages as the confirms arrive,
    and ``on_refused`` each message a full queue refused. With ``on_refused``
    policy "stop", the first refusal ends the batch (what is in flight is
    still confirmed or refused, and counted). Setting ``stop`` interrupts it: the call raises Interrupted.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        queue: str,
        queue_type: str,
        account: BatchAccount,
        on_queued: Callable[[list[OutgoingMessage]], None],
        on_refused: Callable[[OutgoingMessage], None],
        refused_policy: str = "stop",
        stop: threading.Event | None = None,
    ):
        self.queue = queue
        self.account = account
        self.refused_policy = refused_policy
        self._on_queued = on_queued
        self._on_refused = on_refused
        self._stop = stop or threading.Event()
        self._publisher = ReliablePublisher(
            settings,
            work_queue(queue, queue_type),
            name="rabbitry-new-task",
            on_confirmed=self._confirmed,
            stop=self._stop,
        )

    def connect(self) -> "TaskBatch":
        """Connect and declare the work queue; fails at once if the broker is down."""
        self._publisher.connect()
        return self

    def submit(self, messages: Iterable[TaskMessage], progress: Callable[[int], None] | None = None) -> None:
        """Publish each task, then wait for every confirm; raise for what was not queued."""
        account, queue, stop_at_refusal = self.account, self.queue, self.refused_policy == "stop"
        publish, take_failures, stopped = self._publisher.publish, self._publisher.take_failures, self._stop.is_set
        for message in messages:
            if stopped() or stop_at_refusal and account.refused:
                break
            publish(message.to_outgoing(queue, MAX_MESSAGE_BYTES), True)
            account.submitted += 1
            failures = take_failures()
            if failures:
                self._count_failures(failures)
            if progress is not None:
                progress(1)
        self.flush()

    def flush(self) -> None:
        """Wait for every confirm; raise QueueFull, Unroutable or PublishFailed for tasks not queued."""
        self._count_failures(self._publisher.flush())
        account = self.account
        if account.refused:
            stopped = " (stopped at the first: --on-refused continue goes on)" if self.refused_policy == "stop" else ""
            raise QueueFull(
                f"queue {self.queue!r} is full and refused {account.refused} task(s){stopped}: it has "
                "x-max-length with overflow reject-publish"
            )
        if account.failures:
            first = account.failures[0]
            error = Unroutable if first.reason == "unroutable" else PublishFailed
            raise error(
                f"{len(account.failures)} task(s) not queued: {first.reason} (queue {self.queue!r}; "
                f"first task id {first.message.message_id})"
            )

    def close(self) -> None:
        self._publisher.close()

    def _confirmed(self, messages: list[OutgoingMessage]) -> None:
        self.account.queued += len(messages)
        self._on_queued(messages)

    def _count_failures(self, failures: list[PublishFailure]) -> None:
        """Count each task a full queue refused, and keep every other failure to report."""
        for failure in failures:
            if failure.reason == REFUSED:
                self.account.refused += 1
                self._on_refused(failure.message)
            else:
                self.account.failures.append(failure)
