"""The work queue end to end: new-task → durable queue → worker pool, on the real broker."""

import json
import signal
import threading
import uuid

import pika

from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.common.transport.contract import UNREADABLE_HEADERS
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.threaded import ThreadedWorkerPool
from tests.heartbeat_witness import HEARTBEAT_S, SilentConnection, witness_heartbeat
from tests.helpers import (
    TIMESTAMP_PAST_9999,
    array_of_bytes,
    drain,
    long_tasks_per_process,
    publish_with_raw_headers,
    queue_uneven_tasks,
    wait_until,
)


def succeeded_ids(*workers):
    return {e["task_id"] for w in workers for e in w.events("task_succeeded")}


def test_a_task_from_new_task_runs_in_the_pool_and_is_acked(run, start_worker, work_queue_name, connection):
    queued = run("new-task", "--task", "echo", "--args", '["hello", 42]', "--queue", work_queue_name, check=True)
    (task_id,) = queued.stdout.split()

    worker = start_worker(work_queue_name, "--processes", "2")
    done = wait_until(lambda: [e for e in worker.events("task_succeeded") if e["task_id"] == task_id])

    assert done[0]["task"] == "echo"
    assert done[0]["result"] == ["hello", 42]
    assert done[0]["duration_s"] >= 0
    wait_until(lambda: connection.queue_state(work_queue_name).messages == 0, message="an empty queue")
    assert worker.stop() == 0
    assert connection.queue_state(work_queue_name).messages == 0  # acked, not requeued on exit


def test_count_queues_that_many_tasks_and_prints_each_id(run, work_queue_name, connection):
    queued = run("new-task", "--task", "noop", "--count", "250", "--queue", work_queue_name, check=True)

    ids = queued.stdout.split()
    assert len(ids) == len(set(ids)) == 250
    assert connection.queue_state(work_queue_name).messages == 250


def test_the_tutorials_plain_text_message_runs_as_the_dots_task(broker_url, start_worker, work_queue_name):
    worker = start_worker(work_queue_name, "--processes", "1")
    # What the official tutorial's new_task.py sends: plain text, persistent, no content type.
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as tutorial:
        tutorial.channel().basic_publish(
            exchange="", routing_key=work_queue_name, body=b"Hello..", properties=pika.BasicProperties(delivery_mode=2)
        )

    done = wait_until(lambda: worker.events("task_succeeded"))

    assert done[0]["task"] == "dots"
    assert done[0]["result"] == 2  # two dots, two seconds
    assert done[0]["duration_s"] >= 2


def test_malformed_and_unknown_tasks_are_dead_lettered_and_the_worker_goes_on(
    broker_url, run, start_worker, work_queue_name, connection
):
    worker = start_worker(work_queue_name, "--processes", "1")
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as raw:
        channel = raw.channel()
        json_props = pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="bad-json")
        channel.basic_publish("", work_queue_name, b"{not json", json_props)
        json_props.message_id = "not-an-object"
        channel.basic_publish("", work_queue_name, b"[1, 2]", json_props)
    run("new-task", "--task", "no_such_task", "--queue", work_queue_name, check=True)
    good = run(
        "new-task", "--task", "echo", "--args", '["still here"]', "--queue", work_queue_name, check=True
    ).stdout.strip()

    wait_until(lambda: good in succeeded_ids(worker), message="the good task")
    dead = wait_until(lambda: len(worker.events("task_dead_lettered")) == 3 and worker.events("task_dead_lettered"))
    assert sorted(e["reason"] for e in dead) == ["malformed", "malformed", "unknown_task"]

    letters = []
    dlq = dead_letter_queue_name(work_queue_name)
    wait_until(lambda: connection.queue_state(dlq).messages == 3, message="3 dead letters")
    while (delivery := connection.get(dlq)) is not None:
        letters.append(delivery)
        connection.ack(delivery.delivery_tag)
    reasons = {
        d.message_id: d.headers["x-rabbitry-reason"] for d in letters if d.message_id in ("bad-json", "not-an-object")
    }
    assert reasons == {"bad-json": "malformed", "not-an-object": "malformed"}
    unknown = [d for d in letters if d.headers["x-rabbitry-reason"] == "unknown_task"]
    assert "no_such_task" in unknown[0].headers["x-rabbitry-error"]
    assert {d.body for d in letters} >= {b"{not json", b"[1, 2]"}  # the original bodies, untouched
    assert connection.queue_state(work_queue_name).messages == 0


