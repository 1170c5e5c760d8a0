"""How long a log exchange's history is kept: the retention of its stream, as RabbitMQ reads it.

A stream drops its oldest segment files once they are older than
``x-max-age`` or once it is larger than ``x-max-length-bytes``. It checks
when a segment fills up, and drops only whole segments: the segment size
(``x-stream-max-segment-size-bytes``, 500 MB in RabbitMQ by default) is the
grain of retention, so rabbitry makes it a tenth of ``--max-bytes`` (at most
RabbitMQ's default), and a small limit is honoured closely.
"""

import re
from dataclasses import dataclass

from rabbitry.common.errors import ConfigurationError

QUEUE_TYPE = "x-queue-type"
MAX_AGE = "x-max-age"
MAX_LENGTH_BYTES = "x-max-length-bytes"
MAX_SEGMENT_SIZE_BYTES = "x-stream-max-segment-size-bytes"
#: RabbitMQ's own segment size.
DEFAULT_SEGMENT_BYTES = 500_000_000
#: The smallest segment rabbitry asks for: a segment holds at least a chunk of messages.
SMALLEST_SEGMENT_BYTES = 4096
#: The units of ``x-max-age``, as RabbitMQ reads them (M is a month, m a minute), in seconds.
AGE_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
_AGE = re.compile(r"^([1-9][0-9]*)([YMDhms])$")
#: Byte units: decimal (kB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB).
SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^([0-9]+)\s*([a-z]*)$", re.IGNORECASE)


def age_seconds(text: str) -> int:
    """The seconds an ``x-max-age`` such as ``7D``, ``12h`` or ``30m`` stands for."""
    match = _AGE.match(str(text))
    if match is None:
        raise ConfigurationError(
            f"not an age RabbitMQ reads: {text!r} (a number and one of Y, M, D, h, m, s, as in 7D, 12h or 30m)"
        )
    return int(match.group(1)) * AGE_UNITS[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes, from ``1GB``, ``500MB``, ``64MiB`` or a plain number."""
    match = _SIZE.match(str(text).strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in SIZE_UNITS or int(match.group(1)) == 0:
        raise ConfigurationError(f"not a size: {text!r} (a number of bytes, or with kB, MB, GB, KiB, MiB, GiB)")
    return int(match.group(1)) * SIZE_UNITS[unit]


@dataclass(frozen=True)
class Retention:
    """What a history stream keeps: at most ``max_age`` (``7D``) and ``max_bytes``, or everything."""

    max_age: str | None = None
    max_bytes: int | None = None
    segment_bytes: int | None = None

    def __post_init__(self):
        if self.max_age is not None:
            age_seconds(self.max_age)

    @property
    def segment_size(self) -> int:
        """The segment size asked for: as given, else a tenth of ``max_bytes`` within RabbitMQ's bounds."""
        if self.segment_bytes is not None:
            return self.segment_bytes
        if self.max_bytes is None:
            return DEFAULT_SEGMENT_BYTES
        return max(SMALLEST_SEGMENT_BYTES, min(DEFAULT_SEGMENT_BYTES, self.max_bytes // 10))

    def arguments(self) -> dict:
        """The stream's queue arguments."""
        arguments = {QUEUE_TYPE: "stream", MAX_SEGMENT_SIZE_BYTES: self.segment_size}
        if self.max_age is not None:
            arguments[MAX_AGE] = self.max_age
        if self.max_bytes is not None:
            arguments[MAX_LENGTH_BYTES] = self.max_bytes
        return arguments

    def describe(self) -> str:
        """``7D and 1,000,000,000 bytes``, in words."""
        limits = [f"{self.max_age}" if self.max_age else "", f"{self.max_bytes:,} bytes" if self.max_bytes else ""]
        return " and ".join(limit for limit in limits if limit) or "everything (no limit)"
