"""Streams and unbinding, one behaviour on two transports: RabbitMQ and the in-process model.

The in-process model keeps a stream as a bounded in-memory log; everything
``subscribe --since`` relies on is checked here against RabbitMQ's streams too.
"""

import threading
import time

import pytest

from rabbitry.common.errors import BrokerRefused
from rabbitry.common.retention import Retention
from rabbitry.common.topology import Binding, Exchange, Queue, history_stream_name
from rabbitry.subscribers.history_subscriber import HistorySubscriber
from rabbitry.subscribers.since import StartPoint
from tests.helpers import wait_until
from tests.transport_helpers import Inbox, message, publish_all

#: How long the broker is given to refuse a consumer: RabbitMQ closes the channel after one round trip.
_REFUSAL_BOUND_S = 30.0


def offsets(inbox: Inbox) -> list[int]:
    return [int(delivery.headers["x-stream-offset"]) for delivery in inbox.deliveries]


def declare_stream(transport, connection, name: str, retention: Retention = Retention()) -> str:
    stream = transport.name(name)
    transport.declare(connection, queues=[Queue(stream, arguments=retention.arguments())])
    return stream


def read(transport, stream: str, offset, count: int) -> Inbox:
    consumer = transport.connect()
    inbox = Inbox(consumer)

    def ack_as_it_comes(delivery):
        inbox(delivery)
        consumer.ack(delivery.delivery_tag)

    consumer.consume(stream, ack_as_it_comes, prefetch=10, arguments={"x-stream-offset": offset})
    inbox.wait_for(count)
    return inbox


def test_a_stream_keeps_its_messages_for_every_reader_from_the_offset_it_asks(transport):
    connection = transport.connect()
    stream = declare_stream(transport, connection, "stream")
    assert publish_all(connection, [message(stream, f"line {n}") for n in range(25)]) == []

    assert read(transport, stream, "first", 25).bodies() == [f"line {n}" for n in range(25)]
    from_twenty = read(transport, stream, 20, 5)
    assert offsets(from_twenty) == [20, 21, 22, 23, 24]
    again = read(transport, stream, "first", 25)  # reading takes nothing away
    assert offsets(again) == list(range(25))


def test_a_stream_reader_gets_what_is_appended_while_it_reads_and_next_starts_there(transport):
    connection = transport.connect()
    stream = declare_stream(transport, connection, "stream")
    publish_all(connection, [message(stream, "old")])
    everything = read(transport, stream, "first", 1)
    fresh = read(transport, stream, "next", 0)
    publish_all(connection, [message(stream, f"new {n}") for n in range(3)])

    everything.wait_for(4)
    fresh.wait_for(3)
    assert everything.bodies() == ["old", "new 0", "new 1", "new 2"]
    assert fresh.bodies() == ["new 0", "new 1", "new 2"]


def test_a_stream_needs_manual_acknowledgement(transport):
    connection = transport.connect()
    stream = declare_stream(transport, connection, "stream")
    deadline = time.monotonic() + _REFUSAL_BOUND_S
    with pytest.raises(BrokerRefused, match="PRECONDITION_FAILED"):
        connection.consume(stream, lambda delivery: None, auto_ack=True)
        while time.monotonic() < deadline:
            connection.process_events(0.05)


def test_a_stream_over_its_max_bytes_drops_its_oldest_messages(transport):
    connection = transport.connect()
    stream = declare_stream(transport, connection, "stream", Retention(max_bytes=20_000, segment_bytes=4096))
    for batch in range(10):
        publish_all(connection, [message(stream, f"{batch * 100 + n:04d} " + "x" * 95) for n in range(100)])

    def first_offset():
        inbox = read(transport, stream, "first", 1)
        return offsets(inbox)[0]

    assert wait_until(lambda: first_offset() > 0, message="retention to drop old messages")


def test_unbinding_a_key_stops_its_messages_and_an_unbound_key_changes_nothing(transport):
    connection = transport.connect()
    exchange, queue = transport.name("logs"), transport.name("sub")
    transport.declare(
        connection,
        exchanges=[Exchange(exchange, "topic")],
        queues=[Queue(queue)],
        bindings=[Binding(exchange, queue, "kern.*"), Binding(exchange, queue, "app.*")],
    )
    connection.unbind(exchange, queue, "app.*")
    connection.unbind(exchange, queue, "never.bound")

    failures = publish_all(
        connection, [message("app.info", "gone", exchange), message("kern.info", "kept", exchange)], mandatory=True
    )
    assert [failure.message.body for failure in failures] == [b"gone"]


def test_the_history_subscriber_replays_then_follows_and_filters_by_key(transport):
    connection = transport.connect()
    exchange = Exchange(transport.name("logs"), "topic")
    transport.declare(
        connection,
        exchanges=[exchange],
        queues=[Queue(history_stream_name(exchange.name), arguments=Retention().arguments())],
        bindings=[Binding(exchange.name, history_stream_name(exchange.name), "#")],
    )
    transport.queues.append(history_stream_name(exchange.name))
    now = int(time.time())
    publish_all(
        connection, [message(key, key, exchange.name, timestamp=now) for key in ("kern.info", "app.info", "kern.error")]
    )
    subscriber = HistorySubscriber(transport.settings, exchange, ["kern.*"], start=StartPoint("first", None))
    printed, stop = [], threading.Event()
    reading = threading.Thread(
        target=subscriber.run, args=(lambda d: printed.append(d.body.decode()), stop), kwargs={"count": 3}
    )
    reading.start()
    try:
        wait_until(lambda: len(printed) == 2, message="the history")
        publish_all(connection, [message(key, key, exchange.name, timestamp=now) for key in ("app.debug", "kern.warn")])
        reading.join(30)
    finally:
        stop.set()
    assert not reading.is_alive()
    assert printed == ["kern.info", "kern.error", "kern.warn"]
