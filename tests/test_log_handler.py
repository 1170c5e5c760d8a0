"""The logging handler against the real broker: routing, structlog, overflow and close.

Its behaviour through a broker outage is in ``test_log_outages.py``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from rabbitry.common.topology import Binding, Queue, Topology, log_exchange
from rabbitry.producers.log_handler import LogExchangeHandler
from tests.helpers import REPOSITORY, bind_everything, drain, wait_until
from tests.test_docs import PYTHON_BLOCK


@pytest.fixture
def log_queue(unique_name, connection):
    """(exchange, queue) names of the test's own, the queue taking every message; both deleted afterwards."""
    exchange, queue = unique_name, f"{unique_name}.all"
    bind_everything(connection, exchange, queue)
    yield exchange, queue
    connection.delete_queue(queue)
    connection.delete_exchange(exchange)


def test_records_are_routed_by_facility_and_severity(log_queue, connection, broker_settings, make_logger):
    exchange, queue = log_queue
    handler = LogExchangeHandler(broker_settings, exchange=exchange)
    make_logger("kern.disk", handler).critical("disk %s failed", "sda")
    make_logger("app", handler).info("started")
    make_logger("app", handler).debug("details")
    handler.close()

    deliveries = drain(connection, queue)
    assert [(d.routing_key, d.body) for d in deliveries] == [
        ("kern.critical", b"disk sda failed"),
        ("app.info", b"started"),
        ("app.debug", b"details"),
    ]
    first = deliveries[0]
    assert (first.headers["severity"], first.headers["facility"], first.headers["logger"]) == (
        "critical",
        "kern",
        "kern.disk",
    )
    assert first.headers["host"] and first.timestamp > 0
    assert (handler.published, handler.dropped, handler.unsent) == (3, 0, 0)


def test_a_given_facility_replaces_the_logger_name(log_queue, connection, broker_settings, make_logger):
    exchange, queue = log_queue
    handler = LogExchangeHandler(broker_settings, exchange=exchange, facility="billing")
    make_logger("app.invoices", handler).warning("late")
    handler.close()
    assert [d.routing_key for d in drain(connection, queue)] == ["billing.warning"]


def test_any_logger_name_makes_a_routing_key_and_header_rabbitmq_accepts(
    log_queue, connection, broker_settings, make_logger
):
    exchange, queue = log_queue
    handler = LogExchangeHandler(broker_settings, exchange=exchange)
    for name in ("é" * 200 + ".disk", "caf\udce9", "app"):  # 400 bytes of facility; not UTF-8
        make_logger(name, handler).warning("from %s", name[:3])
    handler.close()

    keys = [d.routing_key for d in drain(connection, queue)]
    assert (handler.published, handler.unsent) == (3, 0)
    assert keys == ["é" * 123 + ".warning", "caf?.warning", "app.warning"]  # 246 + 8 bytes: at most 255


def test_structlog_logs_through_the_handler(log_queue, connection, broker_settings, make_logger):
    exchange, queue = log_queue
    make_logger("billing", LogExchangeHandler(broker_settings, exchange=exchange))
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        structlog.get_logger("billing").error("invoice_rejected", invoice=42)
    finally:
        structlog.configure(**saved)

    def delivered():
        return drain(connection, queue)

    [delivery] = wait_until(delivered, message="the structlog record to arrive")
    assert delivery.routing_key == "billing.error"
    assert json.loads(delivery.body) == {"invoice": 42, "event": "invoice_rejected"}


def test_close_publishes_everything_still_buffered(log_queue, connection, broker_settings, make_logger):
    exchange, queue = log_queue
    handler = LogExchangeHandler(broker_settings, exchange=exchange)
    logger = make_logger("burst", handler)
    for number in range(2000):
        logger.info("record %d", number)
    handler.close()
    assert [d.body for d in drain(connection, queue)] == [f"record {n}".encode() for n in range(2000)]
    assert (handler.published, handler.dropped, handler.unsent) == (2000, 0, 0)


def test_a_full_buffer_drops_the_newest_records_and_counts_them(make_logger):
    # Nothing listens on port 1: the handler keeps trying, and its buffer fills.
    handler = LogExchangeHandler("amqp://guest:guest@127.0.0.1:1/", capacity=10, close_timeout=0.2)
    logger = make_logger("overflow", handler)
    for number in range(25):
        logger.error("record %d", number)
    assert handler.dropped == 15
    handler.close()
    assert handler.unsent == 10
    logger.error("after close")
    assert handler.dropped == 16


def the_docs_handler_example() -> str:
    """The first example of docs/logs.md's handler section, as a script."""
    page = (Path(REPOSITORY) / "docs" / "logs.md").read_text()
    section = page.split("## From a Python application: `LogExchangeHandler`", 1)[1]
    return PYTHON_BLOCK.findall(section)[0]


def run_script(source: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``source`` as a script with this Python; fail if it has not exited within ``timeout``."""
    return subprocess.run(
        [sys.executable, "-c", source], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPOSITORY
    )


def test_a_script_that_logs_and_exits_delivers_its_record(unique_name, connection, cli_env):
    queue = f"{unique_name}.kern"
    connection.declare(
        Topology(
            exchanges=(log_exchange("topic"),),
            queues=(Queue(queue),),
            bindings=(Binding("topic_logs", queue, "kern.critical"),),
        )
    )
    try:
        result = run_script(the_docs_handler_example(), cli_env)
        assert result.returncode == 0, result.stderr
        bodies = [d.body for d in drain(connection, queue)]
        assert b"A critical kernel error" in bodies
        assert "not sent" not in result.stderr
    finally:
        connection.delete_queue(queue)


def test_a_script_that_logs_with_the_broker_away_exits_and_says_what_it_could_not_send(cli_env):
    away = dict(cli_env, AMQP_URL="amqp://guest:guest@127.0.0.1:1/")  # nothing listens on port 1
    result = run_script(the_docs_handler_example(), away)
    assert result.returncode == 0, result.stderr
    assert "rabbitry: 1 log record(s) not sent to 'topic_logs'" in result.stderr
