"""Delays held by the broker: a delay's binary levels, the route through them, durations and
times as people write them, and delayed tasks on both transports and across a broker restart."""

import datetime
import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rabbitry
from rabbitry.common.connect import connect
from rabbitry.common.delays import (
    MAX_DELAY_S,
    delay_route,
    delay_seconds,
    due_time,
    levels_of,
    parse_duration,
    parse_time,
)
from rabbitry.common.durations import rabbitmq_age
from rabbitry.common.errors import ConfigurationError, InvalidDelay, MessageError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import (
    DELAY_DELIVERY_EXCHANGE,
    DELAY_LEVELS,
    DELAY_UNROUTED,
    check_work_queue_name,
    delay_level_name,
    delay_level_names,
    work_queue,
)
from rabbitry.common.transport.routing import binding_matches
from tests.helpers import NodeCommands, wait_until


def test_a_delay_is_written_in_binary_and_waits_in_the_level_of_each_one_bit():
    exchange, key = delay_route(90, "task_queue")

    assert levels_of(90) == [1, 3, 4, 6]  # 2 + 8 + 16 + 64, the longest wait last
    assert exchange == delay_level_name(1)  # it enters at its lowest bit
    assert key == "0." * (DELAY_LEVELS - 7) + "1.0.1.1.0.1.0.task_queue"


def test_delays_round_to_the_nearest_second_and_stop_at_the_longest_the_levels_hold():
    assert [delay_seconds(s) for s in (0, 0.4, 0.5, 1.49, 89.6)] == [0, 0, 1, 1, 90]
    assert delay_seconds(MAX_DELAY_S) == MAX_DELAY_S and MAX_DELAY_S / 86400 > 30
    with pytest.raises(MessageError, match="at most 8,388,607 s"):
        delay_seconds(MAX_DELAY_S + 1)


def _walk(topology, exchange: str, routing_key: str) -> tuple[list[str], float]:
    """The queues a message goes through from ``exchange``, and how long it waits in them,
    by the routing rules of RabbitMQ (the in-process broker's): each queue dead-letters,
    when its TTL is spent, to its x-dead-letter-exchange; what an exchange routes nowhere
    goes to its alternate exchange."""
    types = {declared.name: declared.type for declared in topology.exchanges}
    alternates = {declared.name: declared.arguments.get("alternate-exchange") for declared in topology.exchanges}
    ttls = {queue.name: queue.arguments.get("x-message-ttl") for queue in topology.queues}
    onward = {queue.name: queue.arguments.get("x-dead-letter-exchange") for queue in topology.queues}
    visited, waited = [], 0.0
    while True:
        queues = [
            b.queue
            for b in topology.bindings
            if b.exchange == exchange and binding_matches(types[exchange], b.routing_key, routing_key)
        ]
        passes = [
            b.destination
            for b in topology.exchange_bindings
            if b.source == exchange and binding_matches(types[exchange], b.routing_key, routing_key)
        ]
        if not queues and not passes and alternates[exchange]:
            exchange = alternates[exchange]
            continue
        assert len(queues) + len(passes) == 1, f"{routing_key} at {exchange}: {queues} {passes}"
        if passes:
            exchange = passes[0]
            continue
        (queue,) = queues
        visited.append(queue)
        if ttls.get(queue) is None:
            return visited, waited
        waited += ttls[queue] / 1000
        exchange = onward[queue]


@settings(max_examples=300, deadline=None)
@given(seconds=st.integers(1, MAX_DELAY_S))
def test_any_delay_goes_through_exactly_its_levels_and_waits_exactly_its_length(seconds):
    topology = work_queue("task_queue")

    visited, waited = _walk(topology, *delay_route(seconds, "task_queue"))

    assert visited == [delay_level_name(level) for level in levels_of(seconds)] + ["task_queue"]
    assert waited == seconds


def test_a_due_task_whose_work_queue_is_gone_waits_in_the_unrouted_queue():
    topology = work_queue("a.b")  # "a.b" is bound, so "b" must not be reached by a.b's key, nor "b"'s by it

    assert _walk(topology, *delay_route(1, "b"))[0] == [delay_level_name(0), DELAY_UNROUTED]
    assert _walk(topology, *delay_route(1, "a.b"))[0] == [delay_level_name(0), "a.b"]


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90),
        ("90s", 90),
        ("10m", 600),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (" 2m 5s ", 125),
    ],
)
def test_durations_are_read_as_people_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-5s", "m", "1h-30m", "tomorrow"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ConfigurationError, match="not a duration"):
        parse_duration(text)


