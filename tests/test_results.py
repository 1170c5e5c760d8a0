"""Results over direct reply-to: a caller gets the task's return value, or why it failed.

Every test runs on RabbitMQ and on the in-process broker, with the worker's
pool members as threads of the test process (as ``local://`` runs them).
"""

import asyncio
import os
import threading
import uuid

import pytest

from rabbitry.common.connect import connect
from rabbitry.common.errors import ExitCode
from rabbitry.common.local.registry import broker_name, broker_named, forget_broker
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.producers import default as default_submitter
from rabbitry.producers.aio import AsyncTaskSubmitter
from rabbitry.producers.handles import ResultLost, ResultNotRequested, TaskFailed
from rabbitry.producers.submitter import TaskSubmitter
from rabbitry.tasks import task
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import ERROR_HEADER, REASON_HEADER
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.registry import load_task_modules
from rabbitry.workers.threaded import PoolThread
from tests import fault_tasks  # noqa: F401  (registers hold_until_released)
from tests.helpers import json_lines, wait_until

_attempts: dict[str, int] = {}


class ImageMissing(Exception):
    """Raised by results.resize for a missing image."""


@task(name="results.resize", dont_retry=(ImageMissing,))
def resize(path: str, width: int) -> dict:
    if path.startswith("missing"):
        raise ImageMissing(f"no such image: {path}")
    return {"path": path, "width": width}


@task(name="results.flaky")
def flaky(key: str) -> str:
    """Fails on its first attempt, succeeds on the next."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise ConnectionError("first attempt fails")
    return f"attempt {_attempts[key]}"


class FileUnreadable(Exception):
    """Raised by results.read_file, naming a file whose name is not UTF-8."""


@task(name="results.read_file", dont_retry=(FileUnreadable,))
def read_file() -> None:
    raise FileUnreadable(f"cannot read {os.fsdecode(b'/data/in-' + bytes([0xFF]))}")  # a lone surrogate


@task(name="results.text_of")
def text_of(size: int) -> str:
    return "x" * size


@task(name="results.always_fails")
def always_fails() -> None:
    raise ValueError("never works")


class InProcessWorker:
    """Pool members as threads of this process, on either transport."""

    def __init__(
        self,
        settings: BrokerSettings,
        queue: str,
        processes: int = 2,
        max_retries: int = 1,
        queue_type: str = "classic",
    ):
        self.config = WorkerConfig(
            settings=settings,
            queue=queue,
            queue_type=queue_type,
            processes=processes,
            max_retries=max_retries,
            log_level="critical",
        )
        self._stop = threading.Event()
        ledger = CrashLedger(processes)
        self._threads = [
            threading.Thread(target=PoolThread(self.config, index, self._stop, ledger).run)
            for index in range(processes)
        ]

    def start(self) -> "InProcessWorker":
        load_task_modules(())  # the built-in tasks: echo, sleep, ...
        with connect(self.config.settings, "rabbitry-tests") as connection:
            connection.declare(self.config.topology)
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def settings(either_broker):
    """Settings for the in-process broker or the session's RabbitMQ."""
    return either_broker


@pytest.fixture
def queue(either_work_queue):
    """A work queue of the test's own, deleted afterwards with its dead-letter queue."""
    return either_work_queue


@pytest.fixture
def worker(settings, queue):
    """A running worker on ``queue``, allowed one retry."""
    running = InProcessWorker(settings, queue).start()
    yield running
    running.stop()


@pytest.fixture
def submitter(settings, queue, worker):
    """A submitter that asks for results."""
    with TaskSubmitter(settings, queue, "classic", results=True) as opened:
        yield opened


def test_get_returns_the_tasks_return_value(submitter):
    handle = submitter.submit(TaskMessage("results.resize", ["cat.png", 300]))

    assert handle.get(timeout=10) == {"path": "cat.png", "width": 300}


def test_a_dead_lettered_task_raises_task_failed_with_the_remote_error(submitter):
    handle = submitter.submit(TaskMessage("results.resize", ["missing.png", 300]))

    with pytest.raises(TaskFailed) as failed:
        handle.get(timeout=10)
    assert (failed.value.error_type, failed.value.error_message) == ("ImageMissing", "no such image: missing.png")
    assert failed.value.reason == "not_retryable"


