"""Cron entries on the nights the clocks change: a wall-clock time that occurs twice ticks once, at
its first occurrence; one skipped ticks at the first instant after the gap (docs/schedules.md).

The ticks are checked against a brute-force walk of the night, minute by minute, in UTC."""

import dataclasses
import datetime
import functools
import json
import os
import signal
import subprocess
import tempfile
import threading
import uuid
import zoneinfo

import psutil
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from rabbitry.common.connect import connect
from rabbitry.common.local.registry import broker_name, forget_broker
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import dead_letter_queue_name, schedule_lease_queue, schedule_ledger_queue
from rabbitry.producers.periodic import LATE_TICK_GRACE_S, Plan, Schedule, ScheduleEntry, plan
from rabbitry.producers.scheduler import Scheduler
from tests.helpers import command_path, wait_until
from tests.prerequisites import missing
from tests.test_scheduler import drain_ticks

UTC = datetime.UTC
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe", "Asia/Kolkata"]
#: Minute and hour fields, each with the values it names (the brute force does not ask croniter).
MINUTES = {"0": {0}, "30": {30}, "59": {59}, "*/15": {0, 15, 30, 45}, "*/7": set(range(0, 60, 7)), "*": set(range(60))}
HOURS = {"*": set(range(24)), "1": {1}, "2": {2}, "3": {3}, "0-4": {0, 1, 2, 3, 4}, "*/2": set(range(0, 24, 2))}
_WINDOW_S = 30 * 3600  # the walk covers the night +- 30 h: every expression above ticks within a day


