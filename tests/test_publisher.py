"""ReliablePublisher: every message is either confirmed or reported, never silently dropped."""

import pytest
from structlog.testing import capture_logs

from rabbitry.common.topology import Queue, Topology
from rabbitry.common.transport.contract import OutgoingMessage, QueueState
from rabbitry.producers.publisher import REFUSED, ReliablePublisher, nack_is_refusal
from tests.helpers import drain


def test_unroutable_messages_are_all_reported_even_when_the_window_fills(broker_settings, unique_name):
    publisher = ReliablePublisher(broker_settings, window=4).connect()
    sent = [OutgoingMessage(routing_key=unique_name, body=b"%d" % i) for i in range(25)]  # no such queue

    for message in sent:
        publisher.publish(message, mandatory=True)
    failures = publisher.flush(timeout=10)
    publisher.close()

    assert sorted(f.message.message_id for f in failures) == sorted(m.message_id for m in sent)
    assert {f.reason for f in failures} == {"unroutable"}
    assert publisher.confirmed_count == 0


def test_routable_messages_are_all_confirmed_through_a_small_window(broker_settings, connection, unique_name):
    connection.declare(Topology(queues=(Queue(unique_name, arguments={"x-queue-type": "classic"}),)))
    confirmed = []
    publisher = ReliablePublisher(broker_settings, window=4, on_confirmed=confirmed.extend).connect()
    try:
        for i in range(25):
            publisher.publish(OutgoingMessage(routing_key=unique_name, body=b"%d" % i), mandatory=True)
        assert publisher.flush(timeout=10) == []
    finally:
        publisher.close()
        state = connection.queue_state(unique_name)
        connection.delete_queue(unique_name)

    assert len(confirmed) == publisher.confirmed_count == 25
    assert state.messages == 25


def test_a_message_amqp_cannot_carry_is_reported_and_the_connection_goes_on(broker_settings, connection, unique_name):
    connection.declare(Topology(queues=(Queue(unique_name, arguments={"x-queue-type": "classic"}),)))
    unencodable = [
        OutgoingMessage(unique_name, b"long id", message_id="i" * 300),  # over a short string
        OutgoingMessage(unique_name, b"bad header", headers={"who": "caf\udce9"}),  # not UTF-8
        OutgoingMessage("k" * 300, b"long key", "amq.topic"),
    ]
    fine = OutgoingMessage(unique_name, b"fine")
    publisher = ReliablePublisher(broker_settings).connect()
    try:
        for message in [*unencodable, fine]:
            publisher.publish(message, mandatory=True)
        failures = publisher.flush(timeout=10)
    finally:
        publisher.close()
        state = connection.queue_state(unique_name)
        connection.delete_queue(unique_name)

    assert [(f.message, f.reason) for f in failures] == [(m, "unpublishable") for m in unencodable]
    assert publisher.confirmed_count == 1 and state.messages == 1


def test_a_full_queue_refuses_what_it_has_no_room_for_and_the_refusals_are_reported_at_once(
    broker_settings, connection, unique_name
):
    full = Queue(unique_name, arguments={"x-queue-type": "classic", "x-max-length": 10, "x-overflow": "reject-publish"})
    confirmed = []
    publisher = ReliablePublisher(broker_settings, Topology(queues=(full,)), on_confirmed=confirmed.extend).connect()
    sent = [OutgoingMessage(routing_key=unique_name, body=b"%d" % i) for i in range(100)]
    try:
        with capture_logs() as logs:
            for message in sent:
                publisher.publish(message, mandatory=True)
            failures = publisher.flush(timeout=60)
    finally:
        publisher.close()
        connection.delete_queue(unique_name)

    assert [m.message_id for m in confirmed] == [m.message_id for m in sent[:10]]
    assert [(f.message.message_id, f.reason) for f in failures] == [(m.message_id, REFUSED) for m in sent[10:]]
    assert len([e for e in logs if e["event"] == "publisher_reconnecting"]) == 1  # one look on a fresh channel


def test_renewing_the_channel_for_a_nack_publishes_nothing_again_that_the_broker_had_queued(
    broker_settings, connection, unique_name
):
    full = Queue(
        f"{unique_name}.full", arguments={"x-queue-type": "classic", "x-max-length": 1, "x-overflow": "reject-publish"}
    )
    roomy = Queue(f"{unique_name}.roomy", arguments={"x-queue-type": "classic"})
    confirmed = []
    publisher = ReliablePublisher(
        broker_settings, Topology(queues=(full, roomy)), window=200, on_confirmed=confirmed.extend
    ).connect()
    # The nack of the first message is heard while hundreds of others are in flight; the
    # channel renewed for it must first hear their confirms, or it publishes them twice.
    sent = [OutgoingMessage(routing_key=roomy.name, body=b"%d" % i) for i in range(3000)]
    try:
        publisher.publish(OutgoingMessage(routing_key=full.name, body=b"fills it"), mandatory=True)
        publisher.flush(timeout=10)
        publisher.publish(OutgoingMessage(routing_key=full.name, body=b"refused"), mandatory=True)
        for message in sent:
            publisher.publish(message, mandatory=True)
        failures = publisher.flush(timeout=60)
    finally:
        publisher.close()
        in_roomy = [d.message_id for d in drain(connection, roomy.name)]
        connection.delete_queue(full.name)
        connection.delete_queue(roomy.name)

    assert [f.reason for f in failures] == [REFUSED]
    assert sorted(m.message_id for m in confirmed[1:]) == sorted(m.message_id for m in sent)
    assert sorted(in_roomy) == sorted(m.message_id for m in sent)  # each once


@pytest.mark.parametrize(
    "nacked_before, state, refusal",
    [
        (True, QueueState(messages=10, consumers=0), True),
        (False, QueueState(messages=10, consumers=0), False),  # the first nack may be a leader lost: publish again
        (True, QueueState(messages=0, consumers=0), False),  # a quorum queue without a leader answers with none
        (True, None, False),  # the queue did not answer
    ],
)
def test_a_nack_is_a_refusal_only_when_it_comes_again_from_a_queue_that_holds_messages(nacked_before, state, refusal):
    assert nack_is_refusal(nacked_before, state) is refusal
