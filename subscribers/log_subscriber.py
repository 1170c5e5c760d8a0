"""Receiving log messages: bind a queue to a log exchange, consume, and reconnect.

The queue is exclusive, auto-deleted and named by the broker, as in the
tutorials, unless a name is given: a named queue is durable, so messages
published while its subscriber is away wait for it. A named queue given no
binding key resumes with the bindings it has; ``unbind`` removes some.
Reading the exchange's history instead is :mod:`.history_subscriber`.
"""

import threading
import time
from collections.abc import Callable, Iterable

import structlog

from rabbitry.common.connect import connect, connect_with_retry
from rabbitry.common.errors import ConfigurationError, ConnectionLost
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Binding, Exchange, Queue, Topology
from rabbitry.common.transport.contract import Connection, Delivery
from rabbitry.common.transport.routing import check_routing_key, literal_wildcards
from rabbitry.subscribers.bindings import BoundKeys, check_unbind, read_binding_keys

log = structlog.get_logger("rabbitry.subscriber")

#: Deliveries the broker may send ahead of the acks: enough to keep a fast stream flowing.
DEFAULT_PREFETCH = 100
#: How often the consuming loop wakes up to check for stop and the idle timeout.
_TICK_S = 0.2


def check_binding_keys(exchange_type: str, keys: Iterable[str]) -> tuple[str, ...]:
    """The binding keys for a subscription, checked the way RabbitMQ reads them.

    Direct and topic exchanges need at least one key, fanout takes none.
    Raises ConfigurationError (InvalidRoutingKey for a key RabbitMQ refuses)
    before anything is declared. A topic word such as ``kern*`` is accepted
    (RabbitMQ matches it literally) with a warning.
    """
    keys = tuple(keys)
    if exchange_type == "fanout":
        if keys:
            raise ConfigurationError("a fanout exchange sends every message to every queue: give no binding key")
        return ("",)
    if not keys:
        example = "'kern.*' or '#'" if exchange_type == "topic" else "'error'"
        raise ConfigurationError(f"a {exchange_type} exchange needs at least one binding key, such as {example}")
    for key in keys:
        check_routing_key(key, "binding key")
        if exchange_type == "topic" and literal_wildcards(key):
            log.warning(
                "literal_wildcard",
                binding_key=key,
                words=literal_wildcards(key),
                detail="'*' and '#' are wildcards only as whole words, as in 'kern.*'",
            )
    return tuple(dict.fromkeys(keys))  # a key given twice binds once


