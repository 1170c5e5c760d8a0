"""Running one delivery, and deciding what becomes of it.

:func:`run_task` never raises: every outcome (success, a retry, a dead
letter) is a :class:`Disposition` that the pool process carries out on its
connection thread, and one log line (a retry's or dead letter's written by the
connection thread once the broker has confirmed it: :attr:`Disposition.announce`).
"""

import asyncio
import dataclasses
import functools
import random
import time
from collections.abc import Callable
from typing import Any

import structlog

from rabbitry.common.errors import MessageError, UnknownTask
from rabbitry.common.messages import MAX_TASK_NAME_BYTES, TaskMessage
from rabbitry.common.replies import failure_reply, success_reply
from rabbitry.common.topology import DEAD_LETTER_EXCHANGE, retry_delay_s
from rabbitry.common.transport.contract import Delivery, OutgoingMessage, new_message_id
from rabbitry.workers import metrics
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.registry import registry

log = structlog.get_logger("rabbitry.worker")

#: Headers rabbitry adds to a dead letter.
REASON_HEADER = "x-rabbitry-reason"
ERROR_HEADER = "x-rabbitry-error"
TASK_HEADER = "x-rabbitry-task"
QUEUE_HEADER = "x-rabbitry-queue"
#: On a dead letter whose own headers could not be sent again: which, and why.
LEFT_OUT_HEADER = "x-rabbitry-headers-left-out"
#: The most bytes of text rabbitry puts in one header of its own.
MAX_HEADER_TEXT_BYTES = 1000
#: The reason of a dead letter sent bare, because nothing richer could be published.
UNPUBLISHABLE_REASON = "unpublishable"
#: The spread of a retry delay around its nominal value.
RETRY_JITTER = 0.25
#: Quorum queues count every return of a message in ``x-delivery-count``,
#: graceful ones too (a worker shutting down, a lost connection), so that
#: count is only a backstop, this many times the delivery limit, for a task
#: that kills processes on several workers. The crash ledger counts the
#: crashes a worker saw exactly.
DELIVERY_COUNT_BACKSTOP = 4


def header_text(text: str, max_bytes: int = MAX_HEADER_TEXT_BYTES) -> str:
    """``text`` as an AMQP header can carry it: what is not UTF-8 (a lone surrogate, as
    from a file name) escaped as ``\\udcff``, and cut to ``max_bytes`` at a character boundary."""
    return text.encode("utf-8", "backslashreplace")[:max_bytes].decode("utf-8", "ignore")


@dataclasses.dataclass(slots=True)
class Disposition:
    """What to do with a delivery: ack it, after publishing ``publish`` if set, and send
    ``reply`` (the result its caller asked for) if set."""

    delivery: Delivery
    publish: OutgoingMessage | None = None
    #: The headers rabbitry gave ``publish``, when it also carries the delivery's own.
    own_headers: dict | None = None
    reply: OutgoingMessage | None = None
    #: Writes the line saying ``publish`` is done (``task_dead_lettered``, ``task_failed``): called
    #: once the broker has confirmed it and the delivery is acked, so no line runs ahead of the broker.
    announce: Callable[[], object] | None = None

    def without_delivery_headers(self, why: str) -> OutgoingMessage:
        """``publish`` without the delivery's own headers, if it carries them, and with a note
        of which were left out and why."""
        assert self.publish is not None  # only a retry or a dead letter falls back
        if self.own_headers is None:
            return self.publish
        left_out = ", ".join(sorted(str(name) for name in self.delivery.headers if name not in self.own_headers))
        note = f"{why}; left out: {left_out}"
        return dataclasses.replace(self.publish, headers={**self.own_headers, LEFT_OUT_HEADER: header_text(note)})

    def bare_letter(self, queue: str, why: str) -> OutgoingMessage:
        """The dead letter of last resort, for a disposition that cannot be published even
        without the delivery's headers: the delivery's body and id, and headers any broker
        takes, saying what the disposition was and why it could not be sent."""
        assert self.publish is not None  # only a retry or a dead letter falls back
        own = self.own_headers or self.publish.headers or {}
        was = own.get(REASON_HEADER, "retry")
        error = header_text(f"{was}: {own.get(ERROR_HEADER, '')}; could not be published as it was: {why}")
        message_id = self.delivery.message_id
        return OutgoingMessage(
            routing_key=queue,
            exchange=DEAD_LETTER_EXCHANGE,
            body=bytes(self.delivery.body),
            message_id=header_text(message_id, MAX_TASK_NAME_BYTES)
            if isinstance(message_id, str)
            else new_message_id(),
            headers={REASON_HEADER: UNPUBLISHABLE_REASON, ERROR_HEADER: error, QUEUE_HEADER: queue},
        )

    def fallback(self, failed: OutgoingMessage, queue: str, why: str) -> OutgoingMessage | None:
        """What to publish instead of ``failed``, which could not be published: ``publish``
        without the delivery's headers, then :meth:`bare_letter`; None once that failed too."""
        if failed is self.publish and self.own_headers is not None:
            return self.without_delivery_headers(why)
        if (failed.headers or {}).get(REASON_HEADER) != UNPUBLISHABLE_REASON:
            return self.bare_letter(queue, why)
        return None


