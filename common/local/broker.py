"""An in-process broker: the exchanges and queues its connections share.

This is the broker side of :mod:`rabbitry.common.local.connection`. Routing lives in
:mod:`~rabbitry.common.local.exchange`, storage in :mod:`~rabbitry.common.local.queue`,
dead letters in :mod:`~rabbitry.common.local.dead_letters` and the expiry thread in
:mod:`~rabbitry.common.local.expiry`; :class:`LocalBroker` joins them. One lock
guards all of it, so routing, enqueueing, dispatching to consumers and
dead-lettering are atomic, as they are inside RabbitMQ. Methods whose names
end in ``_locked`` expect the caller to hold :attr:`LocalBroker.lock`.
Every message a named exchange routes, dead letters included, passes
through :meth:`LocalBroker._enqueue_routed_locked`: the place to feed
storage kept per exchange, beside the queues'.

The rules follow RabbitMQ 3.x: the default exchange routes by queue name;
fanout, direct and topic exchanges route each message to a queue at most
once, through the exchanges bound to them too; a consumer holds at most ``prefetch`` unacknowledged messages and
queues hand messages to consumers with credit in turn; per-message and
per-queue TTLs expire messages at the head of a queue; a queue with
``x-dead-letter-exchange`` republishes expired and rejected messages there (and,
with ``x-max-length``, those dropped from its head),
with ``x-death`` headers; quorum queues count redeliveries in
``x-delivery-count``; a single-active-consumer queue delivers to its earliest
consumer alone; ``CC`` and ``BCC`` headers add routing keys. Durability is recorded, but the broker lives in
memory: nothing survives the process.
"""

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from rabbitry.common.local.dead_letters import EXPIRED, MAX_LENGTH, dead_letter
from rabbitry.common.local.exchange import PREDECLARED_EXCHANGES, LocalExchange, predeclared_exchanges
from rabbitry.common.local.expiry import ExpiryTimer
from rabbitry.common.local.queue import Consumer, Envelope, LocalQueue, server_named_queue
from rabbitry.common.local.refusals import ACCESS_REFUSED, NOT_FOUND, refused
from rabbitry.common.local.stream import StreamLog
from rabbitry.common.transport.contract import OutgoingMessage

if TYPE_CHECKING:
    from rabbitry.common.local.connection import LocalConnection


