"""Bad input gets one clear line and a non-zero exit status, never a traceback."""

import json
import os

import pytest

from rabbitry.common.errors import ExitCode
from tests.helpers import assert_one_line_error

DOWN = "amqp://guest:secret@127.0.0.1:1/%2F"  # nothing listens on port 1


@pytest.mark.parametrize("command", [["new-task", "hello"], ["worker", "--connect-timeout", "0"]])
def test_a_broker_that_is_down_is_reported_with_the_password_masked(run, command):
    result = run(*command, "--url", DOWN)

    assert_one_line_error(result, ExitCode.BROKER_UNAVAILABLE, "cannot reach the broker", "127.0.0.1:1")
    assert "secret" not in result.stderr


@pytest.mark.parametrize("url", ["http://localhost/", "amqp://localhost:notaport/", "amqp://:5672/"])
def test_a_malformed_url_is_a_usage_error(run, url):
    result = run("new-task", "hello", "--url", url)

    assert_one_line_error(result, ExitCode.USAGE, "--url")


def test_a_wrong_password_is_a_refusal_not_a_retry(run, broker_url):
    wrong = broker_url.replace("guest:guest@", "guest:wrong@")

    result = run("new-task", "hello", "--url", wrong)

    assert_one_line_error(result, ExitCode.BROKER_REFUSED, "refused the login")
    assert "wrong" not in result.stderr


def test_a_task_module_that_does_not_import_stops_the_worker_at_once(run, work_queue_name):
    result = run("worker", "--queue", work_queue_name, "--tasks", "no.such.module")

    assert_one_line_error(result, ExitCode.USAGE, "no.such.module")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--args", "{not json"], "--args"),
        (["--kwargs", "[1]"], "--kwargs"),
        (["--args", "[" * 100_000], "nested too deeply"),
        (["--task", "echo", "--args", '["caf\udce9"]'], "--args"),  # Latin-1 bytes on the command line
        (["--task", "caf\udce9"], "not valid UTF-8"),
        (["--task", "x" * 300], "task name is 300 bytes long"),
        (["--task", "echo", "--args", '["x"]', "--count", "0"], "--count"),
    ],
)
def test_bad_task_arguments_are_refused_before_anything_is_sent(run, work_queue_name, connection, args, fragment):
    result = run("new-task", "--queue", work_queue_name, *args)

    assert_one_line_error(result, ExitCode.USAGE, fragment)
    assert connection.queue_state(work_queue_name) is None


def test_a_queue_declared_with_another_type_is_a_clear_refusal(run, work_queue_name):
    run("new-task", "--task", "noop", "--queue", work_queue_name, "--queue-type", "classic", check=True)

    result = run("new-task", "--task", "noop", "--queue", work_queue_name, "--queue-type", "quorum")

    assert_one_line_error(result, ExitCode.BROKER_REFUSED, "PRECONDITION_FAILED", "x-queue-type")


def test_rabbitry_status_shows_a_work_queue_and_reports_a_down_broker(run, work_queue_name):
    run("new-task", "--task", "noop", "--count", "3", "--queue", work_queue_name, check=True)

    shown = run("rabbitry", "status", "--queue", work_queue_name, "--json", check=True)
    down = run("rabbitry", "status", "--url", DOWN)

    rows = {row["queue"]: row for row in map(json.loads, shown.stdout.splitlines())}
    assert rows[work_queue_name]["messages"] == 3
    assert rows[f"{work_queue_name}.dead-letter"]["messages"] == 0
    assert_one_line_error(down, ExitCode.BROKER_UNAVAILABLE, "cannot reach the broker")


LONG = "q" * 300


@pytest.mark.parametrize(
    "command",
    [
        ["new-task", "--queue", LONG, "hello"],
        ["worker", "--queue", LONG],
        ["rabbitry", "status", "--queue", LONG],
        ["rabbitry", "dlq", "list", "--queue", LONG],
        ["subscribe", "--queue", LONG, "#"],
        ["emit-log", "--exchange", LONG, "kern.info", "hello"],
    ],
)
def test_a_name_longer_than_rabbitmq_allows_is_a_usage_error(run, command):
    result = run(*command)

    assert_one_line_error(result, ExitCode.USAGE, "300 bytes long", "at most 255")


