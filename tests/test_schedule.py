"""Schedules as data: the file, each entry's ticks in its time zone, and which ticks to queue."""

import datetime
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rabbitry.common.errors import ConfigurationError, ExitCode
from rabbitry.producers.periodic import LATE_TICK_GRACE_S, Plan, ScheduleEntry, plan, schedule_from

UTC = datetime.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(*fields, zone=UTC) -> float:
    return datetime.datetime(*fields, tzinfo=zone).timestamp()


def test_interval_ticks_fall_on_whole_multiples_of_the_interval():
    every_minute = ScheduleEntry("e", "echo", every_s=60)

    assert every_minute.next_tick(at(2026, 12, 4, 9, 0, 30)) == at(2026, 12, 4, 9, 1)
    assert every_minute.next_tick(at(2026, 12, 4, 9, 1)) == at(2026, 12, 4, 9, 2)  # strictly after
    assert every_minute.previous_tick(at(2026, 12, 4, 9, 1)) == at(2026, 12, 4, 9, 1)
    assert every_minute.count_ticks(at(2026, 12, 4, 9), at(2026, 12, 4, 10)) == 60


def test_cron_ticks_are_read_in_the_entrys_time_zone_in_winter_and_in_summer():
    nightly = ScheduleEntry("n", "report", cron="0 2 * * *", timezone="Europe/Berlin")

    winter = nightly.next_tick(at(2026, 12, 4, 12))
    summer = nightly.next_tick(at(2026, 7, 4, 12))

    assert winter == at(2026, 12, 5, 1)  # 02:00 CET
    assert summer == at(2026, 7, 5, 0)  # 02:00 CEST
    assert nightly.previous_tick(winter) == winter
    assert nightly.count_ticks(winter, winter + 7 * 86400) == 7


def ticks_from(entry: ScheduleEntry, after: float, count: int) -> list[float]:
    ticks = [entry.next_tick(after)]
    while len(ticks) < count:
        ticks.append(entry.next_tick(ticks[-1]))
    return ticks


def test_cron_ticks_across_the_spring_gap_run_once_at_the_first_instant_after_it():
    # New York, 2026-03-08: at 02:00 EST (07:00 UTC) the clocks go forward to 03:00 EDT.
    nightly = ScheduleEntry("n", "report", cron="30 2 * * *", timezone="America/New_York")

    ticks = ticks_from(nightly, at(2026, 3, 6, 12), 4)

    assert ticks == [
        at(2026, 3, 7, 7, 30),  # 02:30 EST
        at(2026, 3, 8, 7, 0),  # 02:30 does not occur: 03:00 EDT, the first instant after the gap
        at(2026, 3, 9, 6, 30),  # 02:30 EDT
        at(2026, 3, 10, 6, 30),
    ]
    assert [nightly.previous_tick(tick) for tick in ticks] == ticks
    assert nightly.previous_tick(at(2026, 3, 8, 6, 59)) == ticks[0]  # 01:59 EST: the night's tick is still ahead
    assert nightly.count_ticks(at(2026, 3, 5, 12), at(2026, 3, 12, 12)) == 7  # one a night, the short one too


def test_cron_ticks_across_the_autumn_overlap_run_once_at_the_first_occurrence():
    # New York, 2026-11-01: at 02:00 EDT (06:00 UTC) the clocks go back to 01:00 EST, so 01:00-01:59 occurs twice.
    nightly = ScheduleEntry("n", "report", cron="30 1 * * *", timezone="America/New_York")

    ticks = ticks_from(nightly, at(2026, 10, 30, 12), 3)

    assert ticks == [
        at(2026, 10, 31, 5, 30),  # 01:30 EDT
        at(2026, 11, 1, 5, 30),  # 01:30 EDT, the first occurrence; not again at 01:30 EST (06:30 UTC)
        at(2026, 11, 2, 6, 30),  # 01:30 EST
    ]
    second_occurrence = at(2026, 11, 1, 6, 30)
    assert nightly.next_tick(second_occurrence - 1) == ticks[2]
    assert nightly.previous_tick(second_occurrence) == ticks[1]
    assert nightly.count_ticks(at(2026, 11, 1, 4), at(2026, 11, 2, 4)) == 1  # midnight to midnight, 25 hours


def test_an_hourly_cron_in_london_ticks_23_times_on_the_short_day_and_24_on_the_long_one():
    hourly = ScheduleEntry("h", "report", cron="0 * * * *", timezone="Europe/London")

    # 2026-03-29: at 01:00 GMT the clocks go forward to 02:00 BST; local midnight to midnight is 23 hours.
    # 01:00 does not occur and ticks with 02:00 BST, the first instant after the gap: one tick an hour.
    spring = ticks_from(hourly, at(2026, 3, 29, 0), 23)
    assert spring == [at(2026, 3, 29, hour) for hour in range(1, 24)]
    assert hourly.count_ticks(at(2026, 3, 29, 0), at(2026, 3, 29, 23)) == 23
    # 2026-10-25: at 02:00 BST the clocks go back to 01:00 GMT; the day is 25 hours and the wall
    # clock reads 01:00 twice (00:00 and 01:00 UTC): it ticks at the first, so 24 ticks, not 25.
    autumn = ticks_from(hourly, at(2026, 10, 24, 23), 24)
    assert autumn == [at(2026, 10, 25, 0)] + [at(2026, 10, 25, hour) for hour in range(2, 24)] + [at(2026, 10, 26, 0)]
    assert hourly.count_ticks(at(2026, 10, 24, 23), at(2026, 10, 26, 0)) == 24


