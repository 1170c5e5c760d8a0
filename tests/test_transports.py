"""One behaviour, two transports: every test here runs on RabbitMQ and on the in-process model.

The in-process broker (``local://``) must behave as RabbitMQ does for
everything rabbitry relies on. Where the two differ by design, the test says
so and checks each side's own behaviour.
"""

import dataclasses
import os
import uuid

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.errors import BrokerRefused, Unencodable
from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Binding, Exchange, ExchangeBinding, Queue, Topology
from rabbitry.common.transport.contract import QueueState
from rabbitry.common.transport.wire_limits import SHORT_STRING_FIELDS
from tests.helpers import WorkerProcess, json_lines, run_command, wait_until
from tests.transport_helpers import Inbox, Transport, get_within, message, publish_all


def drain(connection, queue: str) -> list[str]:
    """Every body ready in ``queue``, taken with basic.get and acked."""
    bodies = []
    while (delivery := connection.get(queue)) is not None:
        bodies.append(delivery.body.decode())
        connection.ack(delivery.delivery_tag)
    return bodies


def test_a_work_queue_round_trip_delivers_every_message_once_in_order(transport):
    connection = transport.connect()
    queue = transport.name("work")
    transport.declare(connection, queues=[Queue(queue)])

    failures = publish_all(connection, [message(queue, f"task {i}") for i in range(5)], mandatory=True)
    consumer = transport.connect()
    inbox = Inbox(consumer)
    consumer.consume(queue, inbox, prefetch=10)
    inbox.wait_for(5)
    # A marker published after: a queue is FIFO, so once it arrives, so has any copy delivered before it.
    publish_all(connection, [message(queue, "marker")])
    inbox.wait_for(6)
    for delivery in inbox.deliveries:
        consumer.ack(delivery.delivery_tag)
    consumer.close()
    # The broker drops a closed channel's consumers as it requeues what they held unacked.
    wait_until(lambda: connection.queue_state(queue).consumers == 0, message="the consumer gone")

    assert failures == []
    assert inbox.bodies() == [f"task {i}" for i in range(5)] + ["marker"]
    assert not any(d.redelivered for d in inbox.deliveries)
    assert connection.queue_state(queue).messages == 0  # acked, so not requeued on close


def test_prefetch_bounds_what_a_consumer_holds_unacked(transport):
    connection = transport.connect()
    queue = transport.name("prefetch")
    transport.declare(connection, queues=[Queue(queue)])
    publish_all(connection, [message(queue, str(i)) for i in range(5)])

    inbox = Inbox(connection)
    connection.consume(queue, inbox, prefetch=2)
    inbox.wait_for(2)
    # The broker's count of ready messages says what it has not sent: a third one sent would be
    # missing from it, whether or not it had reached the inbox yet.
    ready_while_holding_two = connection.queue_state(queue).messages
    held = inbox.bodies()
    connection.ack(inbox.deliveries[0].delivery_tag)
    inbox.wait_for(3)
    ready_while_holding_two_again = connection.queue_state(queue).messages

    assert (held, ready_while_holding_two) == (["0", "1"], 3)
    assert (inbox.bodies(), ready_while_holding_two_again) == (["0", "1", "2"], 2)


def test_with_prefetch_one_the_next_task_goes_to_the_idle_consumer(transport):
    connection = transport.connect()
    queue = transport.name("fair")
    transport.declare(connection, queues=[Queue(queue)])
    busy, idle = Inbox(transport.connect()), Inbox(transport.connect())
    busy.connection.consume(queue, busy, prefetch=1)
    idle.connection.consume(queue, idle, prefetch=1)
    wait_until(lambda: connection.queue_state(queue).consumers == 2)

    publish_all(connection, [message(queue, f"task {i}") for i in range(4)])
    busy.wait_for(1)
    idle.wait_for(1)
    # ``busy`` keeps its first task; ``idle`` finishes each of its tasks at once.
    for count in (2, 3):
        idle.connection.ack(idle.deliveries[-1].delivery_tag)
        idle.wait_for(count)

    # Of 4 tasks, ``idle`` has 3 and none is left to deliver: ``busy`` had only its first.
    assert connection.queue_state(queue).messages == 0
    assert len(busy.deliveries) == 1
    assert sorted(busy.bodies() + idle.bodies()) == [f"task {i}" for i in range(4)]


