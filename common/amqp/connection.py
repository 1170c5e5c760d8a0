"""The RabbitMQ transport: :class:`common.transport.Connection` over pika.

:class:`AmqpConnection` wraps one pika ``BlockingConnection`` and its channel.
Every pika exception is translated where it leaves a call (with
:func:`~rabbitry.common.amqp.translation.translated`), so none leaves this
module; opening the connection is in :mod:`rabbitry.common.amqp.opening`.

Publishing is pipelined: pika's ``BlockingChannel`` waits for each confirm
in turn when confirms are on, so publishes and confirms go through the
channel's underlying asynchronous implementation (reached through
:mod:`rabbitry.common.amqp.pika_internals`), and confirms are tracked by
delivery tag as in pika's asynchronous publisher example.
"""

import contextlib
import time

import pika
import pika.exceptions as pika_errors
import structlog
from pika.spec import Basic

from rabbitry.common.amqp import pika_internals
from rabbitry.common.amqp.frames import decode_frame
from rabbitry.common.amqp.translation import QUEUE_START_WAIT_S, channel_closure, queue_not_started, translated
from rabbitry.common.errors import ConfirmTimeout, ConnectionLost, ConsumerCancelled, RabbitryError, Unencodable
from rabbitry.common.topology import Topology, existing_may_serve
from rabbitry.common.transport import wire_limits
from rabbitry.common.transport.contract import (
    UNPUBLISHABLE,
    Connection,
    Delivery,
    OutgoingMessage,
    PublishFailure,
    PublishOutcomes,
    QueueState,
)

#: Publishes buffered before pika is given a chance to write them and read confirms.
_FLUSH_EVERY = 64
#: Slice in which a blocking wait does I/O: short, so confirms are seen promptly.
_WAIT_SLICE_S = 0.002
#: Queues and exchanges this process uses as they were declared elsewhere: it warns once of each.
_USED_AS_THEY_EXIST: set[str] = set()
log = structlog.get_logger("rabbitry.amqp")


def _properties(message: OutgoingMessage) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=message.content_type,
        delivery_mode=2 if message.persistent else 1,
        message_id=message.message_id,
        timestamp=message.timestamp,
        headers=message.headers,
        app_id=message.app_id,
        type=message.type,
        expiration=message.expiration,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
    )


def _delivery(method, properties, body) -> Delivery:
    return Delivery(
        body=body,
        routing_key=method.routing_key,
        exchange=method.exchange,
        delivery_tag=method.delivery_tag,
        redelivered=method.redelivered,
        content_type=properties.content_type,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        headers=properties.headers or {},
        app_id=properties.app_id,
        type=properties.type,
        persistent=properties.delivery_mode == 2,
        reply_to=properties.reply_to,
        correlation_id=properties.correlation_id,
    )


