"""Schedulers on the broker: one of several queues each tick, exactly once; a killed leader's
successor goes on without a gap or a repeat; ticks missed while none ran are caught up or skipped."""

import datetime
import json
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import structlog

from rabbitry.common.connect import connect
from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.messages import TaskMessage
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import (
    dead_letter_queue_name,
    schedule_lease_queue,
    schedule_ledger_queue,
    schedule_queues,
)
from rabbitry.producers.periodic import LATE_TICK_GRACE_S, Schedule, ScheduleEntry
from rabbitry.producers.scheduler import TICK_HEADER, Scheduler
from tests.helpers import command_path, wait_until

#: How long no scheduler runs when the leader is killed: over the 1 s between ticks, so that at
#: least one falls due meanwhile, and well under LATE_TICK_GRACE_S, so that none is missed.
TAKEOVER_GAP_S = 1.5


def drain_ticks(connection, queue: str) -> list[tuple[str, float]]:
    """The entry and tick of each task in ``queue``, read from their ids, in queue order."""
    ticks = []
    while (delivery := connection.get(queue)) is not None:
        connection.ack(delivery.delivery_tag)
        entry, stamp = TaskMessage.from_delivery(delivery).id.split(":", 1)[1].rsplit("@", 1)
        ticks.append((entry, datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()))
    return ticks