def test_times_are_iso_8601_and_utc_without_an_offset():
    utc = datetime.datetime(2026, 12, 1, 9, tzinfo=datetime.UTC).timestamp()

    assert parse_time("2026-12-01T09:00:00Z") == parse_time("2026-12-01T09:00:00") == utc
    assert parse_time("2026-12-01T10:00:00+01:00") == utc
    with pytest.raises(ConfigurationError, match="not an ISO 8601 time"):
        parse_time("next tuesday")


def test_a_due_time_comes_from_a_delay_or_an_eta_but_not_both():
    assert due_time(now=100.0) is None
    assert due_time(delay=30, now=100.0) == due_time(delay=datetime.timedelta(seconds=30), now=100.0) == 130.0
    assert due_time(eta=datetime.datetime(1970, 1, 1, 0, 2)) == 120.0  # naive is UTC
    with pytest.raises(ConfigurationError, match="not both"):
        due_time(delay=1, eta=2)
    with pytest.raises(ConfigurationError, match="at least 0"):
        due_time(delay=-1)


def test_work_queue_names_leave_room_for_the_delay_bits_and_have_no_wildcard_words():
    assert check_work_queue_name("q" * 209)
    with pytest.raises(ConfigurationError, match="at most 209"):
        check_work_queue_name("q" * 210)
    for name in ("a.#", "*", "x.*.y"):
        with pytest.raises(ConfigurationError, match="'\\*' or '#' as a word"):
            check_work_queue_name(name)
    assert check_work_queue_name("kern*.a#")  # wildcards only as whole words


def test_a_task_due_later_is_sent_to_the_levels_and_one_due_now_straight_to_its_queue():
    now = time.time()

    later = TaskMessage("echo", eta=now + 90).to_outgoing("q", now=now)
    due = TaskMessage("echo", eta=now + 0.4).to_outgoing("q", now=now)

    assert (later.exchange, later.routing_key) == delay_route(90, "q")
    assert (due.exchange, due.routing_key) == ("", "q")
    assert json.loads(later.body)["eta"] == pytest.approx(now + 90, abs=0.001)
    assert "eta" not in json.loads(TaskMessage("echo").to_outgoing("q").body)  # the format without it, as before


def test_a_delayed_task_reaches_its_queue_after_its_delay_through_its_levels(either_broker, either_work_queue):
    settings, queue = either_broker, either_work_queue
    with connect(settings, "rabbitry-tests") as connection:
        connection.declare(work_queue(queue))
        sent = time.time()
        connection.publish(TaskMessage("echo", args=["later"], eta=sent + 3).to_outgoing(queue, now=sent))
        assert not connection.wait_for_confirms(10)

        delivery = wait_until(lambda: connection.get(queue), timeout=30, message="the delayed task")
        arrived = time.time()

    assert arrived - sent >= 2.9  # held for its delay: never early
    deaths = [death["queue"] for death in delivery.headers["x-death"]]
    assert sorted(deaths) == sorted(delay_level_name(level) for level in levels_of(3))
    assert TaskMessage.from_delivery(delivery).args == ["later"]


