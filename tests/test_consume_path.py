"""The pool process's consume path: the prefetch it chooses, when it acks, what it checks once."""

import json
import time

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.messages import TaskMessage
from rabbitry.tasks import Task
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import Disposition, failure
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.pool_process import PoolProcess
from rabbitry.workers.prefetch import FIRST_AFTER, MOST, QUIET_S, RECENT, AdaptivePrefetch
from tests.helpers import long_tasks_per_process, queue_uneven_tasks, wait_until


def test_the_chosen_prefetch_starts_at_one_and_grows_only_for_short_tasks():
    prefetch = AdaptivePrefetch()
    for _ in range(FIRST_AFTER - 1):
        prefetch.ran(0.00001)
    assert prefetch.change(now=0) is None and prefetch.prefetch == 1  # too few seen to judge
    prefetch.ran(0.00001)
    assert prefetch.change(now=0) == MOST

    prefetch.ran(0.3)  # one long task among the recent ones is enough to go back to fair dispatch
    assert prefetch.change(now=0.1) is None  # not so soon after the last change
    assert prefetch.change(now=1) == 1
    for _ in range(RECENT - 1):
        prefetch.ran(0.001)
    assert prefetch.change(now=2) is None  # the long one still counts
    prefetch.ran(0.001)
    assert prefetch.change(now=2) == 64  # 0.1 s of 1 ms tasks, as a power of two
    assert prefetch.change(now=time.monotonic() + QUIET_S) == 1  # quiet: fair again until it has measured
    assert prefetch.tasks == 0


def test_a_default_worker_takes_short_tasks_in_bulk_and_long_ones_fairly(run, start_worker, work_queue_name, tmp_path):
    worker = start_worker(work_queue_name, "--processes", "2")
    run("new-task", "--task", "noop", "--count", "2000", "--queue", work_queue_name, check=True)
    wait_until(lambda: len(worker.events("task_succeeded")) == 2000, message="2000 no-op tasks")
    changes = {(event["pool_process"], event["prefetch"]) for event in worker.events("prefetch_changed")}
    assert {(0, MOST), (1, MOST)} <= changes
    # Quiet, each process goes back to 1; then every 4th task long: round-robin at a prefetch of
    # 256 would give them all to one process.
    wait_until(
        lambda: [event["prefetch"] for event in worker.events("prefetch_changed")][-2:] == [1, 1],
        message="the prefetch back at 1",
    )
    queued = 2000 + queue_uneven_tasks(run, work_queue_name, tmp_path)
    done = wait_until(lambda: len(worker.events("task_succeeded")) == queued and worker.events("task_succeeded"))
    assert long_tasks_per_process(done) == [3, 3]


def test_tasks_done_before_a_long_one_are_acked_while_it_runs(run, start_worker, work_queue_name, connection, tmp_path):
    # 17 tasks, the 4th one that runs until the test releases it. A worker at --prefetch 16 acks
    # 4 at a time, or on a quiet turn: the 3 done before the long one are acked while it runs,
    # and the 17th comes in their place.
    hold = ("hold_until_released", json.dumps([str(tmp_path)]))
    for task, args in [("noop", "[]")] * 3 + [hold] + [("noop", "[]")] * 13:
        run("new-task", "--task", task, "--args", args, "--queue", work_queue_name, check=True)
    worker = start_worker(work_queue_name, "--processes", "1", "--prefetch", "16", "--tasks", "tests.fault_tasks")

    try:
        wait_until(lambda: connection.queue_state(work_queue_name).messages == 0, message="the 17th task delivered")
        assert [event["task"] for event in worker.events("task_succeeded")] == ["noop"] * 3
        wait_until((tmp_path / "started").exists, message="the long task started")  # it ends only when released
    finally:
        (tmp_path / "release").touch()
    wait_until(lambda: len(worker.events("task_succeeded")) == 17, message="the 17 tasks done")


def test_argument_shapes_that_fit_are_remembered_and_those_that_do_not_still_fail():
    def resize(path, width=100, *, height=None):
        return path, width, height

    task = Task(resize, "resize")
    for _ in range(2):  # checked, then remembered
        task.check_arguments(["cat.png"], {})
        task.check_arguments(["cat.png", 200], {"height": 50})
    for args, kwargs in [([], {}), (["a", 1, 2], {}), (["cat.png"], {"depth": 3}), (["cat.png"], {"path": "x"})]:
        with pytest.raises(TypeError, match="resize"):
            task.check_arguments(args, kwargs)


def test_a_flush_called_back_while_a_retry_waits_for_its_confirm_acks_nothing_early(broker_settings, work_queue_name):
    # The serve loop settles the outbox itself; the task thread's wake-up to do the same runs
    # inside the retry's wait for its confirm. A multiple ack of the successes after the retry
    # from there would ack the failed delivery early, and the second ack would close the channel.
    config = WorkerConfig(settings=broker_settings, queue=work_queue_name, queue_type="classic")
    process = PoolProcess(config, 0, stop=None, ledger=CrashLedger(1))
    handover, connection_thread = process.handover, process.connection_thread
    with connect(broker_settings) as connection:
        connection.declare(config.topology)
        connection_thread.use(connection)
        for _ in range(3):
            connection.publish(TaskMessage("noop").to_outgoing(work_queue_name))
        assert connection.wait_for_confirms(10) == []
        deliveries = []
        connection.consume(work_queue_name, deliveries.append, prefetch=10)
        wait_until(lambda: connection.process_events(0.05) or len(deliveries) == 3, message="3 deliveries")
        failed, *done = deliveries
        handover.finished(0, failure(failed, TaskMessage.from_delivery(failed), config, "Boom: retry it"))  # wakes
        for delivery in done:
            handover.finished(0, Disposition(delivery))

        connection_thread.settle_outbox()
        connection.publish(TaskMessage("noop").to_outgoing(work_queue_name))
        assert connection.wait_for_confirms(10) == []  # on the same channel: still open

        # The retry waits a second in the shared delay levels: received back here, it is not due
        # after its work queue is deleted, which would leave it in rabbitry.delay.unrouted.
        wait_until(
            lambda: (
                connection.process_events(0.05)
                or [d for d in deliveries[3:] if TaskMessage.from_delivery(d).attempt == 1]
            ),
            message="the retry back from the delay levels",
        )
