"""Log history against the real broker: ``rabbitry logs retain``, ``subscribe --since``, retention.

Each test keeps the history of an exchange of its own, and deletes the
stream and the exchange afterwards.
"""

import datetime
import subprocess
import threading
import time

import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import history_stream_name, log_exchange
from rabbitry.producers.log_emitter import LogEmitter
from tests.helpers import assert_one_line_error, command_path, json_lines, wait_until


@pytest.fixture
def exchange_name(unique_name, connection):
    """An exchange of the test's own; it and its history stream are deleted afterwards."""
    yield unique_name
    connection.delete_queue(history_stream_name(unique_name))
    connection.delete_exchange(unique_name)


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit(
    settings, exchange: str, lines: list[str], key: str = "app.info", timestamp: float | None = None, kind="topic"
):
    with LogEmitter(settings, log_exchange(kind, exchange)) as emitter:
        for line in lines:
            emitter.emit(key, line, timestamp=timestamp)
        assert emitter.flush(10) == []


#: A subscription's end: ``--until`` 30 minutes from now, where ``end_window`` puts a line stamped an
#: hour from now, so that the run ends when it reads that line rather than after a second of
#: silence, which a busy machine may take to deliver the first line; ``--timeout`` bounds a hang.
UNTIL_THE_END = ["--until", "30m", "--timeout", "60"]


def end_window(settings, exchange: str, key: str = "app.info", kind="topic"):
    """Send the line stamped past ``UNTIL_THE_END``, after the others."""
    emit(settings, exchange, ["past the window"], key=key, timestamp=time.time() + 3600, kind=kind)


def bodies(result) -> list[str]:
    return [line["body"] for line in json_lines(result.stdout)]


def test_retain_is_idempotent_and_refuses_other_limits_in_one_line(run, exchange_name, connection):
    retain = ["rabbitry", "logs", "retain", "--exchange", exchange_name, "--max-age", "7D", "--max-bytes", "1GB"]
    first, again = run(*retain), run(*retain)
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert "7D and 1,000,000,000 bytes" in again.stdout
    assert connection.queue_state(history_stream_name(exchange_name)) is not None

    other = run("rabbitry", "logs", "retain", "--exchange", exchange_name, "--max-age", "1D", "--max-bytes", "1GB")
    assert_one_line_error(other, ExitCode.BROKER_REFUSED, "already kept", "rabbitry logs forget")


