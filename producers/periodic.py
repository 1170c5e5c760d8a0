"""Periodic schedules: the file of entries, when each entry's ticks fall, and which to queue.

A schedule is a TOML file of entries, each a task to queue on a cron
expression or at a fixed interval::

    name = "reports"                # the schedule's name on the broker (default "default")

    [[entry]]
    name = "nightly-report"
    task = "build_report"
    cron = "0 2 * * *"              # croniter's syntax, in the entry's time zone (DST nights: cron_ticks)
    timezone = "Europe/Berlin"      # IANA; UTC if not given
    args = ["daily"]
    kwargs = {}
    queue = "task_queue"
    catch_up = true                 # queue one missed tick on start-up

    [[entry]]
    name = "heartbeat"
    task = "echo"
    every = "30s"                   # ticks at whole multiples of 30 s since 1970-01-01 UTC

Everything here is pure: :mod:`rabbitry.producers.scheduler` holds the lease
and queues what :func:`plan` decides.
"""

import dataclasses
import datetime
import math
import tomllib
import zoneinfo
from typing import Any

from croniter import CroniterError, croniter

from rabbitry.common.delays import parse_duration
from rabbitry.common.errors import ConfigurationError, MessageError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import DEFAULT_TASK_QUEUE, check_work_queue_name
from rabbitry.common.transport.routing import check_routing_key
from rabbitry.producers import cron_ticks

DEFAULT_SCHEDULE_NAME = "default"
#: A tick that falls due while no scheduler can queue it at once (a takeover, a pause) is
#: still queued if it is at most this late; older ones are missed, and ``catch_up`` decides.
LATE_TICK_GRACE_S = 5.0
#: The shortest interval an entry may have.
MIN_INTERVAL_S = 1.0
#: Ticks are at least a second apart, and at whole milliseconds: closer than this is the same instant.
_EPSILON_S = 1e-3
#: Missed ticks are counted up to this many, for the log line that says they were skipped.
_COUNT_MISSED_UP_TO = 10_000
_ENTRY_KEYS = {"name", "task", "cron", "every", "timezone", "args", "kwargs", "queue", "catch_up"}


