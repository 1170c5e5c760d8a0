"""The prefetch of a pool process that was given none: about a tenth of a second of its work.

A prefetch is a trade. 1 is perfectly fair dispatch, since a process holds
only the task it runs, but a process with short tasks then waits a round trip
to the broker for each one and the broker works hardest per task; a large
prefetch keeps short tasks streaming, but a process that took many long
tasks sits on them while another idles. So without ``--prefetch``, a pool
process holds at most about WINDOW_S of work: it starts at 1, as fair as can
be, and once it has seen FIRST_AFTER tasks asks for ``WINDOW_S / longest``
deliveries (a power of two, at most MOST), ``longest`` being the longest of
its last RECENT tasks. The longest, not the mean: with one long task among
short ones, a mean would have it take several long tasks at once. No-op tasks
get MOST; where a task of 0.1 s or more is among the last RECENT, it keeps 1.
Once no task has ended for QUIET_S (the queue is idle, or a task runs long),
it goes back to 1 and measures again: what comes next is taken fairly until
it shows it is short, and a process that just ran short tasks does not take
a batch of long ones at once.

A process running coroutines has ``slots`` of them (``--concurrency``) and
runs that many tasks at a time, so it holds ``slots`` times the window:
never fewer than ``slots`` deliveries, which it starts with and goes back to
(the fair minimum, as 1 is for one slot), and never more than MOST unless
``slots`` is more. A coroutine worker facing a backlog then holds what it can
run, and its sibling processes get the rest.

It changes only when the right prefetch is at least twice or under half the
one it has, up at most once every UP_INTERVAL_S and down at most once every
DOWN_INTERVAL_S, so that a mix of task lengths does not keep it moving. RabbitMQ applies a consumer's prefetch
when it starts consuming, so a change is a new consumer on the same
channel: the old one is cancelled, what it held runs and is acked as
usual, and deliveries that were on their way to it go back to the queue.
"""

import collections
import time

#: The work, in seconds of tasks, a pool process holds when it chooses its own prefetch.
WINDOW_S = 0.1
#: The most deliveries it holds: beyond this the broker gains nothing per task.
MOST = 256
#: The tasks seen before the first change, at prefetch 1; and how many recent ones count.
FIRST_AFTER = RECENT = 32
#: The least time between two changes up, and before a change down.
UP_INTERVAL_S = 0.05
DOWN_INTERVAL_S = 0.5
#: Without a task ending for this long, the prefetch goes back to 1.
QUIET_S = 1.0


def power_of_two_at_most(value: float) -> int:
    """The largest power of two not above ``value``, between 1 and MOST."""
    prefetch = 1
    while prefetch * 2 <= min(value, MOST):
        prefetch *= 2
    return prefetch


class AdaptivePrefetch:
    """The prefetch a pool process should have, from the times of the tasks it ran.

    :meth:`ran` is called on the task thread, :meth:`change` on the
    connection thread; they share a bounded deque, safe across threads.
    """

    def __init__(self, slots: int = 1):
        #: Tasks run at a time: the least prefetch there is, and how many windows it may hold.
        self.slots = slots
        self.prefetch = slots
        self.tasks = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT)
        self._changed_at = float("-inf")
        self._ended_at = time.monotonic()

    def ran(self, seconds: float) -> None:
        """Count a task that took ``seconds`` and has just ended."""
        self._recent.append(seconds)
        self.tasks += 1
        self._ended_at = time.monotonic()

    @property
    def longest_s(self) -> float:
        """The longest of the recent tasks (0 before any)."""
        return max(self._recent.copy(), default=0.0)

    def change(self, now: float | None = None) -> int | None:
        """The new prefetch to ask for, or None to keep the one there is."""
        now = time.monotonic() if now is None else now
        slots = self.slots
        if self.prefetch > slots and now - self._ended_at >= QUIET_S:
            self.prefetch, self.tasks, self._changed_at = slots, 0, now
            self._recent.clear()
            return slots
        if self.tasks < FIRST_AFTER:
            return None
        right = slots * WINDOW_S / max(self.longest_s, 1e-6)
        if right >= self.prefetch * 2 and self.prefetch < max(MOST, slots):
            interval = UP_INTERVAL_S
        elif right < self.prefetch / 2:
            interval = DOWN_INTERVAL_S
        else:
            return None
        prefetch = max(slots, power_of_two_at_most(right))
        if prefetch == self.prefetch or now - self._changed_at < interval:
            return None
        self.prefetch, self._changed_at = prefetch, now
        return prefetch
