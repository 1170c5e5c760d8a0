"""What the README and docs promise of the commands, run as real processes against the shared broker:
a failover URL list whose first node is down, and ``rabbitry queue delete`` with a consumer on the queue."""

import json

from rabbitry.common.errors import ExitCode
from rabbitry.common.topology import dead_letter_queue_name
from tests.helpers import assert_one_line_error, wait_until
from tests.nodes import free_port


def failover_url(broker_url: str) -> str:
    """A node list whose first node is down (a closed port of this host) and whose second is the shared broker."""
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    return f"{down},{broker_url}"


def test_a_url_list_whose_first_node_is_down_queues_shows_and_serves_on_the_next(
    run, start_worker, broker_url, work_queue_name, connection
):
    urls = failover_url(broker_url)

    queued = run("new-task", "--task", "noop", "--queue", work_queue_name, "--url", urls, timeout=60)
    shown = run("rabbitry", "status", "--queue", work_queue_name, "--json", "--url", urls, timeout=60)

    assert queued.returncode == ExitCode.OK, queued.stderr
    (task_id,) = queued.stdout.split()
    assert shown.returncode == ExitCode.OK, shown.stderr
    rows = {row["queue"]: row for row in map(json.loads, shown.stdout.splitlines())}
    assert rows[work_queue_name]["messages"] == 1
    assert connection.queue_state(work_queue_name).messages == 1  # on the shared broker, the second node

    worker = start_worker(work_queue_name, "--processes", "1", env={"AMQP_URL": urls})
    wait_until(lambda: task_id in {e["task_id"] for e in worker.events("task_succeeded")}, 60, message="the task")


def test_queue_delete_refuses_a_queue_with_a_consumer_and_deletes_it_once_the_consumer_is_gone(
    run, start_worker, work_queue_name, connection
):
    worker = start_worker(work_queue_name, "--processes", "1")

    refused = run("rabbitry", "queue", "delete", work_queue_name)

    assert_one_line_error(refused, ExitCode.FAILURE, "not deleted", f"1 consumer(s) on '{work_queue_name}'", "--force")
    assert connection.queue_state(work_queue_name).consumers == 1  # nothing was deleted
    assert connection.queue_state(dead_letter_queue_name(work_queue_name)) is not None

    assert worker.stop() == 0
    wait_until(lambda: connection.queue_state(work_queue_name).consumers == 0, 30, message="the consumer to go")
    deleted = run("rabbitry", "queue", "delete", work_queue_name)

    assert deleted.returncode == ExitCode.OK, deleted.stderr
    assert f"deleted 2 queue(s) of '{work_queue_name}'" in deleted.stdout
    assert connection.queue_state(work_queue_name) is None
    assert connection.queue_state(dead_letter_queue_name(work_queue_name)) is None
