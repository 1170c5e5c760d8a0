"""Submitting tasks to a work queue, from any program and any thread, or from ``new-task``.

A :class:`TaskSubmitter` owns one connection, opened and used by an I/O
thread of its own (pika's rule: one connection per thread, created in that
thread). ``submit()``, from any thread, hands the task over and wakes that
thread with ``call_threadsafe``, the only cross-thread call pika allows; the
I/O thread publishes everything waiting at that moment and writes it out
at once. So a lone task is on the wire within a moment, tasks that arrive
faster than the socket drains go out together, and heartbeats are answered
however long the program stays idle.
"""

import atexit
import collections
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator

import structlog

from rabbitry.common.errors import PublishFailed, RabbitryError, Unroutable
from rabbitry.common.messages import MAX_MESSAGE_BYTES, TaskMessage
from rabbitry.common.replies import DIRECT_REPLY_TO, read_reply
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_QUEUE_TYPE, DEFAULT_TASK_QUEUE, work_queue
from rabbitry.common.transport.contract import Connection, Delivery, OutgoingMessage, PublishFailure
from rabbitry.producers.awaited_replies import AwaitedReplies
from rabbitry.producers.handles import ResultLost, TaskCompletion, TaskHandle
from rabbitry.producers.metrics import SubmitterMetrics
from rabbitry.producers.publisher import DEFAULT_WINDOW, ReliablePublisher

log = structlog.get_logger("rabbitry.submitter")

#: How long closing (``close()``, the end of a ``with`` block, the program's exit) waits for confirms.
DEFAULT_CLOSE_TIMEOUT_S = 10.0
#: Tasks submitted but not yet confirmed before ``submit()`` waits: twice the publisher's window.
DEFAULT_MAX_UNCONFIRMED = 2 * DEFAULT_WINDOW
#: The I/O thread's sleep when nothing is in flight; a submission wakes it at once.
_IDLE_TICK_S = 1.0
#: Its sleep while confirms are due. A confirm does not end pika's wait (only a wake-up or
#: a consumer's delivery does), so this bounds how late ``wait_confirmed()`` hears of one:
#: 2 ms added 2 ms to a lone task's confirm, 0.5 ms adds 0.3 ms, at a little CPU while
#: confirms are outstanding.
_CONFIRM_SLICE_S = 0.0005


def _nothing() -> None:
    """Sent with call_threadsafe only to wake the I/O thread."""


class SubmitterClosed(RabbitryError):
    """``submit()`` after ``close()``."""


