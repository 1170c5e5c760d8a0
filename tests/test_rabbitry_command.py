"""``rabbitry`` as the one command: the standalone commands under it, and ``rabbitry queue delete``."""

import pytest

from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import dead_letter_queue_name, work_queue, work_queue_names


@pytest.mark.parametrize("command", ["worker", "new-task", "emit-log", "subscribe"])
def test_rabbitry_runs_the_same_commands_as_the_standalone_scripts(run, command):
    standalone = run(command, "--help", check=True).stdout
    under_rabbitry = run("rabbitry", command, "--help", check=True).stdout

    assert under_rabbitry.replace(f"rabbitry {command}", command) == standalone


def test_rabbitry_new_task_queues_a_task(run, work_queue_name, connection):
    task_id = run("rabbitry", "new-task", "--task", "noop", "--queue", work_queue_name, check=True).stdout.strip()

    assert connection.queue_state(work_queue_name).messages == 1
    assert task_id == connection.get(work_queue_name).message_id


def existing(connection, queue: str) -> list[str]:
    return [name for name in work_queue_names(queue) if connection.queue_state(name) is not None]


def test_queue_delete_refuses_while_messages_wait_then_deletes_every_queue_with_force(run, work_queue_name, connection):
    connection.declare(work_queue(work_queue_name))
    run("new-task", "hello", "--queue", work_queue_name, check=True)
    queues = [work_queue_name, dead_letter_queue_name(work_queue_name)]

    refused = run("rabbitry", "queue", "delete", work_queue_name)

    assert refused.returncode == ExitCode.FAILURE
    assert refused.stderr.count("Error:") == 1 and f"1 message(s) in '{work_queue_name}'" in refused.stderr
    assert "--force" in refused.stderr
    assert existing(connection, work_queue_name) == queues
    assert connection.queue_state(work_queue_name).messages == 1

    deleted = run("rabbitry", "queue", "delete", work_queue_name, "--force", check=True)

    assert "2 queue(s)" in deleted.stdout and "1 message(s) dropped" in deleted.stdout
    assert existing(connection, work_queue_name) == []


def test_an_empty_work_queue_is_deleted_without_force(run, work_queue_name, connection):
    connection.declare(work_queue(work_queue_name))

    run("rabbitry", "queue", "delete", work_queue_name, check=True)

    assert existing(connection, work_queue_name) == []


@pytest.mark.parametrize("broker", ["amqp", "local"])
def test_deleting_a_work_queue_that_is_not_there_is_a_one_line_error(run, unique_name, broker):
    result = run("rabbitry", "queue", "delete", unique_name, "--broker", broker)

    assert result.returncode == ExitCode.USAGE
    assert result.stderr.strip() == (
        f"Error: there is no work queue '{unique_name}', nor its dead-letter queue. "
        "Try 'rabbitry queue delete --help' for help."
    )
