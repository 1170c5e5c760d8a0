"""Durable subscriptions: resumed with the bindings they have, edited with ``--unbind``, listed.

Listing needs RabbitMQ's management API: those tests start a node of their
own with the plugin (``management_broker``); the session's broker has none,
which is what the one-line error is checked against.
"""

import os
import subprocess

import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import history_stream_name
from tests.helpers import assert_one_line_error, command_path, json_lines, run_command, wait_until


@pytest.fixture
def subscription(unique_name, connection):
    """(exchange, queue) names of the test's own, deleted afterwards."""
    exchange, queue = unique_name, f"{unique_name}.sub"
    yield exchange, queue
    connection.delete_queue(queue)
    connection.delete_queue(history_stream_name(exchange))
    connection.delete_exchange(exchange)


def bodies(result) -> list[str]:
    return [line["body"] for line in json_lines(result.stdout)]


def test_a_durable_subscription_resumes_with_the_bindings_it_has(run, subscription):
    exchange, queue = subscription
    run("subscribe", "--exchange", exchange, "--queue", queue, "kern.*", "--timeout", "0.2", check=True)
    run("emit-log", "--exchange", exchange, "--require-route", "kern.warning", "while away", check=True)

    result = run("subscribe", "--exchange", exchange, "--queue", queue, "--json", "--count", "1", check=True)
    assert bodies(result) == ["while away"]
    [subscribed] = [e for e in json_lines(result.stderr) if e.get("event") == "subscribed"]
    assert subscribed["resumed"] is True and subscribed["binding_keys"] == []


def test_resuming_a_queue_that_does_not_exist_is_one_line_error(run, subscription, connection):
    exchange, queue = subscription
    result = run("subscribe", "--exchange", exchange, "--queue", queue, "--timeout", "0.2")

    assert_one_line_error(result, ExitCode.USAGE, f"queue '{queue}' does not exist", "give the binding keys")
    assert connection.queue_state(queue) is None


def test_unbind_removes_one_key_and_keeps_the_others(run, subscription):
    exchange, queue = subscription
    run("subscribe", "--exchange", exchange, "--queue", queue, "kern.*", "app.*", "--timeout", "0.2", check=True)
    run("subscribe", "--exchange", exchange, "--queue", queue, "--unbind", "app.*", "--timeout", "0.2", check=True)

    assert run("emit-log", "--exchange", exchange, "--require-route", "app.info", "gone").returncode == 5
    run("emit-log", "--exchange", exchange, "--require-route", "kern.info", "kept", check=True)
    result = run("subscribe", "--exchange", exchange, "--queue", queue, "--json", "--timeout", "0.5", check=True)
    assert bodies(result) == ["kept"]


def test_without_a_management_api_listing_subscriptions_is_one_line_with_its_exit_status(run, subscription):
    exchange, _queue = subscription
    result = run("rabbitry", "logs", "subscriptions", "--exchange", exchange, "--management-url", "http://127.0.0.1:1")

    assert_one_line_error(result, ExitCode.MANAGEMENT_UNAVAILABLE, "management API at http://127.0.0.1:1")


def test_subscriptions_are_listed_with_their_keys_and_backlog(management_broker, unique_name):
    env = dict(
        os.environ,
        AMQP_URL=management_broker.url,
        RABBITMQ_MANAGEMENT_URL=management_broker.management_url,
        RABBITRY_LOG_FORMAT="json",
    )
    exchange = unique_name

    def run(*args, check=True):
        return run_command(list(args), env=env, check=check)

    run("rabbitry", "logs", "retain", "--exchange", exchange)
    run("subscribe", "--exchange", exchange, "--queue", f"{exchange}.kern", "kern.*", "*.critical", "--timeout", "0.2")
    run("subscribe", "--exchange", exchange, "--queue", f"{exchange}.app", "app.#", "--timeout", "0.2")
    run("emit-log", "--exchange", exchange, "app.info", "one")
    live = subprocess.Popen(
        [command_path("subscribe"), "--exchange", exchange, "#", "--timeout", "30"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )  # an exclusive queue: not listed
    try:
        next(line for line in live.stderr if '"subscribed"' in line)

        def listed_with_statistics():  # the broker refreshes a queue's counts twice a second here
            rows = json_lines(run("rabbitry", "logs", "subscriptions", "--exchange", exchange, "--json").stdout)
            return rows if rows and rows[0]["messages"] == 1 else None

        listed = wait_until(listed_with_statistics, message="the backlog in the management API")
        table = run("rabbitry", "logs", "subscriptions", "--exchange", exchange).stdout
        not_bound = run(
            "subscribe",
            "--exchange",
            exchange,
            "--queue",
            f"{exchange}.app",
            "--unbind",
            "kern.*",
            "--timeout",
            "0.2",
            check=False,
        )
    finally:
        live.kill()
        live.wait()
    assert listed == [
        {"queue": f"{exchange}.app", "kind": "queue", "binding_keys": ["app.#"], "messages": 1, "consumers": 0},
        {"queue": f"{exchange}.history", "kind": "history", "binding_keys": ["#"], "messages": None, "consumers": 0},
        {
            "queue": f"{exchange}.kern",
            "kind": "queue",
            "binding_keys": ["*.critical", "kern.*"],
            "messages": 0,
            "consumers": 0,
        },
    ]
    assert "'kern.*'" in table and "history" in table
    assert_one_line_error(not_bound, ExitCode.USAGE, "is not bound", "'kern.*'", "its keys: 'app.#'")