class SchedulerProcess:
    """``rabbitry schedule FILE`` in the background, its JSON log in a temporary file."""

    def __init__(self, path, env):
        self._log = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-schedule-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [command_path("rabbitry"), "schedule", str(path), "--log-format", "json"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def events(self, name: str) -> list[dict]:
        with open(self._log.name) as log:
            lines = [json.loads(line) for line in log if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)


@pytest.fixture
def schedule_name(broker_settings, unique_name):
    """A schedule name of the test's own; its lease, ledger and work queues are deleted afterwards."""
    name = unique_name.replace(".", "-")
    yield name
    with connect(broker_settings, "rabbitry-tests-cleanup") as connection:
        for queue in [
            schedule_lease_queue(name),
            *(schedule_ledger_queue(name, e) for e in ("beat", "caught", "missed")),
            name,
            dead_letter_queue_name(name),
        ]:
            connection.delete_queue(queue)


def test_two_schedulers_queue_every_tick_once_and_a_killed_leaders_successor_leaves_no_gap(
    tmp_path, cli_env, broker_settings, schedule_name
):
    path = tmp_path / "schedule.toml"
    path.write_text(
        f'name = "{schedule_name}"\n[[entry]]\nname = "beat"\ntask = "noop"\nevery = "1s"\nqueue = "{schedule_name}"\n'
    )
    schedulers = [SchedulerProcess(path, cli_env) for _ in range(2)]
    try:
        leader = wait_until(
            lambda: next((s for s in schedulers if s.events("scheduler_leading")), None), message="a leader"
        )
        wait_until(lambda: len(leader.events("schedule_tick_queued")) >= 4, message="four ticks")
        (successor,) = [s for s in schedulers if s is not leader]
        wait_until(lambda: successor.events("scheduler_waiting"), message="the successor waiting for the lease")
        # The successor is paused across the leader's death, so that ticks fall due while no
        # scheduler runs: it must read from the ledger where the leader stopped and queue them.
        # They are at most TAKEOVER_GAP_S late when it resumes: of the 5 s a late tick is still
        # queued (LATE_TICK_GRACE_S), the rest is for taking over on a loaded machine.
        successor.process.send_signal(signal.SIGSTOP)
        try:
            assert leader.stop(signal.SIGKILL) == -signal.SIGKILL
            time.sleep(TAKEOVER_GAP_S)
        finally:
            successor.process.send_signal(signal.SIGCONT)
        wait_until(lambda: len(successor.events("schedule_tick_queued")) >= 4, message="the successor's ticks")
        assert successor.stop() == 0
    finally:
        for scheduler in schedulers:
            scheduler.stop(signal.SIGKILL)

    with connect(broker_settings) as connection:
        ticks = [tick for _, tick in drain_ticks(connection, schedule_name)]
    assert ticks == [ticks[0] + n for n in range(len(ticks))]  # each second once, none missing, in order
    assert len(ticks) >= 8
    assert {e["task_id"] for e in successor.events("schedule_tick_queued")}.isdisjoint(
        e["task_id"] for e in leader.events("schedule_tick_queued")
    )


def test_a_tick_missed_while_no_scheduler_ran_is_caught_up_once_or_skipped_with_a_log_line(
    broker_settings, schedule_name
):
    every = 10.0
    entries = (
        ScheduleEntry("caught", "noop", every_s=every, queue=schedule_name, catch_up=True),
        ScheduleEntry("missed", "noop", every_s=every, queue=schedule_name),
    )
    # The scheduler's clock is shifted so that it starts half a period from the latest missed
    # tick (over LATE_TICK_GRACE_S late): that tick is the same if it takes up to 5 s to lead.
    offset = (every / 2 - (time.time() - LATE_TICK_GRACE_S) % every) % every

    def clock() -> float:
        return time.time() + offset

    last_run = entries[0].previous_tick(clock() - 100)  # the last ticks queued, long before this scheduler
    with connect(broker_settings) as connection:
        connection.declare(schedule_queues(schedule_name, [entry.name for entry in entries]))
        for entry in entries:
            ledger = entry.message(schedule_name, last_run).to_outgoing(
                schedule_ledger_queue(schedule_name, entry.name)
            )
            ledger.headers = {TICK_HEADER: round(last_run * 1000)}
            connection.publish(ledger)
        assert not connection.wait_for_confirms(10)
    scheduler = Scheduler(broker_settings, Schedule(schedule_name, entries), clock=clock)

    started = clock()
    with structlog.testing.capture_logs() as logs:
        thread = threading.Thread(target=scheduler.run)
        thread.start()
        wait_until(lambda: scheduler.queued, message="the catch-up")
        scheduler.stop.set()
        thread.join(10)

    with connect(broker_settings) as connection:
        queued = drain_ticks(connection, schedule_name)
    missed_before = started - LATE_TICK_GRACE_S
    caught = [tick for entry, tick in queued if entry == "caught" and tick < missed_before]
    assert caught == [entries[0].previous_tick(missed_before)]  # the latest missed tick, once
    assert not [tick for entry, tick in queued if entry == "missed" and tick < missed_before]
    skipped = {line["entry"]: line["skipped"] for line in logs if line["event"] == "schedule_ticks_skipped"}
    assert skipped["missed"] >= 8 and skipped["caught"] == skipped["missed"] - 1


def test_on_the_in_process_model_the_lease_passes_to_the_second_scheduler_when_the_first_stops():
    settings = BrokerSettings.from_url(f"local://{uuid.uuid4().hex}")
    schedule = Schedule("local", (ScheduleEntry("beat", "noop", every_s=1.0, queue="beats"),))
    first, second = Scheduler(settings, schedule), Scheduler(settings, schedule)
    threads = [threading.Thread(target=scheduler.run) for scheduler in (first, second)]
    try:
        with connect(settings) as connection:
            threads[0].start()
            wait_until(first.leading.is_set, message="the first scheduler's lease")
            threads[1].start()
            wait_until(lambda: first.queued >= 2, message="two ticks")
            assert not second.leading.is_set()
            first.stop.set()
            threads[0].join(10)
            wait_until(lambda: second.queued >= 2, message="the second scheduler's ticks")
            second.stop.set()
            threads[1].join(10)
            ticks = [tick for _, tick in drain_ticks(connection, "beats")]
    finally:
        first.stop.set()
        second.stop.set()
        forget_broker(broker_name(settings.urls[0]))

    assert ticks == [ticks[0] + n for n in range(len(ticks))] and len(ticks) >= 4
