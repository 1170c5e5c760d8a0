"""Where the two threads of a pool process meet: batches in, finished work back, wake-ups.

The connection thread hands over whatever one read of the socket delivered,
as one batch (:meth:`Handover.hand_over`); the task thread takes batches
(:meth:`Handover.next_batch`), and puts what became of each delivery in the
outbox (:meth:`Handover.finished`), which only the connection thread settles.
The task thread wakes the connection thread (``call_threadsafe``, the only
cross-thread call pika allows) only when a quarter of the prefetch is done,
when a retry, a dead letter or a reply is to be sent, or when it has nothing
left to run: the connection thread also settles the outbox whenever it wakes
for its own reasons.

A channel's deliveries carry its *generation*: once it is gone, whatever it
held is redelivered by the broker, so work from an older generation is
neither started nor settled. :meth:`Handover.begin` and :meth:`Handover.end`
count the work under way, so that a graceful stop can wait for it.
"""

import collections
import queue
import threading
from collections.abc import Callable

from rabbitry.common.errors import ConnectionLost
from rabbitry.common.transport.contract import Delivery
from rabbitry.workers.execution import Disposition

#: How long the task thread waits for more deliveries before it has the connection thread
#: settle what is done (it may be asleep until the next tick otherwise).
QUIET_S = 0.002

#: A batch of deliveries and the generation of the channel they came on; None stops the task thread.
Batch = tuple[int, list[Delivery]] | None


def _not_connected(_callback: Callable[[], None]) -> None:
    raise ConnectionLost("no connection yet")


class Handover:
    """The batches, the outbox and the wake-ups between a pool process's two threads."""

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        #: (generation, disposition) of finished work, appended by the task thread and
        #: popped from the left by the connection thread alone.
        self.outbox: collections.deque[tuple[int, Disposition]] = collections.deque()
        #: Finished work that makes it worth waking the connection thread: a quarter of the prefetch.
        self.ack_every = 1
        #: The generation of the connection thread's current channel.
        self.generation = 0
        #: False once the connection thread stops taking work: nothing more is started.
        self.accepting = True
        self._accepting_lock = threading.Lock()
        self._active = 0  # work started and not yet finished, counted on the task thread
        self._idle = threading.Event()
        self._idle.set()
        self._call_threadsafe: Callable[[Callable[[], None]], None] = _not_connected
        self._settle: Callable[[], None] = lambda: None
        self._wake_pending = False

    # -- connection thread -------------------------------------------------
    def attach(self, call_threadsafe: Callable[[Callable[[], None]], None], settle: Callable[[], None]) -> None:
        """Wake the connection thread from now on with ``call_threadsafe(settle)`` (a new connection)."""
        self._call_threadsafe = call_threadsafe
        self._settle = settle
        self._wake_pending = False

    def hand_over(self, batch: Batch) -> None:
        """Give the task thread a batch of deliveries, or None to stop it."""
        self._inbox.put(batch)

    def reset_wake(self) -> None:
        """The connection thread is about to settle the outbox: a wake-up asked for after this is sent."""
        self._wake_pending = False

    def channel_gone(self) -> None:
        """Forget the current channel: what it held, the broker redelivers."""
        self.generation += 1

    def stop_accepting(self) -> None:
        """Start no more work: what is under way runs to its end (see :meth:`wait_until_idle`)."""
        with self._accepting_lock:
            self.accepting = False

    def wait_until_idle(self, timeout: float) -> bool:
        """True once no work is under way; False if ``timeout`` passed first."""
        return self._idle.wait(timeout)

    # -- task thread -------------------------------------------------------
    def next_batch(self) -> Batch:
        """The next batch of deliveries (None: stop). While deliveries keep coming, the connection
        thread is awake and settles what is done as it goes; once none has come for a moment, it
        may be asleep, and is woken to settle the rest."""
        try:
            return self._inbox.get(timeout=QUIET_S)
        except queue.Empty:
            if self.outbox:
                self.wake()
            return self._inbox.get()

    def begin(self, generation: int) -> bool:
        """Count a task (or a batch, run to its end) as started, unless its channel is gone or closing
        (the broker redelivers it)."""
        with self._accepting_lock:
            if generation != self.generation or not self.accepting:
                return False
            self._active += 1
            self._idle.clear()
        return True

    def end(self) -> None:
        """Count a task (or batch) begun as finished."""
        self._active -= 1
        if not self._active:
            self._idle.set()

    def finished(self, generation: int, disposition: Disposition) -> None:
        """Put a disposition in the outbox, waking the connection thread when there is enough to send."""
        outbox = self.outbox
        outbox.append((generation, disposition))
        if disposition.publish is not None or disposition.reply is not None or len(outbox) >= self.ack_every:
            self.wake()

    def wake(self) -> None:
        """Have the connection thread settle the outbox (once, until it starts to)."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._call_threadsafe(self._settle)
            except ConnectionLost:
                self._wake_pending = False  # the next connection redelivers the task
