"""What the tests that run on both transports share: a Transport that opens connections to the
broker of the test and removes what the test declared, messages to publish, and an Inbox that
collects a consumer's deliveries."""

import time

from rabbitry.common.connect import connect
from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Topology
from rabbitry.common.transport.contract import OutgoingMessage
from tests.helpers import wait_until


class Transport:
    """Opens connections to one broker and removes what a test declared on it.

    ``kind`` is ``"local"`` for the in-process model and ``"amqp"`` for RabbitMQ.
    """

    def __init__(self, settings: BrokerSettings, prefix: str):
        self.kind = "local" if settings.is_local else "amqp"
        self.settings = settings
        self.prefix = prefix
        self.connections = []
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def connect(self):
        connection = connect(self.settings, "rabbitry-transport-tests")
        self.connections.append(connection)
        return connection

    def declare(self, connection, exchanges=(), queues=(), bindings=(), exchange_bindings=()) -> dict[str, str]:
        self.exchanges += [e.name for e in exchanges]
        names = connection.declare(Topology(tuple(exchanges), tuple(queues), tuple(bindings), tuple(exchange_bindings)))
        self.queues += list(names.values())
        return names

    def forget_everything(self) -> None:
        """Drop the in-process broker with all it holds."""
        forget_broker(broker_name(self.settings.urls[0]))

    def cleanup(self) -> None:
        for connection in self.connections:
            connection.close()
        if self.kind == "local":
            self.forget_everything()
            return
        with connect(self.settings, "rabbitry-transport-cleanup") as connection:
            for queue in self.queues:
                connection.delete_queue(queue)
            for exchange in self.exchanges:
                connection.delete_exchange(exchange)


def message(routing_key: str, body: str, exchange: str = "", **properties) -> OutgoingMessage:
    return OutgoingMessage(routing_key=routing_key, body=body.encode(), exchange=exchange, **properties)


def publish_all(connection, messages, mandatory=False):
    for outgoing in messages:
        connection.publish(outgoing, mandatory=mandatory)
    return connection.wait_for_confirms(10)


def get_within(connection, queue: str, timeout: float = 30.0):
    """The next message of ``queue``, waiting for it to arrive (dead letters take a moment)."""
    return wait_until(lambda: connection.get(queue), timeout, 0.02, f"a message on {queue}")


class Inbox:
    """Collects a consumer's deliveries."""

    def __init__(self, connection):
        self.connection = connection
        self.deliveries = []

    def __call__(self, delivery):
        self.deliveries.append(delivery)

    def bodies(self) -> list[str]:
        return [d.body.decode() for d in self.deliveries]

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"got {len(self.deliveries)} of {count} deliveries"
            self.connection.process_events(0.02)