def test_an_error_naming_a_file_that_is_not_utf8_is_dead_lettered_and_raised_with_its_real_reason(
    settings, queue, submitter
):
    handle = submitter.submit(TaskMessage("results.read_file"))

    with pytest.raises(TaskFailed) as failed:
        handle.get(timeout=10)
    with connect(settings, "rabbitry-tests") as connection:
        letter = wait_until(lambda: connection.get(dead_letter_queue_name(queue)), message="the dead letter")
        connection.ack(letter.delivery_tag)

    assert failed.value.reason == "not_retryable"
    assert (failed.value.error_type, failed.value.error_message) == ("FileUnreadable", "cannot read /data/in-\\udcff")
    assert letter.headers[REASON_HEADER] == "not_retryable"
    assert letter.headers[ERROR_HEADER] == "FileUnreadable: cannot read /data/in-\\udcff"


def test_a_result_over_the_in_process_brokers_max_message_size_is_dead_lettered_and_its_caller_told(unique_name):
    settings = BrokerSettings.from_url(f"local://{uuid.uuid4().hex}")
    broker_named(broker_name(settings.urls[0])).max_message_size = 4000  # refused as RabbitMQ refuses it
    worker = InProcessWorker(settings, unique_name, processes=1).start()
    try:
        with TaskSubmitter(settings, unique_name, "classic", results=True) as submitter:
            too_large = submitter.submit(TaskMessage("results.text_of", [5000]))
            with pytest.raises(TaskFailed) as failed:
                too_large.get(timeout=10)
            after = submitter.submit(TaskMessage("echo", ["after"])).get(timeout=10)
        with connect(settings, "rabbitry-tests") as connection:
            letter = connection.get(dead_letter_queue_name(unique_name))
            assert connection.get(dead_letter_queue_name(unique_name)) is None  # once, not looped
    finally:
        worker.stop()
        forget_broker(broker_name(settings.urls[0]))

    assert failed.value.reason == "result_too_large"
    assert "max_message_size of 4000 bytes" in failed.value.error_message
    assert letter is not None and letter.message_id == too_large.id
    assert letter.headers[REASON_HEADER] == "result_too_large"
    assert after == ["after"]  # the worker goes on


def test_a_task_whose_retries_are_spent_reports_the_last_error(submitter):
    handle = submitter.submit(TaskMessage("results.always_fails"))

    with pytest.raises(TaskFailed) as failed:
        handle.get(timeout=20)
    assert (failed.value.reason, failed.value.error_type) == ("retries_exhausted", "ValueError")


def test_a_retried_task_replies_once_from_its_final_attempt(submitter):
    key = uuid.uuid4().hex
    handle = submitter.submit(TaskMessage("results.flaky", [key]))

    assert handle.get(timeout=20) == "attempt 2"


def test_a_timeout_raises_timeout_error_and_the_task_still_runs(submitter):
    handle = submitter.submit(TaskMessage("sleep", [0.5]))

    with pytest.raises(TimeoutError):
        handle.get(timeout=0.01)
    assert handle.get(timeout=10) == 0.5


def test_many_callers_each_get_their_own_result(submitter):
    handles = [submitter.submit(TaskMessage("echo", [number])) for number in range(50)]

    assert [handle.get(timeout=20) for handle in handles] == [[number] for number in range(50)]


def test_a_task_whose_caller_went_away_is_acked_as_usual(settings, queue, worker):
    with TaskSubmitter(settings, queue, "classic", results=True) as gone:
        gone.submit(TaskMessage("sleep", [0.3]))
    # The caller's connection is closed before the task ends: its reply has nowhere to go.
    with TaskSubmitter(settings, queue, "classic", results=True) as caller:
        after = caller.submit(TaskMessage("echo", ["after"]))
        assert after.get(timeout=10) == ["after"]
    worker.stop()  # lets the running task finish and settle; whatever was not acked goes back to the queue

    with connect(settings, "rabbitry-tests") as connection:
        assert connection.queue_state(queue).messages == 0
        assert connection.queue_state(dead_letter_queue_name(queue)).messages == 0


def test_get_on_a_task_submitted_without_asking_for_results_says_so(settings, queue):
    with TaskSubmitter(settings, queue, "classic") as submitter:
        handle = submitter.submit(TaskMessage("noop"))

    with pytest.raises(ResultNotRequested):
        handle.get(timeout=1)


