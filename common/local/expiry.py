"""Message expiry in the in-process broker: one thread that wakes at the next deadline.

Queues schedule a deadline when a message with a TTL arrives. When one
passes, the thread calls back into the broker, under the broker's lock,
to expire what is due at the head of that queue; the callback says when
the queue's new head expires, if it does, and that is scheduled in turn.
"""

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rabbitry.common.local.queue import LocalQueue


@dataclass(order=True, slots=True)
class Deadline:
    """When a queue has a message to expire at its head."""

    at: float  # time.monotonic()
    sequence: int  # orders equal deadlines by when they were set
    queue: LocalQueue = field(compare=False)


class ExpiryTimer:
    """Calls ``expire_head_locked(queue, now)`` as each queue's deadline passes, on a thread of its own.

    ``lock`` is the broker's lock: the timer holds it while it runs, and
    methods whose names end in ``_locked`` expect the caller to hold it.
    The thread starts with the first deadline.
    """

    def __init__(
        self, lock: threading.Lock, expire_head_locked: Callable[[LocalQueue, float], float | None], name: str
    ):
        self._lock = lock
        self._expire_head_locked = expire_head_locked
        self._name = name
        self._deadlines: list[Deadline] = []
        self._sequence = itertools.count()
        self._wakeup = threading.Condition(lock)
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule_locked(self, at: float, queue: LocalQueue) -> None:
        """Look at the head of ``queue`` once ``at`` has passed."""
        heapq.heappush(self._deadlines, Deadline(at, next(self._sequence), queue))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        elif self._deadlines[0].at == at:
            self._wakeup.notify()

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                deadlines = self._deadlines
                while deadlines and deadlines[0].at <= now:
                    queue = heapq.heappop(deadlines).queue
                    following = self._expire_head_locked(queue, now)
                    if following is not None:
                        heapq.heappush(deadlines, Deadline(following, next(self._sequence), queue))
                self._wakeup.wait(deadlines[0].at - now if deadlines else None)

    def close(self) -> None:
        """Stop the thread and wait for it."""
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join()
