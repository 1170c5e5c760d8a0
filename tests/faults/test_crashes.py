"""Crashes: pool processes and whole workers killed mid-task, tasks that kill their
process every time, and tasks over their time limit. Each test runs on an extra node."""

import os
import signal

import psutil
import pytest

from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.common.transport.contract import Delivery
from rabbitry.workers.execution import crash_limit_reached
from tests.faults.helpers import wait_for_all
from tests.helpers import succeeded_ids, wait_until

TASKS = ("--tasks", "tests.fault_tasks")


def test_a_killed_worker_loses_none_of_1000_tasks(node, unique_name):
    ids = set(
        node.run(
            "new-task", "--task", "sleep", "--args", "[0.004]", "--count", "1000", "--queue", unique_name, check=True
        ).stdout.split()
    )
    assert len(ids) == 1000
    first = node.start_worker(unique_name, "--processes", "2", "--prefetch", "8")
    wait_until(lambda: len(first.events("task_succeeded")) >= 200, message="200 tasks done")

    first.kill_all()  # SIGKILL the supervisor and its pool processes at once
    done_by_first = succeeded_ids(first)
    assert len(done_by_first) < 1000
    second = node.start_worker(unique_name, "--processes", "2", "--prefetch", "8")

    wait_for_all(ids, [first, second])
    assert node.queue_state(unique_name).messages == 0
    done_by_second = second.events("task_succeeded")
    redone = {e["task_id"] for e in done_by_second if e["redelivered"]}
    fresh = {e["task_id"] for e in done_by_second if not e["redelivered"]}
    # What the first held unacknowledged came back marked redelivered: at least one task, at most
    # the prefetch of its two pool processes; a task it had finished, if run again, is among them.
    assert 0 < len(redone) <= 2 * 8
    assert not fresh & done_by_first
    assert fresh | redone | done_by_first == ids


def test_a_pool_process_killed_mid_task_is_replaced_and_the_task_completes(node, unique_name, tmp_path):
    worker = node.start_worker(unique_name, "--processes", "2", *TASKS)
    marker = tmp_path / "killed-once"
    (task_id,) = node.run(
        "new-task", "--task", "kill_my_process_once", "--args", f'["{marker}"]', "--queue", unique_name, check=True
    ).stdout.split()

    wait_for_all({task_id}, [worker])

    died = wait_until(lambda: worker.events("pool_process_died"), message="the supervisor to notice")
    assert [(e["task_id"], e["exit_code"]) for e in died] == [(task_id, -9)]
    done = [e for e in worker.events("task_succeeded") if e["task_id"] == task_id]
    assert done[0]["redelivered"] is True and done[0]["result"] == "survived"
    worker.wait_for_consumers(node.settings, 2)  # the dead process was replaced


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_task_that_always_kills_its_process_is_dead_lettered_after_the_limit(node, unique_name, queue_type):
    worker = node.start_worker(
        unique_name, "--processes", "1", "--queue-type", queue_type, "--delivery-limit", "3", *TASKS
    )
    (task_id,) = node.run(
        "new-task", "--task", "kill_my_process", "--queue", unique_name, "--queue-type", queue_type, check=True
    ).stdout.split()
    (good_id,) = node.run(
        "new-task", "--task", "echo", "--queue", unique_name, "--queue-type", queue_type, check=True
    ).stdout.split()

    dead = wait_until(lambda: worker.events("task_dead_lettered"), timeout=60, message="the dead letter")
    wait_for_all({good_id}, [worker])

    assert len(worker.events("pool_process_died")) == 3
    assert dead[0]["task_id"] == task_id and dead[0]["reason"] == "delivery_limit"
    (letter,) = node.drain(dead_letter_queue_name(unique_name))
    assert letter.message_id == task_id
    assert letter.headers["x-rabbitry-reason"] == "delivery_limit"
    assert "crashed its pool process 3 times" in letter.headers["x-rabbitry-error"]
    assert node.queue_state(unique_name).messages == 0


def test_a_task_over_its_time_limit_is_killed_recorded_retried_then_dead_lettered(node, unique_name):
    worker = node.start_worker(unique_name, "--processes", "1", "--time-limit", "1", "--max-retries", "1")
    (task_id,) = node.run(
        "new-task", "--task", "sleep", "--args", "[60]", "--queue", unique_name, check=True
    ).stdout.split()
    (good_id,) = node.run("new-task", "--task", "noop", "--queue", unique_name, check=True).stdout.split()

    dead = wait_until(lambda: worker.events("task_dead_lettered"), timeout=30, message="the dead letter")
    wait_for_all({good_id}, [worker])

    (failed,) = worker.events("task_failed")  # the first attempt, retried after a backoff
    assert failed["task_id"] == task_id and "TimeLimitExceeded" in failed["error"]
    assert dead[0]["task_id"] == task_id and dead[0]["reason"] == "retries_exhausted"
    timed_out = wait_until(
        lambda: len(worker.events("pool_process_timed_out")) == 2 and worker.events("pool_process_timed_out"),
        message="two time-outs",
    )
    assert [(e["task_id"], e["exit_code"]) for e in timed_out] == [(task_id, 75), (task_id, 75)]
    assert worker.events("pool_process_died") == []  # a time limit is not counted as a crash
    (letter,) = node.drain(dead_letter_queue_name(unique_name))
    assert "TimeLimitExceeded" in letter.headers["x-rabbitry-error"]


def test_graceful_requeues_do_not_count_as_crashes():
    # A quorum queue counts every return, a worker's clean shutdown too.
    requeued = Delivery(
        body=b"", routing_key="q", exchange="", delivery_tag=1, redelivered=True, headers={"x-delivery-count": 6}
    )
    assert crash_limit_reached(requeued, crashes=0, limit=5) is None
    assert crash_limit_reached(requeued, crashes=5, limit=5) is not None
    requeued.headers["x-delivery-count"] = 20
    assert crash_limit_reached(requeued, crashes=0, limit=5) is not None  # the backstop


def test_pool_processes_of_a_killed_supervisor_stop_and_the_broker_requeues_their_tasks(node, unique_name):
    ids = set(
        node.run(
            "new-task", "--task", "sleep", "--args", "[0.1]", "--count", "200", "--queue", unique_name, check=True
        ).stdout.split()
    )
    first = node.start_worker(unique_name, "--processes", "2", "--prefetch", "4")
    wait_until(lambda: len(first.events("task_succeeded")) >= 10, message="10 tasks done")
    pool = psutil.Process(first.process.pid).children()
    assert len(pool) == 2

    os.kill(first.process.pid, signal.SIGKILL)  # the supervisor alone
    first.process.wait()

    def gone(process):
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(gone(process) for process in pool), timeout=20, message="the orphans to exit")
    assert len(first.events("supervisor_died")) == 2
    assert node.queue_state(unique_name).consumers == 0
    second = node.start_worker(unique_name, "--processes", "2")
    wait_for_all(ids, [first, second])
    assert node.queue_state(unique_name).consumers == 2  # the new worker's alone