def at(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def utc(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, UTC).isoformat()


@functools.cache
def nights(zone_name: str) -> tuple[float, ...]:
    """The instants in 2026 the zone's clocks change (a summer day for a zone without any)."""
    zone = zoneinfo.ZoneInfo(zone_name)
    start = at("2026-01-01T00:00:00+00:00")
    offset = [datetime.datetime.fromtimestamp(start + hour * 3600, zone).utcoffset() for hour in range(8761)]
    changes = []
    for hour in range(1, 8761):
        if offset[hour] != offset[hour - 1]:
            minute = start + (hour - 1) * 3600
            while datetime.datetime.fromtimestamp(minute, zone).utcoffset() == offset[hour - 1]:
                minute += 60
            changes.append(minute)
    return tuple(changes) or (at("2026-06-01T00:00:00+00:00"),)


@functools.cache
def walked_night(zone_name: str, night: float) -> tuple[tuple[float, bool, tuple[datetime.datetime, ...]], ...]:
    """Each UTC minute around ``night``: whether its wall-clock time occurs there for the first time,
    and the wall-clock times it stands for (its own, and those the clocks just went forward over)."""
    zone = zoneinfo.ZoneInfo(zone_name)
    minutes = []
    for moment in range(int(night) - _WINDOW_S, int(night) + _WINDOW_S, 60):
        local = datetime.datetime.fromtimestamp(moment, zone)
        skipped = local.utcoffset() - datetime.datetime.fromtimestamp(moment - 60, zone).utcoffset()
        wall = local.replace(tzinfo=None)
        in_gap = tuple(wall - datetime.timedelta(seconds=s) for s in range(60, int(skipped.total_seconds()) + 1, 60))
        minutes.append((float(moment), not local.fold, (wall, *in_gap)))
    return tuple(minutes)


@functools.cache
def walked_ticks(minutes: str, hours: str, zone_name: str, night: float) -> tuple[float, ...]:
    """The ticks around ``night`` by walking UTC minute by minute: a minute ticks if its wall-clock time
    matches and is that time's first occurrence, or if the clocks just went forward over a time that
    matches."""

    def matches(local: datetime.datetime) -> bool:
        return local.minute in MINUTES[minutes] and local.hour in HOURS[hours]

    return tuple(
        moment
        for moment, first, (wall, *in_gap) in walked_night(zone_name, night)
        if (first and matches(wall)) or any(matches(time) for time in in_gap)
    )


night_cases = st.builds(
    lambda zone, index, minutes, hours, offset: (zone, nights(zone)[index % len(nights(zone))], minutes, hours, offset),
    st.sampled_from(ZONES),
    st.integers(0, 1),
    st.sampled_from(sorted(MINUTES)),
    st.sampled_from(sorted(HOURS)),
    st.integers(-6 * 3600, 6 * 3600),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=night_cases, fraction=st.sampled_from([0.0, 0.5, 59.999]))
def test_next_and_previous_ticks_around_a_clock_change_match_a_minute_by_minute_walk(case, fraction):
    zone, night, minutes, hours, offset = case
    entry = ScheduleEntry("e", "echo", cron=f"{minutes} {hours} * * *", timezone=zone)
    ticks = walked_ticks(minutes, hours, zone, night)
    moment = night + offset + fraction

    assert entry.next_tick(moment) == min(t for t in ticks if t > moment)
    assert entry.previous_tick(moment) == max(t for t in ticks if t <= moment)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(case=night_cases, waited=st.integers(0, 5 * 3600), catch_up=st.booleans())
def test_plan_around_a_clock_change_queues_what_a_minute_by_minute_walk_says(case, waited, catch_up):
    zone, night, minutes, hours, offset = case
    entry = ScheduleEntry("e", "echo", cron=f"{minutes} {hours} * * *", timezone=zone, catch_up=catch_up)
    after = entry.previous_tick(night + offset)  # the last tick queued
    now = after + waited
    due = [t for t in walked_ticks(minutes, hours, zone, night) if after < t <= now]
    on_time = tuple(t for t in due if t >= now - LATE_TICK_GRACE_S)
    missed = [t for t in due if t < now - LATE_TICK_GRACE_S]

    if not missed:
        expected = Plan(on_time)
    elif not catch_up:
        expected = Plan(on_time, len(missed), (missed[0], missed[-1]))
    else:
        expected = Plan((missed[-1], *on_time), len(missed) - 1, (missed[0], missed[-2]) if len(missed) > 1 else None)
    assert plan(entry, after, now) == expected


@pytest.mark.parametrize(
    "zone, night, cron, ticks",
    [
        # The clocks go back at 03:00 CEST to 02:00 CET: 02:30 occurs twice and ticks at the first.
        ("Europe/Berlin", "2026-10-25", "30 2 * * *", ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]),
        # They go forward at 02:00 CET to 03:00 CEST: 02:30 is skipped and ticks at 03:00 CEST.
        ("Europe/Berlin", "2026-03-29", "30 2 * * *", ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]),
        # A quarter-hourly entry in the skipped hour ticks once after it, with 03:00's own tick.
        (
            "Europe/Berlin",
            "2026-03-29",
            "*/15 2,3 * * *",
            ["2026-03-29T01:00:00+00:00", "2026-03-29T01:15:00+00:00", "2026-03-29T01:30:00+00:00"],
        ),
        ("America/New_York", "2026-11-01", "30 1 * * *", ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]),
        ("America/New_York", "2026-03-08", "30 2 * * *", ["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]),
        # The southern hemisphere: back in April (03:00 AEDT to 02:00 AEST), forward in October.
        ("Australia/Sydney", "2026-04-05", "30 2 * * *", ["2026-04-04T15:30:00+00:00", "2026-04-05T16:30:00+00:00"]),
        ("Australia/Sydney", "2026-10-04", "30 2 * * *", ["2026-10-03T16:00:00+00:00", "2026-10-04T15:30:00+00:00"]),
        # Lord Howe moves by half an hour: back at 02:00 to 01:30, forward at 02:00 to 02:30.
        ("Australia/Lord_Howe", "2026-04-05", "45 1 * * *", ["2026-04-04T14:45:00+00:00", "2026-04-05T15:15:00+00:00"]),
        ("Australia/Lord_Howe", "2026-10-04", "15 2 * * *", ["2026-10-03T15:30:00+00:00", "2026-10-04T15:15:00+00:00"]),
    ],
)
def test_a_time_that_occurs_twice_ticks_once_and_a_skipped_one_after_the_gap(zone, night, cron, ticks):
    entry = ScheduleEntry("n", "report", cron=cron, timezone=zone)
    moment = datetime.datetime.fromisoformat(night).replace(tzinfo=zoneinfo.ZoneInfo(zone)).timestamp()

    found = [utc(moment := entry.next_tick(moment)) for _ in range(len(ticks))]  # from midnight on
    assert found == ticks


@dataclasses.dataclass(frozen=True)
class StuckEntry(ScheduleEntry):
    """An entry whose ticks do not advance: its next tick is the one it was given."""

    def next_tick(self, after: float) -> float:
        return after


def test_a_leader_whose_next_tick_is_not_ahead_says_so_and_waits_instead_of_spinning():
    settings = BrokerSettings.from_url(f"local://{uuid.uuid4().hex}")
    scheduler = Scheduler(settings, Schedule("stuck", (StuckEntry("e", "noop", every_s=60.0, queue="stuck"),)))
    thread = threading.Thread(target=scheduler.run)
    try:
        with structlog.testing.capture_logs() as logs:
            thread.start()
            wait_until(
                lambda: any(line["event"] == "schedule_next_tick_not_ahead" for line in logs),
                timeout=20,
                message="the leader's line that its next tick is not ahead",
            )
    finally:
        scheduler.stop.set()
        thread.join(10)
        forget_broker(broker_name(settings.urls[0]))
    assert not thread.is_alive()
    assert scheduler.queued == 0


