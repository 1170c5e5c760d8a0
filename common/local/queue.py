"""Storage in the in-process broker: queues, the messages they hold, and their consumers.

A :class:`LocalQueue` keeps its ready messages in order, each in an
:class:`Envelope` of its own, and hands them to its consumers in turn, to
those with prefetch credit. What a queue's arguments say (its type, its
message TTL, its dead-letter exchange) is read once, when it is declared.
Routing lives apart, in :mod:`rabbitry.common.local.exchange`.
"""

import collections
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rabbitry.common.local.refusals import PRECONDITION_FAILED, RESOURCE_LOCKED, refused
from rabbitry.common.local.stream import StreamLog
from rabbitry.common.transport.contract import Delivery, DeliveryCallback, OutgoingMessage

if TYPE_CHECKING:
    from rabbitry.common.local.connection import LocalConnection

QUEUE_TYPE = "x-queue-type"
DEAD_LETTER_EXCHANGE = "x-dead-letter-exchange"
DEAD_LETTER_ROUTING_KEY = "x-dead-letter-routing-key"
MESSAGE_TTL = "x-message-ttl"


@dataclass(slots=True)
class Envelope:
    """One queue's copy of a message: what the queue knows of its history, and who holds it now.

    While a connection holds it unacknowledged, ``delivery_tag`` and
    ``consumer`` say under which tag, and for which consumer (None for basic.get).
    """

    message: OutgoingMessage  # as published; the broker never changes it
    queue: "LocalQueue"
    expires_at: float | None = None  # time.monotonic() deadline
    redelivered: bool = False
    deliveries: int = 0  # earlier deliveries that were not acknowledged
    delivery_tag: int = 0
    consumer: "Consumer | None" = None

    def expired(self) -> bool:
        """Whether the message's TTL has run out."""
        return self.expires_at is not None and self.expires_at <= time.monotonic()

    def delivery(self) -> Delivery:
        """The message as its consumer (or basic.get) receives it."""
        message = self.message
        headers = message.headers
        if self.deliveries and self.queue.is_quorum:
            headers = {**(headers or {}), "x-delivery-count": self.deliveries}
        return Delivery(
            message.body,
            message.routing_key,
            message.exchange,
            self.delivery_tag,
            self.redelivered,
            message.content_type,
            message.message_id,
            message.timestamp,
            dict(headers) if headers else {},
            message.app_id,
            message.type,
            message.persistent,
            message.reply_to,
            message.correlation_id,
        )


@dataclass(eq=False, slots=True)
class Consumer:
    """A consumer on a queue: whom to deliver to and how many it may hold."""

    tag: str
    queue: "LocalQueue"
    connection: "LocalConnection"
    on_delivery: DeliveryCallback
    prefetch: int  # 0 means no limit, as in AMQP
    exclusive: bool = False  # the queue's only consumer, by request
    unacked: int = 0
    cancelled: bool = False
    auto_ack: bool = False  # deliveries count as acknowledged once sent
    reply_address: str | None = None  # a consumer of direct reply-to: its address
    cursor: int = 0  # a consumer of a stream: the offset it reads next