def test_a_rejected_message_is_requeued_and_redelivered_or_dropped(transport):
    connection = transport.connect()
    queue = transport.name("reject")
    transport.declare(connection, queues=[Queue(queue)])
    publish_all(connection, [message(queue, "once more")])

    first = get_within(connection, queue)
    connection.reject(first.delivery_tag, requeue=True)
    second = get_within(connection, queue)
    connection.reject(second.delivery_tag, requeue=False)  # no dead-letter exchange: dropped

    assert not first.redelivered
    assert second.redelivered and second.body == b"once more"
    assert connection.get(queue) is None
    assert connection.queue_state(queue).messages == 0


def test_ack_multiple_settles_every_earlier_delivery(transport):
    connection = transport.connect()
    queue = transport.name("multiple")
    transport.declare(connection, queues=[Queue(queue)])
    publish_all(connection, [message(queue, str(i)) for i in range(4)])

    deliveries = [get_within(connection, queue) for _ in range(4)]
    connection.ack(deliveries[2].delivery_tag, multiple=True)
    connection.close()  # only the fourth was unacked: it alone goes back

    assert drain(transport.connect(), queue) == ["3"]


def test_closing_a_connection_redelivers_its_unacked_messages(transport):
    connection = transport.connect()
    queue = transport.name("redeliver")
    transport.declare(connection, queues=[Queue(queue)])
    publish_all(connection, [message(queue, "a"), message(queue, "b")])
    consumer = transport.connect()
    inbox = Inbox(consumer)
    consumer.consume(queue, inbox, prefetch=5)
    inbox.wait_for(2)

    consumer.close()
    again = Inbox(transport.connect())
    again.connection.consume(queue, again, prefetch=5)
    again.wait_for(2)

    assert again.bodies() == ["a", "b"]
    assert all(d.redelivered for d in again.deliveries)


@pytest.mark.parametrize(
    "exchange_type, bindings, expected",
    [
        ("fanout", {"one": [""], "two": ["ignored"]}, {"x": ["one", "two"], "y": ["one", "two"]}),
        (
            "direct",
            {"errors": ["error"], "all": ["error", "info"]},
            {"error": ["all", "errors"], "info": ["all"], "debug": []},
        ),
        (
            "topic",
            {"kern": ["kern.*"], "critical": ["*.critical"], "everything": ["#"]},
            {
                "kern.critical": ["critical", "everything", "kern"],
                "kern.info.x": ["everything"],
                "app.critical": ["critical", "everything"],
                "": ["everything"],
            },
        ),
    ],
)
def test_each_exchange_type_routes_each_message_to_each_queue_at_most_once(
    transport, exchange_type, bindings, expected
):
    connection = transport.connect()
    exchange = transport.name(exchange_type)
    queues = {name: transport.name(name) for name in bindings}
    transport.declare(
        connection,
        exchanges=[Exchange(exchange, exchange_type)],
        queues=[Queue(q, durable=False) for q in queues.values()],
        bindings=[Binding(exchange, queues[name], key) for name, keys in bindings.items() for key in keys],
    )

    failures = publish_all(connection, [message(key, key, exchange) for key in expected], mandatory=True)
    received = {name: drain(connection, queue) for name, queue in queues.items()}

    routed = {key: sorted(name for name, bodies in received.items() if key in bodies) for key in expected}
    assert routed == expected
    assert all(len(bodies) == len(set(bodies)) for bodies in received.values())
    assert [f.message.routing_key for f in failures] == [k for k, v in expected.items() if not v]
    assert {f.reason for f in failures} <= {"unroutable"}


def test_the_default_exchange_routes_by_queue_name_and_reports_the_unroutable(transport):
    connection = transport.connect()
    queue = transport.name("by-name")
    transport.declare(connection, queues=[Queue(queue)])

    failures = publish_all(
        connection, [message(queue, "here"), message(transport.name("nowhere"), "lost")], mandatory=True
    )

    assert drain(connection, queue) == ["here"]
    assert [(f.reason, f.message.body) for f in failures] == [("unroutable", b"lost")]


def test_rejected_and_expired_messages_are_dead_lettered_with_their_history(transport):
    connection = transport.connect()
    work, dead, delayed = (transport.name(n) for n in ("work", "dead", "delayed"))
    dead_letters = transport.name("dlx")
    transport.declare(
        connection,
        exchanges=[Exchange(dead_letters, "direct")],
        queues=[
            Queue(work, arguments={"x-dead-letter-exchange": dead_letters}),
            Queue(dead),
            Queue(delayed, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work}),
        ],
        bindings=[Binding(dead_letters, dead, work)],
    )

    publish_all(connection, [message(work, "rejected", headers={"mine": 1})])
    connection.reject(get_within(connection, work).delivery_tag, requeue=False)
    rejected = get_within(connection, dead)
    publish_all(connection, [message(delayed, "retry me", expiration="50")])
    retried = get_within(connection, work)  # expired in ``delayed``, dead-lettered back to ``work``

    assert rejected.body == b"rejected" and rejected.headers["mine"] == 1
    assert rejected.routing_key == work and rejected.exchange == dead_letters
    death = rejected.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("rejected", work, 1)
    assert retried.body == b"retry me"
    assert retried.headers["x-death"][0]["reason"] == "expired"
    assert retried.headers["x-death"][0]["queue"] == delayed
    assert retried.headers["x-first-death-reason"] == "expired"


