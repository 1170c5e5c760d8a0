"""TaskSubmitter in a long-lived program: prompt, safe between threads, alive while idle, closed in bounded time."""

import collections
import subprocess
import sys
import textwrap
import threading

import pytest
from structlog.testing import capture_logs

from rabbitry.common.errors import Unroutable
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.producers.submitter import SubmitterClosed, TaskSubmitter
from tests.heartbeat_witness import HEARTBEAT_S, SilentConnection, witness_heartbeat
from tests.helpers import wait_until


def test_a_lone_task_reaches_the_queue_without_a_flush(broker_settings, connection, work_queue_name):
    submitter = TaskSubmitter(broker_settings, work_queue_name, "classic").connect()
    try:
        handle = submitter.submit(TaskMessage("noop"))
        handle.wait_confirmed(10)  # nothing else is submitted, and flush() is never called
        queued = connection.queue_state(work_queue_name).messages
    finally:
        submitter.close()

    assert handle.confirmed
    assert queued == 1


def test_a_handle_stands_for_its_task_id(broker_settings, work_queue_name):
    message = TaskMessage("noop")
    with TaskSubmitter(broker_settings, work_queue_name, "classic") as submitter:
        handle = submitter.submit(message)

    assert str(handle) == handle.id == message.id
    assert handle == message.id and message.id == handle
    assert {message.id: 1}[handle] == 1
    assert handle != TaskMessage("noop").id


def test_eight_threads_sharing_one_submitter_have_every_task_confirmed_exactly_once(
    broker_settings, connection, work_queue_name
):
    confirmed = []
    submitted: list[list[str]] = [[] for _ in range(8)]
    submitter = TaskSubmitter(
        broker_settings,
        work_queue_name,
        "classic",
        on_confirmed=lambda messages: confirmed.extend(m.message_id for m in messages),
    )
    submitter.connect()

    def submit_share(index: int) -> None:
        for _ in range(1250):
            submitted[index].append(submitter.submit(TaskMessage("noop")).id)

    threads = [threading.Thread(target=submit_share, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        submitter.flush(60)
    finally:
        submitter.close()

    every_id = [task_id for share in submitted for task_id in share]
    assert len(set(every_id)) == 10_000
    assert collections.Counter(confirmed) == collections.Counter(every_id)  # each once, none else
    assert connection.queue_state(work_queue_name).messages == 10_000


def test_an_idle_submitter_keeps_its_connection_through_missed_heartbeats(broker_url, connection, work_queue_name):
    # RabbitMQ closes a connection that misses two heartbeats. The submitter stays idle until the
    # broker has dropped a witness connection that sent nothing since the submitter's last publish:
    # what a 10 s heartbeat and five idle minutes would show, in a test's time.
    settings = BrokerSettings.from_url(broker_url, heartbeat=HEARTBEAT_S, reconnect_for=30.0)
    with capture_logs() as logs:
        with TaskSubmitter(settings, work_queue_name, "classic") as submitter:
            submitter.submit(TaskMessage("noop")).wait_confirmed(30)
            with SilentConnection(broker_url, witness_heartbeat(HEARTBEAT_S)) as witness:
                wait_until(witness.dropped, 60, 0.1, "the broker to drop a silent connection")
            submitter.submit(TaskMessage("noop")).wait_confirmed(30)

    assert submitter.connections_opened == 1
    assert not [entry for entry in logs if entry["event"] == "publisher_reconnecting"]
    assert connection.queue_state(work_queue_name).messages == 2


def test_a_submitter_is_closed_for_new_tasks_once_closed(broker_settings, work_queue_name):
    submitter = TaskSubmitter(broker_settings, work_queue_name, "classic").connect()
    submitter.close()

    with pytest.raises(SubmitterClosed):
        submitter.submit(TaskMessage("noop"))


def test_a_program_that_exits_without_closing_its_submitter_still_queues_its_task(
    broker_url, connection, work_queue_name
):
    program = textwrap.dedent(f"""
        from rabbitry.common.messages import TaskMessage
        from rabbitry.common.settings import BrokerSettings
        from rabbitry.producers.submitter import TaskSubmitter

        submitter = TaskSubmitter(BrokerSettings.from_url({broker_url!r}), {work_queue_name!r}, "classic")
        submitter.connect().submit(TaskMessage("noop"))
    """)  # no flush, no close: the program just ends
    subprocess.run([sys.executable, "-c", program], check=True, timeout=60)

    assert connection.queue_state(work_queue_name).messages == 1


def test_closing_says_how_many_tasks_were_left_unconfirmed(extra_broker, unique_name):
    """A broker that blocks publishers (a memory alarm) confirms nothing: closing gives up in time."""
    settings = extra_broker.settings(reconnect_for=5.0)
    submitter = TaskSubmitter(settings, unique_name, "classic").connect()
    extra_broker.ctl("set_vm_memory_high_watermark", "0")
    try:
        wait_until(lambda: _alarmed(extra_broker), 30, 0.2, "the memory alarm")
        handles = [submitter.submit(TaskMessage("noop")) for _ in range(5)]
        with capture_logs() as logs:
            left = submitter.close(timeout=1)
    finally:
        extra_broker.ctl("set_vm_memory_high_watermark", "0.4")

    assert left == 5
    assert not any(handle.confirmed for handle in handles)
    assert [entry["unconfirmed"] for entry in logs if entry["event"] == "submitter_closed_unconfirmed"] == [5]


def _alarmed(node) -> bool:
    output = node.ctl("eval", "rabbit_alarm:get_alarms().", check=False)
    return "memory" in output


def test_a_task_with_no_queue_to_go_to_fails_its_handle_and_the_flush(broker_settings, connection, work_queue_name):
    submitter = TaskSubmitter(broker_settings, work_queue_name, "classic").connect()
    try:
        connection.delete_queue(work_queue_name)  # declared by connect(), gone before the task is sent
        handle = submitter.submit(TaskMessage("noop"))
        with pytest.raises(Unroutable):
            handle.wait_confirmed(10)
        with pytest.raises(Unroutable):
            submitter.flush(10)
    finally:
        submitter.close()

    assert not handle.confirmed


def test_a_submitters_metrics_count_on_the_applications_registry(broker_settings, connection, work_queue_name):
    from prometheus_client import CollectorRegistry

    from rabbitry import SubmitterMetrics

    registry = CollectorRegistry()
    submitter = TaskSubmitter(broker_settings, work_queue_name, "classic", metrics=SubmitterMetrics(registry))
    try:
        submitter.connect()
        for _ in range(50):
            submitter.submit(TaskMessage("noop"))
        submitter.flush(30)
        queued = connection.queue_state(work_queue_name).messages
        connection.delete_queue(work_queue_name)  # the next task has no queue to go to
        with pytest.raises(Unroutable):
            submitter.submit(TaskMessage("noop")).wait_confirmed(10)
    finally:
        submitter.close()

    def value(name, **labels):
        return registry.get_sample_value(name, {"queue": work_queue_name, **labels})

    assert queued == 50
    assert value("rabbitry_tasks_submitted_total") == 51
    assert value("rabbitry_tasks_confirmed_total") == 50
    assert value("rabbitry_tasks_refused_total", reason="unroutable") == 1
    assert value("rabbitry_task_confirm_seconds_count") == 50
    assert value("rabbitry_task_confirm_seconds_sum") > 0