def dead_letter(
    delivery: Delivery,
    config: WorkerConfig,
    reason: str,
    error: str,
    task: str | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
) -> Disposition:
    """Send ``delivery`` to the dead-letter queue with ``reason`` and ``error`` in its headers;
    the line logged carries ``exception``'s traceback, if given (the task's own exception)."""
    metrics.recorder.task_settled(task, metrics.DEAD_LETTERED, reason)  # counted before its line: see _returned
    announce = functools.partial(
        log.error,
        "task_dead_lettered",
        task_id=task_id or delivery.message_id,
        task=task,
        reason=reason,
        error=error,
        redelivered=delivery.redelivered,
        exc_info=exception,
    )
    headers = {REASON_HEADER: reason, ERROR_HEADER: header_text(error), QUEUE_HEADER: config.queue}
    if task:
        headers[TASK_HEADER] = header_text(task, MAX_TASK_NAME_BYTES)
    return Disposition(
        delivery,
        delivery.republished(routing_key=config.queue, exchange=DEAD_LETTER_EXCHANGE, headers=headers),
        headers,
        reply=failure_reply(delivery, task_id, reason, error),
        announce=announce,
    )


def succeeded(delivery: Delivery, message: TaskMessage, value: Any) -> Disposition:
    """A task that ran to the end: ack it, and send its return value to a caller waiting for it."""
    return Disposition(delivery, reply=success_reply(delivery, message.id, value))


def failure(
    delivery: Delivery,
    message: TaskMessage,
    config: WorkerConfig,
    error: str,
    retryable: bool = True,
    duration_s: float | None = None,
    exception: BaseException | None = None,
) -> Disposition:
    """A failed attempt: retry it after a backoff, or dead-letter it when retries are spent.
    ``exception``, what the task raised, has its traceback logged with the line."""
    if not retryable:
        return dead_letter(delivery, config, "not_retryable", error, message.task, message.id, exception)
    max_retries = config.max_retries_for(message.task)
    if message.attempt >= max_retries:
        return dead_letter(delivery, config, "retries_exhausted", error, message.task, message.id, exception)
    delay_s = max(1.0, retry_delay_s(message.attempt) * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))
    now = time.time()
    retry = TaskMessage(
        task=message.task,
        args=message.args,
        kwargs=message.kwargs,
        id=message.id,
        attempt=message.attempt + 1,
        created_at=message.created_at,
        eta=now + delay_s,
    )
    try:
        outgoing = retry.to_outgoing(config.queue, config.max_message_bytes, now)  # into the delay levels
    except MessageError as unsendable:  # arguments that came in but cannot go out again, such as a lone surrogate
        return dead_letter(
            delivery,
            config,
            "not_retryable",
            f"{error} (cannot be retried: {unsendable})",
            message.task,
            message.id,
            exception,
        )
    metrics.recorder.task_settled(message.task, metrics.RETRIED)
    announce = functools.partial(
        log.warning,
        "task_failed",
        task_id=message.id,
        task=message.task,
        attempt=message.attempt,
        error=error,
        duration_s=duration_s,
        retry_in_s=round(delay_s, 3),
        redelivered=delivery.redelivered,
        exc_info=exception,  # the traceback: readable on a console, a list of frames in JSON
    )
    outgoing.headers = {ERROR_HEADER: header_text(error)}
    # The final attempt answers the caller, so the retry asks for the reply as the task did.
    outgoing.reply_to, outgoing.correlation_id = delivery.reply_to, delivery.correlation_id
    return Disposition(delivery, outgoing, announce=announce)