def test_exchanges_bound_to_exchanges_route_on_and_an_alternate_exchange_takes_the_unrouted(transport):
    connection = transport.connect()
    first, second, spare = (transport.name(n) for n in ("first", "second", "spare"))
    near, far, unrouted = (transport.name(n) for n in ("near", "far", "unrouted"))
    transport.declare(
        connection,
        exchanges=[
            Exchange(spare, "fanout"),
            Exchange(second, "topic"),
            Exchange(first, "topic", arguments={"alternate-exchange": spare}),
        ],
        queues=[Queue(near), Queue(far), Queue(unrouted)],
        bindings=[
            Binding(first, near, "near.#"),
            Binding(second, far, "*.far"),
            Binding(second, near, "#"),
            Binding(spare, unrouted),
        ],
        exchange_bindings=[ExchangeBinding(first, second, "*.far")],
    )

    publish_all(
        connection,
        [
            message("near.x", "near", first),
            message("x.far", "far", first),
            message("near.far", "both ways", first),
            message("other", "nowhere", first),
        ],
        mandatory=True,
    )

    assert drain(connection, near) == ["near", "far", "both ways"]  # once each, by either path
    assert drain(connection, far) == ["far", "both ways"]
    assert drain(connection, unrouted) == ["nowhere"]


def test_bcc_routes_one_message_to_more_queues_and_max_length_keeps_the_newest(transport):
    connection = transport.connect()
    work, ledger = transport.name("work"), transport.name("ledger")
    transport.declare(connection, queues=[Queue(work), Queue(ledger, arguments={"x-max-length": 1})])

    publish_all(
        connection, [message(work, body, headers={"BCC": [ledger], "mine": 1}) for body in ("a", "b")], mandatory=True
    )

    assert drain(connection, work) == ["a", "b"]
    last = get_within(connection, ledger)
    assert last.body == b"b" and last.headers == {"mine": 1}  # BCC is gone from what is delivered
    assert connection.get(ledger) is None


def test_a_single_active_consumer_queue_delivers_to_one_consumer_then_to_the_next(transport):
    first, second = transport.connect(), transport.connect()
    lease = transport.name("lease")
    transport.declare(
        first, queues=[Queue(lease, arguments={"x-queue-type": "quorum", "x-single-active-consumer": True})]
    )
    got_first, got_second = Inbox(first), Inbox(second)
    first.consume(lease, got_first, prefetch=1)
    second.consume(lease, got_second, prefetch=1)

    inspector = transport.connect()
    publish_all(first, [message(lease, "token"), message(lease, "spare")])
    got_first.wait_for(1)
    # "spare" waits in the queue (the broker counts it ready), for neither consumer: prefetch 1
    wait_until(lambda: inspector.queue_state(lease).messages == 1, message="one message ready")
    assert got_first.bodies() == ["token"] and got_second.bodies() == []

    # Closing cancels the consumer first: the next one is active at once and takes what is ready,
    # while the token it held comes back only as its channel closes, behind "spare" (prefetch 1).
    first.close()
    got_second.wait_for(1)
    # The token back in the queue, ready, and held back from ``second`` by its prefetch of 1.
    wait_until(lambda: inspector.queue_state(lease).messages == 1, message="the token back in the queue")
    (spare,) = got_second.deliveries
    assert spare.body == b"spare" and not spare.redelivered
    second.ack(spare.delivery_tag)
    got_second.wait_for(2)
    assert got_second.bodies() == ["spare", "token"] and got_second.deliveries[1].redelivered


def test_a_quorum_queue_counts_redeliveries(transport):
    connection = transport.connect()
    queue = transport.name("quorum")
    transport.declare(connection, queues=[Queue(queue, arguments={"x-queue-type": "quorum"})])
    publish_all(connection, [message(queue, "again")])

    counts = []
    for _ in range(3):
        delivery = get_within(connection, queue)
        counts.append(int(delivery.headers.get("x-delivery-count", 0)))
        connection.reject(delivery.delivery_tag, requeue=True)

    assert counts == [0, 1, 2]