def test_tasks_whose_headers_cannot_be_read_or_sent_again_are_dead_lettered_and_the_worker_goes_on(
    broker_url, run, start_worker, work_queue_name, connection
):
    worker = start_worker(work_queue_name, "--processes", "1")
    # pika cannot decode the first one's headers: unhandled, it would drop the worker's connection on every
    # redelivery. The second one's headers grow 2.5 times as pika encodes them again, past one frame.
    publish_with_raw_headers(broker_url, work_queue_name, b'{"task": "echo"}', TIMESTAMP_PAST_9999, "unreadable")
    publish_with_raw_headers(
        broker_url, work_queue_name, b'{"task": "no_such_task"}', array_of_bytes("samples", 30_000), "too-large"
    )
    good = run("new-task", "--task", "echo", "--queue", work_queue_name, check=True).stdout.strip()

    wait_until(lambda: good in succeeded_ids(worker), message="the good task")
    dlq = dead_letter_queue_name(work_queue_name)
    wait_until(lambda: connection.queue_state(dlq).messages == 2, message="2 dead letters")
    letters = {d.message_id: d for d in drain(connection, dlq)}

    unreadable = letters["unreadable"].headers
    assert unreadable["x-rabbitry-reason"] == "malformed"
    assert unreadable["x-rabbitry-error"].startswith("its headers cannot be read: OverflowError")
    assert UNREADABLE_HEADERS in unreadable
    too_large = letters["too-large"].headers
    assert too_large["x-rabbitry-reason"] == "unknown_task" and "samples" not in too_large
    assert too_large["x-rabbitry-headers-left-out"].endswith("left out: samples")
    assert letters["too-large"].body == b'{"task": "no_such_task"}'  # the body, untouched
    assert [e["task_id"] for e in worker.events("headers_left_out")] == ["too-large"]
    assert connection.queue_state(work_queue_name).messages == 0

    # Replayed, without the headers that could not be read, the first one runs.
    for letter in letters.values():
        connection.publish(letter.republished(dlq))
    assert connection.wait_for_confirms(10) == []
    run("rabbitry", "dlq", "replay", "unreadable", "--queue", work_queue_name, check=True)
    wait_until(lambda: "unreadable" in succeeded_ids(worker), message="the replayed task")


def test_sigterm_with_tasks_in_flight_loses_nothing(run, start_worker, work_queue_name, connection):
    ids = run(
        "new-task", "--task", "sleep", "--args", "[1]", "--count", "12", "--queue", work_queue_name, check=True
    ).stdout.split()  # 6 s of work for 2 processes: the stop comes 5 s before the first could have run them all
    first = start_worker(work_queue_name, "--processes", "2", "--prefetch", "3")
    wait_until(lambda: first.events("task_succeeded"), message="a first task")

    first.signal(signal.SIGTERM)
    assert first.process.wait(30) == 0
    second = start_worker(work_queue_name, "--processes", "2")
    wait_until(lambda: succeeded_ids(first, second) >= set(ids), message="all 12 tasks")

    assert connection.queue_state(work_queue_name).messages == 0
    assert len(first.events("task_succeeded")) < 12  # the first worker really was interrupted


