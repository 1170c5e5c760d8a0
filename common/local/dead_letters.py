"""Dead letters in the in-process broker: the message a rejected or expired one becomes.

As RabbitMQ does, the letter keeps the original's body and properties, loses
its expiration (so that it does not expire again on arrival), and records
its deaths in ``x-death`` headers: one entry per queue and reason, newest
first, counted, with the ``x-first-death-*`` headers set once.
"""

import datetime

from rabbitry.common.transport.contract import OutgoingMessage

#: Why a message was dead-lettered, as RabbitMQ names it in ``x-death``.
REJECTED, EXPIRED, MAX_LENGTH = "rejected", "expired", "maxlen"


def dead_letter(original: OutgoingMessage, queue: str, reason: str, exchange: str, routing_key: str) -> OutgoingMessage:
    """``original``, dead-lettered from ``queue`` for ``reason``, to ``exchange`` under ``routing_key``."""
    headers = dict(original.headers or {})
    death = {
        "count": 1,
        "reason": reason,
        "queue": queue,
        "time": datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        "exchange": original.exchange,
        "routing-keys": [original.routing_key],
    }
    if original.expiration is not None:
        death["original-expiration"] = original.expiration
    deaths = list(headers.get("x-death") or [])
    for earlier in deaths:
        if earlier.get("queue") == queue and earlier.get("reason") == reason:
            deaths.remove(earlier)
            death["count"] = earlier.get("count", 0) + 1
            break
    headers["x-death"] = [death, *deaths]
    headers.setdefault("x-first-death-exchange", original.exchange)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-reason", reason)
    return OutgoingMessage(
        routing_key,
        original.body,
        exchange,
        original.content_type,
        original.message_id,
        original.timestamp,
        headers,
        original.persistent,
        original.app_id,
        original.type,
        reply_to=original.reply_to,
        correlation_id=original.correlation_id,
    )