class AmqpConnection(Connection):
    """A pika BlockingConnection with one channel in confirm mode."""

    def __init__(self, connection: pika.BlockingConnection, url: str):
        self.url = url
        self._connection = connection
        pika_internals.read_frames_with(connection, decode_frame)
        self._open_channel()
        self._blocked_reason: str | None = None
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        self._next_delivery_tag = 1
        self._outstanding: dict[int, tuple[OutgoingMessage, bool]] = {}
        self._returned: set[str] = set()
        self._publish_outcomes = PublishOutcomes()
        self._unflushed = 0
        self._watching_cancels = False
        self._cancelled_consumer: str | None = None
        #: Why the broker closed the channel, raised by the next call that needs it.
        self._closure: RabbitryError | None = None

    def _open_channel(self) -> None:
        """Open the channel, in confirm mode; at start, and again after a refused declare closed it."""
        with translated("opening a channel"):
            self._channel = self._connection.channel()
            self._async_channel = pika_internals.async_channel(self._channel)  # see the module docstring
            confirm_selected: list[object] = []
            self._async_channel.confirm_delivery(self._on_confirm, callback=confirm_selected.append)
            self._async_channel.add_on_return_callback(self._on_return)
            self._async_channel.add_on_close_callback(self._on_channel_closed)
            while not confirm_selected:
                self._connection.process_data_events(_WAIT_SLICE_S)
        self._next_delivery_tag = 1
        self._closure = None

    # -- declaring ---------------------------------------------------------
    def declare(self, topology: Topology) -> dict[str, str]:
        wire_limits.check_topology(topology)
        existing: dict[str, str] = {}
        with translated("declaring the topology"):
            names = self._once_queues_started(lambda: self._declare_all(topology, existing))
        if existing.keys() - _USED_AS_THEY_EXIST:
            _USED_AS_THEY_EXIST.update(existing)
            log.warning(
                "using_existing_declarations",
                used_as_they_exist=sorted(existing),
                refused=sorted(set(existing.values())),
                detail="they exist and cannot be declared as rabbitry would: using them as they are",
            )
        return names

    def _declare_all(self, topology: Topology, existing: dict[str, str]) -> dict[str, str]:
        names = {}
        for exchange in topology.exchanges:
            self._declare_or_use_existing(
                existing,
                f"exchange {exchange.name}",
                lambda exchange=exchange: self._channel.exchange_declare(
                    exchange.name,
                    exchange.type,
                    durable=exchange.durable,
                    auto_delete=exchange.auto_delete,
                    arguments=exchange.arguments or None,
                ),
                lambda exchange=exchange: self._channel.exchange_declare(exchange.name, passive=True),
            )
        for queue in topology.queues:
            result = self._declare_or_use_existing(
                existing,
                f"queue {queue.name}" if queue.name else "",
                lambda queue=queue: self._channel.queue_declare(
                    queue.name,
                    durable=queue.durable,
                    exclusive=queue.exclusive,
                    auto_delete=queue.auto_delete,
                    arguments=queue.arguments or None,
                ),
                lambda queue=queue: self._channel.queue_declare(queue.name, passive=True),
            )
            names[queue.name] = result.method.queue
        for binding in topology.bindings:
            self._channel.queue_bind(
                names.get(binding.queue, binding.queue), binding.exchange, routing_key=binding.routing_key
            )
        for passing in topology.exchange_bindings:
            self._channel.exchange_bind(passing.destination, passing.source, routing_key=passing.routing_key)
        return names

    def _once_queues_started(self, operation, reopen: bool = True):
        """Run ``operation``; while the broker answers that a durable queue it needs is not
        started, wait (doing I/O) and run it again on a new channel, for up to
        QUEUE_START_WAIT_S. Declaring again is harmless: declarations are idempotent."""
        deadline = time.monotonic() + QUEUE_START_WAIT_S
        pause = 0.05
        while True:
            try:
                return operation()
            except pika_errors.ChannelClosedByBroker as error:
                if not queue_not_started(error) or time.monotonic() + pause > deadline:
                    raise
                log.debug("waiting_for_queue_to_start", detail=error.reply_text)
            self._connection.sleep(pause)
            pause = min(2 * pause, 1.0)
            if reopen:
                self._open_channel()

    def _declare_or_use_existing(self, existing: dict[str, str], what: str, declare, declare_passively):
        """Declare; if the broker refuses in a way that an existing queue or exchange explains
        (extra arguments an operator gave it, no configure permission), use that one as it is
        and note it in ``existing``."""
        try:
            return declare()
        except pika_errors.ChannelClosedByBroker as refusal:
            if not what or not existing_may_serve(refusal.reply_code, refusal.reply_text):
                raise
            self._open_channel()
            try:
                result = declare_passively()
            except pika_errors.ChannelClosedByBroker:
                self._open_channel()
                raise refusal from None
            existing[what] = refusal.reply_text
            return result

    # -- publishing --------------------------------------------------------
    def publish(self, message: OutgoingMessage, mandatory: bool = False) -> None:
        properties = _properties(message)
        # Counted as unconfirmed before it is sent, so that a connection lost in
        # the middle of basic_publish still leaves it to be published again.
        tag = self._next_delivery_tag
        self._outstanding[tag] = (message, mandatory)
        try:
            with translated("publishing"):
                self._async_channel.basic_publish(
                    message.exchange, message.routing_key, message.body, properties, mandatory
                )
        except ConnectionLost:
            if self._closure is not None:  # the broker closed the channel before: say why
                raise self._closure from None
            raise
        except BaseException as error:
            del self._outstanding[tag]  # refused outright: it will never be confirmed
            if isinstance(error, Unencodable):  # this message's fault, not the connection's
                self._publish_outcomes.failed.append(PublishFailure(message, UNPUBLISHABLE, mandatory))
                return
            raise
        self._next_delivery_tag += 1
        self._unflushed += 1
        with translated("publishing"):
            if self._unflushed >= _FLUSH_EVERY:
                self._unflushed = 0
                pika_internals.coalesce_output(self._connection)
                self._connection.process_data_events(0)

    def check_publishable(self, message: OutgoingMessage) -> None:
        wire_limits.check_message(message)
        with translated("encoding a message"):
            size = len(b"".join(_properties(message).encode()))
        wire_limits.check_content_header(size, pika_internals.frame_max(self._connection))

    @property
    def unconfirmed(self) -> int:
        return len(self._outstanding)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, Basic.Ack)
        if method.multiple:
            tags = [tag for tag in self._outstanding if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._outstanding else []
        for tag in tags:
            message, mandatory = self._outstanding.pop(tag)
            if not acked:
                self._publish_outcomes.failed.append(PublishFailure(message, "nacked", mandatory))
            elif self._returned and message.message_id in self._returned:
                self._returned.discard(message.message_id)
                self._publish_outcomes.failed.append(PublishFailure(message, "unroutable"))
            else:
                self._publish_outcomes.confirmed.append(message)

    def _on_return(self, _channel, _method, properties, _body) -> None:
        # A return always precedes the confirm of the same message.
        self._returned.add(properties.message_id)

    def wait_for_confirms(self, timeout: float | None = None, down_to: int = 0) -> list[PublishFailure]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._consumer_translated("waiting for publisher confirms"):
            while len(self._outstanding) > down_to:
                if self._closure is not None:  # nothing more will be confirmed on this channel
                    raise self._closure
                if deadline is not None and time.monotonic() > deadline:
                    raise ConfirmTimeout(f"{len(self._outstanding)} messages not confirmed within {timeout:g} s")
                self._connection.process_data_events(_WAIT_SLICE_S)
        return self._publish_outcomes.take_failed()

    def take_confirmed(self) -> tuple[list[OutgoingMessage], list[PublishFailure]]:
        return self._publish_outcomes.take()

    def take_unconfirmed(self) -> list[tuple[OutgoingMessage, bool]]:
        messages = list(self._outstanding.values())
        self._outstanding.clear()
        return messages

    # -- consuming ---------------------------------------------------------
    def consume(self, queue, on_delivery, prefetch=1, exclusive=False, auto_ack=False, arguments=None) -> str:
        def on_message(_channel, method, properties, body):
            on_delivery(_delivery(method, properties, body))

        with translated(f"consuming from {queue!r}"):
            if not self._watching_cancels:
                self._channel.add_on_cancel_callback(self._on_consumer_cancelled)
                self._watching_cancels = True
            if not auto_ack:
                self._channel.basic_qos(prefetch_count=prefetch)
            return self._channel.basic_consume(
                queue, on_message, auto_ack=auto_ack, exclusive=exclusive, arguments=arguments
            )

    def cancel(self, consumer_tag: str) -> None:
        with translated("cancelling a consumer"):
            self._channel.basic_cancel(consumer_tag)

    def unbind(self, exchange: str, queue: str, routing_key: str = "") -> None:
        with translated(f"unbinding queue {queue!r} from {exchange!r}"):
            self._channel.queue_unbind(queue, exchange, routing_key)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        with self._consumer_translated("acknowledging"):
            self._async_channel.basic_ack(delivery_tag, multiple)

    def reject(self, delivery_tag: int, requeue: bool = True) -> None:
        with self._consumer_translated("rejecting"):
            self._async_channel.basic_nack(delivery_tag, multiple=False, requeue=requeue)

    @contextlib.contextmanager
    def _consumer_translated(self, where: str):
        """:func:`translated`, naming the cause when the broker closed the channel for one."""
        try:
            with translated(where):
                yield
        except ConnectionLost:
            if self._closure is not None:
                raise self._closure from None
            raise

    def _on_channel_closed(self, channel, reason) -> None:
        # Inside pika's I/O loop, like a cancel: noted here, raised from process_events.
        if channel is self._async_channel:  # not one closed and replaced already
            self._closure = channel_closure(reason)

    def _on_consumer_cancelled(self, method_frame) -> None:
        # Called from inside pika's I/O loop, where raising would break it:
        # note it, and raise from process_events.
        self._cancelled_consumer = method_frame.method.consumer_tag

    def process_events(self, timeout: float = 0) -> None:
        with self._consumer_translated(""):
            self._connection.process_data_events(timeout)
        if self._closure is not None:
            raise self._closure
        if self._cancelled_consumer is not None:
            raise ConsumerCancelled(
                f"the broker cancelled consumer {self._cancelled_consumer} (was its queue deleted?)"
            )

    def call_threadsafe(self, callback) -> None:
        with translated():
            self._connection.add_callback_threadsafe(callback)

    # -- inspecting and cleaning up ---------------------------------------
    def queue_state(self, queue: str) -> QueueState | None:
        def inspect():
            channel = self._connection.channel()
            result = channel.queue_declare(queue, passive=True)
            channel.close()
            return result

        with translated(f"inspecting queue {queue!r}"):
            try:
                result = self._once_queues_started(inspect, reopen=False)
            except pika_errors.ChannelClosedByBroker as error:
                if error.reply_code == 404 and not queue_not_started(error):
                    return None
                raise
        return QueueState(result.method.message_count, result.method.consumer_count)

    def get(self, queue: str) -> Delivery | None:
        with translated(f"reading queue {queue!r}"):
            method, properties, body = self._channel.basic_get(queue, auto_ack=False)
        if method is None:
            return None
        return _delivery(method, properties, body)

    def purge(self, queue: str) -> int:
        with translated(f"purging queue {queue!r}"):
            return self._channel.queue_purge(queue).method.message_count

    def delete_queue(self, queue: str) -> None:
        with translated(f"deleting queue {queue!r}"):
            self._channel.queue_delete(queue)

    def delete_exchange(self, exchange: str) -> None:
        with translated(f"deleting exchange {exchange!r}"):
            self._channel.exchange_delete(exchange)

    @property
    def server_properties(self) -> dict:
        return pika_internals.server_properties(self._connection)

    @property
    def is_open(self) -> bool:
        return self._connection.is_open and self._channel.is_open

    # -- blocked by a resource alarm --------------------------------------
    def _on_blocked(self, _connection, frame) -> None:
        self._blocked_reason = frame.method.reason or "no reason given"

    def _on_unblocked(self, _connection, _frame) -> None:
        self._blocked_reason = None

    @property
    def blocked_reason(self) -> str | None:
        return self._blocked_reason

    def close(self) -> None:
        try:
            if self._connection.is_open and self._blocked_reason is not None:
                _drop(self._connection)
            elif self._connection.is_open:
                self._connection.close()
        except (pika_errors.AMQPError, OSError):
            pass  # already gone: nothing left to close


def _drop(connection: pika.BlockingConnection) -> None:
    """Close the TCP connection without AMQP's closing handshake.

    A blocked connection cannot complete that handshake: the broker reads
    nothing from it until the alarm clears, so a graceful close would wait as
    long. pika has no public call for this: the adapter holds the private one.
    """
    pika_internals.terminate(connection, pika_errors.ConnectionClosedByClient(200, "closed while blocked"))
    while connection.is_open:
        connection.process_data_events(_WAIT_SLICE_S)
