"""Streams in the in-process broker: an append-only log, bounded, read from any offset.

A queue declared with ``x-queue-type: stream`` keeps what it receives in a
:class:`StreamLog` instead of handing each message to one consumer: every
consumer reads the log from the offset its ``x-stream-offset`` consumer
argument names, at its own pace, and acknowledging only gives it credit, as
on RabbitMQ. Each delivery carries its offset in the ``x-stream-offset``
header.

Retention follows the queue's ``x-max-length-bytes`` and ``x-max-age``.
RabbitMQ drops whole segment files, so it keeps somewhat more than the limit;
this log, kept in memory, drops message by message, and never keeps more than
:data:`DEFAULT_MAX_ENTRIES` messages whatever the limits say.
"""

import collections
import dataclasses
import datetime
import time
from dataclasses import dataclass

from rabbitry.common.errors import ConfigurationError
from rabbitry.common.local.refusals import PRECONDITION_FAILED, refused
from rabbitry.common.retention import MAX_AGE, MAX_LENGTH_BYTES, age_seconds
from rabbitry.common.transport.contract import OutgoingMessage

STREAM_OFFSET = "x-stream-offset"
#: The most messages one in-process stream keeps: it lives in memory.
DEFAULT_MAX_ENTRIES = 100_000


def check_stream_consumer(auto_ack: bool, prefetch: int) -> None:
    """PRECONDITION_FAILED unless a stream's consumer acknowledges and has a prefetch, as RabbitMQ asks."""
    if auto_ack or not prefetch:
        raise refused(PRECONDITION_FAILED, "a stream consumer needs manual acknowledgement and a prefetch (basic.qos)")


@dataclass(slots=True)
class StreamEntry:
    """One message of a stream, at its offset."""

    offset: int
    stored_at: float  # time.time() when the stream received it
    message: OutgoingMessage  # with its offset in the x-stream-offset header
    size: int


class StreamLog:
    """The messages of one stream, oldest first, trimmed to its retention."""

    def __init__(self, arguments: dict):
        self.max_bytes = arguments.get(MAX_LENGTH_BYTES)
        self.max_age_s = age_seconds(arguments[MAX_AGE]) if MAX_AGE in arguments else None
        self.entries: collections.deque[StreamEntry] = collections.deque()
        self.next_offset = 0
        self.bytes = 0

    @property
    def first_offset(self) -> int:
        """Where the log begins now: older offsets are gone."""
        return self.entries[0].offset if self.entries else self.next_offset

    def append(self, message: OutgoingMessage, now: float | None = None) -> StreamEntry:
        """Store ``message`` at the next offset, then drop what retention no longer keeps."""
        now = time.time() if now is None else now
        offset = self.next_offset
        stored = dataclasses.replace(message, headers={**(message.headers or {}), STREAM_OFFSET: offset})
        entry = StreamEntry(offset, now, stored, len(message.body))
        self.entries.append(entry)
        self.next_offset = offset + 1
        self.bytes += entry.size
        self.trim(now)
        return entry

    def trim(self, now: float) -> None:
        """Drop the oldest messages beyond the byte, age and count limits (the newest always stays)."""
        entries = self.entries
        while len(entries) > 1 and (
            len(entries) > DEFAULT_MAX_ENTRIES
            or (self.max_bytes is not None and self.bytes > self.max_bytes)
            or (self.max_age_s is not None and entries[0].stored_at < now - self.max_age_s)
        ):
            self.bytes -= entries.popleft().size

    def entry_at(self, offset: int) -> StreamEntry | None:
        """The message at ``offset``, if the log holds it."""
        index = offset - self.first_offset
        if 0 <= index < len(self.entries):
            return self.entries[index]
        return None

    def start_offset(self, spec, now: float | None = None) -> int:
        """The offset a consumer starts from, for an ``x-stream-offset`` argument (default "next")."""
        now = time.time() if now is None else now
        if spec is None or spec == "next":
            return self.next_offset
        if spec == "first":
            return self.first_offset
        if spec == "last":
            return max(self.first_offset, self.next_offset - 1)
        if isinstance(spec, bool):
            raise refused(PRECONDITION_FAILED, f"invalid {STREAM_OFFSET}: {spec!r}")
        if isinstance(spec, int):
            return max(spec, self.first_offset)
        if isinstance(spec, datetime.datetime):
            since = spec.timestamp()
        elif isinstance(spec, str):
            try:
                since = now - age_seconds(spec)
            except ConfigurationError:
                raise refused(PRECONDITION_FAILED, f"invalid {STREAM_OFFSET}: {spec!r}") from None
        else:
            raise refused(PRECONDITION_FAILED, f"invalid {STREAM_OFFSET}: {spec!r}")
        return next((entry.offset for entry in self.entries if entry.stored_at >= since), self.next_offset)
