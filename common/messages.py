"""The task message format: versioned JSON, never pickle.

A task travels as a JSON object::

    {"v": 1, "id": "…", "task": "echo", "args": [], "kwargs": {},
     "attempt": 0, "created_at": 1764165000.123}

and, for a task that is to run later, ``"eta": 1764168600.0``: when it is due.

with AMQP properties ``message_id`` (the task id), ``content_type``
(``application/json``), ``timestamp`` and ``type`` (the task name). A body
without a content type, or ``text/plain``, is the official tutorial's plain
text, and runs as the ``dots`` task; any other content type is refused.
"""

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from rabbitry.common.delays import delay_route, delay_seconds
from rabbitry.common.errors import InvalidDelay, MessageError, MessageTooLarge
from rabbitry.common.transport.contract import UNREADABLE_HEADERS, Delivery, OutgoingMessage, new_message_id
from rabbitry.common.transport.wire_limits import MAX_SHORT_STRING_BYTES, check_short_string

FORMAT_VERSION = 1
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain"
#: The task that runs tutorial-style plain-text bodies.
PLAIN_TEXT_TASK = "dots"
#: The largest body rabbitry publishes or runs, in bytes.
MAX_MESSAGE_BYTES = 1024 * 1024
#: The longest task name or id, in bytes of UTF-8: they travel as the AMQP ``type`` and
#: ``message_id`` properties, which are short strings, and in the task's dead letter.
MAX_TASK_NAME_BYTES = MAX_SHORT_STRING_BYTES

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# scan_once is set by JSONDecoder.__init__, and typeshed does not declare it.
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def check_task_name(task: Any) -> str:
    """``task`` if it names a task, else MessageError: the one check of a task name, made by the
    producer before it sends a task and by the worker on each one it receives."""
    if not isinstance(task, str) or not task:
        raise MessageError("field 'task' must be a non-empty string")
    check_short_string(task, "task name", MessageError)
    return task


def check_eta(eta: Any) -> float | None:
    """``eta`` as a float if it is a finite number or None; InvalidDelay (a MessageError) if not."""
    if eta is None:
        return None
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
        raise InvalidDelay("field 'eta' must be a number (a POSIX time)")
    return float(eta)


def parse_json(body: bytes) -> Any:
    """``json.loads(body)``, with a fast path for what rabbitry's encoder writes.

    A UTF-8 body that is one JSON value from its first byte to its last is
    read by the decoder's C scanner alone, without ``json.loads``'s
    encoding detection and whitespace passes. Anything else (whitespace
    around the value, a byte-order mark, UTF-16, malformed JSON) goes
    through ``json.loads`` itself, so the value, or the error, is always
    exactly the one it gives, with one exception: a document nested too
    deep for Python's stack is a ValueError here, where ``json.loads``
    raises RecursionError.
    """
    try:
        text = body.decode()
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None


