"""The task thread of a pool process that runs coroutines: an asyncio event loop.

With ``--concurrency N``, or any ``async def`` task registered, the task
thread of each pool process runs an event loop instead of taking tasks one
at a time. Deliveries come from the connection thread, in batches, through
``call_soon_threadsafe``; up to N of them run at once, started in delivery
order. An ``async def`` task is awaited on the loop and cancelled past its
time limit (then failed, as a sync task over its limit is): the loop's beat
looks for coroutines past their deadline every BEAT_S, which costs far less
than a timer per task. A coroutine that does not end within
CANCEL_GRACE_S of its cancellation (one that catches ``CancelledError`` and
goes on) is treated as a plain task over its limit would be: the process
ends, with EXIT_CANCELLATION_IGNORED, and the broker redelivers the
coroutines it was running; the supervisor counts a crash against the one
that would not stop (the crash ledger names it), so that past
``--delivery-limit`` it is dead-lettered instead of run again. A plain
function runs on a thread of its own, one at a time as in a pool without
coroutines, so it does not stop the loop; one over its time limit still
ends the process, and the broker redelivers the coroutines it was running.
Tasks finish in any order: :class:`Acknowledgements` acks the finished run at
the head of the channel's deliveries with one ``multiple`` ack, and those that
finished behind a task still running one by one.

The connection stays on the connection thread, so a coroutine that blocks
the loop (``time.sleep``, a blocking HTTP client) does not stop heartbeats;
the connection thread logs ``event_loop_blocked`` once the loop has not run
for BLOCKED_LOOP_WARNING_S, naming the tasks it was running and what kept
the loop from running (see :mod:`workers.loop_stall`).
"""

import asyncio
import collections
import concurrent.futures
import contextvars
import os
import sys
import time

import structlog

from rabbitry.common.transport.contract import Connection, Delivery
from rabbitry.workers import metrics
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.execution import Disposition, run_coroutine_task
from rabbitry.workers.handover import Batch, Handover
from rabbitry.workers.loop_stall import cpu_seconds, stall_cause, this_thread_clock, used
from rabbitry.workers.task_thread import TaskThread

log = structlog.get_logger("rabbitry.worker")

#: The loop is reported blocked once it has not run for this long (asyncio's debug mode
#: reports callbacks over 0.1 s; a loaded machine needs more slack).
BLOCKED_LOOP_WARNING_S = 0.5
#: The longest a finished coroutine waits for the connection thread to be asked to ack it.
WAKE_AFTER_S = 0.002
#: How often the loop notes that it runs, and cancels coroutines past their time limit.
BEAT_S = 0.05
#: How long a coroutine cancelled over its time limit has to end before its process is ended.
CANCEL_GRACE_S = 1.0
#: A pool process that ended itself over a coroutine that would not stop exits with this code
#: (not EXIT_TIME_LIMIT: nothing was recorded, so the supervisor counts a crash of that task).
EXIT_CANCELLATION_IGNORED = 76


class Acknowledgements:
    """The acks of one channel's deliveries, which finish in any order (connection thread only).

    A ``multiple`` ack of tag T acknowledges every unacknowledged delivery up to T, so it may
    only cover deliveries that are all settled; one that still runs holds back a ``multiple``
    ack past it, and what finished behind it is acked on its own, at once, so that its slot
    of the prefetch frees up.
    """

    def __init__(self) -> None:
        self._delivered: collections.deque[int] = collections.deque()  # in tag order, unsettled or not
        self._succeeded: set[int] = set()  # settled, to be acked here
        self._settled: set[int] = set()  # acked or rejected already (a retry, a dead letter)

    def reset(self) -> None:
        """Forget a channel that is gone: the broker delivers its unacked tasks again."""
        self._delivered.clear()
        self._succeeded.clear()
        self._settled.clear()

    def delivered(self, delivery_tag: int) -> None:
        """Note a delivery handed over to the loop."""
        self._delivered.append(delivery_tag)

    def settled(self, delivery_tag: int) -> None:
        """Note a delivery acked or rejected on its own."""
        self._settled.add(delivery_tag)

    def ack(self, connection: Connection, succeeded: list[int]) -> None:
        """Acknowledge the deliveries in ``succeeded``, with as few acks as their order allows."""
        self._succeeded.update(succeeded)
        delivered, done, settled = self._delivered, self._succeeded, self._settled
        last = None
        while delivered and (delivered[0] in done or delivered[0] in settled):
            head = delivered.popleft()
            if head in done:
                done.discard(head)
                last = head
            else:
                settled.discard(head)
        if last is not None:
            connection.ack(last, multiple=True)
        for delivery_tag in done:  # behind a delivery that is not settled yet
            connection.ack(delivery_tag)
            settled.add(delivery_tag)
        done.clear()


