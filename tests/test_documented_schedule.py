"""``rabbitry beat`` (``rabbitry schedule``'s other name) and ``--name`` (docs/schedules.md): the ticks of
a schedule run under the name given, not the file's, are queued as tasks named after it."""

import subprocess
import tempfile

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.errors import ExitCode
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import schedule_lease_queue, schedule_ledger_queue
from tests.helpers import command_path, drain, json_lines, stop_process, wait_until


@pytest.fixture
def schedule_names(broker_settings, unique_name):
    """Two schedule names of the test's own, the file's and the one given by --name; their lease and
    ledger queues are deleted afterwards."""
    base = unique_name.replace(".", "-")
    names = (f"{base}-file", f"{base}-given")
    yield names
    with connect(broker_settings, "rabbitry-tests-cleanup") as connection:
        for name in names:
            connection.delete_queue(schedule_lease_queue(name))
            connection.delete_queue(schedule_ledger_queue(name, "beat"))


def test_schedule_check_shows_the_schedule_under_the_name_given(run, tmp_path, schedule_names):
    in_file, given = schedule_names
    path = tmp_path / "schedule.toml"
    path.write_text(f'name = "{in_file}"\n[[entry]]\nname = "beat"\ntask = "noop"\nevery = "1s"\n')

    checked = run("rabbitry", "beat", "--check", "--name", given, str(path))

    assert checked.returncode == ExitCode.OK, checked.stderr
    assert checked.stdout.splitlines()[0] == f"schedule {given!r}: 1 entries"


def test_beat_with_a_name_queues_each_tick_as_a_task_of_that_schedule(
    tmp_path, cli_env, broker_settings, work_queue_name, schedule_names
):
    in_file, given = schedule_names
    path = tmp_path / "schedule.toml"
    path.write_text(
        f'name = "{in_file}"\n[[entry]]\nname = "beat"\ntask = "noop"\nevery = "1s"\nqueue = "{work_queue_name}"\n'
    )
    log = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-beat-", suffix=".log")
    process = subprocess.Popen(
        [command_path("rabbitry"), "beat", "--name", given, str(path)],
        env=cli_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def queued_ticks():
            assert process.poll() is None, open(log.name).read()
            return [e for e in json_lines(open(log.name).read()) if e.get("event") == "schedule_tick_queued"]

        wait_until(lambda: len(queued_ticks()) >= 2, 60, message="two ticks queued")
        with connect(broker_settings, "rabbitry-tests") as connection:
            wait_until(lambda: connection.queue_state(work_queue_name).messages >= 2, 30, message="their tasks")
            leases = [connection.queue_state(schedule_lease_queue(name)) for name in (in_file, given)]
    finally:
        status = stop_process(process)

    assert status == ExitCode.OK, open(log.name).read()
    with connect(broker_settings, "rabbitry-tests") as connection:
        tasks = [TaskMessage.from_delivery(delivery) for delivery in drain(connection, work_queue_name)]
    logged = {e["task_id"] for e in json_lines(open(log.name).read()) if e.get("event") == "schedule_tick_queued"}
    assert len(tasks) >= 2 and {task.id for task in tasks} == logged  # each tick queued is one task, as logged
    for task in tasks:
        assert task.task == "noop" and task.id.startswith(f"{given}:beat@"), task.id
    assert leases[0] is None and leases[1] is not None  # the lease is the given name's, not the file's
    assert leases[1].consumers == 1  # held by the running scheduler
