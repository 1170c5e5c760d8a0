"""The private parts of pika that rabbitry reaches (common/amqp/pika_internals.py), and only for its own connections."""

import pika
import pika.exceptions
import pytest
from pika import spec

from rabbitry.common.amqp import pika_internals
from rabbitry.common.amqp.pika_internals import PikaInternalsChanged
from rabbitry.common.topology import Queue, Topology
from rabbitry.common.transport.contract import UNREADABLE_HEADERS
from tests.helpers import TIMESTAMP_PAST_9999, publish_with_raw_headers, wait_until


@pytest.fixture
def pika_connection(broker_url):
    """A plain pika connection, as another library in the same process would open."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    yield connection
    if connection.is_open:
        connection.close()


def test_every_private_part_of_pika_that_rabbitry_reaches_is_still_there(pika_connection):
    # Fails after a pika upgrade that moves one, naming it and pika's version.
    pika_internals.check(pika_connection)


def test_a_missing_private_attribute_is_named_with_pikas_version():
    with pytest.raises(PikaInternalsChanged, match=rf"pika {pika.__version__} has no object\._impl, which "):
        pika_internals.async_channel(object())


def test_other_pika_connections_read_headers_as_pika_does(broker_url, connection, pika_connection, unique_name):
    connection.declare(Topology(queues=(Queue(unique_name),)))
    try:
        publish_with_raw_headers(broker_url, unique_name, b"the body", TIMESTAMP_PAST_9999, "unreadable")

        with pytest.raises(pika.exceptions.StreamLostError, match="OverflowError"):  # as pika reads it
            pika_connection.channel().basic_get(unique_name, auto_ack=False)
        # Requeued once the broker sees pika's connection closed, which it does a moment later.
        delivery = wait_until(lambda: connection.get(unique_name), 10, 0.02, "the message requeued")

        assert spec.props[spec.BasicProperties.INDEX] is spec.BasicProperties
        assert list(delivery.headers) == [UNREADABLE_HEADERS]
        assert delivery.redelivered
    finally:
        connection.delete_queue(unique_name)
