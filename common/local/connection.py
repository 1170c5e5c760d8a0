"""The in-process transport: :class:`common.transport.Connection` without a server.

``local://`` selects it (``local://name`` picks a named broker, so a process
can hold several: :mod:`rabbitry.common.local.registry` keeps them).
Producers, workers and subscribers run on it unchanged, as threads of one
process: it is rabbitry's embedded default when no RabbitMQ is around, the
fast double in tests, and the in-process side of ``rabbitry compare``.

Like a pika connection, a :class:`LocalConnection` belongs to the thread
that uses it. The broker hands it deliveries through a ``queue.SimpleQueue``
(its "socket"), and callbacks run only inside :meth:`process_events`, on
that thread. Publishes, acks and rejects are buffered, like frames on a
socket, and reach the broker in order before the connection's next
operation (at the latest in :meth:`~LocalConnection.process_events` or
:meth:`~LocalConnection.wait_for_confirms`, as with pika); a publish is
confirmed as soon as it reaches the broker. The broker keeps the published
:class:`~common.transport.OutgoingMessage` itself, so a publisher must not
change a message after publishing it (deliveries get their own headers).

The broker itself is :mod:`rabbitry.common.local.broker`; what a connection
sends it is in :mod:`rabbitry.common.local.outbox`.
"""

import contextlib
import itertools
import queue
from collections.abc import Callable

from rabbitry.common.errors import BrokerRefused, ConnectionLost, Unencodable
from rabbitry.common.local.broker import LocalBroker
from rabbitry.common.local.dead_letters import REJECTED
from rabbitry.common.local.outbox import ACK, DEAD_LETTER, REQUEUE, AckOrReject, Publish
from rabbitry.common.local.queue import Consumer, Envelope, LocalQueue
from rabbitry.common.local.refusals import ACCESS_REFUSED, PRECONDITION_FAILED, refused, too_large
from rabbitry.common.local.reply_to import (
    add_reply_consumer_locked,
    addressed,
    check_reply_consumer,
    is_reply_address,
    reply_owner_locked,
)
from rabbitry.common.local.stream import STREAM_OFFSET, check_stream_consumer
from rabbitry.common.replies import DIRECT_REPLY_TO
from rabbitry.common.topology import Topology
from rabbitry.common.transport.contract import (
    UNPUBLISHABLE,
    Connection,
    Delivery,
    OutgoingMessage,
    PublishFailure,
    PublishOutcomes,
    QueueState,
)
from rabbitry.common.transport.wire_limits import check_message, check_topology, may_be_too_long

#: Publishes buffered before they are sent to the broker in one go (as rabbitry.common.amqp.connection flushes).
_SEND_EVERY = 64
#: What a connection that was closed says when it is used.
_CLOSED = "connection lost: the in-process connection is closed"


def _wake_up() -> None:
    """Queued to wake a connection's thread when deliveries arrive."""