def test_subscribe_since_first_replays_the_history_then_follows_live_lines(
    run, cli_env, broker_settings, exchange_name
):
    run("rabbitry", "logs", "retain", "--exchange", exchange_name, check=True)
    emit(broker_settings, exchange_name, [f"old {n}" for n in range(3)])
    subscriber = subprocess.Popen(
        [command_path("subscribe"), "--exchange", exchange_name, "--since", "first", "--json", "#", "--count", "6"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    replayed = threading.Event()

    def read_stderr():  # by a thread of its own, so that the wait for the line has a bound
        for line in subscriber.stderr:
            said.append(line)
            if '"history_begins"' in line:
                replayed.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    try:
        assert replayed.wait(60), "".join(said)
        emit(broker_settings, exchange_name, [f"new {n}" for n in range(3)])
        assert subscriber.wait(60) == 0, "".join(said)
        out = subscriber.stdout.read()
    finally:
        subscriber.kill()
        subscriber.wait()
        reader.join(30)
    lines = json_lines(out)
    assert [line["body"] for line in lines] == ["old 0", "old 1", "old 2", "new 0", "new 1", "new 2"]
    assert [line["offset"] for line in lines] == list(range(6))
    assert all(line["timestamp"].endswith("Z") for line in lines)


def test_the_seam_between_history_and_live_prints_each_line_of_the_window_once(
    run, cli_env, broker_settings, exchange_name
):
    run("rabbitry", "logs", "retain", "--exchange", exchange_name, check=True)
    stamped: list[tuple[int, int]] = []  # (sequence number, the timestamp it was sent with)
    stop = threading.Event()

    def stream_lines():
        with LogEmitter(broker_settings, log_exchange("topic", exchange_name)) as emitter:
            sequence = 0
            while not stop.is_set():
                now = time.time()
                emitter.emit("app.info" if sequence % 3 else "kern.info", f"seq {sequence}", timestamp=now)
                stamped.append((sequence, int(now)))
                sequence += 1
                emitter.poll()
                time.sleep(0.002)
            emitter.flush(10)

    emitting = threading.Thread(target=stream_lines)
    emitting.start()
    try:
        # The newest line stamped 2 s after the first: a window from a second before the newest leaves the first out.
        wait_until(lambda: stamped and stamped[-1][1] - stamped[0][1] >= 2, timeout=60, message="history")
        since, until = stamped[-1][1] - 1, time.time() + 2  # a window that begins in the history and ends live
        result = run(
            "subscribe",
            "--exchange",
            exchange_name,
            "--since",
            iso(since),
            "--until",
            iso(until),
            "--json",
            "#",
            "--timeout",
            "10",
            check=True,
        )
        wait_until(lambda: stamped[-1][1] > until, timeout=60, message="a line stamped after the window")
    finally:
        stop.set()
        emitting.join()
    printed = [int(body.split()[1]) for body in bodies(result)]
    assert printed == [sequence for sequence, stamp in stamped if since <= stamp <= until]
    assert printed[0] > 0 and printed[-1] < stamped[-1][0]  # the window began in history and ended before the end


def test_since_applies_the_binding_keys_and_leaves_out_lines_stamped_earlier(run, broker_settings, exchange_name):
    run("rabbitry", "logs", "retain", "--exchange", exchange_name, check=True)
    emit(broker_settings, exchange_name, ["an hour old"], key="kern.info", timestamp=time.time() - 3600)
    emit(broker_settings, exchange_name, ["kernel now"], key="kern.info")
    emit(broker_settings, exchange_name, ["app now"], key="app.info")
    end_window(broker_settings, exchange_name, key="kern.info")

    result = run(
        "subscribe", "--exchange", exchange_name, "--since", "10m", "kern.*", *UNTIL_THE_END, "--json", check=True
    )
    assert bodies(result) == ["kernel now"]


def test_since_takes_in_lines_from_a_sender_whose_clock_runs_ahead_of_the_brokers(run, broker_settings, exchange_name):
    # RabbitMQ finds a timestamp offset by arrival time: asked for a time later than any line's arrival,
    # it attaches at the end of the stream, past the lines stamped in the window by a clock 3 s ahead.
    run("rabbitry", "logs", "retain", "--exchange", exchange_name, check=True)
    ahead = time.time() + 3
    emit(broker_settings, exchange_name, ["stamped early"], timestamp=ahead - 2)
    emit(broker_settings, exchange_name, ["stamped ahead"], timestamp=ahead)
    wait_until(lambda: time.time() > ahead + 1, message="the sender's time to pass")
    end_window(broker_settings, exchange_name)

    result = run(
        "subscribe", "--exchange", exchange_name, "--since", iso(ahead), "#", *UNTIL_THE_END, "--json", check=True
    )
    assert bodies(result) == ["stamped ahead"]


def test_since_with_no_history_kept_is_one_line_that_says_what_to_run(run, exchange_name, connection):
    result = run("subscribe", "--exchange", exchange_name, "--since", "1h", "#", "--timeout", "1")

    assert_one_line_error(
        result, ExitCode.NO_HISTORY, f"no history is kept for exchange '{exchange_name}'", "rabbitry logs retain"
    )
    assert connection.queue_state(history_stream_name(exchange_name)) is None


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--since", "yesterday", "#"], "--since"),
        (["--since", "10x", "#"], "--since"),
        (["--since", "2999-01-01T00:00Z", "#"], "in the future"),
        (["--since", "1h", "--until", "soon", "#"], "--until"),
        (["--until", "10m", "#"], "--until goes with --since"),
        (["--since", "1h", "--queue", "some.queue"], "give one of --since and --queue"),
        (["--unbind", "kern.*", "#"], "give --queue NAME"),
    ],
)
def test_bad_history_options_are_usage_errors(run, exchange_name, args, fragment):
    result = run("subscribe", "--exchange", exchange_name, *args)

    assert_one_line_error(result, ExitCode.USAGE, fragment)


def test_with_a_small_max_bytes_old_lines_go_and_subscribe_says_where_history_begins(
    run, broker_settings, exchange_name
):
    run("rabbitry", "logs", "retain", "--exchange", exchange_name, "--max-bytes", "100kB", check=True)
    emit(broker_settings, exchange_name, [f"line {n:05d} {'x' * 80}" for n in range(5000)])
    end_window(broker_settings, exchange_name)

    result = run("subscribe", "--exchange", exchange_name, "--since", "first", "--json", "#", *UNTIL_THE_END)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert 0 < len(lines) < 5000
    assert lines[0]["offset"] > 0 and lines[-1]["body"].startswith("line 04999")
    numbers = [int(line["body"].split()[1]) for line in lines]  # offsets may skip: a segment starts with a record
    assert numbers == list(range(5000 - len(lines), 5000))
    [said] = [event for event in json_lines(result.stderr) if event.get("event") == "history_begins_later"]
    assert f"history now begins at offset {lines[0]['offset']}" in said["detail"]


def test_a_direct_exchange_keeps_the_history_of_the_keys_named(run, broker_settings, exchange_name):
    options = ["--exchange-type", "direct", "--exchange", exchange_name]
    refused = run("rabbitry", "logs", "retain", *options)
    assert_one_line_error(refused, ExitCode.USAGE, "name the keys")
    run("rabbitry", "logs", "retain", *options, "error", check=True)
    run("emit-log", *options, "info", "not kept", check=True)
    run("emit-log", *options, "error", "disk full", check=True)
    end_window(broker_settings, exchange_name, key="error", kind="direct")

    result = run("subscribe", *options, "--since", "first", "error", "info", "--json", *UNTIL_THE_END, check=True)
    assert bodies(result) == ["disk full"]


def test_forget_drops_the_history_only_when_told_yes(run, exchange_name, connection):
    run("rabbitry", "logs", "retain", "--exchange", exchange_name, check=True)
    assert_one_line_error(run("rabbitry", "logs", "forget", "--exchange", exchange_name), ExitCode.USAGE, "--yes")
    run("rabbitry", "logs", "forget", "--exchange", exchange_name, "--yes", check=True)
    assert connection.queue_state(history_stream_name(exchange_name)) is None
