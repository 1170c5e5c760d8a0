"""A channel RabbitMQ closes under a client is noticed by the client's next call, with the
broker's reason, never left for a consumer to wait on for ever."""

import time
import uuid

import pytest

from rabbitry.common.errors import AcknowledgementTimedOut, ChannelClosed, MessageRefused
from rabbitry.common.transport.contract import OutgoingMessage

#: How long the broker is given to close the channel: it does so at once, after one round trip.
_BOUND_S = 30.0


def test_a_channel_closed_by_a_refused_publish_is_noticed_with_the_brokers_reason(connection):
    connection.publish(OutgoingMessage("anything", b"lost", exchange=f"no-such-exchange-{uuid.uuid4().hex}"))

    deadline = time.monotonic() + _BOUND_S
    with pytest.raises(ChannelClosed, match="NOT_FOUND") as closed:
        while time.monotonic() < deadline:
            connection.process_events(0.05)
    assert not isinstance(closed.value, (MessageRefused, AcknowledgementTimedOut))
    assert not connection.is_open
