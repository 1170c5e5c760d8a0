"""The task thread of a pool process that runs plain functions: one task at a time.

It takes the batches the connection thread hands over and runs each one to
its end, a task at a time, in delivery order, putting what became of each
delivery in the outbox (see :mod:`workers.handover`). Because tasks finish in
delivery order, the connection thread acknowledges a run of successes with a
single ``multiple`` ack.

A plain function cannot be interrupted: the connection thread asks
:meth:`TaskThread.overdue` every tick, and ends the process over a task past
its time limit. What every delivery goes through before and after it runs
(decoding, the crash limit, the outcome) is here too, and the event loop of
:mod:`workers.coroutines` uses it, as it uses :meth:`TaskThread.run_plain` for
the plain functions it is given.
"""

import time
import traceback

import structlog

from rabbitry.common.messages import TaskMessage
from rabbitry.common.transport.contract import Delivery
from rabbitry.workers import metrics
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import (
    Disposition,
    TaskRun,
    crash_limit_reached,
    dead_letter,
    decode,
    failure,
    run_task,
    succeeded,
)
from rabbitry.workers.handover import Handover
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.prefetch import AdaptivePrefetch

log = structlog.get_logger("rabbitry.worker")


class TaskThread:
    """Runs a pool process's tasks on its task thread, and the plain functions among them."""

    def __init__(
        self,
        config: WorkerConfig,
        index: int,
        handover: Handover,
        ledger: CrashLedger,
        prefetch: AdaptivePrefetch | None,
    ):
        self.config = config
        self.index = index
        self._handover = handover
        self._ledger = ledger
        self._prefetch = prefetch  # told how long each task ran, when the process chooses its own
        #: The plain task running now: its channel's generation, delivery, message and monotonic start.
        self._running: tuple[int, Delivery, TaskMessage, float] | None = None
        #: The name of the plain task running now, or of the last one: the loop's watch names it.
        self.last_plain_task: str | None = None

    def run(self) -> None:
        """The task thread: run the batches handed over, until given None."""
        structlog.contextvars.bind_contextvars(pool_process=self.index)
        handover = self._handover
        while (batch := handover.next_batch()) is not None:
            generation, deliveries = batch
            if not handover.begin(generation):  # the batch counts as one task started: it runs to its end
                continue
            try:
                for delivery in deliveries:
                    if generation != handover.generation or not handover.accepting:
                        break  # the channel is gone or closing: the broker delivers the rest again
                    try:
                        disposition = self._execute(generation, delivery)
                    except Exception as error:  # a fault of the worker's (run_task catches the task's own)
                        disposition = self.worker_error(delivery, error)
                    handover.finished(generation, disposition)
            finally:
                handover.end()

    def _execute(self, generation: int, delivery: Delivery) -> Disposition:
        message, task, refused = self.accept(delivery)
        return refused if refused is not None else self.run_plain(generation, delivery, message, task)

    def accept(self, delivery: Delivery):
        """The task message and task of a delivery, and None; or the dead letter it must become instead."""
        config = self.config
        message, task, rejected = decode(delivery, config)
        if rejected is not None:
            return message, task, rejected
        if delivery.redelivered:
            over_limit = crash_limit_reached(delivery, self._ledger.crashes(message.id), config.delivery_limit)
            if over_limit:
                return (
                    message,
                    task,
                    dead_letter(delivery, config, "delivery_limit", over_limit, message.task, message.id),
                )
        return message, task, None

    def run_plain(self, generation: int, delivery: Delivery, message: TaskMessage, task) -> Disposition:
        """Run a plain function task: the one this process runs at a time, under its time limit."""
        self._ledger.set_running(self.index, message.id)
        self._running = (generation, delivery, message, time.monotonic())
        self.last_plain_task = message.task
        recorder = metrics.recorder
        recorder.task_started()
        try:
            run = run_task(delivery, message, task)
        finally:
            recorder.task_ended()
            self._running = None
            self._ledger.set_running(self.index, None)
        self.timed(run)
        return self.outcome(delivery, message, run)

    def timed(self, run: TaskRun) -> None:
        """Tell the prefetch this process chooses, if it does, how long a task ran."""
        if self._prefetch is not None:
            self._prefetch.ran(run.duration_s)

    def blame(self, task_id: str) -> None:
        """Name ``task_id`` as the task this process runs, for the supervisor to count a crash
        against it: the process is about to end over it."""
        self._ledger.set_running(self.index, task_id)

    def outcome(self, delivery: Delivery, message: TaskMessage, run: TaskRun) -> Disposition:
        """What becomes of a delivery whose task ran: acked (and answered), retried or dead-lettered."""
        if run.error is None:
            return succeeded(delivery, message, run.value)
        return failure(
            delivery, message, self.config, run.error, run.retryable, round(run.duration_s, 6), run.exception
        )

    def worker_error(self, delivery: Delivery, error: Exception) -> Disposition:
        """A fault of the worker's own: logged, and the delivery kept in the dead-letter queue."""
        log.error("worker_error", traceback=traceback.format_exc())
        return dead_letter(delivery, self.config, "worker_error", f"{type(error).__name__}: {error}")

    def overdue(self) -> tuple[Delivery, TaskMessage, float] | None:
        """The plain task running past its time limit on the current channel, with that limit; or None.
        Called from the connection thread."""
        running = self._running
        if running is None:
            return None
        generation, delivery, message, started = running
        limit = self.config.time_limit_for(message.task)
        if limit is None or time.monotonic() - started < limit or generation != self._handover.generation:
            return None
        return delivery, message, limit