class TaskSubmitter:
    """Publishes tasks to a durable work queue, each confirmed by the broker; safe to share between threads.

    ``submit`` returns a :class:`~rabbitry.producers.handles.TaskHandle` at
    once; ``handle.wait_confirmed()`` waits for that task's confirm, and
    ``flush`` for every confirm so far, raising if any task was refused or had
    no queue to go to. With ``results=True`` each task asks for its result
    (direct reply-to), which ``handle.get()`` waits for. ``close`` (also on
    leaving a ``with`` block, and at the program's exit) flushes for at most
    ``close_timeout`` seconds and logs how many tasks were left unconfirmed.
    ``on_confirmed`` is called, on the I/O thread, with each batch of
    confirmed messages.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        queue: str = DEFAULT_TASK_QUEUE,
        queue_type: str = DEFAULT_QUEUE_TYPE,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        on_confirmed: Callable[[list[OutgoingMessage]], None] | None = None,
        results: bool = False,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
        max_unconfirmed: int = DEFAULT_MAX_UNCONFIRMED,
        metrics: SubmitterMetrics | None = None,
    ):
        self.settings = settings
        self.queue = queue
        self.queue_type = queue_type
        self.max_message_bytes = max_message_bytes
        self.results = results
        self.close_timeout = close_timeout
        self.max_unconfirmed = max_unconfirmed
        self._on_confirmed = on_confirmed
        self._metrics = metrics.for_queue(queue) if metrics is not None else None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified whenever a task is confirmed, refused or answered
        self._submissions: collections.deque[OutgoingMessage] = collections.deque()
        # id(message) -> (message, its handle's completion, when submitted), from submit() until
        # the broker confirms or refuses it.
        self._in_flight: dict[int, tuple[OutgoingMessage, TaskCompletion, float]] = {}
        self._awaiting_reply = AwaitedReplies()
        self._failures: list[PublishFailure] = []  # since the last flush
        self._wake_pending = False
        self._closing = False
        self._close_deadline = 0.0
        self._error: RabbitryError | None = None  # why the I/O thread stopped
        self._publisher: ReliablePublisher | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stop = threading.Event()
        self.connections_opened = 0

    # -- starting and stopping ---------------------------------------------------
    def connect(self) -> "TaskSubmitter":
        """Start the I/O thread, connect and declare the work queue; fails at once if the broker is down."""
        with self._lock:
            self._closing = False
            self._start_locked()
        return self

    def _start_locked(self) -> None:
        atexit.unregister(self._close_at_exit)
        atexit.register(self._close_at_exit)
        started, self._error = threading.Event(), None
        self._pid = os.getpid()
        self._stop.clear()
        self._publisher = ReliablePublisher(
            self.settings,
            work_queue(self.queue, self.queue_type),
            name="rabbitry-submitter",
            on_confirmed=self._confirmed,
            stop=self._stop,
            on_connected=self._connected,
        )
        self._thread = threading.Thread(
            target=self._run, args=(self._publisher, started), name="rabbitry-submitter-io", daemon=True
        )
        self._thread.start()
        self._lock.release()  # the I/O thread completes handles under this lock while it connects
        try:
            started.wait()
        finally:
            self._lock.acquire()
        if self._error is not None:  # the first connection failed: nothing to close
            atexit.unregister(self._close_at_exit)
            self._thread = None
            raise self._error

    def close(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` (default ``close_timeout``) seconds for confirms, then close the
        connection; return how many tasks were left unconfirmed (they may or may not be queued)."""
        atexit.unregister(self._close_at_exit)
        thread = self._thread
        if thread is None or self._pid != os.getpid():  # a forked child's copy: the connection is the parent's
            return 0
        timeout = self.close_timeout if timeout is None else timeout
        with self._lock:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
        self._wake()
        thread.join(timeout + _IDLE_TICK_S)
        if thread.is_alive():  # stuck reconnecting, or the broker blocked the connection
            self._stop.set()
            thread.join(_IDLE_TICK_S)
        with self._lock:
            left = len(self._in_flight) + len(self._submissions)
            self._fail_everything_locked(
                PublishFailed("the submitter closed before the broker confirmed it"),
                ResultLost("the submitter closed before the task's reply came"),
            )
            self._thread = None
        if left:
            log.warning(
                "submitter_closed_unconfirmed",
                unconfirmed=left,
                queue=self.queue,
                detail="these tasks may or may not be queued",
            )
        return left

    def _close_at_exit(self) -> None:
        self.close()

    def __enter__(self):
        return self.connect()

    def __exit__(self, exc_type, *_):
        try:
            if exc_type is None:
                self.flush(self.close_timeout)
        finally:
            self.close()

    def instrument(self, metrics: SubmitterMetrics) -> None:
        """Count this submitter's tasks on ``metrics`` from now on, as the ``metrics`` argument does from the start."""
        self._metrics = metrics.for_queue(self.queue)

    # -- submitting (any thread) -------------------------------------------------
    def submit(self, message: TaskMessage) -> TaskHandle:
        """Queue one task, without waiting for the broker; return its handle."""
        outgoing = message.to_outgoing(self.queue, self.max_message_bytes)  # a bad task raises here
        completion = TaskCompletion(message.id, self._changed)
        handle = TaskHandle(completion, self.results)
        if self.results:
            outgoing.reply_to, outgoing.correlation_id = DIRECT_REPLY_TO, message.id
        with self._lock:
            if self._closing:
                raise SubmitterClosed(f"the submitter of queue {self.queue!r} is closed")
            if self._thread is None or not self._thread.is_alive():
                self._start_locked()  # not connected yet, or the broker was lost for good last time
            if len(self._in_flight) >= self.max_unconfirmed:
                self._changed.wait_for(lambda: len(self._in_flight) < self.max_unconfirmed or self._error)
            if self._error is not None:
                raise self._error
            self._in_flight[id(outgoing)] = (outgoing, completion, time.monotonic())
            if self.results:
                self._awaiting_reply.expect(completion)
            self._submissions.append(outgoing)
            if self._metrics is not None:
                self._metrics.submitted.inc()
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._call_io_thread()
        return handle

    def ready_for_more(self) -> bool:
        """Whether ``submit()`` would hand a task over without waiting (connected, with room)."""
        thread = self._thread
        return (
            thread is not None
            and thread.is_alive()
            and not self._closing
            and self._error is None
            and len(self._in_flight) < self.max_unconfirmed
        )

    def submit_many(self, messages: Iterable[TaskMessage]) -> Iterator[TaskHandle]:
        """Queue each task in turn, yielding its handle."""
        for message in messages:
            yield self.submit(message)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every confirm; raise PublishFailed/Unroutable for refused tasks
        (TimeoutError if ``timeout`` seconds pass first)."""
        with self._lock:
            if not self._changed.wait_for(lambda: not self._in_flight, timeout):
                raise TimeoutError(f"{len(self._in_flight)} task(s) not confirmed within {timeout:g} s")
            failures, self._failures = self._failures, []
        if failures:
            first = failures[0]
            error = Unroutable if first.reason == "unroutable" else PublishFailed
            raise error(
                f"{len(failures)} task(s) not queued: {first.reason} (queue {self.queue!r}; "
                f"first task id {first.message.message_id})"
            )

    @property
    def confirmed_count(self) -> int:
        """Tasks the broker has confirmed so far (on the current connection's publisher)."""
        return self._publisher.confirmed_count if self._publisher else 0

    @property
    def unconfirmed(self) -> int:
        """Tasks submitted that the broker has not confirmed (or refused) yet."""
        return len(self._in_flight)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = True
        self._call_io_thread()

    def _call_io_thread(self) -> None:
        assert self._publisher is not None  # made with the I/O thread, before anything wakes it
        try:
            self._publisher.call_threadsafe(_nothing)
        except RabbitryError:
            pass  # reconnecting: the I/O thread takes what waits once it is back

    # -- the I/O thread ----------------------------------------------------------
    def _run(self, publisher: ReliablePublisher, started: threading.Event) -> None:
        try:
            publisher.connect()
        except RabbitryError as error:
            with self._lock:
                self._error = error
                self._fail_everything_locked(error)
            return
        finally:
            started.set()
        try:
            while not self._done():
                batch = self._take_submissions()
                for message in batch:
                    publisher.publish(message, mandatory=True)
                self._refused(publisher.poll(self._pause()))
        except RabbitryError as error:  # the broker was lost for longer than settings.reconnect_for
            log.error("submitter_connection_lost", error=str(error), unconfirmed=len(self._in_flight))
            self._stopped_by(error)
        except Exception as error:  # a fault of ours, or of an on_confirmed callback: no handle waits forever
            log.error("submitter_failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
            self._stopped_by(RabbitryError(f"the submitter's I/O thread failed: {type(error).__name__}: {error}"))
        finally:
            publisher.close()

    def _stopped_by(self, error: RabbitryError) -> None:
        with self._lock:
            self._error = error
            self._fail_everything_locked(error)

    def _done(self) -> bool:
        with self._lock:
            return self._closing and (not self._in_flight or time.monotonic() > self._close_deadline)

    def _take_submissions(self) -> list[OutgoingMessage]:
        with self._lock:
            self._wake_pending = False  # before taking, so a later submit wakes this thread again
            batch = list(self._submissions)
            self._submissions.clear()
        return batch

    def _pause(self) -> float:
        """How long the next poll may wait: a submission wakes it anyway, a confirm does not."""
        if self._submissions or self._closing and not self._in_flight:
            return 0
        return _CONFIRM_SLICE_S if self._in_flight else _IDLE_TICK_S

    def _connected(self, connection: Connection) -> None:
        """A new connection (the first, or after a loss): listen for replies before publishing."""
        self.connections_opened += 1
        if not self.results:
            return
        connection.consume(DIRECT_REPLY_TO, self._replied, auto_ack=True)
        if self.connections_opened > 1:
            # Replies to tasks confirmed on the lost connection had only that connection to go to.
            lost = ResultLost("the connection that was to carry this task's reply was lost")
            with self._lock:
                self._awaiting_reply.lose_confirmed(lost)
                self._changed.notify_all()

    def _confirmed(self, messages: list[OutgoingMessage]) -> None:
        confirmed, now, metrics = [], time.monotonic(), self._metrics
        with self._lock:
            for message in messages:
                _, completion, submitted_at = self._in_flight.pop(id(message), (None, None, 0.0))
                if completion is not None:  # None: already given up on by close()
                    completion.confirm()
                    confirmed.append(completion)
                    if metrics is not None:
                        metrics.confirmed.inc()
                        metrics.confirm_latency.observe(now - submitted_at)
            self._changed.notify_all()
        self._tell_watchers(confirmed)
        if self._on_confirmed is not None:
            self._on_confirmed(messages)

    def _refused(self, failures: list[PublishFailure]) -> None:
        if not failures:
            return
        refused = []
        with self._lock:
            for failure in failures:
                _, completion, _ = self._in_flight.pop(id(failure.message), (None, None, None))
                if completion is None:
                    continue
                if self._metrics is not None:
                    self._metrics.refused(failure.reason)
                error = Unroutable if failure.reason == "unroutable" else PublishFailed
                completion.refuse(
                    error(f"task {completion.task_id} not queued: {failure.reason} (queue {self.queue!r})")
                )
                self._awaiting_reply.forget(completion.task_id)
                refused.append(completion)
            self._failures += failures
            self._changed.notify_all()
        self._tell_watchers(refused)

    def _replied(self, delivery: Delivery) -> None:
        outcome = read_reply(delivery)
        with self._lock:
            completion = self._awaiting_reply.answer(outcome)
            if completion is None:
                return  # its caller dropped the handle: nobody waits for this result
            self._changed.notify_all()
        completion.tell_watchers()

    def _fail_everything_locked(self, error: RabbitryError, lost: ResultLost | None = None) -> None:
        """Complete every handle still waiting: unconfirmed ones refused with ``error``, those awaiting
        a reply with ``lost``."""
        completions = [completion for _, completion, _ in self._in_flight.values()]
        for completion in completions:
            completion.refuse(error)
        self._in_flight.clear()
        self._submissions.clear()
        completions += self._awaiting_reply.lose_all(lost or ResultLost(f"no reply can come: {error}"))
        self._changed.notify_all()
        for completion in completions:
            completion.tell_watchers()

    @staticmethod
    def _tell_watchers(completions: list[TaskCompletion]) -> None:
        for completion in completions:
            if completion.watchers:
                completion.tell_watchers()
