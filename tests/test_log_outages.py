"""Logs through a broker outage: the handler and a durable subscription come back by themselves.

These tests stop and start an extra RabbitMQ node of this module's own
(``extra_broker``, from ``tests/nodes.py``), never the shared broker.
"""

import subprocess
import tempfile

from rabbitry.common.connect import connect
from rabbitry.common.topology import log_exchange
from rabbitry.producers.log_emitter import LogEmitter
from rabbitry.producers.log_handler import LogExchangeHandler
from tests.helpers import bind_everything, command_path, drain, json_lines, wait_until


def test_records_of_an_outage_are_published_once_the_broker_is_back(extra_broker, unique_name, make_logger):
    settings = extra_broker.settings(reconnect_for=60.0)
    exchange, queue = unique_name, f"{unique_name}.all"
    with connect(settings) as connection:
        bind_everything(connection, exchange, queue, durable=True)
    handler = LogExchangeHandler(settings, exchange=exchange, durable=True, close_timeout=60)
    logger = make_logger("outage", handler)
    expected = []

    def log_some(phase: str) -> None:
        for number in range(100):
            expected.append(f"{phase} {number}".encode())
            logger.warning("%s %d", phase, number)

    log_some("before")
    wait_until(lambda: handler.published == 100, message="the first records to be confirmed")
    extra_broker.stop_app()
    log_some("during")  # buffered while the handler reconnects with backoff
    extra_broker.start_app()
    log_some("after")
    handler.close()

    assert (handler.dropped, handler.unsent) == (0, 0)
    with connect(settings) as connection:
        received = [d.body for d in drain(connection, queue)]
        connection.delete_queue(queue)
        connection.delete_exchange(exchange)
    assert set(received) == set(expected)  # in flight at the cut, a record may come twice, never zero times


def test_a_durable_subscription_resubscribes_after_an_outage(extra_broker, unique_name, cli_env):
    settings = extra_broker.settings(reconnect_for=60.0)
    exchange, queue = log_exchange("topic", unique_name, durable=True), f"{unique_name}.subscription"
    stderr = tempfile.NamedTemporaryFile("w+", suffix=".err")
    subscriber = subprocess.Popen(
        [
            command_path("subscribe"),
            "--json",
            "--exchange",
            exchange.name,
            "--durable",
            "--queue",
            queue,
            "kern.*",
            "--count",
            "2",
        ],
        env={**cli_env, "AMQP_URL": extra_broker.url},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )

    def subscriptions() -> int:
        if subscriber.poll() is not None:
            raise AssertionError(f"subscribe exited with {subscriber.returncode}: {open(stderr.name).read()}")
        return sum(event.get("event") == "subscribed" for event in json_lines(open(stderr.name).read()))

    def emit(text: str) -> None:
        with LogEmitter(settings, exchange) as emitter:
            emitter.emit("kern.info", text)
            assert emitter.flush() == []  # routed: the subscription's queue is bound

    try:
        wait_until(lambda: subscriptions() == 1, message="the first subscription")
        emit("before the outage")
        extra_broker.stop_app()
        extra_broker.start_app()
        wait_until(lambda: subscriptions() == 2, timeout=60, message="subscribe to declare and consume again")
        emit("after the outage")
        output, _ = subscriber.communicate(timeout=30)
        assert subscriber.returncode == 0
        assert [message["body"] for message in json_lines(output)] == ["before the outage", "after the outage"]
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait()
        with connect(settings) as connection:
            connection.delete_queue(queue)
            connection.delete_exchange(exchange.name)
