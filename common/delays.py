"""Delays held by the broker: how long, and the route a delayed message takes.

A delay of n whole seconds is written in binary, one routing-key word per
delay level, highest first: 90 s is ``…0.1.0.1.1.0.1.0`` (64 + 16 + 8 + 2),
followed by the work queue's name. The message enters at the level of its
lowest 1 bit and waits 2**k seconds in each level whose bit is 1, going up
and skipping the others, then reaches its work queue (see
:func:`rabbitry.common.topology.delay_levels` for the exchanges and queues).
The functions here are pure: they decide the route, the transport carries it.
"""

import datetime
import re
import time

from rabbitry.common.errors import ConfigurationError, MessageError
from rabbitry.common.topology import DELAY_LEVELS, delay_level_name

#: The longest delay the levels can hold, in seconds (97 days).
MAX_DELAY_S = 2**DELAY_LEVELS - 1
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT_S = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def delay_seconds(delay_s: float) -> int:
    """The whole seconds the levels hold for a delay of ``delay_s``: rounded to the nearest,
    so a delayed task starts within half a second of its due time, plus the broker's hops."""
    seconds = int(delay_s + 0.5)
    if seconds > MAX_DELAY_S:
        raise MessageError(
            f"a delay can be at most {MAX_DELAY_S:,} s ({MAX_DELAY_S / 86400:.0f} days), not {delay_s:,.0f} s"
        )
    return max(seconds, 0)


def delay_route(seconds: int, queue: str) -> tuple[str, str]:
    """The exchange and routing key that hold a message ``seconds`` (at least 1) for ``queue``."""
    bits = format(seconds, f"0{DELAY_LEVELS}b")
    lowest = (seconds & -seconds).bit_length() - 1
    return delay_level_name(lowest), ".".join(bits) + "." + queue


def levels_of(seconds: int) -> list[int]:
    """The levels a delay of ``seconds`` waits in, in order: the shortest first."""
    return [level for level in range(DELAY_LEVELS) if seconds >> level & 1]


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``24h``, ``7d``, ``2w``, ``1h30m`` or a bare ``90``.

    Raises ConfigurationError for anything else, negative durations included.
    """
    compact = text.strip().lower().replace(" ", "")
    try:
        return float(compact)  # bare seconds
    except ValueError:
        pass
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise ConfigurationError(f"{text!r} is not a duration: write it as 90s, 10m, 24h, 7d or 1h30m")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def parse_time(text: str, naive_is_local: bool = False) -> float:
    """The POSIX time of an ISO 8601 date and time, such as ``2026-12-01T09:00:00Z``.

    ``Z`` or an offset such as ``+01:00`` say which zone; a time without one
    is UTC (as Celery takes a naive ETA), or local time with
    ``naive_is_local`` (as ``journalctl --since`` reads it). Raises
    ConfigurationError for anything else.
    """
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ConfigurationError(f"{text!r} is not an ISO 8601 time: write it as 2026-12-01T09:00:00Z") from None
    if naive_is_local and moment.tzinfo is None:
        moment = moment.astimezone()
    return as_posix_time(moment)


def as_posix_time(moment: datetime.datetime) -> float:
    """``moment`` as POSIX time; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def due_time(
    delay: float | datetime.timedelta | None = None,
    eta: float | datetime.datetime | None = None,
    now: float | None = None,
) -> float | None:
    """The POSIX time a task asked to run ``delay`` from ``now``, or at ``eta``, is due; None for now.

    ``delay`` is seconds or a timedelta, ``eta`` a POSIX time or a datetime
    (naive: UTC). Giving both, or a negative delay, is a ConfigurationError.
    """
    if delay is not None and eta is not None:
        raise ConfigurationError("give a delay or an eta, not both")
    now = time.time() if now is None else now
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else float(delay)
        if not seconds >= 0:
            raise ConfigurationError(f"a delay must be a number of seconds, at least 0, not {delay!r}")
        return now + seconds
    if eta is not None:
        return as_posix_time(eta) if isinstance(eta, datetime.datetime) else float(eta)
    return None