def test_a_task_delayed_an_hour_holds_back_no_shorter_delay_and_both_survive_a_broker_restart(
    extra_broker, unique_name
):
    settings = extra_broker.settings()
    with connect(settings, "rabbitry-tests") as connection:
        connection.declare(work_queue(unique_name))
        now = time.time()
        # 59 min 52 s: levels 3, 9, 10 and 11. Each shorter delay passes through level 3 too (8 s: 3;
        # 9 s: 0 and 3; 10 s: 1 and 3), and the hour enters it first, at its head.
        hour = TaskMessage("echo", args=["an hour"], eta=now + 3592)
        shorter = [TaskMessage("echo", args=[f"{s} s"], eta=now + s) for s in (8, 9, 10)]
        for message in [hour, *shorter]:
            connection.publish(message.to_outgoing(unique_name, now=now))
        assert not connection.wait_for_confirms(10)

    extra_broker.restart()  # while all four wait in the levels

    with connect(settings, "rabbitry-tests") as connection:
        arrived = []
        wait_until(
            lambda: arrived.extend(iter(lambda: connection.get(unique_name), None)) or len(arrived) >= 3,
            timeout=60,
            message="the shorter delays",
        )
        # The levels are counted one by one: counted while the hour's task moves from one level to the
        # next, it would be seen in both or in neither. It leaves level 3 for level 9 with the 8 s task,
        # and waits there 512 s: counted once it is there, the counts hold still.
        after_level_3 = delay_level_name(9)
        wait_until(lambda: connection.queue_state(after_level_3).messages, timeout=60, message="the hour in level 9")
        held = {name: connection.queue_state(name).messages for name in delay_level_names()}

    assert sorted(TaskMessage.from_delivery(d).args[0] for d in arrived) == ["10 s", "8 s", "9 s"]
    assert time.time() - now >= 7.9
    assert held == {name: int(name == after_level_3) for name in delay_level_names()}  # the hour's task alone
    with NodeCommands(extra_broker.url) as node:
        shown = [
            json.loads(line)
            for line in node.run("rabbitry", "status", "--queue", unique_name, "--json", check=True).stdout.splitlines()
        ]
    assert {row["queue"]: row["messages"] for row in shown}["rabbitry.delay.*"] == 1


def test_the_delivery_exchange_and_unrouted_queue_are_durable_parts_of_every_work_queue():
    topology = work_queue("q")
    exchanges = {declared.name: declared for declared in topology.exchanges}

    assert exchanges[DELAY_DELIVERY_EXCHANGE].arguments == {"alternate-exchange": DELAY_UNROUTED}
    assert all(declared.durable for declared in topology.exchanges)
    assert {queue.name for queue in topology.queues} >= {*delay_level_names(), DELAY_UNROUTED}
    assert all(
        queue.arguments["x-queue-type"] == "quorum"
        for queue in topology.queues
        if queue.name.startswith("rabbitry.delay.")
    )


AN_OBJECT = object()
TWO_HUNDRED_DAYS_AHEAD = time.time() + 200 * 86400


def stable_id(value) -> str:
    """A parameter's test id, the same in every process that collects it (pytest-xdist's workers)."""
    return repr(value).replace(repr(AN_OBJECT), "object()").replace(repr(TWO_HUNDRED_DAYS_AHEAD), "200 days ahead")


@pytest.mark.parametrize(
    "options",
    [
        {"delay": math.inf},
        {"delay": math.nan},
        {"delay": 1e400},
        {"delay": -1},
        {"delay": "10m"},
        {"delay": AN_OBJECT},
        {"delay": True},
        {"delay": datetime.timedelta(days=200)},
        {"delay": MAX_DELAY_S + 1},
        {"eta": math.inf},
        {"eta": "tomorrow"},
        {"eta": TWO_HUNDRED_DAYS_AHEAD},
        {"delay": 1, "eta": 2},
    ],
    ids=stable_id,
)
def test_every_bad_delay_raises_the_one_documented_error(options):
    with pytest.raises(rabbitry.InvalidDelay) as raised:
        due_time(**options)
    assert isinstance(raised.value, ValueError) and raised.value.exit_code == 2


@pytest.mark.parametrize("eta", [math.inf, math.nan, TWO_HUNDRED_DAYS_AHEAD], ids=stable_id)
def test_a_message_due_when_no_level_can_hold_it_raises_the_same_error(eta):
    with pytest.raises(InvalidDelay):
        TaskMessage("noop", eta=eta).to_outgoing("q")
    with pytest.raises(InvalidDelay):
        delay_seconds(eta - time.time())


@pytest.mark.parametrize("text", ["inf", "nan", "1e400", "-1", "999999w", "1e308"])
def test_a_duration_is_finite_not_negative_and_at_most_a_hundred_years(text):
    with pytest.raises(ConfigurationError, match="duration"):
        parse_duration(text)


def test_rabbitmq_reads_a_max_age_written_in_its_own_units():
    assert [rabbitmq_age(text) for text in ("7D", "7d", "1w", "12h", "1h30m", "3600", "1.5", "1M", "1Y")] == [
        "7D",
        "7D",
        "7D",
        "12h",
        "90m",
        "1h",
        "2s",
        "1M",
        "1Y",
    ]
    with pytest.raises(ConfigurationError, match="at least 1s"):
        rabbitmq_age("0.2")