def test_a_work_queue_name_leaves_room_for_the_delay_bits_of_its_delayed_tasks(run, connection):
    name = "q" * 210  # with the 23 bits of a delay in front of it, 256 bytes of routing key

    result = run("new-task", "--queue", name, "hello")

    assert_one_line_error(result, ExitCode.USAGE, "at most 209", "delay bits")
    assert connection.queue_state(name) is None


def test_a_delay_new_task_cannot_hold_is_a_one_line_error_and_nothing_is_queued(run, work_queue_name, connection):
    too_long = run("new-task", "--queue", work_queue_name, "--delay", "100d", "hello")
    not_a_duration = run("new-task", "--queue", work_queue_name, "--delay", "soon", "hello")
    both = run("new-task", "--queue", work_queue_name, "--delay", "1m", "--eta", "2030-01-01T00:00:00Z", "hello")

    assert_one_line_error(too_long, ExitCode.USAGE, "at most 8,388,607 s (97 days)")
    assert_one_line_error(not_a_duration, ExitCode.USAGE, "'--delay'", "not a duration")
    assert_one_line_error(both, ExitCode.USAGE, "--delay or --eta, not both")
    assert connection.queue_state(work_queue_name) is None


@pytest.mark.parametrize(
    "command, help_command, fragment",
    [
        (["new-task", "--bogus"], "new-task", "No such option '--bogus'"),
        (["worker", "--prefetch", "0"], "worker", "'--prefetch'"),
        (["rabbitry", "no-such-command"], "rabbitry", "No such command 'no-such-command'"),
        (["rabbitry", "dlq", "show"], "rabbitry dlq show", "Missing argument 'LETTER_ID'"),
        (["rabbitry", "dlq", "show", "--queue"], "rabbitry dlq show", "'--queue' requires an argument"),
        (["rabbitry", "dlq", "replay"], "rabbitry dlq replay", "or --all"),  # raised by the command, not the parser
        (["subscribe"], "subscribe", "at least one binding key"),
        # A ConfigurationError our own checks raise while the command runs, not a click error.
        (["worker", "--broker", "local", "--tasks", "no_such_module"], "worker", "cannot import task module"),
        (["subscribe", "--queue", "q", "--unbind", "a.b", "--broker", "local"], "subscribe", "does not exist"),
    ],
)
def test_a_usage_mistake_is_one_line_that_names_the_help_to_read(run, command, help_command, fragment):
    result = run(*command)

    assert result.returncode == ExitCode.USAGE, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("Error: ")
    assert fragment in result.stderr
    assert result.stderr.rstrip().endswith(f" Try '{help_command} --help' for help."), result.stderr


