"""How ``subscribe`` shows a message: a readable line, or one JSON object per line."""

import base64
import json
import time
from typing import Any

import click

from rabbitry.common.logs.messages import severity_of
from rabbitry.common.transport.contract import Delivery

#: Severity colours on a terminal; unknown severities stay plain.
SEVERITY_STYLES: dict[str, dict[str, Any]] = {
    "debug": {"fg": "bright_black"},
    "info": {"fg": "green"},
    "warning": {"fg": "yellow"},
    "warn": {"fg": "yellow"},
    "error": {"fg": "red"},
    "critical": {"fg": "red", "bold": True},
}
#: Width of the severity column, so the messages line up.
_SEVERITY_WIDTH = 8
#: Control characters a terminal would act on (escape sequences, carriage returns, bells),
#: shown as ``\xNN`` instead; tabs stay, and newlines start an indented continuation line.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if code not in (0x09, 0x0A)}


def readable_line(delivery: Delivery, color: bool = False) -> str:
    """``<routing key> <SEVERITY> <message>``; the severity coloured if ``color``.

    A message never drives the terminal: its control characters are shown
    escaped, and its further lines are indented under the first.
    """
    severity = severity_of(delivery)
    parts = [delivery.routing_key.translate(_CONTROL_ESCAPES)] if delivery.routing_key else []
    if severity:
        label = severity.upper().translate(_CONTROL_ESCAPES).ljust(_SEVERITY_WIDTH)
        parts.append(click.style(label, **SEVERITY_STYLES.get(severity.lower(), {})) if color else label)
    text = delivery.body.decode("utf-8", "replace").translate(_CONTROL_ESCAPES)
    return " ".join([*parts, text.replace("\n", "\n    ")])


#: The header in which a stream gives each delivery's offset.
STREAM_OFFSET = "x-stream-offset"


def json_line(delivery: Delivery, history: bool = False) -> str:
    """The message as one JSON object: routing key, body, properties and headers.

    A body that is not UTF-8 text is given as ``body_base64`` instead of ``body``.
    With ``history`` (a line read from a history stream), ``offset`` (its place
    in the stream) and ``timestamp`` (ISO 8601, UTC; null if it has none) come first.
    """
    record: dict[str, Any] = {}
    if history:
        offset = delivery.headers.get(STREAM_OFFSET)
        record["offset"] = None if offset is None else int(offset)
        record["timestamp"] = (
            None if delivery.timestamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(delivery.timestamp))
        )
    record["exchange"], record["routing_key"] = delivery.exchange, delivery.routing_key
    try:
        record["body"] = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(delivery.body).decode("ascii")
    record["properties"] = {
        "content_type": delivery.content_type,
        "message_id": delivery.message_id,
        "timestamp": delivery.timestamp,
        "app_id": delivery.app_id,
        "type": delivery.type,
        "delivery_mode": 2 if delivery.persistent else 1,
    }
    record["headers"] = delivery.headers
    record["redelivered"] = delivery.redelivered
    return json.dumps(record, ensure_ascii=False, default=_jsonable)


def _jsonable(value):
    """Header values JSON has no type for: bytes, timestamps, decimals."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
