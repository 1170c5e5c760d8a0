"""new-task as a command people pipe and interrupt: ids, the progress bar, Ctrl-C and the summary line."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time

import pytest

from rabbitry.common.errors import ExitCode, PublishingBlocked
from rabbitry.producers.task_batch import BatchAccount, outcome
from tests.helpers import command_path, summary_counts, wait_until

TASK_ID = re.compile(rb"[0-9a-f]{32}")
DOWN = "amqp://guest:guest@127.0.0.1:1/%2F"


#: How long a command of these tests may take to end, or to print what a test reads, on a loaded machine.
PATIENCE_S = 60.0


def run_on_a_terminal(args: list[str], env: dict, stdout=None, timeout: float = PATIENCE_S) -> tuple[int, bytes]:
    """Run a command with a pseudo-terminal as its standard error (and output, unless ``stdout`` is
    given), as a user's shell does; return its exit code and what the terminal received. A command
    that has not ended within ``timeout`` seconds is killed, and the test fails."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [command_path(args[0]), *args[1:]],
        stdin=subprocess.DEVNULL,
        stdout=terminal if stdout is None else stdout,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                process.kill()
                raise AssertionError(f"{args[0]} did not end within {timeout} s; its terminal got {received[-300:]!r}")
            if not select.select([controller], [], [], remaining)[0]:
                continue
            try:
                chunk = os.read(controller, 1 << 16)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(controller)
    return process.wait(timeout), received


def first_lines(process: subprocess.Popen, count: int, timeout: float = PATIENCE_S) -> list[bytes]:
    """The first ``count`` lines of ``process``'s output, read as ``head`` reads them. A process that has
    not printed them within ``timeout`` seconds is killed (which ends the read), and the test fails."""
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout.readline() for _ in range(count)), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        process.kill()
        raise AssertionError(f"{count} lines not printed within {timeout} s; got {lines!r}")
    return lines


def test_on_a_terminal_the_ids_are_never_drawn_over_by_the_progress_bar(cli_env, work_queue_name):
    code, received = run_on_a_terminal(
        ["new-task", "--task", "noop", "--count", "3000", "--queue", work_queue_name], {**cli_env, "COLUMNS": "80"}
    )

    lines = received.split(b"\n")
    ids = [line for line in lines if TASK_ID.search(line)]
    assert code == 0
    assert len(ids) == 3000
    assert all(TASK_ID.fullmatch(line.strip()) for line in ids), [line for line in ids if b"queueing" in line][:2]


def test_with_the_ids_sent_to_a_file_the_progress_bar_draws_on_the_terminal(cli_env, work_queue_name, tmp_path):
    with open(tmp_path / "ids.txt", "wb") as ids:
        code, received = run_on_a_terminal(
            ["new-task", "--task", "noop", "--count", "3000", "--queue", work_queue_name], cli_env, stdout=ids
        )

    assert code == 0
    assert b"queueing" in received and not TASK_ID.search(received)
    assert len((tmp_path / "ids.txt").read_text().split()) == 3000
    assert received.rstrip().splitlines()[-1].startswith(b"summary: 3000 queued")


def test_ctrl_c_prints_the_id_of_every_confirmed_task_then_the_summary_and_exits_130(
    cli_env, work_queue_name, connection, tmp_path
):
    ids_path = tmp_path / "ids.txt"
    with open(ids_path, "w") as ids:
        process = subprocess.Popen(
            [
                command_path("new-task"),
                "--task",
                "noop",
                "--count",
                "100000",
                "--queue",
                work_queue_name,
                "--queue-type",
                "classic",
            ],
            stdout=ids,
            stderr=subprocess.PIPE,
            env=cli_env,
            text=True,
        )
        wait_until(lambda: ids_path.stat().st_size > 33 * 2000, message="2000 ids to be printed")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    printed = ids_path.read_text().split()
    in_queue = set()
    while (delivery := connection.get(work_queue_name)) is not None:
        in_queue.add(delivery.message_id)

    assert process.returncode == ExitCode.INTERRUPTED, stderr
    counts = summary_counts(stderr)
    assert counts["queued"] == len(printed) == len(set(printed))
    assert set(printed) <= in_queue
    assert len(in_queue - set(printed)) <= counts["unconfirmed"]
    assert counts["not_sent"] > 0 and counts["refused"] == 0
    assert "Traceback" not in stderr and "Aborted!" not in stderr


def test_ctrl_c_during_wait_prints_the_id_then_interrupted_and_the_summary_and_exits_130(
    cli_env, work_queue_name, connection
):
    process = subprocess.Popen(
        [command_path("new-task"), "--task", "noop", "--wait", "--queue", work_queue_name, "--queue-type", "classic"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
        text=True,
    )
    try:  # no worker consumes the queue: the task waits there, and new-task for its result
        wait_until(
            lambda: (state := connection.queue_state(work_queue_name)) is not None and state.messages == 1,
            message="the task to be queued",
        )
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    queued = connection.get(work_queue_name)

    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert json.loads(stdout) == {"id": queued.message_id, "status": "interrupted"}
    assert stderr.strip().splitlines()[-2:] == [
        "Interrupted.",
        "summary: 1 queued, 0 not sent; 0 succeeded, 0 failed, 0 timed out, 1 interrupted",
    ]
    assert "Traceback" not in stderr and "Aborted!" not in stderr


def test_a_closed_output_stops_the_queueing_and_still_ends_with_the_summary(cli_env, work_queue_name, connection):
    process = subprocess.Popen(
        [
            command_path("new-task"),
            "--task",
            "noop",
            "--count",
            "100000",
            "--queue",
            work_queue_name,
            "--queue-type",
            "classic",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env,
    )
    first = first_lines(process, 2)  # as `new-task … | head -2` reads
    process.stdout.close()
    stderr = process.communicate(timeout=60)[1].decode()

    assert all(TASK_ID.fullmatch(line.strip()) for line in first)
    assert process.returncode == ExitCode.FAILURE, stderr
    counts = summary_counts(stderr)
    assert counts["not_sent"] > 0 and counts["unconfirmed"] == 0
    assert connection.queue_state(work_queue_name).messages == counts["queued"]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


def test_a_broker_that_cannot_be_reached_still_ends_with_the_summary(run):
    result = run("new-task", "--task", "noop", "--count", "5", "--url", DOWN)

    assert result.returncode == ExitCode.BROKER_UNAVAILABLE
    assert summary_counts(result.stderr) == {"queued": 0, "refused": 0, "unconfirmed": 0, "not_sent": 5}


def test_quiet_prints_nothing_when_every_task_is_queued(run, work_queue_name):
    result = run("new-task", "--task", "noop", "--count", "3", "--queue", work_queue_name, "--quiet")

    assert (result.returncode, result.stdout) == (0, "")
    assert "summary" not in result.stderr


@pytest.mark.parametrize(
    "account, error, code",
    [
        (BatchAccount(planned=3, submitted=3, queued=3), None, ExitCode.OK),
        (BatchAccount(planned=3, submitted=3, queued=1, refused=2), None, ExitCode.QUEUE_FULL),
        (BatchAccount(planned=3, submitted=3, queued=2), None, ExitCode.FAILURE),  # one unconfirmed
        (BatchAccount(planned=3, submitted=1, queued=1), None, ExitCode.FAILURE),  # two never sent
        (BatchAccount(planned=3, submitted=3), PublishingBlocked("blocked"), ExitCode.PUBLISHING_BLOCKED),
    ],
)
def test_a_batch_succeeds_only_when_every_task_is_queued(account, error, code):
    assert outcome(account, error) == code