def test_fair_dispatch_gives_each_process_an_equal_share_of_long_tasks(run, start_worker, work_queue_name, tmp_path):
    worker = start_worker(work_queue_name, "--processes", "2", "--prefetch", "1")
    # Every 4th task is long: round-robin would give all of them to one process.
    queued = queue_uneven_tasks(run, work_queue_name, tmp_path)

    done = wait_until(lambda: len(worker.events("task_succeeded")) == queued and worker.events("task_succeeded"))

    assert long_tasks_per_process(done) == [3, 3]


def test_heartbeats_keep_flowing_while_a_long_task_runs(
    broker_url, run, start_worker, work_queue_name, connection, tmp_path
):
    # The task blocks its thread until released, and it is released only once the broker has
    # dropped a connection that sent nothing since the task began. A heartbeat of 3 s lets the
    # worker's connection thread stall for up to 4.5 s of a loaded machine's time.
    worker = start_worker(
        work_queue_name,
        "--processes",
        "1",
        "--tasks",
        "tests.fault_tasks",
        env={"AMQP_URL": broker_url.split("?")[0] + f"?heartbeat={HEARTBEAT_S}"},
    )
    arguments = json.dumps([str(tmp_path)])
    queued = run(
        "new-task", "--task", "hold_until_released", "--args", arguments, "--queue", work_queue_name, check=True
    )
    try:
        wait_until((tmp_path / "started").exists, message="the task to start")
        with SilentConnection(broker_url, witness_heartbeat(HEARTBEAT_S)) as witness:
            wait_until(witness.dropped, timeout=60, interval=0.1, message="the broker to drop a silent connection")
    finally:
        (tmp_path / "release").touch()
    wait_until(lambda: worker.events("task_succeeded"), timeout=30, message="the task done")
    # A dropped connection is noticed when the worker next uses it, which may be after the task's
    # line: stopping settles the task and cancels the consumer on that connection.
    assert worker.stop() == 0

    (done,) = worker.events("task_succeeded")
    assert done["task_id"] == queued.stdout.strip() and done["redelivered"] is False
    assert worker.events("connection_lost") == []
    assert connection.queue_state(work_queue_name).messages == 0  # acked, not put back


def test_a_file_with_a_bad_line_queues_nothing(run, work_queue_name, connection, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"task": "noop"}\n{"task": "noop", "args": {"not": "a list"}}\n')

    result = run("new-task", "--file", str(tasks), "--queue", work_queue_name)

    assert result.returncode == 2
    assert "line 2" in result.stderr and "Traceback" not in result.stderr
    assert connection.queue_state(work_queue_name) is None  # nothing was even declared


def test_a_worker_whose_queue_is_deleted_declares_it_again_and_goes_on(run, start_worker, work_queue_name, connection):
    worker = start_worker(work_queue_name, "--processes", "1")

    connection.delete_queue(work_queue_name)  # the broker cancels the worker's consumer
    wait_until(lambda: worker.events("connection_lost"), message="the cancellation to be noticed")
    task_id = run(
        "new-task", "--task", "echo", "--args", '["after"]', "--queue", work_queue_name, check=True
    ).stdout.strip()

    done = wait_until(lambda: [e for e in worker.events("task_succeeded") if e["task_id"] == task_id])
    assert done[0]["result"] == ["after"]
    assert "cancelled" in worker.events("connection_lost")[0]["error"]


def test_a_worker_pool_run_inside_a_program_puts_back_the_signal_handlers_it_installed():
    # rabbitry compare runs a pool in its own process, then forks a multiprocessing.Pool, which
    # hung in terminate() when it inherited the supervisor's SIGTERM handler.
    settings = BrokerSettings.from_url(f"local://{uuid.uuid4().hex}")
    pool = ThreadedWorkerPool(
        WorkerConfig(settings=settings, queue="q", queue_type="classic", processes=1, log_level="critical")
    )
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    threading.Timer(0.5, pool.stop).start()
    try:
        assert pool.run() == 0
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    finally:
        forget_broker(broker_name(settings.urls[0]))