def crash_limit_reached(delivery: Delivery, crashes: int, limit: int) -> str | None:
    """Why a redelivered task must be dead-lettered rather than run again, or None.

    ``crashes`` is how often the task killed a pool process of this worker.
    """
    if crashes >= limit:
        return f"crashed its pool process {crashes} times: it keeps killing the process that runs it"
    deliveries = int(delivery.headers.get("x-delivery-count", 0) or 0)
    if deliveries >= limit * DELIVERY_COUNT_BACKSTOP:
        return f"returned to the queue {deliveries} times without finishing (x-delivery-count)"
    return None


def decode(delivery: Delivery, config: WorkerConfig):
    """The task message and registered task of a delivery, or the dead letter it must become."""
    try:
        message = TaskMessage.from_delivery(delivery, config.max_message_bytes)
    except MessageError as error:
        return None, None, dead_letter(delivery, config, "malformed", str(error))
    try:
        task = registry.get(message.task)
    except UnknownTask as error:
        return message, None, dead_letter(delivery, config, "unknown_task", str(error), message.task, message.id)
    try:  # before the call, so that a TypeError raised inside the task is an ordinary failure
        task.check_arguments(message.args, message.kwargs)
    except TypeError as error:  # no retry can make them fit
        return (
            message,
            task,
            dead_letter(delivery, config, "bad_arguments", f"TypeError: {error}", message.task, message.id),
        )
    return message, task, None


@dataclasses.dataclass(slots=True, frozen=True)
class TaskRun:
    """How one run of a task ended: its return value, or its error ("Type: message") and the
    exception itself, whose traceback the line of the failure shows."""

    duration_s: float
    value: Any = None
    error: str | None = None
    retryable: bool = True
    exception: BaseException | None = None


def run_task(delivery: Delivery, message: TaskMessage, task) -> TaskRun:
    """Run the task and log its success; return its value, or its error if it raised."""
    started = time.perf_counter()
    try:
        result = task(*message.args, **message.kwargs)
    except Exception as error:  # a task may raise anything; the worker must survive it
        return _raised(message, task, error, started)
    return _returned(delivery, message, result, started)


async def run_coroutine_task(
    delivery: Delivery, message: TaskMessage, task, time_limit: float | None, timed_out: Callable[[], bool]
) -> TaskRun:
    """:func:`run_task` for an ``async def`` task: await it. The caller cancels it once it has run
    ``time_limit`` seconds, and then ``timed_out()`` says so; any other cancellation goes on up."""
    started = time.perf_counter()
    try:
        result = await task(*message.args, **message.kwargs)
    except asyncio.CancelledError:
        if not timed_out():
            raise
        current = asyncio.current_task()
        assert current is not None  # this coroutine runs as a task of the loop
        current.uncancel()  # the cancellation is answered here, as asyncio.timeout does
        duration = time.perf_counter() - started
        metrics.recorder.task_ran(message.task, duration)
        return TaskRun(
            duration, error=f"TimeLimitExceeded: ran over the {time_limit:g} s time limit, and was cancelled"
        )
    except Exception as error:
        return _raised(message, task, error, started)
    return _returned(delivery, message, result, started)


def _raised(message: TaskMessage, task, error: Exception, started: float) -> TaskRun:
    duration = time.perf_counter() - started
    metrics.recorder.task_ran(message.task, duration)
    return TaskRun(
        duration,
        error=f"{type(error).__name__}: {error}",
        retryable=not isinstance(error, task.dont_retry),
        exception=error,
    )


def _returned(delivery: Delivery, message: TaskMessage, result: Any, started: float) -> TaskRun:
    duration = time.perf_counter() - started
    extra = {} if result is None else {"result": result}
    # How late a delayed task started, by this machine's clock against its sender's.
    late = {} if message.eta is None else {"late_s": round(time.time() - duration - message.eta, 3)}
    # Counted before the line is written: a pool process killed between the two leaves a task counted
    # and not logged (its rerun elsewhere writes the line), never a line that no scrape will ever count.
    recorder = metrics.recorder
    recorder.task_ran(message.task, duration)
    recorder.task_settled(message.task, metrics.SUCCEEDED)
    log.info(
        "task_succeeded",
        task_id=message.id,
        task=message.task,
        duration_s=round(duration, 6),
        attempt=message.attempt,
        redelivered=delivery.redelivered,
        **late,
        **extra,
    )
    return TaskRun(duration, result)