@dataclasses.dataclass(frozen=True)
class ScheduleEntry:
    """One task queued on a cron expression or at an interval."""

    name: str
    task: str
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    args: tuple = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    queue: str = DEFAULT_TASK_QUEUE
    catch_up: bool = False

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The entry's time zone."""
        return zoneinfo.ZoneInfo(self.timezone)

    def next_tick(self, after: float) -> float:
        """The first tick strictly after POSIX time ``after``."""
        if self.every_s is not None:
            return (self._index(after, self.every_s) + 1) * self.every_s
        assert self.cron is not None  # an entry has cron or every_s, one of them
        return cron_ticks.next_tick(self.cron, self.zone, after)

    def previous_tick(self, at_or_before: float) -> float:
        """The last tick at or before POSIX time ``at_or_before``."""
        if self.every_s is not None:
            return self._index(at_or_before, self.every_s) * self.every_s
        assert self.cron is not None  # an entry has cron or every_s, one of them
        return cron_ticks.previous_tick(self.cron, self.zone, at_or_before)

    def count_ticks(self, after: float, until: float) -> int:
        """How many ticks fall in (``after``, ``until``], counted up to a cap for cron entries."""
        if until <= after:
            return 0
        if self.every_s is not None:
            return self._index(until, self.every_s) - self._index(after, self.every_s)
        count, tick = 0, after
        while count < _COUNT_MISSED_UP_TO and (tick := self.next_tick(tick)) <= until:
            count += 1
        return count

    def _index(self, moment: float, every_s: float) -> int:
        """The number of the last interval tick at or before ``moment`` (tick n is at n * every_s)."""
        index = math.floor(moment / every_s)
        if (index + 1) * every_s <= moment + 1e-6:  # the division fell just short of a whole tick
            index += 1
        return index

    def message(self, schedule: str, tick: float) -> TaskMessage:
        """The task this entry queues for ``tick``; its id names the schedule, the entry and the tick."""
        moment = datetime.datetime.fromtimestamp(tick, datetime.UTC)
        stamp = moment.isoformat(timespec="milliseconds" if tick % 1 else "seconds").replace("+00:00", "Z")
        return TaskMessage(self.task, list(self.args), dict(self.kwargs), id=f"{schedule}:{self.name}@{stamp}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A named set of entries."""

    name: str
    entries: tuple[ScheduleEntry, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to queue now for one entry: ``ticks`` in order, and how many missed ones were skipped
    (``skipped``, the first and last of them in ``skipped_span``)."""

    ticks: tuple[float, ...] = ()
    skipped: int = 0
    skipped_span: tuple[float, float] | None = None


def plan(entry: ScheduleEntry, after: float, now: float, grace: float = LATE_TICK_GRACE_S) -> Plan:
    """The ticks of ``entry`` to queue at ``now``, the last one queued being at ``after``.

    Every tick in (``after``, ``now``] at most ``grace`` late is queued. Older
    ones were missed: with ``catch_up`` the latest of them is queued, once, and
    the rest are skipped.
    """
    late_from = now - grace
    first = entry.next_tick(after)
    if first > now or first <= after:  # none due, or ticks that do not advance: nothing to queue
        return Plan()
    ticks: list[float] = []
    tick = first if first >= late_from else entry.next_tick(late_from - _EPSILON_S)
    while tick <= now and (not ticks or tick > ticks[-1]):  # each tick once, and never a loop on one
        ticks.append(tick)
        tick = entry.next_tick(tick)
    if first > late_from - _EPSILON_S:  # on time, as the loop above counts it: nothing missed
        return Plan(tuple(ticks))
    latest_missed = entry.previous_tick(late_from - _EPSILON_S)
    missed = entry.count_ticks(after, latest_missed)
    if not entry.catch_up:
        return Plan(tuple(ticks), missed, (first, latest_missed))
    skipped_span = (first, entry.previous_tick(latest_missed - _EPSILON_S)) if missed > 1 else None
    return Plan((latest_missed, *ticks), missed - 1, skipped_span)


def load_schedule(path: str, name: str | None = None) -> Schedule:
    """Read and check a schedule file; raises ConfigurationError naming what is wrong and where."""
    try:
        with open(path, "rb") as source:
            data = tomllib.load(source)
    except OSError as error:
        raise ConfigurationError(f"cannot read schedule {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"schedule {path} is not valid TOML: {error}") from None
    return schedule_from(data, name, where=path)


def schedule_from(data: dict, name: str | None = None, where: str = "schedule") -> Schedule:
    """A schedule from parsed TOML (``name`` overrides the file's own)."""
    unknown = set(data) - {"name", "entry"}
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} (a schedule has 'name' and [[entry]] tables)"
        )
    schedule_name = name or data.get("name", DEFAULT_SCHEDULE_NAME)
    _check_name(schedule_name, f"{where}: the schedule's name")
    raw = data.get("entry", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{where}: no [[entry]] in the schedule")
    entries = tuple(_entry(item, f"{where}, entry {number}") for number, item in enumerate(raw, 1))
    names = [entry.name for entry in entries]
    twice = sorted({entry for entry in names if names.count(entry) > 1})
    if twice:
        raise ConfigurationError(f"{where}: entry name(s) used twice: {', '.join(twice)}")
    return Schedule(schedule_name, entries)


def _entry(item: Any, where: str) -> ScheduleEntry:
    if not isinstance(item, dict):
        raise ConfigurationError(f"{where}: an entry is a table")
    unknown = set(item) - _ENTRY_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("name", "task"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise ConfigurationError(f"{where}: '{key}' must be a non-empty string")
    where = f"{where} ({item['name']})"
    _check_name(item["name"], f"{where}: the entry's name")
    if ("cron" in item) == ("every" in item):
        raise ConfigurationError(f"{where}: give 'cron' or 'every', one of them")
    timezone = item.get("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"{where}: unknown time zone {timezone!r} (an IANA name, such as 'Europe/Berlin')"
        ) from None
    every_s = None
    if "every" in item:
        every = item["every"]
        try:
            every_s = (
                float(every)
                if isinstance(every, (int, float)) and not isinstance(every, bool)
                else parse_duration(str(every))
            )
        except ConfigurationError as error:
            raise ConfigurationError(f"{where}: 'every': {error}") from None
        if every_s < MIN_INTERVAL_S:
            raise ConfigurationError(f"{where}: 'every' must be at least {MIN_INTERVAL_S:g} s")
    else:
        if not isinstance(item["cron"], str) or not croniter.is_valid(item["cron"]):
            raise ConfigurationError(
                f"{where}: {item['cron']!r} is not a cron expression "
                "(five fields: minute hour day-of-month month day-of-week)"
            )
    args, kwargs = item.get("args", []), item.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ConfigurationError(f"{where}: 'args' must be an array and 'kwargs' a table")
    queue = item.get("queue", DEFAULT_TASK_QUEUE)
    if not isinstance(queue, str):
        raise ConfigurationError(f"{where}: 'queue' must be a string")
    try:
        check_work_queue_name(queue)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: 'queue': {error}") from None
    if not isinstance(item.get("catch_up", False), bool):
        raise ConfigurationError(f"{where}: 'catch_up' must be true or false")
    entry = ScheduleEntry(
        item["name"],
        item["task"],
        item.get("cron"),
        every_s,
        timezone,
        tuple(args),
        kwargs,
        queue,
        item.get("catch_up", False),
    )
    try:
        entry.message(DEFAULT_SCHEDULE_NAME, 0.0).encode()  # arguments TOML has and JSON has not (a date)
        entry.next_tick(0.0)
    except (CroniterError, MessageError) as error:
        raise ConfigurationError(f"{where}: {error}") from None
    return entry


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or set(name) & set("*#. "):
        raise ConfigurationError(f"{what} must be a non-empty string without '.', '*', '#' or spaces")
    check_routing_key(name, what)
