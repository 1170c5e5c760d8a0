"""Queues rabbitry cannot declare as it would but can use as they are: one an operator gave
extra arguments (x-max-length), and any queue for a user without configure permission.
Every command uses them with one warning line; a real mismatch stays a refusal."""

from rabbitry.common.connect import connect
from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import Queue, Topology
from tests.faults.helpers import wait_for_all
from tests.helpers import NodeCommands, json_lines

LIMITED_USER = ("limited", "limited-password")


def warnings_of(result) -> list[dict]:
    return [
        line for line in json_lines(result.stderr + result.stdout) if line.get("event") == "using_existing_declarations"
    ]


def use_queue_from_every_side(node: NodeCommands, queue: str):
    """new-task, a worker, status and dlq list on ``queue``; returns (results, worker)."""
    queued = node.run("new-task", "--task", "noop", "--count", "5", "--queue", queue)
    worker = node.start_worker(queue, "--processes", "1")
    if queued.returncode == 0:
        wait_for_all(set(queued.stdout.split()), [worker])
    worker.stop()
    status = node.run("rabbitry", "status", "--queue", queue)
    letters = node.run("rabbitry", "dlq", "list", "--queue", queue)
    return [queued, status, letters], worker


def test_a_queue_an_operator_gave_a_length_limit_is_used_as_it_is(extra_broker, unique_name):
    with connect(extra_broker.settings()) as connection:  # as an operator would, with an extra argument
        connection.declare(
            Topology(queues=(Queue(unique_name, arguments={"x-queue-type": "quorum", "x-max-length": 1000}),))
        )
    with NodeCommands(extra_broker.url) as node:
        results, worker = use_queue_from_every_side(node, unique_name)

    assert [result.returncode for result in results] == [ExitCode.OK] * 3, [r.stderr for r in results]
    (warning,) = warnings_of(results[0])
    assert warning["used_as_they_exist"] == [f"queue {unique_name}"]
    assert "x-max-length" in warning["refused"][0]
    assert len(worker.events("using_existing_declarations")) == 1  # the supervisor's; its pool processes know


def test_a_user_without_configure_permission_uses_the_queues_that_exist(extra_broker, unique_name):
    with NodeCommands(extra_broker.url) as node:  # the queues, made by a user who may
        node.run("new-task", "--task", "noop", "--queue", unique_name, check=True)
        node.start_worker(unique_name, "--processes", "1")
    user, password = LIMITED_USER
    extra_broker.ctl("add_user", user, password, check=False)
    extra_broker.ctl("set_permissions", "-p", "/", user, "^$", ".*", ".*")

    with NodeCommands(extra_broker.url.replace("guest:guest", f"{user}:{password}")) as node:
        results, worker = use_queue_from_every_side(node, unique_name)
        missing = node.run("new-task", "--task", "noop", "--queue", unique_name + ".never-declared")

    assert [result.returncode for result in results] == [ExitCode.OK] * 3, [r.stderr for r in results]
    (warning,) = warnings_of(results[0])
    assert f"queue {unique_name}" in warning["used_as_they_exist"]
    assert "ACCESS_REFUSED" in warning["refused"][0]
    assert missing.returncode == ExitCode.BROKER_REFUSED and "ACCESS_REFUSED" in missing.stderr


def test_a_queue_of_another_type_is_still_a_refusal(extra_broker, unique_name):
    with NodeCommands(extra_broker.url) as node:
        node.run("new-task", "--task", "noop", "--queue", unique_name, "--queue-type", "classic", check=True)
        result = node.run("new-task", "--task", "noop", "--queue", unique_name, "--queue-type", "quorum")

    assert result.returncode == ExitCode.BROKER_REFUSED
    assert "x-queue-type" in result.stderr and not warnings_of(result)
