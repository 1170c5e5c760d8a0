"""What a durable subscription's queue is bound with, and what ``--unbind`` would leave of it.

The subscriber reports a named queue's real bindings, and refuses to unbind
its last key: a queue bound with nothing receives nothing, and a subscriber
that waits on it forever, without a word, looks like one whose messages were
lost. The in-process broker knows its bindings; AMQP 0-9-1 cannot list them,
so on RabbitMQ they come from the management API, and when that does not
answer they are unknown, and said to be. The decisions are pure functions;
:func:`read_binding_keys` is the only I/O here.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from rabbitry.common.amqp.management import ManagementApi
from rabbitry.common.errors import ConfigurationError, ManagementUnavailable, NotBound
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.transport.contract import Connection


@dataclass(frozen=True)
class BoundKeys:
    """A queue's binding keys to an exchange, or None with why they are unknown."""

    keys: tuple[str, ...] | None
    unknown_because: str = ""


def read_binding_keys(
    connection: Connection, settings: BrokerSettings, exchange: str, queue: str, management_url: str | None
) -> BoundKeys:
    """The keys ``queue`` is bound to ``exchange`` with: from the transport if it can tell, else from
    RabbitMQ's management API (at ``management_url``, or beside the broker)."""
    keys = connection.binding_keys(exchange, queue)
    if keys is not None:
        return BoundKeys(tuple(keys))
    try:
        api = ManagementApi.for_broker(settings.urls[0], management_url)
        return BoundKeys(tuple(api.binding_keys(exchange, queue)))
    except ManagementUnavailable as error:
        return BoundKeys(None, f"AMQP cannot list bindings, and {error}")


def keys_left(bound: Iterable[str], unbind: Iterable[str], added: Iterable[str] = ()) -> tuple[str, ...]:
    """The keys a queue keeps once ``added`` are bound and ``unbind`` removed, in order, each once."""
    removed = set(unbind)
    return tuple(key for key in dict.fromkeys([*bound, *added]) if key not in removed)


def check_unbind(exchange: str, queue: str, bound: tuple[str, ...], unbind: tuple[str, ...], added: tuple[str, ...]):
    """NotBound for a key to unbind that the queue is not bound with; ConfigurationError if unbinding
    would leave the queue bound with nothing, so that its subscriber would receive nothing."""
    missing = [key for key in unbind if key not in bound]
    if missing:
        raise NotBound(
            f"queue {queue!r} is not bound to exchange {exchange!r} with "
            f"{', '.join(repr(key) for key in missing)}; its keys: {describe(bound)}"
        )
    if not keys_left(bound, unbind, added):
        raise ConfigurationError(
            f"unbinding {describe(unbind)} would leave queue {queue!r} bound to exchange {exchange!r} with "
            "no key, and its subscriber would receive nothing: give the keys to bind it with instead "
            "(BINDING_KEY), or delete the queue"
        )


def describe(keys: Iterable[str]) -> str:
    """``'kern.*', 'app.#'``, or ``none``."""
    return ", ".join(repr(key) for key in keys) or "none"
