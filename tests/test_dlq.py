"""``rabbitry dlq list|show|replay|purge`` on the shared broker, each with its own queues."""

import json

import pytest

from rabbitry.commands.dlq import shorten
from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import dead_letter_queue_name
from tests.helpers import REPOSITORY, succeeded_ids, wait_until


@pytest.fixture
def dead_letters(run, start_worker, work_queue_name, connection, tmp_path):
    """Three tasks dead-lettered after one failure each (they succeed when run again)."""
    worker = start_worker(
        work_queue_name,
        "--processes",
        "1",
        "--max-retries",
        "0",
        "--tasks",
        "tests.fault_tasks",
        env={"PYTHONPATH": REPOSITORY},
    )
    ids = [
        run(
            "new-task",
            "--task",
            "fail_until",
            "--args",
            json.dumps([str(tmp_path / f"runs-{n}"), 1]),
            "--queue",
            work_queue_name,
            check=True,
        ).stdout.strip()
        for n in range(3)
    ]
    dlq = dead_letter_queue_name(work_queue_name)
    wait_until(lambda: connection.queue_state(dlq).messages == 3, message="3 dead letters")
    return worker, ids


def dlq_count(connection, queue):
    return connection.queue_state(dead_letter_queue_name(queue)).messages


def test_list_and_show_describe_each_dead_letter(run, dead_letters, work_queue_name, connection):
    _worker, ids = dead_letters

    listed = run("rabbitry", "dlq", "list", "--json", "--queue", work_queue_name, check=True)
    shown = run("rabbitry", "dlq", "show", ids[0], "--queue", work_queue_name, check=True)

    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(ids)
    assert {(row["task"], row["reason"]) for row in rows} == {("fail_until", "retries_exhausted")}
    assert all("fails on purpose" in row["error"] for row in rows)
    letter = json.loads(shown.stdout)
    assert letter["id"] == ids[0] and letter["headers"]["x-rabbitry-queue"] == work_queue_name
    assert dlq_count(connection, work_queue_name) == 3  # looking takes nothing away


def test_replay_and_purge_move_exactly_the_letters_asked_for(run, dead_letters, work_queue_name, connection):
    worker, ids = dead_letters

    replayed = run("rabbitry", "dlq", "replay", ids[0], "--queue", work_queue_name, check=True)
    wait_until(lambda: ids[0] in succeeded_ids(worker), message="the replayed task")
    assert "replayed 1" in replayed.stdout
    assert dlq_count(connection, work_queue_name) == 2

    run("rabbitry", "dlq", "purge", ids[1], "--queue", work_queue_name, check=True)
    assert dlq_count(connection, work_queue_name) == 1

    run("rabbitry", "dlq", "replay", "--all", "--queue", work_queue_name, check=True)
    wait_until(lambda: ids[2] in succeeded_ids(worker), message="the last task")
    assert dlq_count(connection, work_queue_name) == 0
    assert ids[1] not in succeeded_ids(worker)
    done = {e["task_id"]: e for e in worker.events("task_succeeded")}
    assert done[ids[0]]["attempt"] == 0  # a replay starts its retries afresh


def test_an_unknown_id_changes_nothing(run, dead_letters, work_queue_name, connection):
    _worker, ids = dead_letters

    result = run("rabbitry", "dlq", "replay", ids[0], "no-such-id", "--queue", work_queue_name)

    assert result.returncode == ExitCode.FAILURE
    assert "no-such-id" in result.stderr and "Traceback" not in result.stderr
    assert dlq_count(connection, work_queue_name) == 3


def test_a_replay_the_broker_cannot_route_leaves_the_letter_in_place(run, dead_letters, work_queue_name, connection):
    worker, _ids = dead_letters
    worker.stop()
    connection.delete_queue(work_queue_name)  # the replay has nowhere to go

    result = run("rabbitry", "dlq", "replay", "--all", "--queue", work_queue_name)

    assert result.returncode != 0 and "unroutable" in result.stderr
    assert dlq_count(connection, work_queue_name) == 3


def test_purge_all_empties_the_dead_letter_queue(run, dead_letters, work_queue_name, connection):
    result = run("rabbitry", "dlq", "purge", "--all", "--queue", work_queue_name, check=True)

    assert "dropped 3" in result.stdout
    assert dlq_count(connection, work_queue_name) == 0


@pytest.mark.parametrize(
    "text, shortened",
    [
        ("TypeError: sleep() got an unexpected keyword argument", "TypeError: sleep() got…"),
        ("TypeError: sleep(seconds: float = 0.0): too many", "TypeError…"),
        ("short enough", "short enough"),
        ("exactly twenty-five chars", "exactly twenty-five chars"),
        ("one\nline,   not  several", "one line, not several"),
        ("a_single_word_longer_than_the_column", "a_single_word_longer_tha…"),
    ],
)
def test_dlq_list_shortens_an_error_after_a_whole_word(text, shortened):
    assert shorten(text, 25) == shortened


@pytest.mark.parametrize("command", ["show", "replay", "purge"])
def test_every_dlq_command_calls_its_argument_letter_id(run, command):
    result = run("rabbitry", "dlq", command, "--help", check=True)

    assert result.stdout.startswith(f"Usage: rabbitry dlq {command} [OPTIONS] ")
    assert "LETTER_ID" in result.stdout.splitlines()[0]