#: libfaketime, preloaded into the command itself (the ``faketime`` wrapper does not pass SIGTERM on).
LIBFAKETIME = next(
    (
        path
        for path in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1")
        if os.path.exists(path)
    ),
    None,
)


class FakeTimeScheduler:
    """``rabbitry schedule FILE`` under libfaketime, its clock starting at ``start`` (UTC) and running on."""

    def __init__(self, path, env, start: str):
        self._log = tempfile.NamedTemporaryFile("w+", prefix="rabbitry-dst-", suffix=".log", delete=False)
        assert LIBFAKETIME is not None
        self.process = subprocess.Popen(
            [command_path("rabbitry"), "schedule", str(path), "--log-format", "json"],
            env={**env, "TZ": "UTC", "LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"@{start}"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def lines(self) -> list[dict]:
        with open(self._log.name) as log:
            return [json.loads(line) for line in log if line.startswith("{")]

    def events(self, name: str) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == name]

    def output(self) -> str:
        with open(self._log.name) as log:
            return log.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def remove_log(self) -> None:
        os.unlink(self._log.name)


def require_libfaketime() -> None:
    """Skip without libfaketime; fail instead under CI, whose .ci/run installs it."""
    if LIBFAKETIME is None:
        missing("needs libfaketime (Debian's libfaketime package: apt-get install faketime)")


def test_the_scheduler_across_the_fall_back_night_queues_the_repeated_time_once_without_spinning(
    tmp_path, cli_env, broker_settings, unique_name
):
    require_libfaketime()
    name = unique_name.replace(".", "-")
    path = tmp_path / "schedule.toml"
    path.write_text(
        f'name = "{name}"\n'
        f'[[entry]]\nname = "nightly"\ntask = "noop"\ncron = "30 2 * * *"\ntimezone = "Europe/Berlin"\n'
        f'catch_up = true\nqueue = "{name}"\n'
        # A witness ticking every second, on a queue of its own: the leader is alive, and its clock has passed.
        f'[[entry]]\nname = "witness"\ntask = "noop"\nevery = "1s"\nqueue = "{name}-witness"\n'
    )
    witnessed = lambda run, moment: any(line["tick"] >= moment for line in run.events("schedule_tick_queued"))  # noqa: E731
    try:
        # 02:30 CEST (00:30 UTC): the first occurrence ticks.
        first = FakeTimeScheduler(path, cli_env, "2026-10-25 00:29:58")
        try:
            wait_until(lambda: witnessed(first, "2026-10-25T00:30:02Z"), timeout=60, message="02:30 CEST passing")
        finally:
            assert first.stop() == 0, first.output()
            first.remove_log()
        # A restart within the repeated hour; 02:30 CET (01:30 UTC) passes without a tick.
        second = FakeTimeScheduler(path, cli_env, "2026-10-25 01:29:57")
        try:
            wait_until(lambda: second.events("scheduler_leading"), timeout=60, message="the leader")
            process = psutil.Process(second.process.pid)
            before = process.cpu_times()
            wait_until(lambda: witnessed(second, "2026-10-25T01:30:04Z"), timeout=60, message="02:30 CET passing")
            after = process.cpu_times()
            assert not second.events("schedule_next_tick_not_ahead")
        finally:
            assert second.stop() == 0, second.output()
            second.remove_log()
        with connect(broker_settings) as connection:
            nightly = [tick for _, tick in drain_ticks(connection, name)]
            connection.delete_queue(f"{name}-witness")
        assert nightly == [at("2026-10-25T00:30:00+00:00")]  # once, at the first occurrence
        # Seconds of waiting, not of spinning: a leader that spun would have used a core throughout.
        assert (after.user + after.system) - (before.user + before.system) < 3.5
    finally:
        with connect(broker_settings, "rabbitry-tests-cleanup") as connection:
            for queue in [
                schedule_lease_queue(name),
                schedule_ledger_queue(name, "nightly"),
                schedule_ledger_queue(name, "witness"),
                name,
                dead_letter_queue_name(name),
                f"{name}-witness",
                dead_letter_queue_name(f"{name}-witness"),
            ]:
                connection.delete_queue(queue)
