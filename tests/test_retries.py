"""Retries: exponential backoff with jitter, held by the broker in the delay levels;
errors a task declares not retryable; the attempt count travelling with the message."""

import json
import os
import time

import pytest

from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import dead_letter_queue_name, delay_level_name, retry_delay_s
from rabbitry.common.transport.contract import Delivery
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import RETRY_JITTER, failure
from tests.helpers import REPOSITORY, wait_until

FAULT_TASKS = ("--tasks", "tests.fault_tasks")


@pytest.fixture
def start_fault_worker(start_worker):
    def starter(queue, *args):
        return start_worker(queue, "--processes", "1", *FAULT_TASKS, *args, env={"PYTHONPATH": REPOSITORY})

    return starter


def test_retry_delays_double_from_one_second_up_to_a_cap():
    assert [retry_delay_s(attempt) for attempt in range(5)] == [1, 2, 4, 8, 16]
    assert retry_delay_s(20) == retry_delay_s(1000) == 300


def test_each_retry_carries_its_attempt_and_a_jittered_due_time_into_the_delay_levels():
    config = WorkerConfig(queue="q", max_retries=3)
    message = TaskMessage("echo", attempt=1)
    delivery = Delivery(
        body=message.encode(),
        routing_key="q",
        exchange="",
        delivery_tag=1,
        content_type="application/json",
        message_id=message.id,
    )

    delays = set()
    for _ in range(50):
        before = time.time()
        retry = failure(delivery, message, config, "RuntimeError: boom").publish
        body = json.loads(retry.body)
        delays.add(round(body["eta"] - before, 2))
        # 2 s +-25 % is 2 or 3 whole seconds: binary 10, entering at level 1, or 11, at level 0.
        assert (retry.exchange, retry.routing_key[-6:]) in [
            (delay_level_name(1), ".1.0.q"),
            (delay_level_name(0), ".1.1.q"),
        ]
        assert body["attempt"] == 2 and retry.message_id == message.id and retry.expiration is None
    assert min(delays) >= 2 * (1 - RETRY_JITTER) - 0.01 and max(delays) <= 2 * (1 + RETRY_JITTER) + 0.01
    assert len(delays) > 1  # jittered, so retries of many tasks do not come back all at once


#: A task module of the test's own: a task that holds its pool process until a file appears.
HOLDING_TASKS = """
import os, time
from rabbitry.tasks import task

@task
def hold_until(started: str, release: str) -> None:
    open(started, "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_a_failing_task_waits_in_the_broker_then_succeeds_on_a_later_attempt(
    run, start_worker, work_queue_name, connection, tmp_path
):
    marker, started, release = (tmp_path / name for name in ("runs", "started", "release"))

    def submit(task, *args):
        command = ("new-task", "--task", task, "--args", json.dumps(args), "--queue", work_queue_name)
        return run(*command, check=True).stdout.strip()

    task_id = submit("fail_until", str(marker), 2)
    submit("hold_until", str(started), str(release))  # next in line: once the first fails, the worker is busy
    (tmp_path / "holding_tasks.py").write_text(HOLDING_TASKS)
    worker = start_worker(
        work_queue_name,
        *("--processes", "1", "--prefetch", "1", "--max-retries", "3", *FAULT_TASKS, "--tasks", "holding_tasks"),
        env={"PYTHONPATH": f"{REPOSITORY}{os.pathsep}{tmp_path}"},
    )
    try:
        wait_until(lambda: worker.events("task_failed"), message="the first failure")
        wait_until(started.exists, message="the worker to hold its only process")

        # The worker can take nothing now: the retry comes back to the work queue from the broker,
        # through the 1 s delay level, by itself.
        wait_until(lambda: connection.queue_state(work_queue_name).messages == 1, message="the retry")
        retry = connection.get(work_queue_name)
        assert retry.message_id == task_id and json.loads(retry.body)["attempt"] == 1
        assert [death["queue"] for death in retry.headers["x-death"]] == [delay_level_name(0)]
        connection.reject(retry.delivery_tag, requeue=True)
        wait_until(lambda: connection.queue_state(work_queue_name).messages == 1, message="the retry put back")
    finally:
        release.touch()
    wait_until(lambda: len(worker.events("task_succeeded")) == 2, 60, message="the hold and the third attempt")
    done = worker.events("task_succeeded")

    failed = worker.events("task_failed")
    assert [(e["task_id"], e["attempt"]) for e in failed] == [(task_id, 0), (task_id, 1)]
    assert 0.75 <= failed[0]["retry_in_s"] <= 1.25 and 1.5 <= failed[1]["retry_in_s"] <= 2.5
    assert [(e["task_id"], e["attempt"]) for e in done if e["task"] == "fail_until"] == [(task_id, 2)]
    assert marker.read_text() == "xxx"  # three runs
    assert connection.queue_state(dead_letter_queue_name(work_queue_name)).messages == 0


def test_an_error_the_task_declares_not_retryable_is_dead_lettered_at_once(
    run, start_fault_worker, work_queue_name, connection
):
    worker = start_fault_worker(work_queue_name, "--max-retries", "3")
    task_id = run("new-task", "--task", "fail_permanently", "--queue", work_queue_name, check=True).stdout.strip()

    dead = wait_until(lambda: worker.events("task_dead_lettered"))

    assert dead[0]["task_id"] == task_id and dead[0]["reason"] == "not_retryable"
    assert worker.events("task_failed") == []
    dlq = dead_letter_queue_name(work_queue_name)
    wait_until(lambda: connection.queue_state(dlq).messages == 1)
    letter = connection.get(dlq)
    assert letter.headers["x-rabbitry-error"] == "PermanentError: cannot work"


def test_a_task_that_keeps_failing_is_dead_lettered_with_its_last_attempt(
    run, start_fault_worker, work_queue_name, connection
):
    worker = start_fault_worker(work_queue_name, "--max-retries", "1")
    task_id = run("new-task", "--task", "fail", "--queue", work_queue_name, check=True).stdout.strip()

    dead = wait_until(lambda: worker.events("task_dead_lettered"), timeout=20)

    assert dead[0]["reason"] == "retries_exhausted"
    dlq = dead_letter_queue_name(work_queue_name)
    wait_until(lambda: connection.queue_state(dlq).messages == 1)
    letter = connection.get(dlq)
    assert letter.message_id == task_id
    assert json.loads(letter.body)["attempt"] == 1
    assert letter.headers["x-rabbitry-reason"] == "retries_exhausted"
    assert "TaskFailed: failed on purpose" in letter.headers["x-rabbitry-error"]
