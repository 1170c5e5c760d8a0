"""Durable subscriptions: resumed with the bindings they have, edited with ``--unbind``, listed.

Listing needs RabbitMQ's management API: those tests start a node of their
own with the plugin (``management_broker``); the session's broker has none,
which is what the one-line error is checked against.
"""

import os
import subprocess

import pytest
from structlog.testing import capture_logs

from rabbitry.common.connect import connect
from rabbitry.common.errors import ConfigurationError, ExitCode, NotBound
from rabbitry.common.topology import history_stream_name, log_exchange
from rabbitry.subscribers.bindings import check_unbind, keys_left
from rabbitry.subscribers.log_subscriber import LogSubscriber
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
    # The session's broker has no management API: the bindings are unknown, and said to be, not [].
    assert subscribed["resumed"] is True and subscribed["binding_keys"] is None
    assert "management API" in subscribed["binding_keys_unknown"]


def subscribe_once(settings, exchange_name, keys=(), **options) -> list[dict]:
    """Run a LogSubscriber until it is idle a moment; return its log lines."""
    with capture_logs() as lines:
        LogSubscriber(settings, log_exchange("topic", exchange_name), keys, **options).run(
            lambda delivery: None, idle_timeout=0.2
        )
    return lines


def subscribed_line(lines: list[dict]) -> dict:
    [subscribed] = [line for line in lines if line["event"] == "subscribed"]
    return subscribed


#: A management API that does not answer: port 1 of this host.
NO_MANAGEMENT = "http://127.0.0.1:1"


def test_a_resumed_subscription_reports_the_keys_its_queue_has_or_says_they_are_unknown(either_broker, subscription):
    exchange, queue = subscription
    subscribe_once(either_broker, exchange, ["kern.*", "app.#"], queue=queue)

    resumed = subscribed_line(subscribe_once(either_broker, exchange, queue=queue, management_url=NO_MANAGEMENT))

    assert resumed["resumed"] is True
    if either_broker.is_local:  # the in-process broker knows its bindings
        assert resumed["binding_keys"] == ["kern.*", "app.#"]
    else:  # AMQP cannot list them, and here no management API answers
        assert resumed["binding_keys"] is None
        assert "AMQP cannot list bindings" in resumed["binding_keys_unknown"]


def test_unbinding_the_last_key_is_refused_or_warned_of_never_silent(either_broker, subscription):
    exchange, queue = subscription
    subscribe_once(either_broker, exchange, ["kern.*"], queue=queue)

    if either_broker.is_local:
        with pytest.raises(ConfigurationError, match="no key, and its subscriber would receive nothing"):
            subscribe_once(either_broker, exchange, queue=queue, unbind=["kern.*"])
        with connect(either_broker, "test") as connection:
            assert connection.binding_keys(exchange, queue) == ["kern.*"]  # nothing changed
    else:  # RabbitMQ without its management API: the bindings cannot be read, so it warns
        lines = subscribe_once(either_broker, exchange, queue=queue, unbind=["kern.*"], management_url=NO_MANAGEMENT)
        [warning] = [line for line in lines if line["event"] == "unbind_unchecked"]
        assert "this subscriber receives nothing" in warning["detail"]


def test_unbinding_the_last_key_with_another_given_to_bind_in_its_place_is_allowed(either_broker, subscription):
    exchange, queue = subscription
    subscribe_once(either_broker, exchange, ["kern.*"], queue=queue)

    lines = subscribe_once(either_broker, exchange, ["app.#"], queue=queue, unbind=["kern.*"])

    if either_broker.is_local:
        assert subscribed_line(lines)["binding_keys"] == ["app.#"]


def test_what_unbinding_leaves_is_decided_before_anything_changes():
    assert keys_left(("kern.*", "app.#"), ("kern.*",)) == ("app.#",)
    assert keys_left(("kern.*",), ("kern.*",), ("app.#",)) == ("app.#",)
    with pytest.raises(NotBound, match="its keys: 'kern.*'"):
        check_unbind("topic_logs", "q", ("kern.*",), ("app.#",), ())
    with pytest.raises(ConfigurationError, match="would leave queue 'q' bound to exchange 'topic_logs' with no key"):
        check_unbind("topic_logs", "q", ("kern.*",), ("kern.*",), ())
    check_unbind("topic_logs", "q", ("kern.*", "app.#"), ("kern.*",), ())


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


def test_with_the_management_api_a_resumed_subscription_names_its_keys_and_keeps_its_last(
    management_broker, unique_name
):
    env = dict(
        os.environ,
        AMQP_URL=management_broker.url,
        RABBITMQ_MANAGEMENT_URL=management_broker.management_url,
        RABBITRY_LOG_FORMAT="json",
    )
    exchange, queue = unique_name, f"{unique_name}.sub"

    def run(*args, check=True):
        return run_command(list(args), env=env, check=check)

    run("subscribe", "--exchange", exchange, "--queue", queue, "kern.*", "--timeout", "0.2")
    resumed = run("subscribe", "--exchange", exchange, "--queue", queue, "--timeout", "0.2")
    last_key = run(
        "subscribe", "--exchange", exchange, "--queue", queue, "--unbind", "kern.*", "--timeout", "0.2", check=False
    )

    [subscribed] = [e for e in json_lines(resumed.stderr) if e.get("event") == "subscribed"]
    assert subscribed["resumed"] is True and subscribed["binding_keys"] == ["kern.*"]
    assert_one_line_error(last_key, ExitCode.USAGE, f"would leave queue '{queue}'", "receive nothing", "--help")
    run("emit-log", "--exchange", exchange, "--require-route", "kern.info", "still bound")
