"""``async def`` tasks: up to --concurrency at a time in each pool process, with the guarantees
of plain tasks (acks after work, retries, dead letters, time limits, graceful shutdown).

The I/O is real: tasks talk to a slow TCP server on 127.0.0.1 that counts how many requests
it serves at once, so the tests assert how many ran together, never how long anything took.
"""

import collections
import signal
import threading
import uuid

import psutil
import pytest
from structlog.testing import capture_logs

from rabbitry.common.connect import connect
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.common.transport.contract import Delivery
from rabbitry.compare.server import SlowServer
from rabbitry.producers.handles import TaskFailed
from rabbitry.producers.submitter import TaskSubmitter
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.coroutines import CoroutineTasks
from rabbitry.workers.handover import Handover
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.registry import load_task_modules
from rabbitry.workers.task_thread import TaskThread
from rabbitry.workers.threaded import PoolThread
from tests.heartbeat_witness import HEARTBEAT_S, SilentConnection, witness_heartbeat
from tests.helpers import wait_until

TASKS = ("--tasks", "tests.coroutine_tasks")


def submit(settings, queue: str, messages: list[TaskMessage]) -> None:
    with TaskSubmitter(settings, queue) as submitter:
        for message in messages:
            submitter.submit(message)


def succeeded(worker) -> list[dict]:
    return worker.events("task_succeeded")


def test_async_tasks_run_up_to_concurrency_at_once_in_each_process_and_dispatch_stays_fair(
    start_worker, broker_settings, work_queue_name
):
    worker = start_worker(work_queue_name, "--processes", "2", "--concurrency", "20", *TASKS)
    with SlowServer(delay_s=0.2) as server:
        submit(broker_settings, work_queue_name, [TaskMessage("coro.fetch", [server.port]) for _ in range(300)])
        wait_until(lambda: len(succeeded(worker)) == 300, 60, 0.2, "300 tasks done")

    assert server.served["A"] == 300
    assert 30 <= server.most_at_once["A"] <= 40  # 2 processes x 20 coroutines: near it, never past it
    per_process = collections.Counter(line["pool_process"] for line in succeeded(worker))
    assert max(per_process.values()) <= 0.6 * 300, per_process
    with connect(broker_settings) as connection:
        assert connection.queue_state(work_queue_name).messages == 0  # every one acked


def test_a_backlog_queued_before_a_coroutine_worker_starts_is_shared_between_its_processes(
    start_worker, broker_settings, work_queue_name, tmp_path
):
    # Without --prefetch, a process holds about 0.1 s of work for each coroutine slot, and at least
    # one delivery for each: here, where a task takes 0.3 s, the 10 it can run, not hundreds. The
    # tasks wait until both processes consume, so that neither gets ahead by starting first.
    release = tmp_path / "release"
    submit(
        broker_settings,
        work_queue_name,
        [TaskMessage("coro.wait_for_release", [str(release), 0.3]) for _ in range(200)],
    )
    try:
        worker = start_worker(work_queue_name, "--processes", "2", "--concurrency", "10", *TASKS)
    finally:
        release.touch()
    wait_until(lambda: len(succeeded(worker)) == 200, 60, 0.2, "200 tasks done")

    per_process = collections.Counter(line["pool_process"] for line in succeeded(worker))
    assert max(per_process.values()) <= 0.6 * 200, per_process


def test_plain_tasks_in_a_coroutine_worker_still_run_one_at_a_time_beside_the_coroutines(
    start_worker, broker_settings, work_queue_name
):
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "20", *TASKS)
    with SlowServer(delay_s=0.2) as server:
        messages = [TaskMessage("coro.fetch_blocking", [server.port]) for _ in range(8)]
        messages += [TaskMessage("coro.fetch", [server.port]) for _ in range(40)]
        submit(broker_settings, work_queue_name, messages)
        wait_until(lambda: len(succeeded(worker)) == 48, 60, 0.2, "48 tasks done")

    assert server.most_at_once["S"] == 1  # a plain function has the process's one sync slot
    assert server.most_at_once["A"] >= 10  # while the coroutines went on around it


def test_an_async_task_over_its_time_limit_is_cancelled_and_dead_lettered_while_the_process_goes_on(
    start_worker, broker_settings, work_queue_name, tmp_path
):
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "4", *TASKS)
    marker = tmp_path / "cancelled"
    with SlowServer(delay_s=1.0) as server:
        submit(
            broker_settings,
            work_queue_name,
            [TaskMessage("coro.too_slow", [str(marker)]), TaskMessage("coro.fetch", [server.port])],
        )
        wait_until(
            lambda: worker.events("task_dead_lettered") and succeeded(worker),
            30,
            0.1,
            "the slow task dead-lettered and the other done",
        )

    [dead] = worker.events("task_dead_lettered")
    assert dead["task"] == "coro.too_slow" and dead["error"].startswith("TimeLimitExceeded")
    assert marker.read_text() == "cancelled"  # the coroutine was cancelled, not left running
    assert not worker.events("pool_process_exited")  # no process was sacrificed for it
    with connect(broker_settings) as connection:
        [letter] = [d for d in iter(lambda: connection.get(dead_letter_queue_name(work_queue_name)), None)]
        connection.ack(letter.delivery_tag)
    assert letter.headers["x-rabbitry-reason"] == "retries_exhausted"


