"""The state of an in-process broker: exchanges, queues, bindings and messages.

This is the broker side of :mod:`rabbitry.common.local`. One lock guards all of it,
so routing, enqueueing, dispatching to consumers and dead-lettering are
atomic, as they are inside RabbitMQ. Methods whose names end in
``_locked`` expect the caller to hold :attr:`LocalBroker.lock`.

The rules follow RabbitMQ 3.x: the default exchange routes by queue name;
fanout, direct and topic exchanges route each message to a queue at most
once; a consumer holds at most ``prefetch`` unacknowledged messages and
queues hand messages to consumers with credit in turn; per-message and
per-queue TTLs expire messages at the head of a queue; a queue with
``x-dead-letter-exchange`` republishes expired and rejected messages there,
with ``x-death`` headers; quorum queues count redeliveries in
``x-delivery-count``. Durability is recorded, but the broker lives in
memory: nothing survives the process.
"""

import collections
import datetime
import heapq
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rabbitry.common.errors import BrokerRefused
from rabbitry.common.routing import binding_matches
from rabbitry.common.transport import OutgoingMessage

EXCHANGE_TYPES = ("direct", "fanout", "topic")
#: Exchanges every RabbitMQ vhost has (amq.headers aside: rabbitry routes no headers).
PREDECLARED_EXCHANGES = {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic"}
_QUEUE_TYPE = "x-queue-type"
_ROUTE_CACHE_SIZE = 4096

# AMQP reply codes, as the real broker names them in its refusals.
NOT_FOUND = "NOT_FOUND (404)"
ACCESS_REFUSED = "ACCESS_REFUSED (403)"
RESOURCE_LOCKED = "RESOURCE_LOCKED (405)"
PRECONDITION_FAILED = "PRECONDITION_FAILED (406)"
COMMAND_INVALID = "COMMAND_INVALID (503)"


def refused(code: str, text: str) -> BrokerRefused:
    """The error for an operation the real broker would refuse with ``code``."""
    return BrokerRefused(f"the broker refused: {code.split()[0]} - {text} {code.split()[1]}")


@dataclass(slots=True)
class Envelope:
    """One queue's copy of a message, with what that queue knows of its history."""

    message: OutgoingMessage  # as published; the broker never changes it
    expires_at: float | None = None
    redelivered: bool = False
    deliveries: int = 0  # earlier deliveries that were not acknowledged


@dataclass(eq=False, slots=True)
class Consumer:
    """A consumer on a queue: whom to deliver to and how many it may hold."""

    tag: str
    queue: "LocalQueue"
    connection: Any  # the rabbitry.common.local.LocalConnection that owns it
    on_delivery: Any
    prefetch: int  # 0 means no limit, as in AMQP
    exclusive: bool = False  # the queue's only consumer, by request
    unacked: int = 0
    cancelled: bool = False
    auto_ack: bool = False  # deliveries count as acknowledged once sent
    reply_address: str | None = None  # a consumer of direct reply-to: its address


@dataclass(eq=False)
class LocalExchange:
    """An exchange and its bindings."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    bindings: list[tuple[str, str]] = field(default_factory=list)  # (routing key, queue name)
    _route_cache: dict[str, list[str]] = field(default_factory=dict)

    def route(self, routing_key: str) -> list[str]:
        """Names of the queues a message with ``routing_key`` goes to, each once."""
        # Topic matching costs most, and logs repeat their keys: remember the answers.
        cached = self._route_cache.get(routing_key)
        if cached is None:
            if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            cached = list(dict.fromkeys(queue for key, queue in self.bindings
                                        if binding_matches(self.type, key, routing_key)))
            self._route_cache[routing_key] = cached
        return cached

    def bind(self, queue: str, routing_key: str) -> None:
        """Bind ``queue`` under ``routing_key`` (binding twice changes nothing)."""
        if (routing_key, queue) not in self.bindings:
            self.bindings.append((routing_key, queue))
            self._route_cache.clear()

    def unbind_queue(self, queue: str) -> None:
        """Remove every binding of ``queue``."""
        self.bindings = [(key, name) for key, name in self.bindings if name != queue]
        self._route_cache.clear()


@dataclass(eq=False, slots=True)
class LocalQueue:
    """A queue: ready messages in order, and the consumers taking them in turn."""

    name: str
    durable: bool = True
    exclusive_owner: Any = None  # the connection an exclusive queue belongs to
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    ready: collections.deque = field(default_factory=collections.deque)
    consumers: list[Consumer] = field(default_factory=list)
    deleted: bool = False
    _turn: int = 0
    # Read on every message: looked up once, from the arguments.
    is_quorum: bool = field(init=False)
    message_ttl_ms: int | None = field(init=False)

    def __post_init__(self):
        self.is_quorum = self.arguments.get(_QUEUE_TYPE) == "quorum"
        self.message_ttl_ms = self.arguments.get("x-message-ttl")

    def next_consumer(self) -> Consumer | None:
        """The next consumer in turn that has prefetch credit, if any."""
        consumers = self.consumers
        count = len(consumers)
        turn = self._turn
        for _ in range(count):
            consumer = consumers[turn % count]
            turn += 1
            if not consumer.prefetch or consumer.unacked < consumer.prefetch:
                self._turn = turn
                return consumer
        return None


def equivalent_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Queue arguments as RabbitMQ compares them: the type defaults to classic."""
    return {_QUEUE_TYPE: "classic", **arguments}


def server_named_queue() -> str:
    """A fresh name of the form RabbitMQ gives queues declared with an empty name."""
    return "amq.gen-" + secrets.token_urlsafe(16)


class LocalBroker:
    """Exchanges and queues of one in-process broker, shared by its connections."""

    def __init__(self, name: str = ""):
        self.name = name
        self.lock = threading.Lock()
        self.exchanges: dict[str, LocalExchange] = {
            name: LocalExchange(name, kind, durable=True) for name, kind in PREDECLARED_EXCHANGES.items()}
        self.queues: dict[str, LocalQueue] = {}
        #: Direct reply-to: each address and the consumer it belongs to (see rabbitry.common.local_reply_to).
        self.reply_consumers: dict[str, Consumer] = {}
        # Expiring messages: a heap of (deadline, sequence, queue), served by one thread.
        self._expiry_heap: list[tuple[float, int, LocalQueue]] = []
        self._expiry_sequence = itertools.count()
        self._expiry_wakeup = threading.Condition(self.lock)
        self._expiry_thread: threading.Thread | None = None
        self._closed = False

    # -- declaring ---------------------------------------------------------
    def declare_exchange_locked(self, name: str, kind: str, durable: bool, auto_delete: bool) -> None:
        """Declare an exchange, or check that the existing one is equivalent."""
        existing = self.exchanges.get(name)
        if existing is not None:
            if (existing.type, existing.durable, existing.auto_delete) != (kind, durable, auto_delete):
                raise refused(PRECONDITION_FAILED, f"inequivalent arg for exchange '{name}': declared as "
                              f"{existing.type} (durable={existing.durable}, auto_delete={existing.auto_delete})")
            return
        if kind not in EXCHANGE_TYPES:
            raise refused(COMMAND_INVALID, f"invalid exchange type '{kind}'")
        if name.startswith("amq."):
            raise refused(ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'")
        self.exchanges[name] = LocalExchange(name, kind, durable, auto_delete)

    def declare_queue_locked(self, name: str, durable: bool, exclusive: bool, auto_delete: bool,
                             arguments: dict[str, Any], connection) -> str:
        """Declare a queue (named by the broker if ``name`` is empty); return its name."""
        name = name or server_named_queue()
        existing = self.queues.get(name)
        if existing is not None:
            self.check_access_locked(existing, connection)
            if (existing.durable, existing.exclusive_owner is not None, existing.auto_delete,
                    equivalent_arguments(existing.arguments)) != (
                    durable, exclusive, auto_delete, equivalent_arguments(arguments)):
                raise refused(PRECONDITION_FAILED, f"inequivalent arg for queue '{name}': it was declared "
                              f"with durable={existing.durable}, auto_delete={existing.auto_delete}, "
                              f"arguments={existing.arguments}")
            return name
        if arguments.get(_QUEUE_TYPE) == "quorum":
            for flag, value in (("non-durable", not durable), ("exclusive-owner", exclusive),
                                ("auto-delete", auto_delete)):
                if value:
                    raise refused(PRECONDITION_FAILED, f"invalid property '{flag}' for queue '{name}'")
        self.queues[name] = LocalQueue(name, durable, connection if exclusive else None, auto_delete,
                                       dict(arguments))
        return name

    def bind_locked(self, exchange_name: str, queue_name: str, routing_key: str, connection) -> None:
        """Bind a queue to an exchange; both must exist, and the default exchange takes no bindings."""
        if exchange_name == "":
            raise refused(ACCESS_REFUSED, "operation queue.bind not permitted on the default exchange")
        exchange = self.exchange_locked(exchange_name)
        self.check_access_locked(self.queue_locked(queue_name), connection)
        exchange.bind(queue_name, routing_key)

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

    @staticmethod
    def check_access_locked(queue: LocalQueue, connection) -> None:
        """RESOURCE_LOCKED unless ``connection`` may use ``queue`` (another's exclusive queue)."""
        if queue.exclusive_owner is not None and queue.exclusive_owner is not connection:
            raise refused(RESOURCE_LOCKED, f"cannot obtain exclusive access to locked queue '{queue.name}'")

    # -- routing and enqueueing --------------------------------------------
    def route_locked(self, message: OutgoingMessage) -> int:
        """Put ``message`` on every queue its exchange routes it to; return how many."""
        if message.exchange == "":  # the default exchange: straight to the queue of that name
            queue = self.queues.get(message.routing_key)
            if queue is None:
                return 0
            self.enqueue_locked(queue, Envelope(message))
            return 1
        names = self.exchange_locked(message.exchange).route(message.routing_key)
        for name in names:
            self.enqueue_locked(self.queues[name], Envelope(message))
        return len(names)

    def enqueue_locked(self, queue: LocalQueue, envelope: Envelope) -> None:
        """Append a message to ``queue``, with its expiry, and hand it to a consumer if one has credit."""
        ttl_ms, queue_ttl_ms = envelope.message.expiration, queue.message_ttl_ms
        if ttl_ms is not None or queue_ttl_ms is not None:
            # The shorter of the message's and the queue's TTL applies, as in RabbitMQ.
            ttls = [int(t) for t in (ttl_ms, queue_ttl_ms) if t is not None]
            envelope.expires_at = time.monotonic() + min(ttls) / 1000
            self._schedule_expiry_locked(envelope.expires_at, queue)
        ready = queue.ready
        ready.append(envelope)
        # Messages already waiting mean that no consumer has credit: whatever gives credit
        # (an ack, a reject, a new consumer) dispatches, until the queue is empty or the
        # credit is used up. So only a message that finds the queue empty is handed out here.
        if len(ready) == 1 and queue.consumers:
            self.dispatch_locked(queue)

    def dispatch_locked(self, queue: LocalQueue) -> None:
        """Hand ready messages to consumers that have credit, in turn."""
        ready = queue.ready
        while ready:
            consumer = queue.next_consumer()
            if consumer is None:
                return
            envelope = ready.popleft()
            if envelope.expires_at is not None and envelope.expires_at <= time.monotonic():
                self.dead_letter_locked(queue, envelope, "expired")
                continue
            consumer.connection.deliver_locked(consumer, queue, envelope)

    def take_locked(self, queue: LocalQueue) -> Envelope | None:
        """The next unexpired ready message of ``queue``, for basic.get."""
        while queue.ready:
            envelope = queue.ready.popleft()
            if envelope.expires_at is not None and envelope.expires_at <= time.monotonic():
                self.dead_letter_locked(queue, envelope, "expired")
                continue
            return envelope
        return None

    def requeue_locked(self, queue: LocalQueue, envelopes: list[Envelope]) -> None:
        """Put unacknowledged messages back at the head of their queue, marked redelivered."""
        if queue.deleted:
            return
        for envelope in reversed(envelopes):
            envelope.redelivered = True
            envelope.deliveries += 1
            queue.ready.appendleft(envelope)
        self.dispatch_locked(queue)

    # -- dead-lettering and expiry -----------------------------------------
    def dead_letter_locked(self, queue: LocalQueue, envelope: Envelope, reason: str) -> None:
        """Drop a rejected or expired message, or republish it to the queue's dead-letter exchange."""
        exchange_name = queue.arguments.get("x-dead-letter-exchange")
        if exchange_name is None:
            return
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            return  # RabbitMQ drops dead letters for a missing exchange, silently
        original = envelope.message
        routing_key = queue.arguments.get("x-dead-letter-routing-key", original.routing_key)
        headers = dict(original.headers or {})
        death = {"count": 1, "reason": reason, "queue": queue.name,
                 "time": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0),
                 "exchange": original.exchange, "routing-keys": [original.routing_key]}
        if original.expiration is not None:
            death["original-expiration"] = original.expiration
        deaths = list(headers.get("x-death") or [])
        for earlier in deaths:
            if earlier.get("queue") == queue.name and earlier.get("reason") == reason:
                deaths.remove(earlier)
                death["count"] = earlier.get("count", 0) + 1
                break
        headers["x-death"] = [death, *deaths]
        headers.setdefault("x-first-death-exchange", original.exchange)
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-reason", reason)
        # The expiration is dropped, so the dead letter does not expire again on arrival.
        letter = OutgoingMessage(routing_key, original.body, exchange_name, original.content_type,
                                 original.message_id, original.timestamp, headers, original.persistent,
                                 original.app_id, original.type, reply_to=original.reply_to,
                                 correlation_id=original.correlation_id)
        for name in ([routing_key] if exchange_name == "" else exchange.route(routing_key)):
            target = self.queues.get(name)
            if target is not None:
                self.enqueue_locked(target, Envelope(letter))

    def _schedule_expiry_locked(self, deadline: float, queue: LocalQueue) -> None:
        heapq.heappush(self._expiry_heap, (deadline, next(self._expiry_sequence), queue))
        if self._expiry_thread is None:
            self._expiry_thread = threading.Thread(target=self._expire, name=f"local-broker-expiry{self.name}",
                                                   daemon=True)
            self._expiry_thread.start()
        elif self._expiry_heap[0][0] == deadline:
            self._expiry_wakeup.notify()

    def _expire(self) -> None:
        """Expire messages at the heads of queues as their deadlines pass (one thread per broker)."""
        with self.lock:
            while not self._closed:
                now = time.monotonic()
                heap = self._expiry_heap
                while heap and heap[0][0] <= now:
                    _, _, queue = heapq.heappop(heap)
                    self._expire_head_locked(queue, now)
                self._expiry_wakeup.wait(heap[0][0] - now if heap else None)

    def _expire_head_locked(self, queue: LocalQueue, now: float) -> None:
        # Like RabbitMQ, only messages at the head expire; the next deadline is rescheduled.
        while queue.ready and not queue.deleted:
            head = queue.ready[0]
            if head.expires_at is None:
                return
            if head.expires_at > now:
                heapq.heappush(self._expiry_heap, (head.expires_at, next(self._expiry_sequence), queue))
                return
            queue.ready.popleft()
            self.dead_letter_locked(queue, head, "expired")

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
            if any(bound == name for _, bound in exchange.bindings):
                exchange.unbind_queue(name)
                if exchange.auto_delete and not exchange.bindings:
                    del self.exchanges[exchange.name]

    def delete_exchange_locked(self, name: str) -> None:
        """Delete an exchange and its bindings; the predeclared ones cannot go."""
        if name in PREDECLARED_EXCHANGES:
            raise refused(ACCESS_REFUSED, f"operation not permitted on exchange '{name}'")
        self.exchanges.pop(name, None)

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

    def close(self) -> None:
        """Stop the expiry thread; the broker's state is dropped with the object."""
        with self.lock:
            self._closed = True
            self._expiry_wakeup.notify_all()
        if self._expiry_thread is not None:
            self._expiry_thread.join()
