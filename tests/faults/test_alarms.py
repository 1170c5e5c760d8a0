"""Memory alarms and full queues: publishers say why they wait, wait without churn, and end with a named code.

The alarm is raised on an extra RabbitMQ node of this module's own
(``extra_broker``, from ``tests/nodes.py``) with ``set_vm_memory_high_watermark
0``, and the queue-length policy is set on that node too, never on the shared
broker.
"""

import contextlib
import os
import re
import subprocess

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import work_queue
from rabbitry.common.transport.contract import OutgoingMessage
from rabbitry.producers.log_handler import LogExchangeHandler
from tests.helpers import command_path, json_lines, summary_counts, wait_until


@contextlib.contextmanager
def memory_alarm(node):
    """The node's memory alarm on (it blocks every connection that publishes), then off again."""
    node.ctl("set_vm_memory_high_watermark", "0")
    try:
        yield
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")


def node_env(node) -> dict:
    return dict(os.environ, AMQP_URL=node.url, RABBITRY_LOG_FORMAT="json", PYTHONUNBUFFERED="1")


def events(stderr: str, name: str) -> list[dict]:
    return [line for line in json_lines(stderr) if line.get("event") == name]


def cleanup(node, queue: str) -> None:
    with connect(node.settings(), "rabbitry-tests-cleanup") as connection:
        for declared in work_queue(queue, "quorum").queues:
            connection.delete_queue(declared.name)


def test_a_blocked_connection_says_why_and_closes_at_once(extra_broker, unique_name):
    with connect(extra_broker.settings(blocked_timeout=None)) as connection:
        connection.declare(work_queue(unique_name, "classic"))
        with memory_alarm(extra_broker):
            connection.publish(OutgoingMessage(unique_name, b"held back"))
            wait_until(
                lambda: connection.process_events(0.05) or connection.blocked_reason,
                message="the broker to block the connection",
            )
            assert "memory" in connection.blocked_reason
            connection.close()  # a graceful close would wait for the alarm to clear
            assert not connection.is_open
    cleanup(extra_broker, unique_name)


def test_new_task_on_a_blocked_broker_says_why_at_once_and_exits_6_after_its_blocked_timeout(extra_broker, unique_name):
    with memory_alarm(extra_broker):
        result = subprocess.run(
            [
                command_path("new-task"),
                "--task",
                "noop",
                "--count",
                "50",
                "--queue",
                unique_name,
                "--blocked-timeout",
                "3",
            ],
            env=node_env(extra_broker),
            capture_output=True,
            text=True,
            timeout=120,
        )
    cleanup(extra_broker, unique_name)

    assert result.returncode == ExitCode.PUBLISHING_BLOCKED, result.stderr
    blocked = events(result.stderr, "publishing_blocked")
    assert len(blocked) == 1 and "memory" in blocked[0]["reason"]
    assert events(result.stderr, "publisher_reconnecting") == []
    assert "blocked publishing (low on memory)" in result.stderr
    assert summary_counts(result.stderr) == {"queued": 0, "refused": 0, "unconfirmed": 50, "not_sent": 0}
    assert result.stdout == ""


def test_emit_log_on_a_blocked_broker_exits_6_with_its_summary(extra_broker, unique_name):
    with memory_alarm(extra_broker):
        result = subprocess.run(
            [command_path("emit-log"), "--exchange", unique_name, "app.info", "--blocked-timeout", "2"],
            input="one\ntwo\nthree\n",
            env=node_env(extra_broker),
            capture_output=True,
            text=True,
            timeout=120,
        )
    with connect(extra_broker.settings()) as connection:
        connection.delete_exchange(unique_name)

    assert result.returncode == ExitCode.PUBLISHING_BLOCKED, result.stderr
    assert len(events(result.stderr, "publishing_blocked")) == 1
    assert events(result.stderr, "publisher_reconnecting") == []
    summary, error = result.stderr.strip().splitlines()[-2:]
    assert summary == "summary: 0 confirmed, 0 refused, 0 unroutable, 3 unconfirmed (may or may not be delivered)"
    assert error.startswith("Error: ") and "blocked publishing (low on memory)" in error


