"""The workloads ``rabbitry compare`` runs, each on any transport through the same API.

Every broker workload takes :class:`~common.settings.BrokerSettings`, so
the very same code runs on the in-process model and on RabbitMQ; each
declares names of its own and deletes them afterwards. (The seed article's
concurrency forms are in :mod:`rabbitry.compare.forms`.) Nothing here
asserts a time: these functions measure and return figures.
"""

import functools
import itertools
import secrets
import threading
import time
from collections.abc import Callable

from rabbitry.common.connect import connect
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Binding, Exchange, Queue, Topology
from rabbitry.common.transport.contract import Connection, Delivery, OutgoingMessage
from rabbitry.common.transport.routing import topic_matches
from rabbitry.workers.registry import load_task_modules, registry

#: Binding and routing keys whose topic routing must be identical on both sides: the
#: tutorials' patterns and the edge cases the seed article gets wrong.
TOPIC_BINDING_KEYS = [
    "#",
    "#.#",
    "*",
    "*.*",
    "",
    "kern.*",
    "*.critical",
    "kern.#",
    "a.#.b",
    "#.b",
    "a.*.#",
    "a#",
    "*b",
    "a..b",
    ".",
    "*.#.*",
]
TOPIC_ROUTING_KEYS = [
    "",
    "kern",
    "kern.critical",
    "kern.info.extra",
    "app.critical",
    "a.b",
    "a.x.y.b",
    "b",
    ".",
    "a..b",
    "a#",
    "#",
    "*",
    "x.y.z",
]
_WAIT_S = 60.0


def _prefix() -> str:
    return f"rabbitry.compare.{secrets.token_hex(3)}"


class ConsumerThread(threading.Thread):
    """A consumer with a connection of its own, created in its own thread, as pika wants.

    ``prepare`` (optional) declares what the consumer needs and returns the
    queue name; ``ready`` is set once it consumes. ``on_delivery`` receives
    (connection, delivery) and settles the delivery.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        on_delivery: Callable[[Connection, Delivery], None],
        queue_name: str = "",
        prefetch: int = 1,
        prepare: Callable[[Connection], str] | None = None,
    ):
        super().__init__(name="rabbitry-compare-consumer")
        self.settings, self.on_delivery, self.queue_name = settings, on_delivery, queue_name
        self.prefetch, self.prepare = prefetch, prepare
        self.ready, self.stop = threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.settings, "rabbitry-compare") as connection:
                name = self.prepare(connection) if self.prepare else self.queue_name
                connection.consume(name, functools.partial(self.on_delivery, connection), prefetch=self.prefetch)
                self.ready.set()
                while not self.stop.is_set():
                    connection.process_events(0.005)
                connection.process_events(0)  # send the last acks
        except BaseException as error:  # reported by the caller, not lost in a thread
            self.error = error
            self.ready.set()


def _run_consumers(consumers: list[ConsumerThread], publish: Callable[[], None], done: threading.Event) -> float:
    """Start ``consumers``, then time ``publish`` until ``done``; return the seconds."""
    for consumer in consumers:
        consumer.start()
    for consumer in consumers:
        consumer.ready.wait(_WAIT_S)
    try:
        errors = [c.error for c in consumers if c.error]
        if errors:
            raise errors[0]
        started = time.perf_counter()
        publish()
        if not done.wait(_WAIT_S):
            raise TimeoutError("the workload did not finish within a minute")
        return time.perf_counter() - started
    finally:
        for consumer in consumers:
            consumer.stop.set()
        for consumer in consumers:
            consumer.join()


def _publish_all(settings: BrokerSettings, messages: list[OutgoingMessage], window: int = 1000) -> None:
    """Publish with pipelined confirms, as rabbitry's producers do."""
    with connect(settings, "rabbitry-compare-publisher") as connection:
        for message in messages:
            connection.publish(message)
            if connection.unconfirmed >= window:
                connection.wait_for_confirms(_WAIT_S)
        connection.wait_for_confirms(_WAIT_S)


def work_queue_throughput(
    settings: BrokerSettings, tasks: int, consumers: int = 2, prefetch: int = 100, decode: bool = True
) -> dict:
    """No-op tasks through a work queue, each run and acked one by one, with prefetch.

    With ``decode`` each task is decoded from its JSON body, as the worker
    does; without, it is looked up by the task name in the AMQP ``type``
    property, so only the transport and the dispatch are measured. Messages
    are encoded before the clock starts (as the seed's benchmark builds its
    items first); it runs from the first publish to the last task's ack.
    """
    load_task_modules(())
    queue_name = f"{_prefix()}.work"
    with connect(settings, "rabbitry-compare") as connection:
        connection.declare(Topology(queues=(Queue(queue_name, arguments={"x-queue-type": "classic"}),)))
    messages = [TaskMessage("noop").to_outgoing(queue_name) for _ in range(tasks)]
    finished, done = itertools.count(1), threading.Event()

    def run_task(connection: Connection, delivery: Delivery) -> None:
        if decode:
            message = TaskMessage.from_delivery(delivery)
            registry.get(message.task)(*message.args, **message.kwargs)
        else:
            registry.get(delivery.type or "")()  # the workload names each message's task in its type
        connection.ack(delivery.delivery_tag)
        if next(finished) == tasks:
            done.set()

    try:
        seconds = _run_consumers(
            [ConsumerThread(settings, run_task, queue_name, prefetch) for _ in range(consumers)],
            lambda: _publish_all(settings, messages),
            done,
        )
        with connect(settings, "rabbitry-compare") as connection:
            left = connection.queue_state(queue_name).messages  # unacked tasks would be back by now
    finally:
        _delete(settings, queues=[queue_name])
    return {
        "tasks": tasks,
        "consumers": consumers,
        "prefetch": prefetch,
        "decode": decode,
        "seconds": round(seconds, 4),
        "tasks_per_s": round(tasks / seconds),
        "left_in_queue": left,
    }