def test_a_blocking_call_in_an_async_task_is_reported_and_heartbeats_go_on(
    start_worker, broker_settings, broker_url, work_queue_name, tmp_path
):
    # The task blocks the loop until released, and it is released only once the broker has
    # dropped a connection that sent nothing since the loop was blocked. A heartbeat of 3 s
    # lets the connection thread stall for up to 4.5 s of a loaded machine's time.
    url = broker_url.rstrip("/") + f"/%2F?heartbeat={HEARTBEAT_S}"
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "2", *TASKS, env={"AMQP_URL": url})
    release = tmp_path / "release"
    submit(broker_settings, work_queue_name, [TaskMessage("coro.block_the_loop_until", [str(release)])])
    try:
        wait_until(lambda: worker.events("event_loop_blocked"), 30, 0.1, "the blocked loop reported")
        with SilentConnection(broker_url, witness_heartbeat(HEARTBEAT_S)) as witness:
            wait_until(witness.dropped, 60, 0.1, "the broker to drop a silent connection")
    finally:
        release.touch()
    wait_until(lambda: succeeded(worker), 30, 0.1, "the blocking task done")
    # A dropped connection is noticed when the worker next uses it, which may be after the task's
    # line: stopping settles the task and cancels the consumer on that connection.
    assert worker.stop() == 0

    [warning] = worker.events("event_loop_blocked")
    assert warning["running"] == ["coro.block_the_loop_until"] and warning["cause"] == "async_task_blocked"
    assert warning["hint"].startswith("an async task made a blocking call")
    [done] = succeeded(worker)
    assert done["redelivered"] is False
    assert not worker.events("connection_lost")
    with connect(broker_settings) as connection:
        assert connection.queue_state(work_queue_name).messages == 0  # acked, not put back


def test_a_plain_task_encoding_a_large_result_is_not_reported_as_a_blocking_async_task():
    # Encoding the 3,000,000 numbers of its reply keeps the interpreter lock on the plain tasks'
    # thread for a while: the loop cannot run, and no async task is to blame.
    load_task_modules(("tests.coroutine_tasks",))
    config = WorkerConfig(settings=BrokerSettings.from_url(f"local://{uuid.uuid4().hex}"), concurrency=2)
    handover = Handover()
    coroutines = CoroutineTasks(config, 0, handover, TaskThread(config, 0, handover, CrashLedger(1), None))
    loop = threading.Thread(target=coroutines.run)
    loop.start()
    with capture_logs() as logs:
        # The stall is seen only if the watcher runs before the loop once the lock is let go: it
        # watches more often than the connection thread does, and the task runs up to 5 times.
        for tag in range(1, 6):
            outgoing = TaskMessage("coro.large_result", [3_000_000]).to_outgoing("tasks")
            delivery = Delivery(
                outgoing.body, "tasks", "", tag, content_type=outgoing.content_type, reply_to="amq.rabbitmq.reply-to"
            )
            coroutines.hand_over((handover.generation, [delivery]))
            wait_until(lambda: coroutines.watch() or handover.outbox, 60, 0.001, "the task done")
            handover.outbox.clear()
            if any(line["event"] == "event_loop_blocked" for line in logs):
                break
        coroutines.hand_over(None)
        loop.join(30)

    warnings = [line for line in logs if line["event"] == "event_loop_blocked"]
    assert warnings
    for warning in warnings:
        assert "async task made a blocking call" not in warning["hint"], warning
        assert warning["cause"] == "plain_task_held_the_interpreter", warning
        assert warning["running"] == [] and warning["plain_task"] == "coro.large_result"


def test_tasks_finished_behind_a_long_one_are_acked_at_once_and_the_long_one_only_when_done(
    start_worker, broker_settings, work_queue_name
):
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "10", "--prefetch", "1", *TASKS)
    submit(broker_settings, work_queue_name, [TaskMessage("coro.wait", [60])])
    submit(broker_settings, work_queue_name, [TaskMessage("coro.wait", [0]) for _ in range(50)])
    # 10 slots of prefetch, one held by the long task: the 50 get through only if each is acked
    # as it finishes, not held back behind the long one.
    wait_until(lambda: len(succeeded(worker)) == 50, 30, 0.1, "the 50 short tasks done")

    worker.kill_all()  # the long task was never acked: the broker has it again
    with connect(broker_settings) as connection:
        wait_until(lambda: connection.queue_state(work_queue_name).messages == 1, 30, 0.1, "the long task back")


def test_sigterm_lets_the_running_coroutines_finish_and_leaves_the_others_in_the_queue(
    start_worker, broker_settings, work_queue_name
):
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "10", *TASKS)
    with SlowServer(delay_s=1.0) as server:
        submit(broker_settings, work_queue_name, [TaskMessage("coro.fetch", [server.port]) for _ in range(100)])
        wait_until(lambda: server.most_at_once["A"] == 10, 30, 0.05, "10 coroutines waiting on the server")
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0

    done = succeeded(worker)
    assert len(done) >= 10  # those running when it was told to stop finished
    assert len({line["task_id"] for line in done}) == len(done)
    with connect(broker_settings) as connection:
        assert connection.queue_state(work_queue_name).messages == 100 - len(done)  # nothing lost


