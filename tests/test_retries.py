"""Retries: exponential backoff with jitter, held by the broker in the delay levels;
errors a task declares not retryable; the attempt count travelling with the message."""

import json
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


def test_a_failing_task_waits_in_the_broker_then_succeeds_on_a_later_attempt(
    run, start_fault_worker, work_queue_name, connection, tmp_path
):
    worker = start_fault_worker(work_queue_name, "--max-retries", "3")
    marker = tmp_path / "runs"
    task_id = run(
        "new-task",
        "--task",
        "fail_until",
        "--args",
        json.dumps([str(marker), 2]),
        "--queue",
        work_queue_name,
        check=True,
    ).stdout.strip()

    # The first retry is held by the broker, in the 1 s delay level, not in the worker.
    wait_until(
        lambda: connection.queue_state(delay_level_name(0)).messages >= 1, message="the retry in its delay level"
    )
    done = wait_until(lambda: worker.events("task_succeeded"), timeout=20)

    failed = worker.events("task_failed")
    assert [(e["task_id"], e["attempt"]) for e in failed] == [(task_id, 0), (task_id, 1)]
    assert 0.75 <= failed[0]["retry_in_s"] <= 1.25 and 1.5 <= failed[1]["retry_in_s"] <= 2.5
    assert done[0]["task_id"] == task_id and done[0]["attempt"] == 2
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