class LogSubscriber:
    """Receives the messages of a log exchange that match its binding keys.

    ``run`` calls ``on_message`` with each :class:`Delivery`, then acks it,
    until ``stop`` is set, ``count`` messages were received, or nothing came
    for ``idle_timeout`` seconds. If the connection drops, it reconnects and
    declares everything again; a broker-named queue is then a new queue, so
    what was published meanwhile is lost: name the queue to keep it.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        exchange: Exchange,
        binding_keys: Iterable[str] = (),
        queue: str | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        name: str = "rabbitry-subscribe",
        unbind: Iterable[str] = (),
        management_url: str | None = None,
    ):
        self.settings = settings
        self.exchange = exchange
        binding_keys, self.unbind = tuple(binding_keys), tuple(dict.fromkeys(unbind))
        #: A named queue with no key (and no fanout's implied one) resumes with the bindings it has.
        self.resuming = bool(queue) and not binding_keys and exchange.type != "fanout"
        self.binding_keys = () if self.resuming else check_binding_keys(exchange.type, binding_keys)
        for key in self.unbind:
            check_routing_key(key, "binding key")
        if self.unbind and not queue:
            raise ConfigurationError("only a named queue keeps bindings to remove: give --queue NAME")
        self.queue = queue
        #: Where RabbitMQ's management API is, to read a named queue's bindings (None: beside the broker).
        self.management_url = management_url
        #: The unbinding is checked once, before it is done; after a reconnect it is only done again.
        self._unbind_checked = False
        self.prefetch = prefetch
        self.name = name
        self.received = 0
        self._last_received = time.monotonic()  # the idle timeout counts from here

    def topology(self) -> Topology:
        """The exchange, the subscription's queue and its bindings."""
        if self.queue:
            queue = Queue(self.queue, durable=True)
        else:
            queue = Queue("", durable=False, exclusive=True, auto_delete=True)
        return Topology(
            exchanges=(self.exchange,),
            queues=(queue,),
            bindings=tuple(Binding(self.exchange.name, queue.name, key) for key in self.binding_keys),
        )

    def on_tick(self) -> None:
        """Called after each round of deliveries (and at least every tick): nothing here; see subclasses."""

    def run(
        self,
        on_message: Callable[[Delivery], None],
        stop: threading.Event | None = None,
        count: int | None = None,
        idle_timeout: float | None = None,
        after_round: Callable[[], None] | None = None,
    ) -> int:
        """Receive until stopped, ``count`` messages, or ``idle_timeout``; return how many were received.

        ``after_round`` is called after each round of deliveries (to flush output, say).

        The first connection fails at once if the broker is down; later ones
        are retried with backoff (see :func:`rabbitry.common.connect.connect_with_retry`).
        """
        stop = stop or threading.Event()
        self._after_round = after_round or (lambda: None)
        self.received = 0
        self._last_received = time.monotonic()
        connection: Connection | None = connect(self.settings, self.name)
        while connection is not None:
            try:
                self._consume(connection, on_message, stop, count, idle_timeout)
                return self.received
            except ConnectionLost as error:
                log.warning("subscriber_connection_lost", error=str(error), detail=self._reconnect_detail())
            finally:
                connection.close()
            connection = connect_with_retry(self.settings, self.name, stop)
        return self.received

    def _reconnect_detail(self) -> str:
        """What a reconnect means for the messages published meanwhile."""
        if self.queue:
            return "reconnecting"
        return "reconnecting; messages published meanwhile are lost (use a named queue to keep them)"

    def _start(self, connection: Connection, on_message: Callable[[Delivery], None], done: Callable[[], bool]) -> None:
        """Declare the queue and its bindings, remove those to unbind, and start consuming."""
        if self.resuming and self.queue is not None and connection.queue_state(self.queue) is None:
            raise ConfigurationError(
                f"queue {self.queue!r} does not exist: give the binding keys to subscribe it with, such as 'kern.*'"
            )
        if self.unbind and not self._unbind_checked:
            self._check_unbind(connection)
        names = connection.declare(self.topology())
        queue = names[self.queue or ""]  # the topology declares this queue
        for key in self.unbind:  # again after a reconnect too: unbinding what is not bound changes nothing
            connection.unbind(self.exchange.name, queue, key)
            log.info("unbound", exchange=self.exchange.name, queue=queue, binding_key=key)
        bindings = self._bindings_now(connection, queue)

        def on_delivery(delivery: Delivery) -> None:
            if done():
                return  # left unacked: a named queue gets it back when we close
            on_message(delivery)
            connection.ack(delivery.delivery_tag)
            self.received += 1
            self._last_received = time.monotonic()

        connection.consume(queue, on_delivery, prefetch=self.prefetch)
        log.info(
            "subscribed",
            exchange=self.exchange.name,
            exchange_type=self.exchange.type,
            queue=queue,
            binding_keys=None if bindings.keys is None else list(bindings.keys),
            **({"resumed": True} if self.resuming else {}),
            **({"binding_keys_unknown": bindings.unknown_because} if bindings.keys is None else {}),
        )

    def _check_unbind(self, connection: Connection) -> None:
        """Refuse, before anything changes, to unbind a key the queue is not bound with, or its last one."""
        assert self.queue is not None  # unbinding needs a named queue (checked in __init__)
        bound = read_binding_keys(connection, self.settings, self.exchange.name, self.queue, self.management_url)
        if bound.keys is None:
            log.warning(
                "unbind_unchecked",
                queue=self.queue,
                binding_keys=list(self.unbind),
                detail=f"cannot check that the keys are bound, nor that the queue keeps another: "
                f"{bound.unknown_because}. If these were its last keys, this subscriber receives nothing",
            )
        else:
            check_unbind(self.exchange.name, self.queue, bound.keys, self.unbind, self.binding_keys)
        self._unbind_checked = True

    def _bindings_now(self, connection: Connection, queue: str) -> BoundKeys:
        """The keys the subscription's queue is bound with now: a named queue may have more than
        this subscriber gave (a resumed one has only those), and they are read for what they are."""
        if self.exchange.type == "fanout":
            return BoundKeys(())  # fanout routes by no key: its one binding's key is empty
        if not self.queue:
            return BoundKeys(self.binding_keys)  # the broker named the queue, for this subscriber alone
        return read_binding_keys(connection, self.settings, self.exchange.name, queue, self.management_url)

    def _consume(self, connection: Connection, on_message, stop, count, idle_timeout) -> None:
        def done() -> bool:
            return stop.is_set() or (count is not None and self.received >= count) or self._finished()

        self._start(connection, on_message, done)
        while not done():
            tick = _TICK_S
            if idle_timeout is not None:
                idle_left = self._last_received + idle_timeout - time.monotonic()
                if idle_left <= 0:
                    break
                tick = min(tick, idle_left)
            connection.process_events(tick)
            self.on_tick()
            self._after_round()
        self._settle(connection)
        connection.process_events(0)  # send the last acks before the connection closes
        self.on_tick()
        self._after_round()

    def _finished(self) -> bool:
        """Whether the subscription has reached its end by itself (a history's ``until``)."""
        return False

    def _settle(self, connection: Connection) -> None:
        """Acknowledge what is still held; each delivery is acked as it comes here."""
