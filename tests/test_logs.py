"""emit-log and subscribe against the real broker: the tutorials 3-5, as commands.

Every test uses exchanges and queues of its own (``--exchange``), except the
interoperability tests, which use the tutorials' default names with routing
keys of their own.
"""

import subprocess
import tempfile

import pika
import pytest

from rabbitry.common.topology import LOG_EXCHANGES, log_exchange
from rabbitry.producers.log_emitter import LogEmitter
from tests.helpers import command_path, json_lines, run_command, wait_until


class SubscriberProcess:
    """A ``subscribe --json`` command running in the background."""

    def __init__(self, args: list[str], env: dict):
        self._out = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-subscribe-", suffix=".out")
        self._err = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-subscribe-", suffix=".err")
        self.process = subprocess.Popen(
            [command_path("subscribe"), "--json", *args], env=env, stdout=self._out, stderr=self._err
        )

    def wait_until_subscribed(self) -> None:
        def subscribed():
            if self.process.poll() is not None:
                raise AssertionError(f"subscribe exited with {self.process.returncode}: {self.errors()}")
            return any(event.get("event") == "subscribed" for event in json_lines(self.errors()))

        wait_until(subscribed, message="subscribe to bind its queue")

    def finish(self, timeout: float = 30) -> list[dict]:
        """Wait for the command to exit by itself (status 0); return the messages it printed."""
        assert self.process.wait(timeout) == 0, self.errors()
        with open(self._out.name) as out:
            return json_lines(out.read())

    def errors(self) -> str:
        with open(self._err.name) as err:
            return err.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_subscribers(cli_env):
    """Start ``subscribe`` commands together, and wait until every one is bound."""
    started = []

    def starter(*arg_lists: list[str]) -> list[SubscriberProcess]:
        batch = [SubscriberProcess(args, cli_env) for args in arg_lists]
        started.extend(batch)
        for subscriber in batch:
            subscriber.wait_until_subscribed()
        return batch

    yield starter
    for subscriber in started:
        subscriber.kill()


@pytest.fixture
def exchange_name(unique_name, connection):
    """An exchange name of the test's own; the exchange is deleted afterwards."""
    yield unique_name
    connection.delete_exchange(unique_name)


def bodies(messages: list[dict]) -> list[str]:
    return [message["body"] for message in messages]


def test_the_tutorial_table_of_topic_bindings(start_subscribers, exchange_name, broker_settings):
    everything, kern, critical, union = start_subscribers(
        *[
            ["--exchange", exchange_name, *keys, "--count", str(count)]
            for keys, count in ((["#"], 5), (["kern.*"], 2), (["*.critical"], 2), (["kern.*", "*.critical"], 3))
        ]
    )
    # kern.critical comes last and matches every subscription: a stray or
    # duplicated message would take its place within each --count.
    sent = ["kern.info", "app.critical", "app.info", "kern.disk.error", "kern.critical"]
    with LogEmitter(broker_settings, log_exchange("topic", exchange_name)) as emitter:
        for key in sent:
            emitter.emit(key, f"message for {key}")
        assert emitter.flush() == []

    assert [m["routing_key"] for m in everything.finish()] == sent
    assert [m["routing_key"] for m in kern.finish()] == ["kern.info", "kern.critical"]
    assert [m["routing_key"] for m in critical.finish()] == ["app.critical", "kern.critical"]
    assert [m["routing_key"] for m in union.finish()] == ["kern.info", "app.critical", "kern.critical"]


@pytest.mark.parametrize(
    "exchange_type, subscriptions, emitted, received",
    [
        ("fanout", [[], []], [([], "hello all")], [["hello all"], ["hello all"]]),
        (
            "direct",
            [["error"], ["info", "error"]],
            [(["info"], "started"), (["error"], "disk full")],
            [["disk full"], ["started", "disk full"]],
        ),
        (
            "topic",
            [["kern.*"], ["*.critical"]],
            [(["app.critical"], "app down"), (["kern.critical"], "panic")],
            [["panic"], ["app down", "panic"]],
        ),
    ],
)
def test_each_exchange_type_routes_as_in_the_tutorials(
    start_subscribers, run, exchange_name, exchange_type, subscriptions, emitted, received
):
    options = ["--exchange-type", exchange_type, "--exchange", exchange_name]
    subscribers = start_subscribers(
        *[
            [*options, *keys, "--count", str(len(expected))]
            for keys, expected in zip(subscriptions, received, strict=True)
        ]
    )
    for key, message in emitted:
        run("emit-log", *options, *key, message, check=True)
    assert [bodies(subscriber.finish()) for subscriber in subscribers] == received


