"""The small messaging API that producers, workers and subscribers speak.

Two transports implement it: :mod:`rabbitry.common.amqp.connection` over RabbitMQ, and
:mod:`rabbitry.common.local.connection`, an in-process broker made of threads and queues. Code
written against :class:`Connection` runs unchanged on either.

A :class:`Connection` is one connection with one channel, owned by the thread
that opened it. The only call another thread may make is
:meth:`Connection.call_threadsafe`.
"""

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def new_message_id() -> str:
    """A fresh, unique message id: 128 random bits in hex, as random as a uuid4's."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class OutgoingMessage:
    """A message to publish, with the AMQP properties rabbitry uses."""

    routing_key: str
    body: bytes
    exchange: str = ""
    content_type: str | None = None
    message_id: str = field(default_factory=new_message_id)
    timestamp: int | None = None
    headers: dict[str, Any] | None = None
    persistent: bool = True
    app_id: str | None = None
    type: str | None = None
    expiration: str | None = None
    #: Where the consumer sends its reply (``amq.rabbitmq.reply-to`` asks for direct reply-to).
    reply_to: str | None = None
    correlation_id: str | None = None


@dataclass(slots=True)
class Delivery:
    """A message as a consumer receives it."""

    body: bytes
    routing_key: str
    exchange: str
    delivery_tag: int
    redelivered: bool = False
    content_type: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    app_id: str | None = None
    type: str | None = None
    persistent: bool = False
    reply_to: str | None = None
    correlation_id: str | None = None

    def republished(
        self,
        routing_key: str,
        exchange: str = "",
        headers: dict | None = None,
        body: bytes | None = None,
        expiration: str | None = None,
    ) -> OutgoingMessage:
        """An outgoing copy of this message, for retry or dead-lettering."""
        return OutgoingMessage(
            routing_key=routing_key,
            exchange=exchange,
            body=self.body if body is None else body,
            content_type=self.content_type,
            message_id=self.message_id or new_message_id(),
            timestamp=self.timestamp,
            headers={**self.headers, **(headers or {})},
            persistent=True,
            app_id=self.app_id,
            type=self.type,
            expiration=expiration,
            reply_to=self.reply_to,
            correlation_id=self.correlation_id,
        )


#: The failure of a message that cannot be encoded for AMQP, and so was never sent.
UNPUBLISHABLE = "unpublishable"
#: The one header of a delivery whose own headers could not be decoded; its value says why.
UNREADABLE_HEADERS = "x-rabbitry-unreadable-headers"


@dataclass(slots=True, frozen=True)
class PublishFailure:
    """A published message the broker did not accept: nacked or unroutable."""

    message: OutgoingMessage
    reason: str  # "unroutable", "nacked" or UNPUBLISHABLE
    mandatory: bool = False  # as it was published, to publish it again the same way


class PublishOutcomes:
    """What became of publishes (confirmed, or failed) that the caller has not yet been told of."""

    def __init__(self):
        self.confirmed: list[OutgoingMessage] = []
        self.failed: list[PublishFailure] = []

    def take(self) -> tuple[list[OutgoingMessage], list[PublishFailure]]:
        """Hand over (confirmed, failed) and start afresh."""
        confirmed, failed = self.confirmed, self.failed
        self.confirmed, self.failed = [], []
        return confirmed, failed

    def take_failed(self) -> list[PublishFailure]:
        """Hand over the failures only; the confirmed stay for :meth:`take`."""
        failed, self.failed = self.failed, []
        return failed


@dataclass(frozen=True)
class QueueState:
    """What a passive declare tells about a queue."""

    messages: int
    consumers: int


DeliveryCallback = Callable[[Delivery], None]


class Connection(abc.ABC):
    """One connection and one channel to a broker, for a single thread.

    Publishing is pipelined with publisher confirms: :meth:`publish` returns
    at once, and :meth:`wait_for_confirms` blocks until every message
    published so far is confirmed, returning those the broker refused or
    could not route.
    """

    @abc.abstractmethod
    def declare(self, topology) -> dict[str, str]:
        """Declare the exchanges, queues and bindings of ``topology``; return each queue's
        declared name -> its name on the broker (the broker's own for a name of "")."""

    @abc.abstractmethod
    def publish(self, message: OutgoingMessage, mandatory: bool = False) -> None:
        """Publish without waiting for the confirm."""

    @abc.abstractmethod
    def check_publishable(self, message: OutgoingMessage) -> None:
        """Raise :class:`~common.errors.Unencodable` if this transport cannot carry ``message``.

        Both transports refuse a short-string field that is over 255 bytes or
        not UTF-8 (:func:`rabbitry.common.transport.wire_limits.check_message`); RabbitMQ also
        refuses headers of a type AMQP lacks, or too large for one frame.
        :meth:`publish` finds it out too, but only as the message goes out, or
        on RabbitMQ, for a header too large for one frame, by losing the
        connection.
        """

    @property
    @abc.abstractmethod
    def unconfirmed(self) -> int:
        """How many published messages still wait for their confirm."""

    @abc.abstractmethod
    def wait_for_confirms(self, timeout: float | None = None, down_to: int = 0) -> list[PublishFailure]:
        """Block until at most ``down_to`` published messages await their
        confirm (by default: every one is confirmed); return the failures.

        Raises :class:`~common.errors.PublishFailed` if ``timeout`` passes first.
        """

    @abc.abstractmethod
    def take_confirmed(self) -> tuple[list[OutgoingMessage], list[PublishFailure]]:
        """Messages the broker has answered since the last call: (confirmed, failed)."""

    @abc.abstractmethod
    def take_unconfirmed(self) -> list[tuple[OutgoingMessage, bool]]:
        """Forget and return the (message, mandatory) pairs still awaiting a
        confirm, to publish them again after the connection was lost."""

    @abc.abstractmethod
    def consume(
        self,
        queue: str,
        on_delivery: DeliveryCallback,
        prefetch: int = 1,
        exclusive: bool = False,
        auto_ack: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Start consuming ``queue``; deliveries go to ``on_delivery`` from
        :meth:`process_events`. Returns the consumer tag.

        With ``auto_ack`` the broker counts a delivery as acknowledged once
        sent (no prefetch limit applies): direct reply-to needs it.
        ``arguments`` are basic.consume's: a stream takes ``x-stream-offset``
        (``"first"``, ``"last"``, ``"next"``, an offset, or a timezone-aware
        ``datetime``), and each delivery from a stream carries its offset in
        the ``x-stream-offset`` header.
        """

    @abc.abstractmethod
    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; unacked deliveries stay with this channel."""

    @abc.abstractmethod
    def unbind(self, exchange: str, queue: str, routing_key: str = "") -> None:
        """Remove the binding of ``queue`` to ``exchange`` under ``routing_key``
        (nothing happens if there is no such binding, as in RabbitMQ)."""

    def binding_keys(self, exchange: str, queue: str) -> list[str] | None:
        """The keys ``queue`` is bound to ``exchange`` with, or None where the transport cannot
        tell: AMQP 0-9-1 has no way to list bindings (RabbitMQ's management API has)."""
        return None

    @abc.abstractmethod
    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (and every earlier one with ``multiple``)."""

    @abc.abstractmethod
    def reject(self, delivery_tag: int, requeue: bool = True) -> None:
        """Reject a delivery: requeue it, or drop/dead-letter it."""

    @abc.abstractmethod
    def process_events(self, timeout: float = 0) -> None:
        """Do I/O for up to ``timeout`` seconds and run due callbacks."""

    @abc.abstractmethod
    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the connection's thread. Safe from any thread."""

    @abc.abstractmethod
    def queue_state(self, queue: str) -> QueueState | None:
        """Message and consumer counts of ``queue``, or None if it does not exist."""

    @abc.abstractmethod
    def get(self, queue: str) -> Delivery | None:
        """Take one message from ``queue`` (unacked), or None if it is empty."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Drop every ready message of ``queue``; return how many."""

    @abc.abstractmethod
    def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` if it exists."""

    @abc.abstractmethod
    def delete_exchange(self, exchange: str) -> None:
        """Delete ``exchange`` if it exists."""

    @property
    def server_properties(self) -> dict[str, Any]:
        """What the broker said about itself when the connection opened (nothing in-process)."""
        return {}

    @property
    def blocked_reason(self) -> str | None:
        """Why the broker blocks publishing on this connection (``"low on memory"``), or None."""
        return None

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """False once the connection is closed or lost."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection. Safe to call twice, or after a loss."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