# -- new-task --wait (the command, with a worker process, on RabbitMQ) --------------
def test_new_task_wait_prints_each_result_beside_its_id(run, start_worker, work_queue_name):
    start_worker(work_queue_name, "--processes", "1")

    result = run("new-task", "--task", "echo", "--args", '["hi"]', "--count", "3", "--wait", "--queue", work_queue_name)

    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [(line["status"], line["result"]) for line in lines] == [("succeeded", ["hi"])] * 3
    assert len({line["id"] for line in lines}) == 3


def test_new_task_wait_exits_non_zero_when_a_task_fails_or_times_out(run, start_worker, work_queue_name):
    start_worker(work_queue_name, "--processes", "1", "--max-retries", "0")

    failed = run("new-task", "--task", "fail", "--args", '["on purpose"]', "--wait", "--queue", work_queue_name)
    timed_out = run(
        "new-task", "--task", "sleep", "--args", "[2]", "--wait", "--timeout", "0.2", "--queue", work_queue_name
    )

    assert failed.returncode == timed_out.returncode == ExitCode.FAILURE
    [line] = json_lines(failed.stdout)
    assert (line["status"], line["reason"], line["error_type"], line["error"]) == (
        "failed",
        "retries_exhausted",
        "TaskFailed",
        "on purpose",
    )
    assert [line["status"] for line in json_lines(timed_out.stdout)] == ["timed_out"]
    assert "0 succeeded, 0 failed, 1 timed out" in timed_out.stderr


# -- asyncio -------------------------------------------------------------------------
def test_a_coroutine_awaits_results_while_the_event_loop_runs_on(settings, queue, worker, tmp_path):
    # The task runs until another coroutine releases it: its result comes only if the event
    # loop runs on while the result is awaited.
    async def release_after_ticks():
        for _ in range(5):
            await asyncio.sleep(0.01)
        (tmp_path / "release").touch()

    async def main():
        async with AsyncTaskSubmitter(settings, queue, "classic", results=True) as submitter:
            held = await submitter.submit(TaskMessage("hold_until_released", [str(tmp_path)]))
            releasing = asyncio.create_task(release_after_ticks())
            value = await held.get(timeout=30)
            await releasing
            echoes = [await submitter.submit(TaskMessage("echo", [n])) for n in range(20)]
            results = await asyncio.gather(*(echo.get(timeout=10) for echo in echoes))
            failing = await submitter.submit(TaskMessage("results.resize", ["missing.png", 1]))
            with pytest.raises(TaskFailed):
                await failing.get(timeout=10)
            confirmed = await (await submitter.submit(TaskMessage("noop"))).wait_confirmed(10)
        return value, results, confirmed

    try:
        value, results, confirmed = asyncio.run(main())
    finally:
        (tmp_path / "release").touch()

    assert value == "released"
    assert results == [[n] for n in range(20)]
    assert confirmed.confirmed


# -- task.delay() and task.delay_async() ---------------------------------------------
def test_delay_and_delay_async_return_handles_whose_get_is_the_return_value(
    settings, queue, unique_name, monkeypatch, request
):
    monkeypatch.setenv("AMQP_URL", settings.urls[0])
    request.addfinalizer(default_submitter.close)
    request.addfinalizer(InProcessWorker(settings, queue, queue_type="quorum").start().stop)  # delay's queue type

    @task(name=unique_name, queue=queue)
    def double(n: int) -> int:
        return 2 * n

    async def from_a_coroutine():
        handle = await double.delay_async(4)
        return handle.id, await handle.get(timeout=10)

    handle = double.delay(21)
    task_id, value = asyncio.run(from_a_coroutine())

    assert handle.confirmed and handle == handle.id
    assert handle.get(timeout=10) == 42
    assert value == 8 and task_id != handle.id
    with pytest.raises(TaskFailed, match="no such image"):
        resize.send_with_options(args=["missing.png", 1], queue=queue).get(timeout=10)


def test_a_result_is_lost_with_the_connection_that_was_to_carry_it(settings, queue, worker, tmp_path):
    # The task runs until released, so it is still running when the submitter closes, however
    # slowly the confirm came; its result, sent after, has no connection left to reach.
    submitter = TaskSubmitter(settings, queue, "classic", results=True).connect()
    try:
        handle = submitter.submit(TaskMessage("hold_until_released", [str(tmp_path)]))
        handle.wait_confirmed(10)
        wait_until((tmp_path / "started").exists, message="the held task started")
        submitter.close()
    finally:
        (tmp_path / "release").touch()

    with pytest.raises(ResultLost):
        handle.get(timeout=10)
