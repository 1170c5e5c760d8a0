"""``--broker local`` for emit-log, subscribe, status, dlq and logs (docs/in-process.md).

Run on their own, as processes, the commands work on an in-process broker of their own and never
reach RabbitMQ: their --url names a port nothing listens on, which they would report with exit
status 3. Run in one process on one named broker (``local://name``), as the docs say one process
may, each sees what the others did: a retained log line replayed, a dead letter listed and replayed.
"""

import json
import select
import signal
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner

from rabbitry.cli import rabbitry
from rabbitry.common.connect import connect
from rabbitry.common.errors import ExitCode
from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.logconfig import configure_logging
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import dead_letter_queue_name
from tests.helpers import assert_one_line_error, command_path, json_lines

DOWN = "amqp://guest:guest@127.0.0.1:1/%2F"  # nothing listens on port 1: reaching for it is exit status 3


@pytest.fixture
def run_local(run):
    """Run a command with ``--broker local``, its --url a broker that is down."""

    def runner(*args):
        return run(*args, "--broker", "local", "--url", DOWN, timeout=30)

    return runner


def test_emit_log_on_its_own_broker_reports_the_line_no_queue_was_bound_for(run_local, unique_name):
    result = run_local("emit-log", "--exchange", unique_name, "kern.info", "hello")

    assert result.returncode == ExitCode.OK, result.stderr
    (unroutable,) = [line for line in json_lines(result.stderr) if line.get("event") == "unroutable"]
    assert (unroutable["exchange"], unroutable["routing_key"]) == (unique_name, "kern.info")


def test_status_on_its_own_broker_shows_a_work_queue_never_declared(run_local, unique_name):
    result = run_local("rabbitry", "status", "--queue", unique_name, "--json")

    assert result.returncode == ExitCode.OK, result.stderr
    rows = {row["queue"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows[unique_name]["exists"] is False


def test_dlq_on_its_own_broker_finds_no_dead_letter_queue(run_local, unique_name):
    result = run_local("rabbitry", "dlq", "list", "--queue", unique_name)

    assert_one_line_error(result, ExitCode.USAGE, f"no dead-letter queue '{dead_letter_queue_name(unique_name)}'")


def test_logs_retain_and_forget_on_its_own_broker_and_subscriptions_refused_for_want_of_a_management_api(
    run_local, unique_name
):
    retained = run_local("rabbitry", "logs", "retain", "--exchange", unique_name, "--max-age", "1h")
    forgotten = run_local("rabbitry", "logs", "forget", "--exchange", unique_name, "--yes")
    listed = run_local("rabbitry", "logs", "subscriptions", "--exchange", unique_name)

    assert retained.returncode == ExitCode.OK, retained.stderr
    assert f"history of exchange '{unique_name}' is kept in stream '{unique_name}.history'" in retained.stdout
    assert forgotten.returncode == ExitCode.OK, forgotten.stderr
    assert f"no history was kept for exchange '{unique_name}'" in forgotten.stdout  # a new broker: none kept
    assert_one_line_error(listed, ExitCode.MANAGEMENT_UNAVAILABLE, "no management API")


def test_subscribe_on_its_own_broker_subscribes_and_ends_cleanly_on_sigterm(cli_env, unique_name):
    process = subprocess.Popen(
        [command_path("subscribe"), "--broker", "local", "--url", DOWN, "--exchange", unique_name, "kern.*"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        readable, _, _ = select.select([process.stderr], [], [], 30)  # a bound, should it never write
        assert readable, "subscribe wrote no line in 30 s"
        subscribed = json.loads(process.stderr.readline())  # its first log line
        assert (subscribed["event"], subscribed["exchange"], subscribed["binding_keys"]) == (
            "subscribed",
            unique_name,
            ["kern.*"],
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == ExitCode.OK, err
    assert "Traceback" not in err and out == ""


@pytest.fixture
def one_process_broker():
    """A named in-process broker for commands run inside this process; forgotten afterwards, and the
    tests' own logging set back (each command configures logging to the stream it was given)."""
    url = f"local://documented-{uuid.uuid4().hex[:8]}"
    yield url
    forget_broker(broker_name(url))
    configure_logging("console", "info", sys.stderr)


def invoke(*args):
    """Run a rabbitry command inside this process; its result."""
    return CliRunner().invoke(rabbitry, list(args), prog_name="rabbitry", catch_exceptions=False)


def test_in_one_process_a_retained_log_line_is_replayed_by_subscribe_since(one_process_broker, unique_name):
    url = one_process_broker

    retained = invoke("logs", "retain", "--exchange", unique_name, "--url", url)
    emitted = invoke("emit-log", "--exchange", unique_name, "--url", url, "kern.critical", "disk full")
    replayed = invoke(
        "subscribe", "--exchange", unique_name, "--since", "first", "--count", "1", "--json", "--url", url, "#"
    )

    assert (retained.exit_code, emitted.exit_code, replayed.exit_code) == (0, 0, 0), replayed.output
    (line,) = [line for line in json_lines(replayed.stdout) if "body" in line]
    assert (line["routing_key"], line["body"], line["offset"]) == ("kern.critical", "disk full", 0)


def test_in_one_process_status_and_dlq_see_a_queued_task_and_a_dead_letter(one_process_broker, unique_name):
    url = one_process_broker
    queued = invoke("new-task", "--task", "noop", "--queue", unique_name, "--url", url)
    letter = TaskMessage("fail", ["boom"])
    with connect(BrokerSettings.from_url(url)) as connection:  # a letter, as a worker would dead-letter it
        connection.publish(letter.to_outgoing(dead_letter_queue_name(unique_name)))
        assert not connection.wait_for_confirms(10)

    before = invoke("status", "--queue", unique_name, "--json", "--url", url)
    listed = invoke("dlq", "list", "--queue", unique_name, "--json", "--url", url)
    replayed = invoke("dlq", "replay", "--all", "--queue", unique_name, "--url", url)
    after = invoke("status", "--queue", unique_name, "--json", "--url", url)

    assert queued.exit_code == 0, queued.output
    assert messages(before)[unique_name] == 1 and messages(before)[dead_letter_queue_name(unique_name)] == 1
    assert [row["id"] for row in json_lines(listed.stdout)] == [letter.id]
    assert replayed.exit_code == 0, replayed.output
    assert messages(after)[unique_name] == 2 and messages(after)[dead_letter_queue_name(unique_name)] == 0


def messages(status) -> dict[str, int]:
    """The messages of each queue in ``rabbitry status --json``'s output."""
    return {row["queue"]: row["messages"] for row in map(json.loads, status.stdout.splitlines())}