def test_the_broker_names_exclusive_queues_and_drops_them_with_their_connection(transport):
    owner = transport.connect()
    names = transport.declare(owner, queues=[Queue("", durable=False, exclusive=True, auto_delete=True)])
    name = names[""]
    other = transport.connect()

    with pytest.raises(BrokerRefused, match="RESOURCE_LOCKED"):
        other.consume(name, lambda delivery: None)
    owner.close()

    assert name.startswith("amq.gen-")
    assert wait_until(lambda: transport.connect().queue_state(name) is None, 10)


def test_mistakes_are_refused_as_rabbitmq_refuses_them(transport):
    connection = transport.connect()
    queue = transport.name("strict")
    transport.declare(connection, queues=[Queue(queue, arguments={"x-queue-type": "classic"})])

    with pytest.raises(BrokerRefused, match="PRECONDITION_FAILED"):
        transport.declare(connection, queues=[Queue(queue, arguments={"x-queue-type": "quorum"})])
    with pytest.raises(BrokerRefused, match="NOT_FOUND"):
        transport.connect().consume(transport.name("missing"), lambda delivery: None)
    with pytest.raises(BrokerRefused, match="PRECONDITION_FAILED"):
        transport.declare(
            transport.connect(),
            queues=[Queue(transport.name("q"), durable=False, arguments={"x-queue-type": "quorum"})],
        )


def test_names_and_properties_longer_than_amqp_allows_are_refused_on_both(transport):
    connection = transport.connect()
    queue = transport.name("short")
    transport.declare(connection, queues=[Queue(queue)])
    long_name = "é" * 128  # 128 characters, 256 bytes

    with pytest.raises(Unencodable, match="declaring the topology: a name is 256 bytes long"):
        transport.declare(connection, queues=[Queue(long_name)])
    too_long = [
        message(long_name, "long key"),
        message(queue, "long id", message_id=long_name),
        message(queue, "long type", type=long_name),
    ]
    for outgoing in too_long:
        with pytest.raises(Unencodable):
            connection.check_publishable(outgoing)
    failures = publish_all(connection, [*too_long, message(queue, "fits", type="é" * 127)], mandatory=True)

    assert [(f.reason, f.message) for f in failures] == [("unpublishable", m) for m in too_long]
    assert drain(connection, queue) == ["fits"]  # and the connection goes on


@pytest.mark.parametrize("field", SHORT_STRING_FIELDS)
def test_each_short_string_field_over_255_bytes_is_refused_the_same_way_on_both(transport, field):
    connection = transport.connect()
    queue = f"short-fields.{uuid.uuid4().hex}"  # the other fields as short as usual
    transport.declare(connection, queues=[Queue(queue)])
    too_long = dataclasses.replace(message(queue, "too long"), **{field: "é" * 128})  # 256 bytes

    with pytest.raises(Unencodable) as refusal:
        connection.check_publishable(too_long)
    failures = publish_all(connection, [too_long, message(queue, "fits")], mandatory=True)

    assert str(refusal.value) == f"the message's {field} is 256 bytes long; AMQP allows at most 255"
    assert [(f.reason, f.message) for f in failures] == [("unpublishable", too_long)]
    assert drain(connection, queue) == ["fits"]


def test_an_exclusive_consumer_keeps_its_queue_to_itself(transport):
    connection = transport.connect()
    queue = transport.name("exclusive-consumer")
    transport.declare(connection, queues=[Queue(queue)])
    connection.consume(queue, lambda delivery: None, exclusive=True)

    with pytest.raises(BrokerRefused, match="ACCESS_REFUSED"):
        transport.connect().consume(queue, lambda delivery: None)


def test_an_auto_delete_queue_goes_with_its_last_consumer(transport):
    connection = transport.connect()
    queue = transport.name("auto-delete")
    transport.declare(connection, queues=[Queue(queue, durable=False, auto_delete=True)])
    tag = connection.consume(queue, lambda delivery: None)

    connection.cancel(tag)

    assert wait_until(lambda: transport.connect().queue_state(queue) is None, 10)


def test_a_queue_ttl_dead_letters_what_waits_too_long(transport):
    connection = transport.connect()
    short, dead = transport.name("short-lived"), transport.name("expired")
    transport.declare(
        connection,
        queues=[
            Queue(
                short, arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
            ),
            Queue(dead),
        ],
    )

    publish_all(connection, [message(short, "too late")])
    expired = get_within(connection, dead)

    assert expired.body == b"too late"
    assert expired.headers["x-death"][0]["reason"] == "expired"
    assert connection.queue_state(short).messages == 0


