"""``topic_matches`` agrees with what RabbitMQ routes, on generated keys and patterns.

RabbitMQ is the authority. Each generated example is a batch: up to
``MAX_BINDINGS`` binding keys, each on its own queue bound to a fresh topic
exchange, and up to ``MAX_KEYS`` routing keys published to it, so one
broker round trip checks hundreds of (binding key, routing key) cases. A
fanout "sentinel" exchange bound to every queue marks the end of a batch:
messages from one channel stay in order within a queue, so a queue that has
seen the sentinel has seen everything routed to it before.
"""

import itertools
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rabbitry.common.topology import Binding, Exchange, Queue, Topology
from rabbitry.common.transport.contract import OutgoingMessage
from rabbitry.common.transport.routing import topic_matches

MAX_BINDINGS = 24
MAX_KEYS = 40
EXAMPLES = 25
MIN_CASES = 2000

#: Words that matter to topic matching: plain, empty, wildcards, and wildcards inside words.
BINDING_WORDS = ["a", "b", "", "*", "#", "a#", "*b", "a*b", "#b"]
ROUTING_WORDS = ["a", "b", "", "ab", "#", "*", "a#", "*b"]

EDGE_BINDINGS = [
    "#",
    "#.#",
    "a.#.b",
    "*.*",
    "*",
    "",
    "a.*",
    "#.a",
    "a#",
    "*b",
    "a..b",
    ".",
    "a.",
    ".a",
    "#.*",
    "*.#",
    "*.#.*",
    "a.#.#.b",
    "#.b.#",
    "#.#.#",
]
EDGE_KEYS = [
    "",
    "a",
    "b",
    "a.b",
    "a.x.b",
    "a.b.b",
    ".",
    "..",
    "a..b",
    "a.",
    ".a",
    "a#",
    "#",
    "*",
    "a.#.b",
    "x.y.z",
    "a.a.b.b",
    "*.*",
    "a.b.c.d.e",
]


def keys(words):
    return st.lists(st.sampled_from(words), max_size=5).map(".".join)


class TopicRouter:
    """Asks the real broker where a batch of routing keys goes."""

    def __init__(self, connection, prefix: str):
        self.connection = connection
        self.prefix = prefix
        self.sentinel_exchange = f"{prefix}.sentinel"
        anonymous = tuple(Queue("", durable=False, exclusive=True, auto_delete=True) for _ in range(MAX_BINDINGS))
        # Declared one at a time: each empty name gets its own server-made name.
        self.queues = [connection.declare(Topology(queues=(queue,)))[""] for queue in anonymous]
        connection.declare(
            Topology(
                exchanges=(Exchange(self.sentinel_exchange, "fanout", auto_delete=False),),
                bindings=tuple(Binding(self.sentinel_exchange, q) for q in self.queues),
            )
        )
        self.received: dict[str, list[bytes]] = {q: [] for q in self.queues}
        for queue in self.queues:
            connection.consume(queue, self._receiver(queue), prefetch=1000)
        self._batches = itertools.count()

    def _receiver(self, queue):
        def on_delivery(delivery):
            self.received[queue].append(delivery.body)
            self.connection.ack(delivery.delivery_tag)

        return on_delivery

    def route(self, binding_keys: list[str], routing_keys: list[str]) -> list[set[int]]:
        """For each binding key, the indexes of the routing keys the broker delivered to it."""
        exchange = f"{self.prefix}.topic.{next(self._batches)}"
        queues = self.queues[: len(binding_keys)]
        self.connection.declare(
            Topology(
                exchanges=(Exchange(exchange, "topic"),),
                bindings=tuple(Binding(exchange, q, key) for q, key in zip(queues, binding_keys, strict=True)),
            )
        )
        for queue in self.queues:
            self.received[queue].clear()
        for index, key in enumerate(routing_keys):
            self.connection.publish(OutgoingMessage(key, str(index).encode(), exchange, persistent=False))
        self.connection.publish(OutgoingMessage("", b"end", self.sentinel_exchange, persistent=False))
        assert self.connection.wait_for_confirms(10) == []
        deadline = time.monotonic() + 10
        while not all(self.received[q][-1:] == [b"end"] for q in self.queues):
            assert time.monotonic() < deadline, "the sentinel did not reach every queue"
            self.connection.process_events(0.01)
        self.connection.delete_exchange(exchange)
        routed = []
        for queue in queues:
            bodies = self.received[queue][:-1]
            assert len(bodies) == len(set(bodies)), "a topic exchange delivers a message to a queue once"
            routed.append({int(body) for body in bodies})
        return routed


@pytest.fixture
def router(connection, unique_name):
    topic_router = TopicRouter(connection, unique_name)
    yield topic_router
    connection.delete_exchange(topic_router.sentinel_exchange)


def test_topic_matches_agrees_with_rabbitmq_on_generated_keys(router):
    cases = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        binding_keys=st.lists(keys(BINDING_WORDS), min_size=MAX_BINDINGS // 2, max_size=MAX_BINDINGS),
        routing_keys=st.lists(keys(ROUTING_WORDS), min_size=MAX_KEYS // 2, max_size=MAX_KEYS),
    )
    @example(binding_keys=EDGE_BINDINGS, routing_keys=EDGE_KEYS)
    def agrees(binding_keys, routing_keys):
        routed = router.route(binding_keys, routing_keys)
        for binding_key, delivered in zip(binding_keys, routed, strict=True):
            for index, routing_key in enumerate(routing_keys):
                cases.append((binding_key, routing_key))
                assert topic_matches(binding_key, routing_key) == (index in delivered), (
                    f"binding key {binding_key!r}, routing key {routing_key!r}: RabbitMQ "
                    f"{'routes' if index in delivered else 'does not route'} it"
                )

    agrees()

    assert len(cases) >= MIN_CASES


@pytest.mark.parametrize(
    "binding_key, routing_key, expected",
    [
        ("#", "", True),
        ("*", "", False),
        ("", "", True),
        ("", "a", False),
        ("#.#", "a", True),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("*.*", "a", False),
        ("*.*", ".", True),
        ("*", ".", False),
        ("a#", "ab", False),
        ("a#", "a#", True),
        ("a..b", "a..b", True),
        ("#.a", "a", True),
    ],
)
def test_the_rules_the_seed_article_gets_wrong(binding_key, routing_key, expected):
    assert topic_matches(binding_key, routing_key) is expected