@settings(max_examples=200, deadline=None)
@given(
    every=st.sampled_from([1, 1.5, 7, 60, 3600]),
    start=st.floats(1.6e9, 1.9e9),
    lateness=st.lists(st.floats(-0.9, 1.0), min_size=1, max_size=30),
)
def test_a_scheduler_waking_early_or_late_within_the_grace_queues_every_tick_once_in_order(every, start, lateness):
    entry = ScheduleEntry("e", "echo", every_s=every)
    after, queued = start, []
    for late in lateness:  # wakes before its next tick is due (late < 0), or up to the grace after it
        now = entry.next_tick(after) + (late * every if late < 0 else late * LATE_TICK_GRACE_S)
        decided = plan(entry, after, now)
        assert decided.skipped == 0
        queued += decided.ticks
        after = queued[-1] if queued else after
        assert entry.next_tick(after) > now  # nothing due is left behind

    first = entry.next_tick(start)
    assert queued == [first + n * every for n in range(len(queued))]  # each tick once, in order, none left out


def test_ticks_missed_beyond_the_grace_are_skipped_or_the_latest_is_caught_up():
    hourly = ScheduleEntry("h", "echo", every_s=3600)
    caught_up = ScheduleEntry("h", "echo", every_s=3600, catch_up=True)
    last = at(2026, 12, 4, 0)
    now = at(2026, 12, 4, 5, 30)  # 01:00 to 05:00 missed

    assert plan(hourly, last, now) == Plan((), 5, (at(2026, 12, 4, 1), at(2026, 12, 4, 5)))
    assert plan(caught_up, last, now) == Plan((at(2026, 12, 4, 5),), 4, (at(2026, 12, 4, 1), at(2026, 12, 4, 4)))
    late = at(2026, 12, 4, 1) + LATE_TICK_GRACE_S - 1  # late, not missed: a takeover, a pause
    assert plan(hourly, last, late) == Plan((at(2026, 12, 4, 1),))


def test_a_tick_less_than_a_millisecond_past_the_grace_is_late_not_missed():
    # Ticks closer than a millisecond are the same instant: such a tick was once taken as missed while
    # none was, and catch_up queued again the tick already queued, with -1 ticks skipped.
    caught_up = ScheduleEntry("h", "echo", every_s=3600, catch_up=True)
    last = at(2026, 12, 4, 0)
    now = at(2026, 12, 4, 1) + LATE_TICK_GRACE_S + 0.0005

    assert plan(caught_up, last, now) == Plan((at(2026, 12, 4, 1),))


SCHEDULE = {
    "name": "reports",
    "entry": [
        {
            "name": "nightly",
            "task": "report",
            "cron": "0 2 * * *",
            "timezone": "Europe/Berlin",
            "args": ["daily"],
            "catch_up": True,
        },
        {"name": "beat", "task": "echo", "every": "30s", "queue": "other"},
    ],
}


def test_a_schedule_file_gives_each_entry_its_task_time_and_queue():
    loaded = schedule_from(SCHEDULE)

    nightly, beat = loaded.entries
    assert loaded.name == "reports"
    assert (nightly.cron, nightly.timezone, nightly.args, nightly.catch_up, nightly.queue) == (
        "0 2 * * *",
        "Europe/Berlin",
        ("daily",),
        True,
        "task_queue",
    )
    assert (beat.every_s, beat.timezone, beat.queue, beat.catch_up) == (30, "UTC", "other", False)
    assert beat.message("reports", at(2026, 12, 4, 9)).id == "reports:beat@2026-12-04T09:00:00Z"


@pytest.mark.parametrize(
    "change, error",
    [
        ({"cron": "61 * * * *"}, "not a cron expression"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": "30s"}, "give 'cron' or 'every', one of them"),
        ({"cron": None, "every": "0.5s"}, "at least 1 s"),
        ({"cron": None, "every": "often"}, "not a duration"),
        ({"args": {"a": 1}}, "'args' must be an array"),
        ({"name": "night.ly"}, "without '.'"),
        ({"queue": "a.#"}, "'*' or '#' as a word"),
        ({"retries": 3}, "unknown key(s) retries"),
        ({"args": [datetime.date(2026, 1, 1)]}, "not JSON"),
    ],
)
def test_a_mistake_in_an_entry_names_the_entry_and_what_is_wrong(change, error):
    entry = {key: value for key, value in {**SCHEDULE["entry"][0], **change}.items() if value is not None}

    with pytest.raises(ConfigurationError, match="entry 1") as raised:
        schedule_from({"entry": [entry]})
    assert error in str(raised.value)


def test_entry_names_are_unique_and_a_schedule_has_entries():
    with pytest.raises(ConfigurationError, match="used twice: beat"):
        schedule_from({"entry": [SCHEDULE["entry"][1], SCHEDULE["entry"][1]]})
    with pytest.raises(ConfigurationError, match="no \\[\\[entry\\]\\]"):
        schedule_from({"name": "empty"})


def test_schedule_check_shows_the_next_ticks_and_bad_files_are_one_line_errors(run, tmp_path):
    good, bad, broken = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "broken.toml"
    good.write_text('[[entry]]\nname = "beat"\ntask = "echo"\nevery = "1h"\n')
    bad.write_text('[[entry]]\nname = "beat"\ntask = "echo"\ncron = "every day"\n')
    broken.write_text("[[entry]\n")

    checked = run("rabbitry", "schedule", "--check", str(good))
    results = [run("rabbitry", "schedule", str(path)) for path in (bad, broken, tmp_path / "none.toml")]

    assert checked.returncode == 0, checked.stderr
    assert "beat: echo on task_queue, every 3600 s; next " in checked.stdout
    assert checked.stdout.count(":00:00+00:00") == 3
    for result, error in zip(results, ["not a cron expression", "not valid TOML", "cannot read schedule"], strict=True):
        assert result.returncode == ExitCode.USAGE and "Traceback" not in result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert error in line