NOT_UTF8 = os.fsdecode(b"\xff")  # a byte of a command line that is not UTF-8, as Python hands it over


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["new-task", "--delay", "inf", "hello"], "'--delay'"),
        (["new-task", "--delay", "1e400", "hello"], "'--delay'"),
        (["new-task", "--delay", "nan", "hello"], "'--delay'"),
        (["subscribe", "#", "--since", "nan"], "--since"),
        (["subscribe", "#", "--since", "inf"], "--since"),
        (["subscribe", "#", "--since", "1e308"], "--since"),
        (["subscribe", "#", "--since", "999999w"], "--since"),
        (["subscribe", "#", "--since", "0001-01-01T00:00:00"], "--since"),
        (["subscribe", "#", "--since", "1m", "--until", "inf"], "--until"),
        (["new-task", "--file", "/nonexistent/tasks.jsonl"], "No such file or directory"),
        (["new-task", "--url", f"amqp://guest:g{NOT_UTF8}x@127.0.0.1:1/", "hello"], "not valid UTF-8"),
        (["rabbitry", "logs", "retain", "--max-age", "inf"], "--max-age"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_status_2_never_a_traceback(run, args, fragment):
    assert_one_line_error(run(*args), ExitCode.USAGE, fragment)


def test_an_empty_task_name_is_refused_by_the_producer_as_the_worker_would(run, work_queue_name, connection):
    result = run("new-task", "--task", "", "--queue", work_queue_name)

    assert_one_line_error(result, ExitCode.USAGE, "field 'task' must be a non-empty string")
    assert connection.queue_state(work_queue_name) is None


def test_a_file_of_tasks_that_is_not_utf8_is_refused_naming_its_line(run, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b'{"task": "noop"}\n{"task": "no\xffop"}\n')

    assert_one_line_error(run("new-task", "--file", str(tasks)), ExitCode.USAGE, "'--file'", "line 2: not valid UTF-8")


def test_a_schedule_file_that_is_not_utf8_is_refused_by_check(run, tmp_path):
    schedule = tmp_path / "schedule.toml"
    schedule.write_bytes(b'name = "caf\xe9"\n')

    assert_one_line_error(run("rabbitry", "schedule", "--check", str(schedule)), ExitCode.USAGE, "not UTF-8")


DURATION_OPTIONS = {
    "--delay": ["new-task", "hello", "--delay"],
    "--since": ["subscribe", "#", "--since"],
    "--until": ["subscribe", "#", "--since", "first", "--until"],
    "--max-age": ["rabbitry", "logs", "retain", "--max-age"],
}


@pytest.mark.parametrize("duration", ["30", "1.5", "30s", "5m", "2h", "7d", "1w", "1h30m", " 2m 5s ", "7D", "12h"])
@pytest.mark.parametrize("option", DURATION_OPTIONS)
def test_one_duration_syntax_is_read_by_delay_since_until_and_max_age(run, option, duration):
    # Each command reads its options before it connects: with no broker to reach, exit 3 says the duration was taken.
    result = run(*DURATION_OPTIONS[option], duration, "--url", DOWN)

    assert_one_line_error(result, ExitCode.BROKER_UNAVAILABLE, "cannot reach the broker")


@pytest.mark.parametrize("duration", ["soon", "-5s", "inf", "1e400", "999999w", "5x"])
@pytest.mark.parametrize("option", DURATION_OPTIONS)
def test_what_is_not_a_duration_is_refused_alike_by_delay_since_until_and_max_age(run, option, duration):
    result = run(*DURATION_OPTIONS[option], duration, "--url", DOWN)

    assert_one_line_error(result, ExitCode.USAGE, option)


SCHEDULE = '[[entry]]\nname = "beat"\ntask = "noop"\nevery = "1h"\n'


@pytest.mark.parametrize(
    "command, fragment",
    [
        (["rabbitry", "compare", "--url", "local://"], "compare runs the in-process model beside RabbitMQ"),
        (["rabbitry", "compare", "--url", "local://named"], "compare runs the in-process model beside RabbitMQ"),
        (["rabbitry", "compare", "--broker", "local"], "compare runs the in-process model beside RabbitMQ"),
        (["rabbitry", "schedule", "{schedule}", "--broker", "local"], "run the scheduler against RabbitMQ"),
        (["rabbitry", "beat", "{schedule}", "--url", "local://"], "run the scheduler against RabbitMQ"),
        (["worker", "--broker", "local", "--time-limit", "5"], "--time-limit needs pool processes"),
        (["new-task", "--broker", "local", "--wait", "--task", "noop"], "--wait waits for a worker's results"),
    ],
)
def test_a_command_refuses_at_once_the_in_process_broker_it_cannot_use(run, tmp_path, command, fragment):
    # Each of these once waited on the in-process broker for what could never come (compare for 120 s,
    # new-task --wait for its --timeout); the bound below is the test's, not a figure it asserts.
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(SCHEDULE)

    result = run(*[str(schedule) if word == "{schedule}" else word for word in command], timeout=30)

    assert_one_line_error(result, ExitCode.USAGE, fragment)


def test_logs_subscriptions_refuses_the_in_process_broker_for_want_of_a_management_api(run):
    result = run("rabbitry", "logs", "subscriptions", "--broker", "local", timeout=30)

    assert_one_line_error(result, ExitCode.MANAGEMENT_UNAVAILABLE, "the in-process model has no management API")
