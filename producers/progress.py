"""``new-task``'s progress bar: how many tasks are sent of how many, how fast, and how long is left.

::

    queueing  [##########----------]  15,000/30,000  9,812/s  ETA 0:00:02

The rate is measured over the last few seconds, not since the start, so that
the first burst (tasks sent before the confirm window fills) does not make the
estimate hopeful for the rest of the run; the time left is rounded up, so a
bar that is not done never says 0:00:00. Drawing is kept apart from the
numbers: :func:`progress_line` is a pure function of them, and
:class:`ProgressBar` feeds it from a clock, at most every
:data:`REDRAW_INTERVAL_S`.
"""

import collections
import math
import shutil
import time
from collections.abc import Callable
from typing import TextIO

#: The bar is redrawn at most this often: a terminal takes a few hundred lines a second at best.
REDRAW_INTERVAL_S = 0.1
#: The rate is the count over about this many last seconds.
RATE_WINDOW_S = 5.0
#: The width of the bar itself, between its brackets, at most.
BAR_WIDTH = 30
#: What the line needs beside the bar; a narrower terminal gets a shorter bar.
_TEXT_WIDTH = 60


def format_duration(seconds: float, round_up: bool = False) -> str:
    """``0:00:04``, ``12:30:00``, ``2d 03:00:00``: whole seconds, rounded (up, with ``round_up``)."""
    whole = math.ceil(max(seconds, 0.0)) if round_up else round(max(seconds, 0.0))
    days, whole = divmod(whole, 86_400)
    hours, whole = divmod(whole, 3_600)
    minutes, secs = divmod(whole, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if not days else f"{days}d {hours:02}:{minutes:02}:{secs:02}"


def format_rate(per_second: float) -> str:
    """``9,812/s``, or ``0.5/s`` below ten a second."""
    return f"{per_second:,.0f}/s" if per_second >= 10 else f"{per_second:.1f}/s"


def time_left(done: int, total: int, per_second: float) -> float | None:
    """Seconds until ``total`` at ``per_second``, or None while no rate is known."""
    if done >= total:
        return 0.0
    if per_second <= 0:
        return None
    return (total - done) / per_second


def progress_line(label: str, done: int, total: int, per_second: float | None, width: int = BAR_WIDTH) -> str:
    """The bar's line: label, bar, count of total, rate and time left (``--:--:--`` while unknown)."""
    filled = 0 if total <= 0 else min(width, done * width // total)
    bar = "#" * filled + "-" * (width - filled)
    rate = "-/s" if per_second is None else format_rate(per_second)
    left = None if per_second is None else time_left(done, total, per_second)
    eta = "--:--:--" if left is None else format_duration(left, round_up=True)
    return f"{label}  [{bar}]  {done:,}/{total:,}  {rate}  ETA {eta}"


def final_line(label: str, done: int, total: int, elapsed: float, width: int = BAR_WIDTH) -> str:
    """The line left on the terminal at the end: the count, how long it took, and the mean rate."""
    filled = 0 if total <= 0 else min(width, done * width // total)
    bar = "#" * filled + "-" * (width - filled)
    rate = format_rate(done / elapsed) if elapsed > 0 else "-/s"
    return f"{label}  [{bar}]  {done:,}/{total:,}  {rate}  in {format_duration(elapsed)}"


class RateMeter:
    """The rate of a growing count, over its last :data:`RATE_WINDOW_S` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, now: float, count: int) -> None:
        """Note that the count was ``count`` at ``now``."""
        self._samples.append((now, count))
        # Keep one sample at or before the window's start, so the rate spans the whole window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def per_second(self) -> float | None:
        """The count's growth per second over the window, or None before two samples apart in time."""
        if len(self._samples) < 2:
            return None
        (first_time, first_count), (last_time, last_count) = self._samples[0], self._samples[-1]
        if last_time <= first_time:
            return None
        return (last_count - first_count) / (last_time - first_time)


class ProgressBar:
    """A progress bar redrawn in place on a terminal: call it with each step, ``finish()`` at the end."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        label: str = "queueing",
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ):
        self.total = total
        self.stream = stream
        self.label = label
        self.done = 0
        self._clock = clock
        self._start = self._last_drawn = clock()
        self._rate = RateMeter()
        self._rate.add(self._start, 0)
        columns = shutil.get_terminal_size().columns if width is None else width
        self.width = max(5, min(BAR_WIDTH, columns - _TEXT_WIDTH))

    def update(self, steps: int = 1) -> None:
        """Count ``steps`` more; redraw if the last drawing is old enough."""
        self.done += steps
        now = self._clock()
        if now - self._last_drawn >= REDRAW_INTERVAL_S:
            self._last_drawn = now
            self._rate.add(now, self.done)
            self._draw(progress_line(self.label, self.done, self.total, self._rate.per_second(), self.width))

    def finish(self) -> None:
        """Leave the final line on the terminal."""
        elapsed = self._clock() - self._start
        self._draw(final_line(self.label, self.done, self.total, elapsed, self.width) + "\n")

    def _draw(self, line: str) -> None:
        self.stream.write("\r\x1b[K" + line)  # back to the line's start, and clear it
        self.stream.flush()

    def __enter__(self) -> "ProgressBar":
        self._draw(progress_line(self.label, 0, self.total, None, self.width))
        return self

    def __exit__(self, *exc_info) -> None:
        self.finish()
