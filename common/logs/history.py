"""Keeping a log exchange's history: declaring its stream, and keeping the stream bound.

A stream bound to the log exchange receives every log message, as any queue
would, so producers (rabbitry's and the tutorials') need no change. The
stream is durable, but the tutorials' exchanges are not: when the broker
restarts, the exchange goes and the binding with it, while the stream and
its history stay. So every rabbitry side that declares the exchange binds
its history stream again if it exists (:func:`keep_history_bound`): the
first ``emit-log`` (or logging handler, or subscriber) after a restart
restores the history from that moment on. ``rabbitry logs retain`` is
idempotent and does the same, and is the way for a direct exchange, whose
retained keys only the operator knows.
"""

import structlog

from rabbitry.common.errors import BrokerRefused, NoHistory
from rabbitry.common.retention import Retention
from rabbitry.common.topology import (
    LOG_EXCHANGES,
    Exchange,
    Topology,
    history_rebinding,
    history_stream_name,
    log_history,
)
from rabbitry.common.transport.contract import Connection

log = structlog.get_logger("rabbitry.history")


def keep_history_bound(connection: Connection, exchange: Exchange) -> bool:
    """Bind the exchange's history stream again if it exists (a no-op if it is bound); say whether it exists."""
    if connection.queue_state(history_stream_name(exchange.name)) is None:
        return False
    connection.declare(history_rebinding(exchange))
    return True


def retain(connection: Connection, exchange: Exchange, retention: Retention, keys: tuple[str, ...] = ()) -> str:
    """Declare the exchange's history stream with ``retention`` and bind it; return the stream's name.

    Declaring again with the same retention changes nothing. RabbitMQ cannot
    change a stream's arguments: other limits are refused, in one line that
    says what to do.
    """
    stream = history_stream_name(exchange.name)
    try:
        connection.declare(log_history(exchange, retention.arguments(), keys))
    except BrokerRefused as error:
        if "inequivalent arg" not in str(error):
            raise
        raise BrokerRefused(
            f"history of exchange {exchange.name!r} is already kept in stream {stream!r} with "
            f"other limits, and RabbitMQ cannot change a stream's arguments: set a policy "
            f"(rabbitmqctl set_policy) or run `rabbitry logs forget` first, then retain again "
            f"({error})"
        ) from None
    return stream


def require_history(connection: Connection, exchange: Exchange) -> str:
    """Declare the exchange and bind its history stream again; NoHistory (declaring nothing) if none is kept."""
    if connection.queue_state(history_stream_name(exchange.name)) is None:
        options = "" if exchange.type == "topic" else f" --exchange-type {exchange.type}"
        if exchange.name != LOG_EXCHANGES[exchange.type]:
            options += f" --exchange {exchange.name}"
        raise NoHistory(
            f"no history is kept for exchange {exchange.name!r}: run `rabbitry logs retain{options}` "
            "first (see docs/logs.md)"
        )
    # The exchange is gone after a broker restart, if it is not durable, and the binding with it.
    connection.declare(Topology(exchanges=(exchange,)) + history_rebinding(exchange))
    return history_stream_name(exchange.name)