class LocalConnection(Connection):
    """One connection and one channel to an in-process :class:`LocalBroker`."""

    def __init__(self, broker: LocalBroker, name: str = "rabbitry"):
        self.broker = broker
        self.name = name
        # Callbacks from other threads; also the wake-up call for new deliveries.
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        # Deliveries handed over by the broker whose callbacks have not run yet.
        self._pending: list[Envelope] = []
        self._open = True
        self._next_delivery_tag = 1
        self._unacked: dict[int, Envelope] = {}  # by delivery tag, oldest first
        self._consumers: dict[str, Consumer] = {}
        self._consumer_numbers = itertools.count(1)
        # Publishes, acks and rejects sent but not yet read by the broker, in order.
        self._outbox: list[Publish | AckOrReject] = []
        self._unsent = 0  # publishes in the outbox
        self._publish_outcomes = PublishOutcomes()
        self._reply_address: str | None = None  # while consuming direct reply-to

    def _check_open(self) -> None:
        if not self._open:
            raise ConnectionLost(_CLOSED)

    @contextlib.contextmanager
    def _locked(self):
        """Hold the broker lock, having sent what this connection has buffered.

        A refusal closes the channel, as the real broker does.
        """
        with self.broker.lock:
            try:
                if self._outbox:
                    self._send_locked()
                yield
            except BrokerRefused:
                self._close_locked()
                raise

    # -- declaring ---------------------------------------------------------
    def declare(self, topology: Topology) -> dict[str, str]:
        self._check_open()
        check_topology(topology)  # as pika checks it, before anything reaches RabbitMQ
        names = {}
        broker = self.broker
        with self._locked():
            for exchange in topology.exchanges:
                broker.declare_exchange_locked(
                    exchange.name,
                    exchange.type,
                    exchange.durable,
                    exchange.auto_delete,
                    exchange.arguments.get("alternate-exchange"),
                )
            for declared in topology.queues:
                names[declared.name] = broker.declare_queue_locked(
                    declared.name, declared.durable, declared.exclusive, declared.auto_delete, declared.arguments, self
                )
            for binding in topology.bindings:
                broker.bind_locked(binding.exchange, names.get(binding.queue, binding.queue), binding.routing_key, self)
            for passing in topology.exchange_bindings:
                broker.bind_exchange_locked(passing.source, passing.destination, passing.routing_key)
        return names

    # -- publishing --------------------------------------------------------
    def publish(self, message: OutgoingMessage, mandatory: bool = False) -> None:
        if not self._open:  # _check_open(), inline on every message's path
            raise ConnectionLost(_CLOSED)
        if may_be_too_long(message):  # refused as pika refuses it
            try:
                check_message(message)
            except Unencodable:
                self._publish_outcomes.failed.append(PublishFailure(message, UNPUBLISHABLE, mandatory))
                return
        self._outbox.append(Publish(message, mandatory))
        self._unsent += 1
        if self._unsent >= _SEND_EVERY:
            self._send()

    def check_publishable(self, message: OutgoingMessage) -> None:
        check_message(message)

    @property
    def unconfirmed(self) -> int:
        return self._unsent  # confirms are immediate once sent

    def wait_for_confirms(self, timeout: float | None = None, down_to: int = 0) -> list[PublishFailure]:
        self._check_open()
        self._send()
        return self._publish_outcomes.take_failed()

    def take_confirmed(self) -> tuple[list[OutgoingMessage], list[PublishFailure]]:
        return self._publish_outcomes.take()

    def take_unconfirmed(self) -> list[tuple[OutgoingMessage, bool]]:
        unsent = [(sent.message, sent.mandatory) for sent in self._outbox if type(sent) is Publish]
        self._outbox = [sent for sent in self._outbox if type(sent) is AckOrReject]
        self._unsent = 0
        return unsent

    # -- consuming ---------------------------------------------------------
    def consume(self, queue, on_delivery, prefetch=1, exclusive=False, auto_ack=False, arguments=None) -> str:
        self._check_open()
        broker = self.broker
        if queue == DIRECT_REPLY_TO:
            return self._consume_replies(on_delivery, auto_ack)
        with self._locked():
            target = broker.usable_queue_locked(queue, self)
            if exclusive and target.consumers or any(c.exclusive for c in target.consumers):
                raise refused(ACCESS_REFUSED, f"queue '{queue}' in vhost '/' in exclusive use")
            tag = f"ctag{next(self._consumer_numbers)}.{id(self):x}"
            consumer = Consumer(
                tag, target, self, on_delivery, 0 if auto_ack else prefetch, exclusive, auto_ack=auto_ack
            )
            if target.stream is not None:
                check_stream_consumer(auto_ack, prefetch)
                consumer.cursor = target.stream.start_offset((arguments or {}).get(STREAM_OFFSET))
            self._consumers[tag] = consumer
            target.consumers.append(consumer)
            broker.dispatch_locked(target)
        return tag

    def _consume_replies(self, on_delivery, auto_ack: bool) -> str:
        """Consume direct reply-to: this connection gets an address of its own (see local_reply_to)."""
        with self._locked():
            check_reply_consumer(auto_ack)
            tag = f"ctag{next(self._consumer_numbers)}.{id(self):x}"
            consumer = Consumer(tag, LocalQueue(DIRECT_REPLY_TO, durable=False), self, on_delivery, 0, auto_ack=True)
            consumer.reply_address = self._reply_address = add_reply_consumer_locked(
                self.broker.reply_consumers, consumer
            )
            self._consumers[tag] = consumer
        return tag

    def deliver_locked(self, consumer: Consumer, envelope: Envelope) -> None:
        """Called by the broker, under its lock: hand ``envelope`` to ``consumer``.

        The delivery waits in a batch that :meth:`process_events` takes whole;
        only the first of a batch wakes the connection's thread.
        """
        tag = self._next_delivery_tag
        self._next_delivery_tag = tag + 1
        envelope.delivery_tag, envelope.consumer = tag, consumer
        if not consumer.auto_ack:
            self._unacked[tag] = envelope
            consumer.unacked += 1
        if not self._pending:
            self._inbox.put(_wake_up)
        self._pending.append(envelope)

    def cancel(self, consumer_tag: str) -> None:
        self._check_open()
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            if consumer.reply_address is not None:
                self._reply_address = None
            with self._locked():
                self.broker.remove_consumer_locked(consumer)

    def unbind(self, exchange: str, queue: str, routing_key: str = "") -> None:
        self._check_open()
        with self._locked():
            self.broker.unbind_locked(exchange, queue, routing_key, self)

    def binding_keys(self, exchange: str, queue: str) -> list[str] | None:
        self._check_open()
        with self._locked():
            found = self.broker.exchanges.get(exchange)
            return [] if found is None else found.binding_keys(queue)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        if not self._open:  # _check_open(), inline on every message's path
            raise ConnectionLost(_CLOSED)
        self._outbox.append(AckOrReject(delivery_tag, multiple, ACK))

    def reject(self, delivery_tag: int, requeue: bool = True) -> None:
        if not self._open:  # _check_open(), inline on every message's path
            raise ConnectionLost(_CLOSED)
        self._outbox.append(AckOrReject(delivery_tag, False, REQUEUE if requeue else DEAD_LETTER))

    def _send_locked(self) -> None:
        """Carry out, in order, the publishes, acks and rejects buffered since the last call.

        As over a socket, they are sent without waiting, and the broker reads
        them in order before this connection's next operation. Taking them in
        batches keeps the broker lock out of each message's path. A refusal
        (an unknown delivery tag, a missing exchange) closes the channel then,
        as RabbitMQ does.
        """
        outbox, self._outbox = self._outbox, []
        self._unsent = 0
        broker, unacked, confirmed = self.broker, self._unacked, self._publish_outcomes.confirmed
        max_size = broker.max_message_size
        touched: dict[LocalQueue, None] = {}
        for sent in outbox:
            if isinstance(sent, Publish):
                message = sent.message
                if max_size is not None and len(message.body) > max_size:
                    raise too_large(len(message.body), max_size)  # what follows it is never read
                if not self._route_locked(message) and sent.mandatory:
                    self._publish_outcomes.failed.append(PublishFailure(message, "unroutable"))
                else:
                    confirmed.append(message)
                continue
            delivery_tag = sent.delivery_tag
            settled: tuple[Envelope, ...] | list[Envelope]
            if not sent.multiple:
                single = unacked.pop(delivery_tag, None)
                settled = () if single is None else (single,)
            else:
                settled = [
                    unacked.pop(tag)
                    for tag in [
                        tag
                        for tag in unacked  # oldest first
                        if tag <= delivery_tag or not delivery_tag
                    ]
                ]
            if not settled:
                raise refused(PRECONDITION_FAILED, f"unknown delivery tag {delivery_tag}")
            outcome = sent.outcome
            for envelope in settled:
                if envelope.consumer is not None:
                    envelope.consumer.unacked -= 1
                    touched[envelope.queue] = None
                if outcome is REQUEUE:
                    broker.requeue_locked(envelope.queue, [envelope])
                elif outcome is DEAD_LETTER:
                    broker.dead_letter_locked(envelope, REJECTED)
        for queue_ in touched:
            if (queue_.ready or queue_.stream is not None) and queue_.consumers:
                broker.dispatch_locked(queue_)

    def _route_locked(self, message: OutgoingMessage) -> int:
        """Route a publish, as the broker reads it; return to how many queues (or reply consumers)."""
        message = addressed(message, self._reply_address)
        if not is_reply_address(message.exchange, message.routing_key):
            return self.broker.route_locked(message)
        owner = reply_owner_locked(self.broker.reply_consumers, message.routing_key)
        if owner is None:
            return 0  # its channel is gone: the reply is dropped, as RabbitMQ drops it
        owner.connection.deliver_locked(owner, Envelope(message, owner.queue))
        return 1

    def process_events(self, timeout: float | None = 0) -> None:
        self._check_open()
        self._send()
        if self._run_waiting() or timeout is not None and timeout <= 0:
            return
        try:
            callback = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return
        callback()
        self._run_waiting()

    def _run_waiting(self) -> bool:
        """Run the callbacks and deliveries waiting now; False if there were none."""
        inbox = self._inbox
        ran = False
        while not inbox.empty() and self._open:
            inbox.get_nowait()()
            ran = True
        if self._pending and self._open:
            with self.broker.lock:
                batch, self._pending = self._pending, []
            for position, envelope in enumerate(batch):
                if not self._open:
                    break  # a callback closed the connection: the rest is requeued already
                consumer = envelope.consumer
                assert consumer is not None  # deliver_locked set it
                try:
                    if consumer.cancelled:  # requeued, as pika does with what it never showed a consumer
                        if not consumer.auto_ack:
                            self.reject(envelope.delivery_tag, requeue=True)
                    else:
                        consumer.on_delivery(envelope.delivery())
                except BaseException:
                    with self.broker.lock:  # the rest stays for the next call, as in pika
                        self._pending[:0] = batch[position + 1 :]
                    raise
            ran = True
        if self._open:
            self._send()
        return ran

    def _send(self) -> None:
        """Send what is buffered: publishes, acks and rejects."""
        if self._outbox:
            with self._locked():
                pass

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        self._check_open()
        self._inbox.put(callback)

    # -- inspecting and cleaning up ---------------------------------------
    def queue_state(self, queue: str) -> QueueState | None:
        self._check_open()
        with self._locked():
            found = self.broker.queues.get(queue)
            return None if found is None else QueueState(len(found.ready), len(found.consumers))

    def get(self, queue: str) -> Delivery | None:
        self._check_open()
        broker = self.broker
        with self._locked():
            envelope = broker.take_locked(broker.usable_queue_locked(queue, self))
            if envelope is None:
                return None
            tag = self._next_delivery_tag
            self._next_delivery_tag = tag + 1
            envelope.delivery_tag, envelope.consumer = tag, None
            self._unacked[tag] = envelope
            return envelope.delivery()

    def purge(self, queue: str) -> int:
        self._check_open()
        with self._locked():
            return self.broker.queue_locked(queue).purge()

    def delete_queue(self, queue: str) -> None:
        self._check_open()
        with self._locked():
            self.broker.delete_queue_locked(queue)

    def delete_exchange(self, exchange: str) -> None:
        self._check_open()
        with self._locked():
            self.broker.delete_exchange_locked(exchange)

    @property
    def is_open(self) -> bool:
        return self._open

    def close(self) -> None:
        with self.broker.lock:
            self._close_locked()

    def _close_locked(self) -> None:
        """Cancel consumers, requeue every unacked message, drop exclusive queues."""
        if not self._open:
            return
        self._open = False
        if self._outbox:
            try:
                self._send_locked()
            except BrokerRefused:
                pass  # closing anyway
        broker = self.broker
        for consumer in self._consumers.values():
            broker.remove_consumer_locked(consumer)
        self._consumers.clear()
        by_queue: dict[LocalQueue, list[Envelope]] = {}
        for envelope in self._unacked.values():
            by_queue.setdefault(envelope.queue, []).append(envelope)
        self._unacked.clear()
        for queue_, envelopes in by_queue.items():
            broker.requeue_locked(queue_, envelopes)
        for name, owned in list(broker.queues.items()):
            if owned.exclusive_owner is self:
                broker.delete_queue_locked(name)