def fair_dispatch(settings: BrokerSettings, tasks: int = 24, long_s: float = 0.2, short_s: float = 0.01) -> dict:
    """Uneven tasks (every 4th long) to 2 consumers with prefetch 1: makespan against the ideal."""
    queue_name = f"{_prefix()}.fair"
    with connect(settings, "rabbitry-compare") as connection:
        connection.declare(Topology(queues=(Queue(queue_name, arguments={"x-queue-type": "classic"}),)))
    durations = [long_s if i % 4 == 0 else short_s for i in range(tasks)]
    ended, done = [], threading.Event()

    def run_task(connection: Connection, delivery: Delivery) -> None:
        time.sleep(float(delivery.body))
        connection.ack(delivery.delivery_tag)
        ended.append(time.perf_counter())
        if len(ended) == tasks:
            done.set()

    messages = [OutgoingMessage(queue_name, str(d).encode()) for d in durations]
    try:
        seconds = _run_consumers(
            [ConsumerThread(settings, run_task, queue_name, prefetch=1) for _ in range(2)],
            lambda: _publish_all(settings, messages),
            done,
        )
    finally:
        _delete(settings, queues=[queue_name])
    ideal = max(sum(durations) / 2, max(durations))
    return {
        "tasks": tasks,
        "makespan_s": round(seconds, 3),
        "ideal_s": round(ideal, 3),
        "makespan_over_ideal": round(seconds / ideal, 3),
    }


def fan_out(settings: BrokerSettings, subscribers: int = 4, messages: int = 5000) -> dict:
    """Messages through a fanout exchange to ``subscribers``, each with its own exclusive queue."""
    exchange = Exchange(f"{_prefix()}.fanout", "fanout")
    received, done = itertools.count(1), threading.Event()
    expected = messages * subscribers

    def subscribe(connection: Connection) -> str:
        names = connection.declare(
            Topology(
                exchanges=(exchange,),
                queues=(Queue("", durable=False, exclusive=True, auto_delete=True),),
                bindings=(Binding(exchange.name, ""),),
            )
        )
        return names[""]

    def receive(connection: Connection, delivery: Delivery) -> None:
        connection.ack(delivery.delivery_tag)
        if next(received) == expected:
            done.set()

    with connect(settings, "rabbitry-compare") as connection:
        connection.declare(Topology(exchanges=(exchange,)))
    outgoing = [OutgoingMessage("", b"log line %d" % i, exchange.name, persistent=False) for i in range(messages)]
    try:
        seconds = _run_consumers(
            [ConsumerThread(settings, receive, prefetch=1000, prepare=subscribe) for _ in range(subscribers)],
            lambda: _publish_all(settings, outgoing),
            done,
        )
    finally:
        _delete(settings, exchanges=[exchange.name])
    return {
        "messages": messages,
        "subscribers": subscribers,
        "seconds": round(seconds, 4),
        "messages_per_s": round(messages / seconds),
        "deliveries_per_s": round(expected / seconds),
    }


def topic_routing(settings: BrokerSettings) -> dict:
    """Which routing keys reach which binding keys through a topic exchange, and topic_matches' verdict."""
    prefix = _prefix()
    exchange = Exchange(f"{prefix}.topic", "topic")
    queues = [f"{prefix}.binding.{i}" for i in range(len(TOPIC_BINDING_KEYS))]
    routed: dict[str, list[str]] = {}
    with connect(settings, "rabbitry-compare") as connection:
        try:
            connection.declare(
                Topology(
                    exchanges=(exchange,),
                    queues=tuple(Queue(q, durable=False) for q in queues),
                    bindings=tuple(
                        Binding(exchange.name, q, k) for q, k in zip(queues, TOPIC_BINDING_KEYS, strict=True)
                    ),
                )
            )
            for index, key in enumerate(TOPIC_ROUTING_KEYS):
                connection.publish(OutgoingMessage(key, str(index).encode(), exchange.name, persistent=False))
            connection.wait_for_confirms(_WAIT_S)  # confirmed means enqueued
            for binding_key, queue_name in zip(TOPIC_BINDING_KEYS, queues, strict=True):
                indexes = []
                while (delivery := connection.get(queue_name)) is not None:
                    indexes.append(int(delivery.body))
                    connection.ack(delivery.delivery_tag)
                routed[binding_key] = [TOPIC_ROUTING_KEYS[i] for i in sorted(indexes)]
        finally:
            for queue_name in queues:
                connection.delete_queue(queue_name)
            connection.delete_exchange(exchange.name)
    predicted = {b: [k for k in TOPIC_ROUTING_KEYS if topic_matches(b, k)] for b in TOPIC_BINDING_KEYS}
    return {
        "cases": len(TOPIC_BINDING_KEYS) * len(TOPIC_ROUTING_KEYS),
        "routed": routed,
        "agrees_with_topic_matches": routed == predicted,
    }


def _delete(settings: BrokerSettings, queues=(), exchanges=()) -> None:
    with connect(settings, "rabbitry-compare-cleanup") as connection:
        for name in queues:
            connection.delete_queue(name)
        for name in exchanges:
            connection.delete_exchange(name)
