"""Reading ``--since`` and ``--until``: where in a log's history a subscriber starts and stops.

``--since`` takes ``first`` (the oldest line kept), a duration back from now
(``30s``, ``10m``, ``1h30m``, ``2d``, ``1w``) or a point in time in ISO 8601
(``2026-11-28T09:00Z``, ``2026-11-28 09:00:00+01:00``; without a zone it is
local time, as ``journalctl --since`` reads it). ``--until`` takes a
duration from now or a point in time. Pure functions: the caller gives the
time it is now.
"""

import datetime
from dataclasses import dataclass

from rabbitry.common.delays import parse_time
from rabbitry.common.durations import parse_duration
from rabbitry.common.errors import ConfigurationError

#: How much earlier than ``--since`` the stream is asked to start. RabbitMQ finds a timestamp
#: offset by when lines arrived, on the broker's clock, in an index that can lag behind the
#: stream, and attaches at the end of the stream when the time asked for is past the last
#: entry it finds; a line's own timestamp comes from its sender's clock. Starting earlier,
#: and applying ``since`` to each line here, takes in the lines that either would leave out.
LOOKUP_MARGIN_S = 60


@dataclass(frozen=True)
class StartPoint:
    """Where to start reading a history stream.

    ``stream_offset`` is the ``x-stream-offset`` consumer argument; ``since``
    (epoch seconds, or None for everything) is the exact bound the client
    applies to each line's own timestamp.
    """

    stream_offset: object
    since: float | None


def duration_seconds(text: str) -> float | None:
    """Seconds in ``30s``, ``10m``, ``1h30m`` (:func:`rabbitry.common.durations.parse_duration`); None if
    ``text`` is not a duration."""
    try:
        return parse_duration(text)
    except ConfigurationError:
        return None


def point_in_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time (``Z`` or an offset; none is local time); None if it is not one."""
    try:
        return parse_time(text, naive_is_local=True)
    except ConfigurationError:
        return None


def parse_since(text: str, now: float) -> StartPoint:
    """The start point ``--since text`` names; ConfigurationError if it names none."""
    text = text.strip()
    if text == "first":
        return StartPoint("first", None)
    seconds = duration_seconds(text)
    since = now - seconds if seconds is not None else point_in_time(text)
    if since is None:
        raise ConfigurationError(
            f"not a start: {text!r} (give first, a duration such as 30s, 10m or 1h, "
            "or a time such as 2026-11-28T09:00Z)"
        )
    if since > now:
        raise ConfigurationError(f"{text!r} is in the future: history starts in the past")
    # Whole seconds, as AMQP timestamps are.
    # Nothing a stream holds is older than 1970: a start before it is the stream's beginning.
    lookup = datetime.datetime.fromtimestamp(max(int(since) - LOOKUP_MARGIN_S, 0), datetime.UTC)
    return StartPoint(lookup, since)


def parse_until(text: str, now: float) -> float:
    """Epoch seconds of ``--until text``: a duration from now, or a point in time."""
    seconds = duration_seconds(text.strip())
    until = now + seconds if seconds is not None else point_in_time(text)
    if until is None:
        raise ConfigurationError(
            f"not an end: {text!r} (give a duration such as 10m, or a time such as 2026-11-28T10:00Z)"
        )
    return until


def in_window(timestamp: int | None, since: float | None, until: float | None) -> bool | None:
    """Whether a line stamped ``timestamp`` (AMQP: whole seconds) falls in [since, until]: True,
    False before ``since``, None after ``until`` (the end). A line without a timestamp (as the
    tutorials' emitters send them) is taken: the stream's order is all that places it."""
    if timestamp is None:
        return True
    if until is not None and timestamp > until:
        return None
    return since is None or timestamp >= int(since)
