"""Direct reply-to, the transport under results: on RabbitMQ and on the in-process model alike."""

import contextlib

import pytest

from rabbitry.common.errors import BrokerRefused, PublishFailed
from rabbitry.common.replies import DIRECT_REPLY_TO
from rabbitry.common.topology import Queue
from rabbitry.common.transport.contract import OutgoingMessage
from tests.transport_helpers import Inbox, get_within


def request_and_reply(transport, caller, server, body: bytes = b"answer"):
    """The caller asks through a queue; the server answers the address it finds in reply_to."""
    queue = transport.declare(server, queues=[Queue(transport.name("requests"), durable=False)])[
        transport.name("requests")
    ]
    caller.publish(OutgoingMessage(queue, b"question", reply_to=DIRECT_REPLY_TO, correlation_id="c-1"))
    assert caller.wait_for_confirms(10) == []
    request = get_within(server, queue)
    server.ack(request.delivery_tag)
    server.publish(OutgoingMessage(request.reply_to, body, correlation_id=request.correlation_id, persistent=False))
    assert server.wait_for_confirms(10) == []
    return request


def test_a_reply_reaches_the_channel_that_asked(transport):
    caller, server = transport.connect(), transport.connect()
    replies = Inbox(caller)
    caller.consume(DIRECT_REPLY_TO, replies, auto_ack=True)

    request = request_and_reply(transport, caller, server)
    replies.wait_for(1)

    assert request.reply_to.startswith(DIRECT_REPLY_TO + ".")  # the broker's address for the caller's channel
    [reply] = replies.deliveries
    assert (reply.body, reply.correlation_id) == (b"answer", "c-1")


def test_a_reply_whose_caller_has_gone_is_dropped_without_an_error(transport):
    caller, server = transport.connect(), transport.connect()
    caller.consume(DIRECT_REPLY_TO, Inbox(caller), auto_ack=True)
    queue = transport.declare(server, queues=[Queue(transport.name("requests"), durable=False)])[
        transport.name("requests")
    ]
    caller.publish(OutgoingMessage(queue, b"question", reply_to=DIRECT_REPLY_TO, correlation_id="c-1"))
    caller.wait_for_confirms(10)
    request = get_within(server, queue)
    caller.close()

    server.publish(OutgoingMessage(request.reply_to, b"late answer", correlation_id="c-1", persistent=False))

    assert server.wait_for_confirms(10) == []
    server.ack(request.delivery_tag)
    assert server.queue_state(queue).messages == 0 and server.is_open


def test_asking_for_a_reply_without_consuming_replies_is_refused(transport):
    caller = transport.connect()
    queue = transport.declare(caller, queues=[Queue(transport.name("requests"), durable=False)])[
        transport.name("requests")
    ]

    caller.publish(OutgoingMessage(queue, b"question", reply_to=DIRECT_REPLY_TO))
    # The broker closes the channel (PRECONDITION_FAILED, "fast reply consumer does not exist");
    # the in-process model says so at once, pika only by leaving the publish unconfirmed.
    with contextlib.suppress(BrokerRefused, PublishFailed):
        caller.wait_for_confirms(2)

    assert not caller.is_open


def test_a_reply_consumer_that_would_acknowledge_is_refused(transport):
    caller = transport.connect()

    with pytest.raises(BrokerRefused, match="PRECONDITION_FAILED"):
        caller.consume(DIRECT_REPLY_TO, Inbox(caller), auto_ack=False)


def test_rabbitmq_returns_a_mandatory_direct_reply_even_when_it_delivers_it(transport):
    """Why workers send replies without the mandatory flag: RabbitMQ 3.10 returns every mandatory
    publish to a reply-to address, so a return says nothing about whether the caller got it. The
    in-process model returns only what it could not deliver. If this fails on a newer RabbitMQ,
    the worker could send replies as mandatory and log those that found nobody."""
    caller, server = transport.connect(), transport.connect()
    replies = Inbox(caller)
    caller.consume(DIRECT_REPLY_TO, replies, auto_ack=True)
    queue = transport.declare(server, queues=[Queue(transport.name("requests"), durable=False)])[
        transport.name("requests")
    ]
    caller.publish(OutgoingMessage(queue, b"question", reply_to=DIRECT_REPLY_TO))
    caller.wait_for_confirms(10)
    request = get_within(server, queue)

    server.publish(OutgoingMessage(request.reply_to, b"answer", persistent=False), mandatory=True)
    failures = server.wait_for_confirms(10)
    replies.wait_for(1)

    returned = [failure.reason for failure in failures]
    assert returned == (["unroutable"] if transport.kind == "amqp" else [])