@dataclass(slots=True)
class TaskMessage:
    """One task invocation: which task, with what arguments, which attempt."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_message_id)
    attempt: int = 0
    created_at: float = field(default_factory=time.time)
    #: When the task is due (POSIX time), if it is to run later; the delay levels hold it till then.
    eta: float | None = None

    def encode(self, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
        """The JSON body; raises MessageError if it cannot be encoded or is too big, or if the
        worker would refuse it (the same checks as :meth:`from_dict`)."""
        check_task_name(self.task)
        check_eta(self.eta)
        # Seconds to the millisecond: all a creation time needs, in a short number to parse.
        created_at = round(self.created_at, 3)
        fields = {
            "v": FORMAT_VERSION,
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "attempt": self.attempt,
            "created_at": created_at,
        }
        if self.eta is not None:
            fields["eta"] = round(self.eta, 3)
        try:
            body = _ENCODER.encode(fields).encode()
        except UnicodeEncodeError:  # a lone surrogate, as from a command line that is not UTF-8
            raise MessageError(f"task {self.task!r} has text that is not valid UTF-8") from None
        except (TypeError, ValueError) as error:
            raise MessageError(f"task {self.task!r} has arguments that are not JSON: {error}") from None
        except RecursionError:
            raise MessageError(f"task {self.task!r} has arguments nested too deeply") from None
        if len(body) > max_bytes:
            raise MessageTooLarge(f"task {self.task!r} is {len(body)} bytes, over the {max_bytes}-byte limit")
        return body

    def to_outgoing(self, queue: str, max_bytes: int = MAX_MESSAGE_BYTES, now: float | None = None) -> OutgoingMessage:
        """A persistent message for the work queue ``queue``: straight to it, or, for a task due
        a second or more after ``now``, to the delay levels that hold it till then."""
        message = OutgoingMessage(
            routing_key=queue,
            body=self.encode(max_bytes),
            content_type=JSON_CONTENT_TYPE,
            message_id=self.id,
            timestamp=int(self.created_at),
            type=self.task,
        )
        if self.eta is not None:
            seconds = delay_seconds(self.eta - (time.time() if now is None else now))
            if seconds:
                message.exchange, message.routing_key = delay_route(seconds, queue)
        return message

    @classmethod
    def from_delivery(cls, delivery: Delivery, max_bytes: int = MAX_MESSAGE_BYTES) -> "TaskMessage":
        """Decode a delivery; raises MessageError for anything malformed."""
        if UNREADABLE_HEADERS in delivery.headers:
            raise MessageError(f"its headers cannot be read: {delivery.headers[UNREADABLE_HEADERS]}")
        body = delivery.body
        if len(body) > max_bytes:
            raise MessageTooLarge(f"body is {len(body)} bytes, over the {max_bytes}-byte limit")
        content_type = delivery.content_type
        if content_type == JSON_CONTENT_TYPE:
            try:
                data = parse_json(body)
            except ValueError as error:  # UnicodeDecodeError is one too
                raise MessageError(f"body is not valid JSON: {error}") from None
            # A body without an id (another client's) takes the message's, as a plain-text one does.
            message_id = delivery.message_id if isinstance(delivery.message_id, str) else None
            return cls.from_dict(data, message_id)
        if content_type not in (TEXT_CONTENT_TYPE, None):
            # Never guess at a format: a pickle (Celery's application/x-python-serialize)
            # or anything else is refused, not decoded.
            raise MessageError(
                f"unsupported content type {content_type!r}: rabbitry runs "
                f"{JSON_CONTENT_TYPE} tasks and the tutorial's plain text"
            )
        # The official tutorial's new_task.py sends plain text.
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise MessageError("plain-text body is not valid UTF-8") from None
        return cls(
            task=PLAIN_TEXT_TASK,
            args=[text],
            id=delivery.message_id or new_message_id(),
            created_at=float(delivery.timestamp or time.time()),
        )

    @classmethod
    def from_dict(cls, data: Any, default_id: str | None = None) -> "TaskMessage":
        """Build a message from a decoded JSON object, checking every field.

        A body without an id takes ``default_id``, or a fresh one.
        """
        if not isinstance(data, dict):
            raise MessageError("body is not a JSON object")
        version = data.get("v", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise MessageError(f"unsupported message format version {version!r}")
        task, args, kwargs = data.get("task"), data.get("args", []), data.get("kwargs", {})
        task = check_task_name(task)
        if not isinstance(args, list):
            raise MessageError("field 'args' must be a JSON array")
        if not isinstance(kwargs, dict):
            raise MessageError("field 'kwargs' must be a JSON object")
        attempt = data.get("attempt", 0)
        if not isinstance(attempt, int) or attempt < 0:
            raise MessageError("field 'attempt' must be a non-negative integer")
        created_at = data["created_at"] if "created_at" in data else time.time()
        if not isinstance(created_at, (int, float)) or not math.isfinite(created_at):
            raise MessageError("field 'created_at' must be a number")
        eta = check_eta(data.get("eta"))
        task_id = data.get("id") or default_id or new_message_id()
        if not isinstance(task_id, str):
            raise MessageError("field 'id' must be a string")
        check_short_string(task_id, "task id", MessageError)
        return cls(task, args, kwargs, task_id, attempt, float(created_at), eta)
