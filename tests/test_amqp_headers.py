"""Headers that pika cannot read, or cannot send again, as clients other than pika may set them."""

import pytest

from rabbitry.common.errors import Unencodable
from rabbitry.common.topology import Queue, Topology
from rabbitry.common.transport.contract import UNREADABLE_HEADERS, OutgoingMessage
from tests.helpers import TIMESTAMP_PAST_9999, publish_with_raw_headers, raw_header


@pytest.fixture
def queue(connection, unique_name):
    connection.declare(Topology(queues=(Queue(unique_name),)))
    yield unique_name
    connection.delete_queue(unique_name)


def test_a_message_whose_headers_pika_cannot_read_arrives_with_a_note_instead(broker_url, connection, queue):
    table = raw_header("fine", b"S", b"\x00\x00\x00\x02ok") + TIMESTAMP_PAST_9999
    publish_with_raw_headers(broker_url, queue, b"the body", table, "unreadable", content_type="text/plain")

    delivery = connection.get(queue)
    connection.ack(delivery.delivery_tag)

    assert list(delivery.headers) == [UNREADABLE_HEADERS]
    assert delivery.headers[UNREADABLE_HEADERS].startswith("OverflowError")
    # Everything but the header table is read as usual, and the connection goes on.
    assert (delivery.body, delivery.message_id, delivery.content_type, delivery.persistent) == (
        b"the body",
        "unreadable",
        "text/plain",
        True,
    )
    connection.publish(OutgoingMessage(queue, b"after"))
    assert connection.wait_for_confirms(10) == []
    assert connection.get(queue).body == b"after"


def test_headers_too_large_for_one_frame_are_refused_before_they_are_sent(connection, queue):
    too_large = OutgoingMessage(queue, b"x", headers={"big": "y" * 200_000})
    with pytest.raises(Unencodable, match="more than one 131072-byte frame"):
        connection.check_publishable(too_large)
    with pytest.raises(Unencodable):
        connection.check_publishable(OutgoingMessage(queue, b"x", headers={"who": "caf\udce9"}))

    fitting = OutgoingMessage(queue, b"x", headers={"big": "y" * 130_000})
    connection.check_publishable(fitting)
    connection.publish(fitting)
    assert connection.wait_for_confirms(10) == []
    assert connection.queue_state(queue).messages == 1