class CoroutineTasks:
    """Runs a pool process's tasks on an event loop, up to ``config.concurrency`` at a time."""

    def __init__(
        self, config: WorkerConfig, index: int, handover: Handover, tasks: TaskThread, ends_process: bool = True
    ):
        self.config = config
        self.index = index
        self._handover = handover
        self._tasks = tasks  # what every delivery goes through, and the plain functions among them
        self._ends_process = ends_process  # False for a pool thread, which cannot end alone
        self._loop = asyncio.new_event_loop()
        self._sync_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="rabbitry-sync-task", initializer=self._note_sync_thread
        )
        self._slots = asyncio.Semaphore(config.concurrency)
        self._stopped = False
        #: Every task admitted and not yet settled: the loop itself keeps only weak references.
        self._admitted: set[asyncio.Task] = set()
        #: The coroutine tasks running now (by their delivery) and their names, for the blocked-loop warning.
        self._running: dict[int, str] = {}
        #: When each running coroutine's time limit is up (monotonic); those cancelled for it, and when.
        self._deadlines: dict[asyncio.Task, float] = {}
        self._over_limit: dict[asyncio.Task, float] = {}
        #: The task id and name of each coroutine with a time limit, to name one that will not stop.
        self._limited: dict[asyncio.Task, tuple[str, str]] = {}
        self._wake_armed = False
        self._loop_seen = self._watched_at = time.monotonic()
        #: The CPU clocks of the loop's thread and of the plain tasks' thread, and their readings
        #: when the loop last ran: what they used meanwhile says why it did not run.
        self._loop_clock: int | None = None
        self._sync_clock: int | None = None
        self._cpu_seen: tuple[float | None, float | None] = (None, None)
        self._blocked_reported = False
        self.acks = Acknowledgements()

    # -- connection thread -------------------------------------------------
    def hand_over(self, batch: Batch) -> None:
        """Give the loop a batch of deliveries (with their channel's generation), or None to stop."""
        if batch is not None:
            for delivery in batch[1]:
                self.acks.delivered(delivery.delivery_tag)
        self._loop.call_soon_threadsafe(self._admit, batch)

    def watch(self) -> None:
        """Log once per stall when the loop has been blocked too long (called every tick)."""
        now = time.monotonic()
        blocked_s, watcher_held_s = now - self._loop_seen, now - self._watched_at
        self._watched_at = now
        if blocked_s < BLOCKED_LOOP_WARNING_S:
            self._blocked_reported = False
        elif not self._blocked_reported:
            self._blocked_reported = True
            running = sorted(set(self._running.values()))
            loop_cpu_seen, sync_cpu_seen = self._cpu_seen
            plain_task = self._tasks.last_plain_task
            loop_cpu_s = used(cpu_seconds(self._loop_clock), loop_cpu_seen)
            plain_cpu_s = used(cpu_seconds(self._sync_clock), sync_cpu_seen)
            why = stall_cause(blocked_s, watcher_held_s, loop_cpu_s, plain_cpu_s, running, plain_task)
            log.warning(
                "event_loop_blocked",
                blocked_s=round(blocked_s, 3),
                loop_cpu_s=round(loop_cpu_s, 3),
                plain_cpu_s=round(plain_cpu_s, 3),
                running=running,
                plain_task=plain_task,
                cause=why.cause,
                hint=why.hint,
            )

    # -- task thread -------------------------------------------------------
    def run(self) -> None:
        """The task thread: run the loop until :meth:`hand_over` gives it None."""
        structlog.contextvars.bind_contextvars(pool_process=self.index)
        asyncio.set_event_loop(self._loop)
        self._loop_clock = this_thread_clock()
        try:
            self._loop.run_until_complete(self._beat())
        finally:
            self._sync_thread.shutdown(wait=False)  # the loop stays open: a plain task may still end on it

    def _note_sync_thread(self) -> None:
        self._sync_clock = this_thread_clock()

    async def _beat(self) -> None:
        while not self._stopped:
            self._cpu_seen = (cpu_seconds(self._loop_clock), cpu_seconds(self._sync_clock))
            self._loop_seen = now = time.monotonic()
            for running, deadline in self._deadlines.items():
                if deadline <= now and running not in self._over_limit:
                    self._over_limit[running] = now
                    running.cancel()
            for running, cancelled_at in list(self._over_limit.items()):
                if now - cancelled_at >= CANCEL_GRACE_S:
                    self._cancellation_ignored(running, now - cancelled_at)
            await asyncio.sleep(BEAT_S)
        # What is left had not started (after a graceful stop) or will not be acked: the broker
        # delivers it again once this process's connection closes.
        for admitted in list(self._admitted):
            admitted.cancel()
        await asyncio.gather(*self._admitted, return_exceptions=True)

    def _cancellation_ignored(self, running: asyncio.Task, since_s: float) -> None:
        """A coroutine cancelled over its time limit goes on: end the process, as for a plain task
        over its limit, and have the supervisor count a crash against it. A pool thread cannot end
        alone: it only says so, once."""
        task_id, name = self._limited[running]
        log.error(
            "task_ignored_cancellation",
            task_id=task_id,
            task=name,
            cancelled_s_ago=round(since_s, 3),
            detail="cancelled over its time limit, it did not stop (it catches CancelledError and goes on)"
            + (": ending this pool process; the broker redelivers its tasks" if self._ends_process else ""),
        )
        if not self._ends_process:
            self._over_limit[running] = float("inf")  # said once; it runs on, as a plain task over its limit would here
            return
        self._tasks.blame(task_id)
        sys.stdout.flush()
        os._exit(EXIT_CANCELLATION_IGNORED)

    def _admit(self, batch: Batch) -> None:
        if batch is None:
            self._stopped = True
            return
        generation, deliveries = batch
        for delivery in deliveries:
            admitted = self._loop.create_task(self._run_one(generation, delivery))
            self._admitted.add(admitted)
            admitted.add_done_callback(self._admitted.discard)

    async def _run_one(self, generation: int, delivery: Delivery) -> None:
        handover = self._handover
        async with self._slots:
            if not handover.begin(generation):
                return
            try:
                try:
                    disposition = await self._execute(generation, delivery)
                except Exception as error:  # a fault of the worker's (run_coroutine_task catches the task's own)
                    disposition = self._tasks.worker_error(delivery, error)
                handover.finished(generation, disposition)
                self._wake_soon()
            finally:
                handover.end()

    def _wake_soon(self) -> None:
        """Have the connection thread settle what is done within WAKE_AFTER_S: coroutines finish
        in any order, each acked as soon as it can be, and one wake-up serves all that end meanwhile."""
        if not self._wake_armed:
            self._wake_armed = True
            self._loop.call_later(WAKE_AFTER_S, self._wake_connection_thread)

    def _wake_connection_thread(self) -> None:
        self._wake_armed = False
        self._handover.wake()

    async def _execute(self, generation: int, delivery: Delivery) -> Disposition:
        tasks = self._tasks
        message, task, refused = tasks.accept(delivery)
        if refused is not None:
            return refused
        if not task.is_coroutine:
            in_context = contextvars.copy_context().run  # the log context (pool_process) goes along
            return await self._loop.run_in_executor(
                self._sync_thread, in_context, tasks.run_plain, generation, delivery, message, task
            )
        self._running[id(delivery)] = message.task
        current: asyncio.Task = asyncio.current_task()  # type: ignore[assignment]  # never None: it runs on the loop
        time_limit = self.config.time_limit_for(message.task)
        if time_limit is not None:
            self._deadlines[current] = time.monotonic() + time_limit
            self._limited[current] = (message.id, message.task)
        recorder = metrics.recorder
        recorder.task_started()
        try:
            run = await run_coroutine_task(
                delivery, message, task, time_limit, timed_out=lambda: current in self._over_limit
            )
        finally:
            recorder.task_ended()
            del self._running[id(delivery)]
            self._deadlines.pop(current, None)
            self._limited.pop(current, None)
            self._over_limit.pop(current, None)
        tasks.timed(run)
        return tasks.outcome(delivery, message, run)
