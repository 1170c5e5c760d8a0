"""Running one delivery, and deciding what becomes of it.

:func:`run_task` never raises: every outcome (success, a retry, a dead
letter) is a :class:`Settlement` that the pool process carries out on its
connection thread, and one log line.
"""

import dataclasses
import random
import time
import traceback

import structlog

from rabbitry.common.errors import MessageError, UnknownTask
from rabbitry.common.messages import MAX_TASK_NAME_BYTES, TaskMessage
from rabbitry.common.topology import DEAD_LETTER_EXCHANGE, retry_delays_ms, retry_queue_name
from rabbitry.common.transport import Delivery, OutgoingMessage
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
#: The spread of a retry delay around its nominal value.
RETRY_JITTER = 0.25
#: Quorum queues count every return of a message in ``x-delivery-count``,
#: graceful ones too (a worker shutting down, a lost connection), so that
#: count is only a backstop, this many times the delivery limit, for a task
#: that kills processes on several workers. The crash ledger counts the
#: crashes a worker saw exactly.
DELIVERY_COUNT_BACKSTOP = 4


@dataclasses.dataclass(slots=True)
class Settlement:
    """What to do with a delivery: ack it, after publishing ``publish`` if set."""

    delivery: Delivery
    publish: OutgoingMessage | None = None
    #: The headers rabbitry gave ``publish``, when it also carries the delivery's own.
    own_headers: dict | None = None

    def without_delivery_headers(self, why: str) -> OutgoingMessage:
        """``publish`` without the delivery's own headers, if it carries them, and with a note
        of which were left out and why."""
        if self.own_headers is None:
            return self.publish
        left_out = ", ".join(sorted(str(name) for name in self.delivery.headers if name not in self.own_headers))
        note = f"{why}; left out: {left_out}"
        return dataclasses.replace(self.publish, headers={**self.own_headers, LEFT_OUT_HEADER: note[:1000]})


def dead_letter(delivery: Delivery, config: WorkerConfig, reason: str, error: str,
                task: str | None = None, task_id: str | None = None) -> Settlement:
    """Send ``delivery`` to the dead-letter queue with ``reason`` and ``error`` in its headers."""
    log.error("task_dead_lettered", task_id=task_id or delivery.message_id, task=task, reason=reason,
              error=error, redelivered=delivery.redelivered)
    headers = {REASON_HEADER: reason, ERROR_HEADER: error[:1000], QUEUE_HEADER: config.queue}
    if task:
        headers[TASK_HEADER] = task[:MAX_TASK_NAME_BYTES]  # a short string, as the error is, so the letter fits a frame
    return Settlement(delivery, delivery.republished(routing_key=config.queue, exchange=DEAD_LETTER_EXCHANGE,
                                                      headers=headers), headers)


def failure(delivery: Delivery, message: TaskMessage, config: WorkerConfig, error: str,
            retryable: bool = True, duration_s: float | None = None) -> Settlement:
    """A failed attempt: retry it after a backoff, or dead-letter it when retries are spent."""
    if not retryable:
        return dead_letter(delivery, config, "not_retryable", error, message.task, message.id)
    max_retries = config.max_retries_for(message.task)
    if message.attempt >= max_retries:
        return dead_letter(delivery, config, "retries_exhausted", error, message.task, message.id)
    nominal_ms = retry_delays_ms(max_retries)[message.attempt]
    delay_ms = int(nominal_ms * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))
    log.warning("task_failed", task_id=message.id, task=message.task, attempt=message.attempt, error=error,
                duration_s=duration_s, retry_in_s=delay_ms / 1000, redelivered=delivery.redelivered)
    retry = TaskMessage(task=message.task, args=message.args, kwargs=message.kwargs, id=message.id,
                        attempt=message.attempt + 1, created_at=message.created_at)
    outgoing = retry.to_outgoing(retry_queue_name(config.queue, nominal_ms), config.max_message_bytes)
    outgoing.expiration = str(delay_ms)
    outgoing.headers = {ERROR_HEADER: error[:1000]}
    return Settlement(delivery, outgoing)


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
        return message, task, dead_letter(delivery, config, "bad_arguments", f"TypeError: {error}", message.task,
                                          message.id)
    return message, task, None


def run_task(delivery: Delivery, message: TaskMessage, task) -> tuple[str, bool, float] | None:
    """Run the task and log its success; on failure return (error text, retryable, duration)."""
    started = time.perf_counter()
    try:
        result = task(*message.args, **message.kwargs)
    except Exception as error:  # a task may raise anything; the worker must survive it
        duration = time.perf_counter() - started
        text = f"{type(error).__name__}: {error}"
        log.debug("task_traceback", task_id=message.id, traceback=traceback.format_exc())
        return text, not isinstance(error, task.dont_retry), duration
    duration = time.perf_counter() - started
    extra = {} if result is None else {"result": result}
    log.info("task_succeeded", task_id=message.id, task=message.task, duration_s=round(duration, 6),
             attempt=message.attempt, redelivered=delivery.redelivered, **extra)
    return None