@pytest.mark.slow
def test_rabbitmq_keeps_durable_queues_and_persistent_messages_across_a_restart(extra_broker, unique_name):
    """A node of the test's own is stopped and started again (the shared broker never is): a
    durable classic queue comes back with its persistent message alone, a transient queue not at all."""
    transport = Transport(extra_broker.settings(), unique_name)
    try:
        connection = transport.connect()
        durable, transient = transport.name("durable"), transport.name("transient")
        transport.declare(
            connection,
            queues=[Queue(durable, arguments={"x-queue-type": "classic"}), Queue(transient, durable=False)],
        )
        failures = publish_all(
            connection,
            [
                message(durable, "keep me", persistent=True),
                message(durable, "lose me", persistent=False),
                message(transient, "lose me too", persistent=True),
            ],
        )
        assert failures == []
        assert connection.queue_state(durable).messages == 2 and connection.queue_state(transient).messages == 1

        extra_broker.restart()

        after = transport.connect()
        assert drain(after, durable) == ["keep me"]
        assert after.queue_state(transient) is None
    finally:
        transport.cleanup()


def test_the_in_process_broker_keeps_durable_queues_while_it_lives_and_nothing_across_a_restart():
    """By design the model keeps everything in memory (docs/in-process.md): a durable queue and its
    messages outlive every connection, but a restart, which drops the broker, keeps nothing."""
    settings = BrokerSettings.from_url(f"local://{uuid.uuid4().hex}")
    name = broker_name(settings.urls[0])
    try:
        with connect(settings) as connection:
            connection.declare(Topology(queues=(Queue("durable"),)))
            assert publish_all(connection, [message("durable", "keep me", persistent=True)]) == []
        with connect(settings) as connection:  # every connection closed: the broker still holds it
            assert connection.queue_state("durable") == QueueState(messages=1, consumers=0)

        forget_broker(name)  # the restart of a server that keeps nothing on disk

        with connect(settings) as connection:  # the same URL, a broker made afresh
            assert connection.queue_state("durable") is None
    finally:
        forget_broker(name)


def test_a_cancelled_consumer_gets_nothing_more(transport):
    connection = transport.connect()
    queue = transport.name("cancel")
    transport.declare(connection, queues=[Queue(queue)])
    inbox = Inbox(connection)
    tag = connection.consume(queue, inbox, prefetch=1)
    wait_until(lambda: connection.queue_state(queue).consumers == 1)

    connection.cancel(tag)
    publish_all(connection, [message(queue, "not for you")])
    # Confirmed, so in the queue: still counted ready there, it was delivered to no one.
    assert connection.queue_state(queue) == QueueState(messages=1, consumers=0)
    connection.process_events(0)
    assert inbox.deliveries == []


# -- only on the in-process model ------------------------------------------------------
def test_local_urls_name_brokers_that_share_a_process_but_nothing_else():
    first, same, other = (
        BrokerSettings.from_url(url) for url in (f"local://{uuid.uuid4().hex}",) * 2 + (f"local://{uuid.uuid4().hex}",)
    )
    with connect(first) as a, connect(same) as b, connect(other) as c:
        a.declare(Topology(queues=(Queue("shared"),)))
        a.publish(message("shared", "hello"))
        a.wait_for_confirms()

        assert b.get("shared").body == b"hello"
        assert c.queue_state("shared") is None
    for settings in (first, other):
        forget_broker(broker_name(settings.urls[0]))


def test_the_worker_runs_its_pool_as_threads_on_the_in_process_broker():
    process = WorkerProcess("task_queue", ["--broker", "local", "--processes", "2"], env=dict(os.environ))
    process.start()
    wait_until(lambda: process.events("worker_started"), 30)

    assert process.stop() == 0  # SIGTERM: a graceful stop, as with pool processes
    assert process.events("worker_stopped")[0]["exit_code"] == 0


def test_new_task_on_the_in_process_broker_says_that_its_tasks_end_with_it():
    result = run_command(["new-task", "--broker", "local", "--log-format", "json", "hello"], env=dict(os.environ))

    assert result.returncode == 0 and len(result.stdout.split()) == 1  # the task id, confirmed
    (warning,) = [e for e in json_lines(result.stderr) if e["event"] == "in_process_broker"]
    assert "end with it" in warning["detail"]


def test_a_time_limit_needs_processes_and_says_so_in_one_line():
    result = run_command(["worker", "--broker", "local", "--time-limit", "5"], env=dict(os.environ))

    assert result.returncode == 2
    assert result.stderr.strip().startswith("Error: --time-limit needs pool processes")