def test_publishing_goes_on_without_reconnecting_once_the_alarm_clears(extra_broker, unique_name, tmp_path):
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "w") as stderr_file, memory_alarm(extra_broker):
        process = subprocess.Popen(
            [command_path("new-task"), "--task", "noop", "--count", "200", "--queue", unique_name],
            env=node_env(extra_broker),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
        try:
            wait_until(
                lambda: '"publishing_blocked"' in stderr_path.read_text(),
                timeout=60,
                message="new-task to say that the broker blocks it",
            )
        except AssertionError:
            process.kill()
            raise
    stdout, _ = process.communicate(timeout=120)
    stderr = stderr_path.read_text()
    with connect(extra_broker.settings()) as connection:
        queued = connection.queue_state(unique_name).messages
    cleanup(extra_broker, unique_name)

    assert process.returncode == 0, stderr
    assert len(stdout.split()) == queued == 200
    assert len(events(stderr, "publishing_unblocked")) == 1
    assert events(stderr, "publisher_reconnecting") == []


def test_the_log_handler_never_holds_the_application_while_the_broker_blocks_publishing(
    extra_broker, unique_name, make_logger
):
    handler = LogExchangeHandler(extra_broker.settings(), exchange=unique_name, capacity=500, close_timeout=1)
    logger = make_logger(f"alarm-{unique_name}", handler)
    with memory_alarm(extra_broker):
        for number in range(3000):  # the thread publishes the first ones, and is blocked
            logger.warning("record %d", number)
        handler.close()
        thread_ended = not handler._thread.is_alive()

    assert thread_ended  # the blocked connection was dropped, not waited on
    assert handler.published == 0
    assert handler.dropped > 0 and handler.unsent > 0
    assert handler.dropped + handler.unsent == 3000  # every record accounted for


@pytest.fixture
def full_queue(extra_broker, unique_name):
    """A work queue on the extra node that a policy limits to 20 messages, refusing the rest."""
    extra_broker.ctl(
        "set_policy",
        f"full-{unique_name}",
        f"^{re.escape(unique_name)}$",
        '{"max-length": 20, "overflow": "reject-publish"}',
        "--apply-to",
        "queues",
    )
    yield unique_name
    extra_broker.ctl("clear_policy", f"full-{unique_name}")
    cleanup(extra_broker, unique_name)


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_full_queue_is_an_answer_every_refused_id_is_reported_and_new_task_exits_7(
    extra_broker, full_queue, policy, tmp_path
):
    refused_file = tmp_path / "refused.txt"
    result = subprocess.run(
        [
            command_path("new-task"),
            "--task",
            "noop",
            "--count",
            "3000",
            "--queue",
            full_queue,
            "--on-refused",
            policy,
            "--refused-file",
            str(refused_file),
        ],
        env=node_env(extra_broker),
        capture_output=True,
        text=True,
        timeout=120,
    )
    with connect(extra_broker.settings()) as connection:
        in_queue = set()
        while (delivery := connection.get(full_queue)) is not None:
            in_queue.add(delivery.message_id)

    assert result.returncode == ExitCode.QUEUE_FULL, result.stderr
    queued, refused = set(result.stdout.split()), set(refused_file.read_text().split())
    counts = summary_counts(result.stderr)
    assert queued == in_queue and refused and not refused & in_queue, (
        f"{len(queued)} printed, {len(in_queue)} in the queue, {len(refused & in_queue)} refused yet queued; "
        f"stderr ends: {result.stderr[-1500:]}"
    )
    assert (counts["queued"], counts["refused"], counts["unconfirmed"]) == (len(queued), len(refused), 0)
    assert len(events(result.stderr, "publisher_reconnecting")) <= 1  # one look on a fresh channel, no more
    assert len(events(result.stderr, "queue_full")) == 1
    if policy == "continue":
        assert counts["not_sent"] == 0 and len(queued) + len(refused) == 3000
    else:
        assert counts["not_sent"] > 0


def test_refused_ids_go_to_standard_error_without_a_refused_file(extra_broker, full_queue):
    result = subprocess.run(
        [
            command_path("new-task"),
            "--task",
            "noop",
            "--count",
            "100",
            "--queue",
            full_queue,
            "--queue-type",
            "classic",
            "--on-refused",
            "continue",
        ],
        env=node_env(extra_broker),
        capture_output=True,
        text=True,
        timeout=120,
    )

    refused = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("refused ")]
    assert result.returncode == ExitCode.QUEUE_FULL
    assert (len(result.stdout.split()), len(refused)) == (20, 80)  # a classic queue's limit is exact