def test_a_coroutine_that_ignores_its_cancellation_ends_its_process_and_is_dead_lettered_past_its_crash_limit(
    start_worker, broker_settings, work_queue_name, tmp_path
):
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "4", "--delivery-limit", "2", *TASKS)
    marker = tmp_path / "attempts"
    stubborn = TaskMessage("coro.stubborn", [str(marker)])  # its own time limit: 1 s
    release = tmp_path / "release"
    # Still running when the process ends, both times: they end only once released.
    others = [TaskMessage("coro.wait_for_release", [str(release)]) for _ in range(2)]
    submit(broker_settings, work_queue_name, [stubborn, *others])
    try:
        wait_until(lambda: worker.events("task_dead_lettered"), 90, 0.1, "the stubborn task dead-lettered")
    finally:
        release.touch()
    wait_until(lambda: len(succeeded(worker)) == 2, 90, 0.1, "the other coroutines done")

    ignored = worker.events("task_ignored_cancellation")
    assert len(ignored) == 2 and {line["task_id"] for line in ignored} == {stubborn.id}
    died = worker.events("pool_process_died")
    assert [(line["task_id"], line["crashes"]) for line in died] == [(stubborn.id, 1), (stubborn.id, 2)]
    assert marker.read_text() == "started\n" * 2  # run twice, then dead-lettered without a third run
    assert {line["task_id"] for line in succeeded(worker)} == {other.id for other in others}
    assert all(line["redelivered"] for line in succeeded(worker))  # they were running when it ended
    with connect(broker_settings) as connection:
        [letter] = [d for d in iter(lambda: connection.get(dead_letter_queue_name(work_queue_name)), None)]
        connection.ack(letter.delivery_tag)
        assert connection.queue_state(work_queue_name).messages == 0
    assert letter.message_id == stubborn.id and letter.headers["x-rabbitry-reason"] == "delivery_limit"


def test_sigterm_stops_a_worker_whose_coroutine_ignores_its_cancellation_and_leaves_no_pool_process(
    start_worker, broker_settings, work_queue_name, tmp_path
):
    worker = start_worker(work_queue_name, "--processes", "1", "--concurrency", "4", "--time-limit", "2", *TASKS)
    marker = tmp_path / "attempts"
    submit(broker_settings, work_queue_name, [TaskMessage("coro.stubborn", [str(marker)])])
    wait_until(lambda: marker.exists(), 30, 0.05, "the stubborn task started")
    pool_processes = psutil.Process(worker.process.pid).children()
    assert pool_processes

    worker.signal(signal.SIGTERM)
    assert worker.process.wait(60) == 0  # its time limit, the grace, and the process is ended
    gone, alive = psutil.wait_procs(pool_processes, timeout=30)
    assert alive == []
    with connect(broker_settings) as connection:
        wait_until(lambda: connection.queue_state(work_queue_name).messages == 1, 30, 0.1, "the task back")
    [ignored] = worker.events("task_ignored_cancellation")
    assert ignored["task"] == "coro.stubborn"


# -- on both transports, with the pool members as threads of this process ------------------------


@pytest.fixture
def submitter(either_broker, either_work_queue):
    settings, queue = either_broker, either_work_queue
    load_task_modules(("tests.coroutine_tasks",))
    config = WorkerConfig(
        settings=settings,
        queue=queue,
        queue_type="classic",
        processes=1,
        concurrency=8,
        max_retries=1,
        log_level="critical",
    )
    with connect(settings, "rabbitry-tests") as connection:
        connection.declare(config.topology)
    stop = threading.Event()
    member = threading.Thread(target=PoolThread(config, 0, stop, CrashLedger(1)).run)
    member.start()
    with TaskSubmitter(settings, queue, "classic", results=True) as opened:
        yield opened
    stop.set()
    member.join(30)


def test_async_tasks_return_values_to_their_callers_running_up_to_concurrency_at_once(submitter):
    with SlowServer(delay_s=0.05) as server:
        handles = [submitter.submit(TaskMessage("coro.fetch", [server.port])) for _ in range(60)]
        assert [handle.get(timeout=20) for handle in handles] == ["done"] * 60
    assert 2 <= server.most_at_once["A"] <= 8  # --concurrency 8, each task holding its slot to the end


def test_a_failing_async_task_is_retried_and_its_caller_gets_the_retry_s_value(submitter):
    handle = submitter.submit(TaskMessage("coro.flaky", [uuid.uuid4().hex]))
    assert handle.get(timeout=20) == "attempt 2"


def test_an_async_task_that_raises_a_dont_retry_error_is_dead_lettered_at_once(submitter):
    handle = submitter.submit(TaskMessage("coro.refuse"))
    with pytest.raises(TaskFailed) as failed:
        handle.get(timeout=20)
    assert (failed.value.reason, failed.value.error_type) == ("not_retryable", "Unfixable")