def test_metadata_rides_in_properties_and_headers(start_subscribers, run, exchange_name):
    [subscriber] = start_subscribers(["--exchange", exchange_name, "#", "--count", "1"])
    run("emit-log", "--exchange", exchange_name, "kern.critical", "A", "critical", "kernel", "error", check=True)
    [message] = subscriber.finish()
    assert message["body"] == "A critical kernel error"
    assert message["properties"]["app_id"] == "emit-log"
    assert message["properties"]["timestamp"] > 0
    assert message["headers"]["severity"] == "critical"
    assert message["headers"]["facility"] == "kern"
    assert message["headers"]["host"]


def test_stdin_is_streamed_one_message_per_line(start_subscribers, run, exchange_name):
    lines = [f"line {n}" for n in range(300)]
    [subscriber] = start_subscribers(["--exchange", exchange_name, "app.info", "--count", str(len(lines))])
    result = run("emit-log", "--exchange", exchange_name, "app.info", input="\n".join(lines) + "\n\n")
    assert result.returncode == 0, result.stderr
    assert bodies(subscriber.finish()) == lines  # in order, and the blank line sent nothing


def test_a_streamed_line_is_sent_before_the_input_ends(start_subscribers, cli_env, exchange_name):
    [subscriber] = start_subscribers(["--exchange", exchange_name, "app.info", "--count", "1"])
    emitter = subprocess.Popen(
        [command_path("emit-log"), "--exchange", exchange_name, "app.info"],
        env=cli_env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        emitter.stdin.write(b"first line of a tail -f\n")
        emitter.stdin.flush()
        assert bodies(subscriber.finish()) == ["first line of a tail -f"]
        assert emitter.poll() is None  # still reading its input
    finally:
        emitter.stdin.close()
    assert emitter.wait(30) == 0


def test_a_durable_subscription_gets_what_was_emitted_while_it_was_away(run, exchange_name, unique_name, connection):
    queue = f"{unique_name}.subscription"
    subscription = ["--exchange", exchange_name, "--queue", queue, "kern.*"]
    try:
        run("subscribe", *subscription, "--timeout", "0.2", check=True)  # subscribes, then goes away
        run(
            "emit-log",
            "--exchange",
            exchange_name,
            "--require-route",
            "kern.warning",
            input="one\ntwo\nthree\n",
            check=True,
        )
        result = run("subscribe", "--json", *subscription, "--count", "3", check=True)
        assert bodies(json_lines(result.stdout)) == ["one", "two", "three"]
        assert connection.queue_state(queue).messages == 0
    finally:
        connection.delete_queue(queue)


def test_unroutable_messages_are_reported_and_can_be_an_error(run, exchange_name):
    result = run("emit-log", "--exchange", exchange_name, "nobody.listens", "hello")
    assert result.returncode == 0
    assert "unroutable" in result.stderr
    result = run("emit-log", "--exchange", exchange_name, "--require-route", "nobody.listens", "hello")
    assert result.returncode == 5
    assert result.stderr.strip().splitlines()[-1].startswith("Error: message unroutable")


@pytest.mark.parametrize(
    "command, arguments, complaint",
    [
        ("emit-log", ["k" * 256, "hello"], "routing key is 256 bytes long"),
        ("emit-log", [b"kern.\xff", "hello"], "is not valid UTF-8"),
        ("emit-log", ["--exchange-type", "direct"], "needs a ROUTING_KEY"),
        ("subscribe", ["*." + "k" * 300], "binding key is 302 bytes long"),
        ("subscribe", [b"kern.\xfe"], "is not valid UTF-8"),
        ("subscribe", [], "needs at least one binding key"),
        ("subscribe", ["--exchange-type", "direct"], "needs at least one binding key"),
        ("subscribe", ["--exchange-type", "fanout", "error"], "give no binding key"),
    ],
)
def test_an_invalid_key_is_one_clear_error_before_anything_is_declared(
    cli_env, exchange_name, command, arguments, complaint
):
    result = subprocess.run(
        [command_path(command), "--exchange", exchange_name, *arguments], env=cli_env, capture_output=True, timeout=30
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert complaint in stderr
    assert "Traceback" not in stderr
    assert not _exchange_exists(cli_env["AMQP_URL"], exchange_name)


def _exchange_exists(url: str, name: str) -> bool:
    with pika.BlockingConnection(pika.URLParameters(url)) as raw:
        try:
            raw.channel().exchange_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False


# -- interoperability with the tutorials' own programs ------------------------
@pytest.mark.parametrize("exchange_type", ["fanout", "direct", "topic"])
def test_a_tutorial_receiver_gets_what_emit_log_sends(run, broker_url, unique_name, exchange_type):
    name = LOG_EXCHANGES[exchange_type]
    key = "" if exchange_type == "fanout" else f"{unique_name}.critical"
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as raw:
        channel = raw.channel()
        channel.exchange_declare(exchange=name, exchange_type=exchange_type)  # as receive_logs*.py does
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(exchange=name, queue=queue, routing_key=key)
        run(
            "emit-log",
            "--exchange-type",
            exchange_type,
            *([key] if key else []),
            unique_name,
            "--require-route",
            check=True,
        )

        def received_ours():  # other tests may share the tutorials' exchanges
            _method, _properties, body = channel.basic_get(queue, auto_ack=True)
            return body == unique_name.encode()

        wait_until(received_ours, message="the tutorial receiver to get the message")


@pytest.mark.parametrize("exchange_type", ["fanout", "direct", "topic"])
def test_subscribe_prints_what_a_tutorial_emitter_sends(cli_env, broker_url, unique_name, exchange_type):
    name = LOG_EXCHANGES[exchange_type]
    key = {"fanout": "", "direct": unique_name, "topic": f"{unique_name}.critical"}[exchange_type]
    env = {**cli_env, "RABBITRY_LOG_FORMAT": "json"}
    subscriber = subprocess.Popen(
        [command_path("subscribe"), "--exchange-type", exchange_type, *([key] if key else []), "--timeout", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in subscriber.stderr:
            if '"subscribed"' in line:
                break
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as raw:
            channel = raw.channel()
            channel.exchange_declare(exchange=name, exchange_type=exchange_type)  # as emit_log*.py does
            channel.basic_publish(exchange=name, routing_key=key, body=unique_name.encode())
        line = next(line for line in subscriber.stdout if unique_name in line)
        severity = {"fanout": None, "direct": None, "topic": "CRITICAL"}[exchange_type]
        assert line.split() == [part for part in (key, severity, unique_name) if part]
    finally:
        subscriber.kill()
        subscriber.wait()


def test_subscribe_exits_quietly_after_its_timeout(run, exchange_name):
    result = run("subscribe", "--exchange", exchange_name, "#", "--timeout", "0.2")
    assert result.returncode == 0
    assert result.stdout == ""


def test_emit_log_fails_in_one_line_when_the_broker_is_down(cli_env):
    down = {**cli_env, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    result = run_command(["emit-log", "kern.info", "hello"], env=down)
    assert result.returncode == 3
    assert result.stderr.strip().startswith("Error: cannot reach the broker")


def test_the_default_exchanges_are_declared_as_in_the_tutorials():
    assert {t: (log_exchange(t).name, log_exchange(t).type, log_exchange(t).durable) for t in LOG_EXCHANGES} == {
        "fanout": ("logs", "fanout", False),
        "direct": ("direct_logs", "direct", False),
        "topic": ("topic_logs", "topic", False),
    }
