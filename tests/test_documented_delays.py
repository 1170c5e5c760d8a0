"""``new-task --delay`` and ``--eta`` from the command line (docs/delays.md): the broker holds the task
until it is due, so a task sent later without a delay runs first; bad input is one ``Error:`` line."""

import datetime

import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.messages import TaskMessage
from tests.helpers import assert_one_line_error, wait_until

#: How far ahead the delayed task is due. The task without a delay, the witness, is sent once new-task
#: has returned; new-task starts, connects and publishes in well under a second, so even a machine
#: twice as slow and loaded sends the witness with seconds to spare before the delayed task is due.
DUE_IN_S = 5
#: A delay is held to the nearest whole second of what is left when the task is published, so a task
#: may come up to half a second before its due time (docs/delays.md); the checks allow that, and only that.
ROUNDING_S = 0.5


def moment(event: dict) -> float:
    """When a worker's log line was written, as a POSIX time."""
    return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def send_witness(connection, queue: str) -> str:
    """Queue an echo task with no delay, confirmed; its id."""
    message = TaskMessage("echo", ["now"])
    connection.publish(message.to_outgoing(queue))
    assert not connection.wait_for_confirms(30)
    return message.id


def run_delayed_and_witness(run, start_worker, connection, queue, when):
    """Start a worker, queue a delayed echo task with the new-task options ``when(now)``, then the witness; the worker's
    lines of the two tasks once both ran, in the order it ran them, and when the delayed task was queued."""
    worker = start_worker(queue, "--processes", "1")
    sent = datetime.datetime.now(datetime.UTC).timestamp()
    result = run("new-task", "--task", "echo", "--args", '["later"]', "--queue", queue, *when(sent))
    assert result.returncode == ExitCode.OK, result.stderr
    (delayed_id,) = result.stdout.split()
    witness_id = send_witness(connection, queue)

    def both_ran():
        lines = [e for e in worker.events("task_succeeded") if e["task_id"] in (delayed_id, witness_id)]
        return lines if len(lines) == 2 else None

    lines = wait_until(both_ran, 60, message="the delayed task and the witness")
    return [line["task_id"] for line in lines], lines[-1], delayed_id, witness_id, sent


@pytest.mark.parametrize(
    "when",
    [
        pytest.param(lambda sent: ["--delay", f"{DUE_IN_S}s"], id="delay"),
        # The due time written with a -05:00 offset: read as UTC, it would be hours in the past and run at once.
        pytest.param(
            lambda sent: [
                "--eta",
                datetime.datetime.fromtimestamp(sent + DUE_IN_S, datetime.timezone(datetime.timedelta(hours=-5)))
                .replace(microsecond=0)
                .isoformat(),
            ],
            id="eta-with-offset",
        ),
    ],
)
def test_a_task_sent_with_delay_or_eta_runs_after_one_sent_later_without_and_not_before_its_time(
    run, start_worker, connection, work_queue_name, when
):
    order, delayed_line, delayed_id, witness_id, sent = run_delayed_and_witness(
        run, start_worker, connection, work_queue_name, when
    )

    assert order == [witness_id, delayed_id]  # held by the broker while the later task ran
    assert delayed_line["task_id"] == delayed_id
    started = moment(delayed_line) - delayed_line["duration_s"]
    # The eta is whole seconds: the due time is at least DUE_IN_S - 1 after `sent`, less the rounding.
    assert started >= sent + DUE_IN_S - 1 - ROUNDING_S
    assert delayed_line["late_s"] >= -ROUNDING_S  # the worker read the due time the message carried


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--eta", "tomorrow", "is not an ISO 8601 time"),
        ("--eta", "2026-13-01T00:00:00Z", "is not an ISO 8601 time"),
        ("--eta", "2999-01-01T00:00:00Z", "at most 8,388,607 s (97 days)"),
        ("--delay", "-5s", "'--delay'"),
        ("--delay", "98d", "at most 8,388,607 s (97 days)"),
    ],
)
def test_a_bad_eta_or_delay_is_one_error_line_and_nothing_is_queued(
    run, connection, work_queue_name, option, value, fragment
):
    result = run("new-task", "--task", "echo", "--queue", work_queue_name, option, value)

    assert_one_line_error(result, ExitCode.USAGE, fragment)
    assert result.stdout == ""
    assert connection.queue_state(work_queue_name) is None