@dataclass(eq=False, slots=True)
class LocalQueue:
    """A queue: ready messages in order, and the consumers taking them in turn."""

    name: str
    durable: bool = True
    exclusive_owner: "LocalConnection | None" = None  # the connection an exclusive queue belongs to
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    ready: collections.deque[Envelope] = field(default_factory=collections.deque)
    consumers: list[Consumer] = field(default_factory=list)
    deleted: bool = False
    _turn: int = 0
    # Read on every message: looked up once, from the arguments.
    is_quorum: bool = field(init=False)
    message_ttl_ms: int | None = field(init=False)
    dead_letter_exchange: str | None = field(init=False)
    single_active: bool = field(init=False)
    max_length: int | None = field(init=False)
    #: A stream's log (None for other queues): its messages stay, and each consumer reads at its offset.
    stream: StreamLog | None = field(init=False)

    def __post_init__(self):
        self.is_quorum = self.arguments.get(QUEUE_TYPE) == "quorum"
        self.stream = StreamLog(self.arguments) if self.arguments.get(QUEUE_TYPE) == "stream" else None
        self.message_ttl_ms = self.arguments.get(MESSAGE_TTL)
        self.dead_letter_exchange = self.arguments.get(DEAD_LETTER_EXCHANGE)
        self.single_active = bool(self.arguments.get("x-single-active-consumer"))
        self.max_length = self.arguments.get("x-max-length")

    @classmethod
    def declared(
        cls,
        name: str,
        durable: bool,
        exclusive_owner: "LocalConnection | None",
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> "LocalQueue":
        """A new queue, as queue.declare makes one; a quorum queue or a stream must be durable and shared."""
        if arguments.get(QUEUE_TYPE) in ("quorum", "stream"):
            for flag, value in (
                ("non-durable", not durable),
                ("exclusive-owner", exclusive_owner is not None),
                ("auto-delete", auto_delete),
            ):
                if value:
                    raise refused(PRECONDITION_FAILED, f"invalid property '{flag}' for queue '{name}'")
        return cls(name, durable, exclusive_owner, auto_delete, dict(arguments))

    def check_equivalent(self, durable: bool, exclusive: bool, auto_delete: bool, arguments: dict[str, Any]) -> None:
        """PRECONDITION_FAILED unless a new declaration matches this queue."""
        if (self.durable, self.exclusive_owner is not None, self.auto_delete, equivalent_arguments(self.arguments)) != (
            durable,
            exclusive,
            auto_delete,
            equivalent_arguments(arguments),
        ):
            raise refused(
                PRECONDITION_FAILED,
                f"inequivalent arg for queue '{self.name}': it was declared "
                f"with durable={self.durable}, auto_delete={self.auto_delete}, "
                f"arguments={self.arguments}",
            )

    def check_access(self, connection: "LocalConnection") -> None:
        """RESOURCE_LOCKED if this is another connection's exclusive queue."""
        if self.exclusive_owner is not None and self.exclusive_owner is not connection:
            raise refused(RESOURCE_LOCKED, f"cannot obtain exclusive access to locked queue '{self.name}'")

    def dead_letter_routing_key(self, message: OutgoingMessage) -> str:
        """The routing key a dead letter of ``message`` is republished with."""
        return self.arguments.get(DEAD_LETTER_ROUTING_KEY, message.routing_key)

    def deadline(self, message: OutgoingMessage) -> float | None:
        """When ``message`` expires on this queue: the shorter of its own and the queue's TTL, as in RabbitMQ."""
        ttl_ms, queue_ttl_ms = message.expiration, self.message_ttl_ms
        if ttl_ms is None and queue_ttl_ms is None:
            return None
        return time.monotonic() + min(int(t) for t in (ttl_ms, queue_ttl_ms) if t is not None) / 1000

    def next_consumer(self) -> Consumer | None:
        """The next consumer in turn that has prefetch credit, if any."""
        consumers = self.consumers
        if self.single_active:  # x-single-active-consumer: only the earliest consumer receives
            consumers = consumers[:1]
        count = len(consumers)
        turn = self._turn
        for _ in range(count):
            consumer = consumers[turn % count]
            turn += 1
            if not consumer.prefetch or consumer.unacked < consumer.prefetch:
                self._turn = turn
                return consumer
        return None

    def put_back(self, envelopes: list[Envelope]) -> None:
        """Return unacknowledged messages to the head of the queue, in order, marked redelivered."""
        for envelope in reversed(envelopes):
            envelope.consumer = None
            envelope.redelivered = True
            envelope.deliveries += 1
            self.ready.appendleft(envelope)

    def purge(self) -> int:
        """Drop every ready message; return how many there were."""
        count = len(self.ready)
        self.ready.clear()
        return count


def equivalent_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Queue arguments as RabbitMQ compares them: the type defaults to classic."""
    return {QUEUE_TYPE: "classic", **arguments}


def server_named_queue() -> str:
    """A fresh name of the form RabbitMQ gives queues declared with an empty name."""
    return "amq.gen-" + secrets.token_urlsafe(16)
