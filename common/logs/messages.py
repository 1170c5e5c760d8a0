"""Log messages on the log exchanges: what one carries, and how to read it back.

The body is the log text, exactly as the tutorials send it, so their
receivers print it unchanged. Metadata rides beside it: the AMQP
``timestamp`` and ``app_id`` properties, and the ``severity``, ``facility``
and ``host`` headers. A message from the tutorials' emitters has none of
these; readers then derive what they can from the routing key, which the
tutorials shape as ``<severity>`` (direct) or ``<facility>.<severity>`` (topic).
"""

import functools
import socket
import time
from typing import Any

from rabbitry.common.transport.contract import Delivery, OutgoingMessage

#: Severity names, lower-cased as the handler and the tutorials spell them.
SEVERITIES = ("debug", "info", "warning", "error", "critical")
SEVERITY_HEADER = "severity"
FACILITY_HEADER = "facility"
HOST_HEADER = "host"
TEXT_CONTENT_TYPE = "text/plain"

HOST = socket.gethostname()


@functools.lru_cache(maxsize=256)
def routing_metadata(exchange_type: str, routing_key: str) -> tuple[str | None, str | None]:
    """(severity, facility) as the routing key names them, for ``exchange_type``.

    Direct keys are severities; topic keys are ``<facility>.<severity>``
    (one word is taken as a severity); fanout keys mean nothing.
    """
    if exchange_type == "direct":
        return routing_key or None, None
    if exchange_type == "topic" and routing_key:
        words = routing_key.split(".")
        return words[-1] or None, (words[0] or None) if len(words) > 1 else None
    return None, None


def log_message(
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    severity: str | None = None,
    facility: str | None = None,
    app_id: str | None = None,
    persistent: bool = False,
    timestamp: float | None = None,
    headers: dict[str, Any] | None = None,
) -> OutgoingMessage:
    """An outgoing log message with its metadata in properties and headers."""
    metadata = {HOST_HEADER: HOST}
    if severity:
        metadata[SEVERITY_HEADER] = severity
    if facility:
        metadata[FACILITY_HEADER] = facility
    if headers:
        metadata.update(headers)
    return OutgoingMessage(
        routing_key=routing_key,
        body=body,
        exchange=exchange,
        content_type=TEXT_CONTENT_TYPE,
        timestamp=int(time.time() if timestamp is None else timestamp),
        headers=metadata,
        persistent=persistent,
        app_id=app_id,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def severity_of(delivery: Delivery) -> str | None:
    """The message's severity: its header, else the routing key's last word if it is one."""
    header = _text(delivery.headers.get(SEVERITY_HEADER))
    if header:
        return header
    last_word = delivery.routing_key.rsplit(".", 1)[-1].lower()
    return last_word if last_word in SEVERITIES else None
