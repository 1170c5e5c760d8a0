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
import math
import time

# parse_duration lives in common/durations.py; read here too by code written when it lived here.
from rabbitry.common.durations import parse_duration as parse_duration
from rabbitry.common.errors import ConfigurationError, InvalidDelay
from rabbitry.common.topology import DELAY_LEVELS, delay_level_name

#: The longest delay the levels can hold, in seconds (97 days).
MAX_DELAY_S = 2**DELAY_LEVELS - 1


def delay_seconds(delay_s: float) -> int:
    """The whole seconds the levels hold for a delay of ``delay_s``: rounded to the nearest,
    so a delayed task starts within half a second of its due time, plus the broker's hops.
    A delay in the past is 0; raises InvalidDelay for one that is not finite or too long."""
    if not delay_s < MAX_DELAY_S + 0.5:  # NaN and infinity fail this too
        raise InvalidDelay(
            f"a delay can be at most {MAX_DELAY_S:,} s ({MAX_DELAY_S / 86400:.0f} days), not {_seconds(delay_s)}"
        )
    return max(int(delay_s + 0.5), 0)


def _seconds(seconds: float) -> str:
    return f"{seconds:,.0f} s" if math.isfinite(seconds) else repr(seconds)


def delay_route(seconds: int, queue: str) -> tuple[str, str]:
    """The exchange and routing key that hold a message ``seconds`` (at least 1) for ``queue``."""
    bits = format(seconds, f"0{DELAY_LEVELS}b")
    lowest = (seconds & -seconds).bit_length() - 1
    return delay_level_name(lowest), ".".join(bits) + "." + queue


def levels_of(seconds: int) -> list[int]:
    """The levels a delay of ``seconds`` waits in, in order: the shortest first."""
    return [level for level in range(DELAY_LEVELS) if seconds >> level & 1]


def parse_time(text: str, naive_is_local: bool = False) -> float:
    """The POSIX time of an ISO 8601 date and time, such as ``2026-12-01T09:00:00Z``.

    ``Z`` or an offset such as ``+01:00`` say which zone; a time without one
    is UTC (as Celery takes a naive ETA), or local time with
    ``naive_is_local`` (as ``journalctl --since`` reads it). Raises
    ConfigurationError for anything else.
    """
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
        if naive_is_local and moment.tzinfo is None:
            moment = moment.astimezone()
        return as_posix_time(moment)
    except (ValueError, OverflowError):  # not a time; or one at the edge of the calendar, past it in UTC
        raise ConfigurationError(f"{text!r} is not an ISO 8601 time: write it as 2026-12-01T09:00:00Z") from None


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
    (naive: UTC). Anything else, both at once, a negative delay, or a task due
    more than :data:`MAX_DELAY_S` from now, raises :class:`InvalidDelay`, the one
    error of a bad delay (a ValueError, and a ConfigurationError).
    """
    if delay is not None and eta is not None:
        raise InvalidDelay("give a delay or an eta, not both")
    now = time.time() if now is None else now
    if delay is not None:
        seconds = _number(delay.total_seconds() if isinstance(delay, datetime.timedelta) else delay)
        if seconds is None or not seconds >= 0:
            raise InvalidDelay(f"a delay must be a number of seconds, at least 0, not {delay!r}")
        due = now + seconds
    elif eta is not None:
        due = as_posix_time(eta) if isinstance(eta, datetime.datetime) else _number(eta)  # type: ignore[assignment]
        if due is None or not math.isfinite(due):
            raise InvalidDelay(f"an eta must be a datetime or a POSIX time, not {eta!r}")
    else:
        return None
    delay_seconds(due - now)  # raises for a task due too late for the levels to hold
    return due


def _number(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool, not text), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
