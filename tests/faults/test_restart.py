"""Broker restarts: publishers and workers reconnect by themselves and lose nothing.
Each test runs on an extra node of its own."""

import subprocess
import threading
import time

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.topology import Queue, Topology, dead_letter_queue_name, work_queue
from rabbitry.common.transport.contract import OutgoingMessage, QueueState
from rabbitry.producers.publisher import ReliablePublisher
from tests.faults.helpers import BackgroundSubmitter, wait_for_all
from tests.helpers import command_path, wait_until

#: How long workers are given to consume again once the broker is back. Not a promise of speed:
#: a worker retries at least every BACKOFF_CAP_S (5 s), then connects, declares and consumes in
#: well under a second; 60 s is a bound a machine twice as slow and loaded meets many times over.
RESUME_BOUND_S = 60.0


def consumers_on(node, queue):
    state = node.queue_state(queue)
    return state.consumers if state is not None else 0


def lost_by_every_pool_process(workers) -> bool:
    """Whether every pool process of every worker logged the loss of its connection."""
    return all(
        len({event.get("pool_process") for event in w.events("connection_lost")}) >= w.consumers for w in workers
    )


def restart_by_stop_app(broker, workers):
    broker.stop_app()
    wait_until(lambda: lost_by_every_pool_process(workers), message="every connection to notice")
    broker.start_app()


def restart_after_a_crash(broker, workers):
    broker.kill()
    broker.start()


@pytest.mark.parametrize("restart", [restart_by_stop_app, restart_after_a_crash], ids=["stop_app", "kill"])
def test_a_broker_restart_mid_run_loses_none_of_1000_tasks(extra_broker, node, unique_name, restart):
    workers = [node.start_worker(unique_name, "--processes", "2", "--prefetch", "8") for _ in range(2)]
    submitter = BackgroundSubmitter(node.settings, unique_name, count=1000, rate=250, task="sleep", args=[0.002])
    submitter.start()
    wait_until(lambda: len(submitter.confirmed) >= 300, message="300 tasks confirmed")

    restart(extra_broker, workers)
    back = time.monotonic()
    wait_until(lambda: consumers_on(node, unique_name) >= 4, RESUME_BOUND_S, 0.2, "the workers to resume")
    resumed_after = time.monotonic() - back

    submitter.finish()
    wait_for_all(submitter.ids, workers)
    assert node.queue_state(unique_name).messages == 0
    assert lost_by_every_pool_process(workers)  # the fault really hit them
    assert all(w.process.poll() is None for w in workers)
    print(f"workers resumed {resumed_after:.1f} s after the broker was back")


def test_a_long_new_task_file_run_reconnects_and_confirms_every_task(extra_broker, node, unique_name, tmp_path):
    count = 20000
    tasks = tmp_path / "tasks.jsonl"
    ids = [f"file-task-{number}" for number in range(count)]
    tasks.write_text("".join(f'{{"task": "noop", "id": "{task_id}"}}\n' for task_id in ids))
    run = subprocess.Popen(
        [command_path("new-task"), "--file", str(tasks), "--queue", unique_name],
        env=node.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: (node.queue_state(unique_name) or QueueState(0, 0)).messages > 0, message="a first task")

    extra_broker.stop_app()
    extra_broker.start_app()
    printed, errors = run.communicate(timeout=120)

    assert run.returncode == 0, errors
    assert "publisher_reconnecting" in errors  # the fault hit the run
    assert set(printed.split()) == set(ids)  # each printed only once the broker confirmed it
    assert node.queue_state(unique_name).messages >= count  # at least once: a resent task may be there twice


def quorum_queue_leader(node, queue: str, action: str) -> None:
    """Stop (``"stop_server"``) or restart (``"restart_server"``) the Raft member of a quorum queue on a
    one-node broker: without it the queue has no leader, as after the loss of a node in a cluster."""
    node.ctl(
        "eval",
        f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"{queue}">>)), '
        f"{{Name, _}} = amqqueue:get_pid(Q), ok = ra:{action}(quorum_queues, {{Name, node()}}).",
    )


def test_messages_a_leaderless_quorum_queue_nacks_are_published_again_and_never_reported_as_sent(
    extra_broker, unique_name
):
    quorum = Topology(queues=(Queue(unique_name, arguments={"x-queue-type": "quorum"}),))
    messages = [OutgoingMessage(unique_name, str(number).encode()) for number in range(20)]
    with ReliablePublisher(extra_broker.settings(), quorum) as publisher:
        publisher.publish(OutgoingMessage(unique_name, b"already there"))
        assert publisher.flush() == []
    quorum_queue_leader(extra_broker, unique_name, "stop_server")  # it nacks every publish from now on

    with ReliablePublisher(extra_broker.settings(reconnect_for=0.5), quorum) as impatient:
        for message in messages:
            impatient.publish(message)
        failures = impatient.flush()
    assert failures and {failure.reason for failure in failures} == {"nacked"}  # not refused: it may pass
    assert impatient.confirmed_count + len(failures) == len(messages)  # nothing counted as sent twice

    elected = threading.Timer(2.0, quorum_queue_leader, (extra_broker, unique_name, "restart_server"))
    elected.start()
    with ReliablePublisher(extra_broker.settings(reconnect_for=30), quorum) as patient:
        for message in messages:
            patient.publish(message)
        assert patient.flush() == []
    elected.join()
    assert patient.confirmed_count == len(messages)
    with connect(extra_broker.settings()) as connection:
        assert connection.queue_state(unique_name).messages >= 1 + len(messages)
        connection.delete_queue(unique_name)


def test_declarations_right_after_a_restart_wait_for_the_queues_the_node_is_still_starting(extra_broker, unique_name):
    # For a moment after a node accepts connections again, its streams and quorum queues answer
    # "home node ... is down or inaccessible" (404), as a queue that is gone would not.
    stream = Queue(f"{unique_name}.stream", arguments={"x-queue-type": "stream"})
    topology = work_queue(unique_name) + Topology(queues=(stream,))
    with connect(extra_broker.settings()) as connection:
        connection.declare(topology)
    extra_broker.restart()
    with connect(extra_broker.settings()) as connection:
        assert connection.queue_state(stream.name) is not None  # it exists, and says so once started
        connection.declare(topology)  # a worker's first step on a new connection
        assert connection.queue_state(unique_name) == QueueState(0, 0)
    with connect(extra_broker.settings()) as connection:
        for queue in (unique_name, dead_letter_queue_name(unique_name), stream.name):
            connection.delete_queue(queue)
