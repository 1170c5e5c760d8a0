"""When a cron expression's ticks fall, read in a time zone, on the nights the clocks change.

A cron expression names wall-clock times (``30 2 * * *``: 02:30 every day). On
most days each wall-clock time is one instant. Twice a year it is not:

- **A time that occurs twice** (the clocks go back: in ``Europe/Berlin`` on
  2026-10-25, 02:00-02:59 comes once in summer time, then again in winter time)
  ticks once, at its *first* occurrence, as cron runs a fixed-time job once.
- **A time that does not occur** (the clocks go forward: on 2026-03-29, 02:00-02:59
  is skipped) ticks at the first instant after the gap (03:00 summer time), as
  Vixie cron and systemd timers do for fixed-time jobs: a nightly job still runs
  that night. All the skipped times of an expression are one tick there, and
  one with the first time after the gap (``0 3``) too.

So the ticks are the instants of the expression's wall-clock times, in order,
each instant once. :func:`next_tick` and :func:`previous_tick` walk the wall
clock with croniter, in naive local times (croniter then knows nothing of time
zones), and turn each time into its instant with :func:`instant_of`.
"""

import datetime
import zoneinfo

from croniter import croniter

UTC = datetime.UTC
#: At most this many wall-clock times are passed over, looking for one whose instant is on the
#: right side (times inside a repeated hour: 60 for a minute's expression, 3600 with seconds).
_MAX_PASSED_OVER = 100_000


def wall_time(moment: float, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """The naive wall-clock time in ``zone`` at POSIX time ``moment`` (its ``fold`` kept)."""
    return datetime.datetime.fromtimestamp(moment, zone).replace(tzinfo=None)


def instant_of(local: datetime.datetime, zone: zoneinfo.ZoneInfo) -> float:
    """The POSIX time a naive wall-clock time in ``zone`` ticks at.

    A time that occurs twice is its first occurrence; one skipped by the clocks
    going forward is the first instant after the gap.
    """
    first = local.replace(tzinfo=zone, fold=0)
    moment = first.timestamp()
    if wall_time(moment, zone).replace(fold=0) == local.replace(fold=0):
        return moment  # the time exists (for fold=0 zoneinfo gives the first of two occurrences)
    # In a gap, fold=0 reads the time with the offset before the change: an instant after the
    # change; fold=1 with the offset after it: an instant before. The change lies between.
    before = local.replace(tzinfo=zone, fold=1).timestamp()
    low, high = min(before, moment), max(before, moment)
    offset_after = datetime.datetime.fromtimestamp(moment, zone).utcoffset()
    while high - low > 1:  # clocks change at whole seconds
        middle = (low + high) // 2
        if datetime.datetime.fromtimestamp(middle, zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return high


def next_tick(expression: str, zone: zoneinfo.ZoneInfo, after: float) -> float:
    """The first tick of the cron ``expression`` in ``zone`` strictly after POSIX time ``after``."""
    # Wall times before the wall time at ``after`` tick at or before it; ones after, mostly after
    # it (not those inside a repeated hour, when ``after`` is in its second occurrence).
    times = croniter(expression, wall_time(after, zone).replace(fold=0))
    for _ in range(_MAX_PASSED_OVER):
        tick = instant_of(times.get_next(datetime.datetime), zone)
        if tick > after:
            return tick
    raise ValueError(f"no tick of {expression!r} after {after} within {_MAX_PASSED_OVER} wall-clock times")


def previous_tick(expression: str, zone: zoneinfo.ZoneInfo, at_or_before: float) -> float:
    """The last tick of the cron ``expression`` in ``zone`` at or before POSIX time ``at_or_before``."""
    local = wall_time(at_or_before, zone)
    start = local.replace(fold=0)
    if local.fold:  # the second occurrence: the first of the later wall times (up to an hour on) has passed
        repeated = local.replace(tzinfo=zone).timestamp() - local.replace(tzinfo=zone, fold=0).timestamp()
        start += datetime.timedelta(seconds=repeated)
    # croniter's get_prev is strictly before its start: start just after, so a tick at the instant counts.
    times = croniter(expression, start + datetime.timedelta(microseconds=1))
    for _ in range(_MAX_PASSED_OVER):
        tick = instant_of(times.get_prev(datetime.datetime), zone)
        if tick <= at_or_before:
            return tick
    raise ValueError(f"no tick of {expression!r} before {at_or_before} within {_MAX_PASSED_OVER} wall-clock times")
