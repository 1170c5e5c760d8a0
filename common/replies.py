"""Task results as replies over RabbitMQ's direct reply-to.

A caller that wants a task's result publishes it with ``reply_to`` set to
:data:`DIRECT_REPLY_TO` and ``correlation_id`` set to the task id, on a
channel that consumes :data:`DIRECT_REPLY_TO` without acks. The worker that
settles the task (it succeeded, or it was dead-lettered) publishes one reply
to the address the broker put in ``reply_to``::

    {"v": 1, "id": "…", "status": "succeeded", "result": <the return value>}
    {"v": 1, "id": "…", "status": "failed", "reason": "retries_exhausted",
     "error": "ValueError: no such image"}

A retry sends nothing: the reply comes from the final attempt. A reply
lives only as long as the caller's channel: nothing stores it.
"""

import json
from dataclasses import dataclass
from typing import Any

from rabbitry.common.messages import FORMAT_VERSION, JSON_CONTENT_TYPE, parse_json
from rabbitry.common.transport.contract import Delivery, OutgoingMessage

#: The pseudo-queue a caller consumes for direct reply-to, and the ``reply_to`` it asks with.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
SUCCEEDED, FAILED = "succeeded", "failed"
#: The reason of a failed reply whose task returned a value that is not JSON.
RESULT_NOT_JSON = "result_not_json"

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class TaskOutcome:
    """What a reply says: the task's return value, or why it failed."""

    task_id: str
    succeeded: bool
    value: Any = None
    reason: str | None = None
    error: str | None = None

    @property
    def error_type(self) -> str:
        """The remote exception's type name, as in ``"ValueError: …"`` (or the failure's reason)."""
        head, separator, _ = (self.error or "").partition(": ")
        return head if separator and head.replace(".", "").isidentifier() else (self.reason or "Error")

    @property
    def error_message(self) -> str:
        """The remote exception's message, without its type."""
        head, separator, rest = (self.error or "").partition(": ")
        return rest if separator and head.replace(".", "").isidentifier() else (self.error or "")


def success_reply(delivery: Delivery, task_id: str, value: Any) -> OutgoingMessage | None:
    """The reply carrying ``value``, if the caller asked for one (a value not JSON becomes a failure)."""
    if not delivery.reply_to:
        return None
    try:
        return _reply(delivery, task_id, {"status": SUCCEEDED, "result": value})
    except (TypeError, ValueError, RecursionError) as error:
        return failure_reply(
            delivery, task_id, RESULT_NOT_JSON, f"TypeError: the task's return value is not JSON: {error}"[:1000]
        )


def failure_reply(delivery: Delivery, task_id: str | None, reason: str, error: str) -> OutgoingMessage | None:
    """The reply saying the task was dead-lettered, if the caller asked for one."""
    if not delivery.reply_to:
        return None
    fields = {"status": FAILED, "reason": utf8_text(reason), "error": utf8_text(error)}
    return _reply(delivery, task_id or delivery.message_id or "", fields)


def utf8_text(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (as from a file name that is not UTF-8)
    escaped as ``\\udcff``, as the worker escapes it in a dead letter's headers."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _reply(delivery: Delivery, task_id: str, fields: dict) -> OutgoingMessage:
    assert delivery.reply_to is not None  # the callers answer only a delivery that names where
    body = _ENCODER.encode({"v": FORMAT_VERSION, "id": task_id, **fields}).encode()
    return OutgoingMessage(
        routing_key=delivery.reply_to,
        body=body,
        content_type=JSON_CONTENT_TYPE,
        message_id=task_id,
        correlation_id=delivery.correlation_id,
        persistent=False,
    )


def read_reply(delivery: Delivery) -> TaskOutcome:
    """The outcome a reply carries; a reply rabbitry cannot read is a failure saying so."""
    task_id = delivery.correlation_id or delivery.message_id or ""
    try:
        data = parse_json(delivery.body)
        status = data["status"]
    except (ValueError, KeyError, TypeError) as error:
        return TaskOutcome(task_id, False, reason="unreadable_reply", error=f"ReplyError: {error}")
    if status == SUCCEEDED:
        return TaskOutcome(task_id, True, data.get("result"))
    return TaskOutcome(task_id, False, reason=str(data.get("reason")), error=str(data.get("error")))