class LocalBroker:
    """Exchanges and queues of one in-process broker, shared by its connections."""

    def __init__(self, name: str = ""):
        self.name = name
        self.lock = threading.Lock()
        self.exchanges: dict[str, LocalExchange] = predeclared_exchanges()
        self.queues: dict[str, LocalQueue] = {}
        #: Direct reply-to: each address and the consumer it belongs to (see rabbitry.common.local.reply_to).
        self.reply_consumers: dict[str, Consumer] = {}
        #: The largest message body the broker takes, as RabbitMQ's ``max_message_size``; None: any.
        #: A larger one is refused as RabbitMQ refuses it, by closing the connection's channel.
        self.max_message_size: int | None = None
        self._expiry = ExpiryTimer(self.lock, self._expire_head_locked, f"local-broker-expiry{name}")

    # -- declaring ---------------------------------------------------------
    def declare_exchange_locked(
        self, name: str, kind: str, durable: bool, auto_delete: bool, alternate: str | None = None
    ) -> None:
        """Declare an exchange, or check that the existing one is equivalent."""
        existing = self.exchanges.get(name)
        if existing is not None:
            existing.check_equivalent(kind, durable, auto_delete)
        else:
            self.exchanges[name] = LocalExchange.declared(name, kind, durable, auto_delete, alternate)

    def declare_queue_locked(
        self,
        name: str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
        connection: "LocalConnection",
    ) -> str:
        """Declare a queue (named by the broker if ``name`` is empty); return its name."""
        name = name or server_named_queue()
        existing = self.queues.get(name)
        if existing is not None:
            existing.check_access(connection)
            existing.check_equivalent(durable, exclusive, auto_delete, arguments)
        else:
            self.queues[name] = LocalQueue.declared(
                name, durable, connection if exclusive else None, auto_delete, arguments
            )
        return name

    def bind_locked(self, exchange_name: str, queue_name: str, routing_key: str, connection: "LocalConnection") -> None:
        """Bind a queue to an exchange; both must exist, and the default exchange takes no bindings."""
        if exchange_name == "":
            raise refused(ACCESS_REFUSED, "operation queue.bind not permitted on the default exchange")
        exchange = self.exchange_locked(exchange_name)
        self.usable_queue_locked(queue_name, connection)
        exchange.bind(queue_name, routing_key)

    def bind_exchange_locked(self, source: str, destination: str, routing_key: str) -> None:
        """Bind exchange ``destination`` to exchange ``source``; both must exist, neither the default."""
        if "" in (source, destination):
            raise refused(ACCESS_REFUSED, "operation exchange.bind not permitted on the default exchange")
        self.exchange_locked(destination)
        self.exchange_locked(source).bind_exchange(destination, routing_key)

    def unbind_locked(
        self, exchange_name: str, queue_name: str, routing_key: str, connection: "LocalConnection"
    ) -> None:
        """Remove a binding; both must exist, as for binding."""
        exchange = self.exchange_locked(exchange_name)
        self.usable_queue_locked(queue_name, connection)
        exchange.unbind(queue_name, routing_key)

    def exchange_locked(self, name: str) -> LocalExchange:
        """The exchange called ``name``, or NOT_FOUND."""
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise refused(NOT_FOUND, f"no exchange '{name}' in vhost '/'")
        return exchange

    def queue_locked(self, name: str) -> LocalQueue:
        """The queue called ``name``, or NOT_FOUND."""
        queue = self.queues.get(name)
        if queue is None:
            raise refused(NOT_FOUND, f"no queue '{name}' in vhost '/'")
        return queue

    def usable_queue_locked(self, name: str, connection: "LocalConnection") -> LocalQueue:
        """The queue called ``name``, if it exists and is not another connection's exclusive queue."""
        queue = self.queue_locked(name)
        queue.check_access(connection)
        return queue

    # -- routing and enqueueing --------------------------------------------
    def route_locked(self, message: OutgoingMessage) -> int:
        """Put ``message`` on every queue its exchange routes it to; return how many."""
        headers = message.headers
        if headers and ("CC" in headers or "BCC" in headers):  # sender-selected distribution
            keys: tuple[str, ...] | list[str] = [message.routing_key, *headers.get("CC", ()), *headers.get("BCC", ())]
            message = dataclasses.replace(message, headers={k: v for k, v in headers.items() if k != "BCC"})
        else:
            keys = (message.routing_key,)
        if message.exchange == "" and len(keys) == 1:  # the default exchange: straight to the queue of that name
            queue = self.queues.get(message.routing_key)
            if queue is None:
                return 0
            self.enqueue_locked(queue, Envelope(message, queue))
            return 1
        return self._enqueue_routed_locked(self.exchange_locked(message.exchange), message, keys)

    def _enqueue_routed_locked(
        self, exchange: LocalExchange, message: OutgoingMessage, keys: tuple[str, ...] | list[str] | None = None
    ) -> int:
        """Put ``message`` on each queue ``exchange`` routes its key (or ``keys``) to, each queue once;
        return how many."""
        keys = keys or (message.routing_key,)
        names: dict[str, None] | list[str]
        if not exchange.name:
            names = dict.fromkeys(keys)
        elif len(keys) == 1:
            names = self._destinations_locked(exchange, keys[0])
        else:
            names = dict.fromkeys(name for key in keys for name in self._destinations_locked(exchange, key))
        routed = 0
        for name in names:
            queue = self.queues.get(name)
            if queue is not None:
                self.enqueue_locked(queue, Envelope(message, queue))
                routed += 1
        alternate = self.exchanges.get(exchange.alternate) if exchange.alternate and not routed else None
        if alternate is not None and alternate is not exchange:
            return self._enqueue_routed_locked(alternate, message, keys)
        return routed

    def _destinations_locked(self, exchange: LocalExchange, routing_key: str) -> list[str]:
        """The queues ``exchange`` routes ``routing_key`` to, itself and through the exchanges
        bound to it, each queue once (as RabbitMQ routes exchange-to-exchange bindings)."""
        if not exchange.exchange_bindings:
            return exchange.route(routing_key)
        queues, seen, pending = {}, {exchange.name}, [exchange]
        while pending:
            current = pending.pop()
            queues.update(dict.fromkeys(current.route(routing_key)))
            for name in current.passes(routing_key):
                onward = self.exchanges.get(name)
                if onward is not None and name not in seen:
                    seen.add(name)
                    pending.append(onward)
        return list(queues)

    def enqueue_locked(self, queue: LocalQueue, envelope: Envelope) -> None:
        """Append a message to ``queue``, with its expiry, and hand it to a consumer if one has credit."""
        if queue.stream is not None:  # kept in the log, read by every consumer from its own offset
            queue.stream.append(envelope.message)
            self._feed_stream_locked(queue, queue.stream)
            return
        expires_at = queue.deadline(envelope.message)  # None unless the message or the queue has a TTL
        if expires_at is not None:
            envelope.expires_at = expires_at
            self._expiry.schedule_locked(expires_at, queue)
        # Messages already waiting mean that no consumer has credit: whatever gives credit
        # (an ack, a reject, a new consumer) dispatches, until the queue is empty or the
        # credit is used up. So only a message that finds the queue empty is handed out here.
        if not queue.ready and queue.consumers:
            consumer = queue.next_consumer()
            if consumer is not None:
                self._hand_over_locked(consumer, envelope)
                return
        queue.ready.append(envelope)
        if queue.max_length is not None and len(queue.ready) > queue.max_length:  # x-overflow drop-head
            self.dead_letter_locked(queue.ready.popleft(), MAX_LENGTH)

    def dispatch_locked(self, queue: LocalQueue) -> None:
        """Hand ready messages to consumers that have credit, in turn."""
        if queue.stream is not None:
            self._feed_stream_locked(queue, queue.stream)
            return
        ready = queue.ready
        while ready:
            consumer = queue.next_consumer()
            if consumer is None:
                return
            self._hand_over_locked(consumer, ready.popleft())

    def _feed_stream_locked(self, queue: LocalQueue, stream: StreamLog) -> None:
        """Hand each consumer of a stream (``queue``, whose log is ``stream``) what follows its offset,
        as far as its credit goes."""
        for consumer in queue.consumers:
            consumer.cursor = max(consumer.cursor, stream.first_offset)  # retention went past it
            while consumer.unacked < consumer.prefetch:
                entry = stream.entry_at(consumer.cursor)
                if entry is None:
                    break
                consumer.cursor += 1
                consumer.connection.deliver_locked(consumer, Envelope(entry.message, queue))

    def _hand_over_locked(self, consumer: Consumer, envelope: Envelope) -> None:
        """Deliver ``envelope`` to ``consumer``, or dead-letter it if it has expired."""
        if envelope.expires_at is not None and envelope.expired():
            self.dead_letter_locked(envelope, EXPIRED)
        else:
            consumer.connection.deliver_locked(consumer, envelope)

    def take_locked(self, queue: LocalQueue) -> Envelope | None:
        """The next unexpired ready message of ``queue``, for basic.get."""
        while queue.ready:
            envelope = queue.ready.popleft()
            if envelope.expires_at is not None and envelope.expired():
                self.dead_letter_locked(envelope, EXPIRED)
                continue
            return envelope
        return None

    def requeue_locked(self, queue: LocalQueue, envelopes: list[Envelope]) -> None:
        """Put unacknowledged messages back at the head of their queue, marked redelivered
        (a stream keeps its messages anyway: a new consumer reads them again by offset)."""
        if not queue.deleted and queue.stream is None:
            queue.put_back(envelopes)
            self.dispatch_locked(queue)

    # -- dead-lettering and expiry -----------------------------------------
    def dead_letter_locked(self, envelope: Envelope, reason: str) -> None:
        """Drop a rejected or expired message, or republish it to its queue's dead-letter exchange."""
        queue = envelope.queue
        if queue.dead_letter_exchange is None:
            return
        exchange = self.exchanges.get(queue.dead_letter_exchange)
        if exchange is None:
            return  # RabbitMQ drops dead letters for a missing exchange, silently
        original = envelope.message
        self._enqueue_routed_locked(
            exchange, dead_letter(original, queue.name, reason, exchange.name, queue.dead_letter_routing_key(original))
        )

    def _expire_head_locked(self, queue: LocalQueue, now: float) -> float | None:
        """Dead-letter the expired messages at the head of ``queue``; return when the new head expires.

        Like RabbitMQ, only messages at the head expire.
        """
        while queue.ready and not queue.deleted:
            head = queue.ready[0]
            if head.expires_at is None or head.expires_at > now:
                return head.expires_at
            queue.ready.popleft()
            self.dead_letter_locked(head, EXPIRED)
        return None

    # -- deleting ----------------------------------------------------------
    def delete_queue_locked(self, name: str) -> None:
        """Delete a queue, its messages, consumers and bindings (nothing if it does not exist)."""
        queue = self.queues.pop(name, None)
        if queue is None:
            return
        queue.deleted = True
        queue.ready.clear()
        for consumer in queue.consumers:
            consumer.cancelled = True
        queue.consumers.clear()
        for exchange in list(self.exchanges.values()):
            if exchange.binds(name):
                exchange.unbind_queue(name)
                if exchange.auto_delete and not exchange.bindings:
                    del self.exchanges[exchange.name]

    def delete_exchange_locked(self, name: str) -> None:
        """Delete an exchange and its bindings; the predeclared ones cannot go."""
        if name in PREDECLARED_EXCHANGES:
            raise refused(ACCESS_REFUSED, f"operation not permitted on exchange '{name}'")
        self.exchanges.pop(name, None)
        for exchange in self.exchanges.values():
            exchange.unbind_exchange(name)

    def remove_consumer_locked(self, consumer: Consumer) -> None:
        """Take a consumer off its queue; an auto-delete queue goes with its last consumer."""
        consumer.cancelled = True
        if consumer.reply_address is not None:
            self.reply_consumers.pop(consumer.reply_address, None)
        queue = consumer.queue
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if queue.auto_delete and not queue.consumers and not queue.deleted:
            self.delete_queue_locked(queue.name)
        elif queue.single_active and not queue.deleted:
            self.dispatch_locked(queue)  # the next consumer is the active one, at once, as in RabbitMQ

    def close(self) -> None:
        """Stop the expiry thread; the broker's state is dropped with the object."""
        self._expiry.close()
