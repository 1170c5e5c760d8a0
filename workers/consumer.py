"""One pool process: a connection thread and a task thread.

The main thread owns the connection: it receives deliveries, acks, publishes
retries and dead letters, and keeps heartbeats flowing however long a task
runs. The two threads meet as rarely as they can. The connection thread hands
over whatever one read of the socket delivered, as one batch; the task thread
runs the batch one task at a time, in delivery order, and puts each
settlement in the outbox. It wakes the connection thread (``call_threadsafe``,
the only cross-thread call pika allows) only when a quarter of the prefetch is
settled, when a retry, a dead letter or a reply is to be sent, or when it has
nothing left to run; the connection thread also settles what it finds in the
outbox whenever it wakes for its own reasons. Because tasks finish in delivery
order, a run of successes is acknowledged with a single ``multiple`` ack.
"""

import collections
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback

import structlog

from rabbitry.common.transport.connect import connect_with_retry
from rabbitry.common.errors import (AcknowledgementTimedOut, BrokerRefused, ConfigurationError, ConnectionLost, ExitCode,
                                    RabbitryError, Unencodable)
from rabbitry.common.logconfig import configure_logging
from rabbitry.common.transport.contract import UNPUBLISHABLE, Connection, Delivery, OutgoingMessage
from rabbitry.workers import metrics
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.coroutines import CoroutineTasks
from rabbitry.workers.execution import (REASON_HEADER, UNPUBLISHABLE_REASON, Settlement, crash_limit_reached, dead_letter,
                                       decode, failure, run_task, succeeded)
from rabbitry.workers.ledger import CrashLedger
from rabbitry.workers.prefetch import AdaptivePrefetch
from rabbitry.workers.registry import load_task_modules

log = structlog.get_logger("rabbitry.worker")

#: A pool process that killed a task over its time limit exits with this code.
EXIT_TIME_LIMIT = 75
#: How often the connection thread wakes up to check stop and time limits.
_TICK_S = 0.1
_CONFIRM_TIMEOUT_S = 30.0
#: How long the task thread waits for more deliveries before it has the connection thread
#: settle what is done (it may be asleep until the next tick otherwise).
_QUIET_S = 0.002
#: prctl(2) option: the signal this process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


class PoolProcess:
    """Consumes the work queue and runs tasks, until told to stop."""

    def __init__(self, config: WorkerConfig, index: int, stop, ledger: CrashLedger):
        self.config = config
        self.index = index
        self._shared_stop = stop
        self._stop = threading.Event()
        self._ledger = ledger
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._outbox: collections.deque = collections.deque()
        self._flush_pending = False
        self._flushing = False  # in _flush: the serve loop calls it, and a wait for confirms may call back
        #: The prefetch this process chooses itself, when it was given none.
        self._prefetch = AdaptivePrefetch() if config.adapts_prefetch else None
        #: Settlements that make it worth waking the connection thread: a quarter of the prefetch.
        self._ack_every = 1
        self._connection: Connection | None = None
        self._generation = 0
        self._running: tuple[int, Delivery, object, float] | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._active = 0  # tasks started and not yet settled, counted on the task thread
        self._accepting = True
        self._accepting_lock = threading.Lock()
        #: The event loop side, when this process runs coroutines; None runs tasks one at a time.
        self._coroutines = CoroutineTasks(self) if config.uses_coroutines else None
        #: Hands a batch of deliveries (or None, to stop) from the connection thread to the task thread.
        self._hand_over = self._inbox.put if self._coroutines is None else self._coroutines.hand_over

    # -- connection thread -------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        self._install_signal_handlers()
        structlog.contextvars.bind_contextvars(pool_process=self.index)
        run_tasks = self._run_tasks if self._coroutines is None else self._coroutines.run
        task_thread = threading.Thread(target=run_tasks, name="rabbitry-tasks", daemon=True)
        task_thread.start()
        try:
            while not self._stopping():
                connection = connect_with_retry(self.config.settings, f"rabbitry-worker-{os.getpid()}",
                                                self._stop)
                if connection is None:
                    break
                try:
                    self._serve(connection)
                except AcknowledgementTimedOut as error:
                    metrics.recorder.connection_lost()
                    log.error("delivery_acknowledgement_timed_out", error=str(error),
                              hint="a task ran, or waited behind others, longer than the broker's consumer_timeout: "
                                   "lower --time-limit or --prefetch")
                except ConnectionLost as error:
                    metrics.recorder.connection_lost()
                    log.warning("connection_lost", error=str(error))
                finally:
                    self._generation += 1  # whatever the old channel held will be redelivered
                    connection.close()
        except BrokerRefused as error:
            log.error("broker_refused", error=str(error))
            return ExitCode.BROKER_REFUSED
        except RabbitryError as error:
            log.error("worker_failed", error=str(error))
            return error.exit_code
        finally:
            self._hand_over(None)
            if supervisor_died():
                log.warning("supervisor_died", detail="stopped taking work; the broker requeues what was held")
        return ExitCode.OK

    def _install_signal_handlers(self) -> None:
        """A pool process ignores SIGINT (the supervisor coordinates shutdown) and stops on SIGTERM."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._shared_stop.is_set()

    def _serve(self, connection: Connection) -> None:
        self._connection = connection
        self._flush_pending = False
        if self._coroutines is not None:
            self._coroutines.acks.reset()
        connection.declare(self.config.topology)
        generation = self._generation
        arrived: list[Delivery] = []  # what the last turn of the loop delivered
        prefetch = self.config.channel_prefetch if self._prefetch is None else self._prefetch.prefetch
        consumer_tag = self._consume(connection, arrived.append, prefetch)
        log.debug("consuming", queue=self.config.queue, prefetch=prefetch)
        while not self._stopping():
            connection.process_events(_TICK_S)
            quiet = not arrived
            if arrived:
                self._hand_over((generation, arrived.copy()))
                arrived.clear()
            # Settle what is done when it is worth an ack, or on a quiet turn (a tick): a task
            # that runs long holds back no ack of those that ran before it.
            if self._outbox and (quiet or len(self._outbox) >= self._ack_every):
                self._flush()
            self._enforce_time_limit()
            if self._coroutines is not None:
                self._coroutines.watch()
            if self._prefetch is not None and (prefetch := self._prefetch.change()) is not None:
                connection.cancel(consumer_tag)  # what it holds is acked as usual
                consumer_tag = self._consume(connection, arrived.append, prefetch)
                log.info("prefetch_changed", prefetch=prefetch, longest_task_s=round(self._prefetch.longest_s, 6))
        # Stop taking work, let the running task finish and settle it; closing
        # the connection then requeues whatever was prefetched but not started.
        connection.cancel(consumer_tag)
        with self._accepting_lock:
            self._accepting = False
        while not self._idle.wait(_TICK_S):
            connection.process_events(0)
            self._enforce_time_limit()
        self._flush()

    def _consume(self, connection: Connection, on_delivery, prefetch: int) -> str:
        self._ack_every = max(1, prefetch // 4)
        return connection.consume(self.config.queue, on_delivery, prefetch=prefetch)

    def _schedule_flush(self) -> None:
        """Called from the task thread: have the connection thread settle the outbox."""
        if not self._flush_pending:
            self._flush_pending = True
            try:
                self._connection.call_threadsafe(self._flush)
            except ConnectionLost:
                self._flush_pending = False  # the next connection redelivers the task

    def _flush(self) -> None:
        if self._flushing:
            # Called back from inside the wait for a retry's confirm in the flush already running,
            # where a multiple ack could cover that delivery before its retry is confirmed: the
            # running flush goes on with whatever has come, and the task thread may ask again.
            self._flush_pending = False
            return
        self._flushing = True
        try:
            self._settle_outbox()
        finally:
            self._flushing = False

    def _settle_outbox(self) -> None:
        self._flush_pending = False  # before draining, so nothing appended later is missed
        connection = self._connection
        coroutines = self._coroutines
        ack_up_to = None
        succeeded = []  # with coroutines, which finish in any order
        replied = False
        while self._outbox:
            generation, settlement = self._outbox.popleft()
            if generation != self._generation:
                continue  # from a channel that is gone: the broker redelivers it
            if settlement.publish is None and coroutines is not None:
                succeeded.append(settlement.delivery.delivery_tag)
            elif settlement.publish is None:
                ack_up_to = settlement.delivery.delivery_tag
            else:
                if ack_up_to is not None:
                    connection.ack(ack_up_to, multiple=True)
                    ack_up_to = None
                self._publish_then_ack(settlement)
                if coroutines is not None:
                    coroutines.acks.settled(settlement.delivery.delivery_tag)
            if settlement.reply is not None:
                self._reply(settlement)
                replied = True
        if ack_up_to is not None:
            connection.ack(ack_up_to, multiple=True)
        if coroutines is not None:
            coroutines.acks.ack(connection, succeeded)
        if replied:
            self._forget_replies()

    def _reply(self, settlement: Settlement) -> None:
        """Send the result its caller waits for, without waiting for a confirm.

        If the caller has gone, RabbitMQ drops the reply (3.10 returns even
        delivered direct replies when they are mandatory, so a return tells
        nothing): the task is settled as usual either way.
        """
        self._connection.publish(settlement.reply)
        log.debug("task_replied", task_id=settlement.delivery.message_id, reply_to=settlement.reply.routing_key)

    def _forget_replies(self) -> None:
        """Drop the confirms of replies sent, so they do not pile up; log any the broker refused."""
        for refused in self._connection.take_confirmed()[1]:
            log.warning("reply_not_sent", task_id=refused.message.message_id, reason=refused.reason)

    def _publish_then_ack(self, settlement: Settlement) -> None:
        """Ack only once the retry or dead letter is safely confirmed by the broker.

        A settlement that cannot be encoded is sent in a plainer form instead
        (see :meth:`Settlement.fallback`), never requeued to fail again.
        """
        connection = self._connection
        message = settlement.publish
        while True:
            try:
                connection.check_publishable(message)
                connection.publish(message, mandatory=True)
                failures = connection.wait_for_confirms(_CONFIRM_TIMEOUT_S)
                connection.take_confirmed()
                if not failures or failures[0].reason != UNPUBLISHABLE:
                    break
                raise Unencodable("pika could not encode it")
            except Unencodable as error:
                message = self._fallback(settlement, message, str(error))
                if message is None:
                    return
        if failures:
            log.error("republish_failed", task_id=settlement.delivery.message_id, reason=failures[0].reason,
                      queue=message.routing_key)
            if failures[0].reason == "nacked":
                # A channel whose quorum-queue client lost the leader keeps nacking:
                # reconnect, and the broker redelivers the task to the new channel.
                raise ConnectionLost("the broker nacked a retry or dead letter")
            connection.reject(settlement.delivery.delivery_tag, requeue=True)
        else:
            connection.ack(settlement.delivery.delivery_tag)

    def _fallback(self, settlement: Settlement, failed: OutgoingMessage, why: str) -> OutgoingMessage | None:
        """The plainer form to publish after ``failed``; None (the delivery dropped) if there is none."""
        task_id = settlement.delivery.message_id
        fallback = settlement.fallback(failed, self.config.queue, why)
        if fallback is None:  # not even a bare letter: drop it rather than run it again and again
            log.error("settlement_dropped", task_id=task_id, error=why)
            self._connection.reject(settlement.delivery.delivery_tag, requeue=False)
        elif fallback.headers.get(REASON_HEADER) == UNPUBLISHABLE_REASON:
            log.warning("sent_as_bare_letter", task_id=task_id, error=why)
        else:  # the delivery's own headers, most likely
            log.warning("headers_left_out", task_id=task_id, error=why)
        return fallback

    def _enforce_time_limit(self) -> None:
        running = self._running
        if running is None:
            return
        generation, delivery, message, started = running
        limit = self.config.time_limit_for(message.task)
        if limit is None or time.monotonic() - started < limit or generation != self._generation:
            return
        # The task thread cannot be interrupted: record the failure, then end
        # this process with it. The supervisor starts a fresh one.
        try:
            self._flush()
            settlement = failure(delivery, message, self.config, f"TimeLimitExceeded: ran over the {limit:g} s time limit")
            self._publish_then_ack(settlement)
            if settlement.reply is not None:
                self._reply(settlement)
                self._connection.wait_for_confirms(_CONFIRM_TIMEOUT_S)
        except RabbitryError as error:  # not recorded: the broker redelivers the task instead
            log.error("time_limit_not_recorded", task_id=message.id, error=str(error))
        self._connection.close()  # the ledger still names the task, for the supervisor's log line
        os._exit(EXIT_TIME_LIMIT)

    # -- task thread -------------------------------------------------------
    def _run_tasks(self) -> None:
        structlog.contextvars.bind_contextvars(pool_process=self.index)
        while (batch := self._next_batch()) is not None:
            generation, deliveries = batch
            if not self._begin(generation):  # the batch counts as one task started: it runs to its end
                continue
            try:
                for delivery in deliveries:
                    if generation != self._generation or not self._accepting:
                        break  # the channel is gone or closing: the broker delivers the rest again
                    try:
                        settlement = self._execute(generation, delivery)
                    except Exception as error:  # a fault of the worker's (run_task catches the task's own)
                        settlement = self._worker_error(delivery, error)
                    self._settled(generation, settlement)
            finally:
                self._end()

    def _next_batch(self) -> tuple[int, list[Delivery]] | None:
        """The next batch of deliveries (None: stop). While deliveries keep coming, the connection
        thread is awake and settles what is done as it goes; once none has come for a moment, it
        may be asleep, and is woken to settle the rest."""
        try:
            return self._inbox.get(timeout=_QUIET_S)
        except queue.Empty:
            if self._outbox:
                self._schedule_flush()
            return self._inbox.get()

    def _begin(self, generation: int) -> bool:
        """Count a task (or a batch, run to its end) as started, unless its channel is gone or closing
        (the broker redelivers it)."""
        with self._accepting_lock:
            if generation != self._generation or not self._accepting:
                return False
            self._active += 1
            self._idle.clear()
        return True

    def _end(self) -> None:
        self._active -= 1
        if not self._active:
            self._idle.set()

    def _worker_error(self, delivery: Delivery, error: Exception) -> Settlement:
        """A fault of the worker's own: logged, and the delivery kept in the dead-letter queue."""
        log.error("worker_error", traceback=traceback.format_exc())
        return dead_letter(delivery, self.config, "worker_error", f"{type(error).__name__}: {error}")

    def _settled(self, generation: int, settlement: Settlement) -> None:
        """Hand a settlement to the connection thread, waking it when there is enough to send."""
        self._outbox.append((generation, settlement))
        if settlement.publish is not None or settlement.reply is not None or len(self._outbox) >= self._ack_every:
            self._schedule_flush()

    def _execute(self, generation: int, delivery: Delivery) -> Settlement:
        message, task, refused = self._accept(delivery)
        return refused if refused is not None else self._run(generation, delivery, message, task)

    def _accept(self, delivery: Delivery):
        """The task message and task of a delivery, or the dead letter it must become instead."""
        config = self.config
        message, task, rejected = decode(delivery, config)
        if rejected is not None:
            return message, task, rejected
        if delivery.redelivered:
            over_limit = crash_limit_reached(delivery, self._ledger.crashes(message.id), config.delivery_limit)
            if over_limit:
                return message, task, dead_letter(delivery, config, "delivery_limit", over_limit, message.task,
                                                  message.id)
        return message, task, None

    def _run(self, generation: int, delivery: Delivery, message, task) -> Settlement:
        """Run a plain function task: the one this process runs at a time, under its time limit."""
        self._ledger.set_running(self.index, message.id)
        self._running = (generation, delivery, message, time.monotonic())
        recorder = metrics.recorder
        recorder.task_started()
        try:
            run = run_task(delivery, message, task)
        finally:
            recorder.task_ended()
            self._running = None
            self._ledger.set_running(self.index, None)
        if self._prefetch is not None:
            self._prefetch.ran(run.duration_s)
        return self._outcome(delivery, message, run)

    def _outcome(self, delivery: Delivery, message, run) -> Settlement:
        if run.error is None:
            return succeeded(delivery, message, run.value)
        return failure(delivery, message, self.config, run.error, run.retryable, round(run.duration_s, 6))


def stop_with_supervisor() -> None:
    """Have the kernel send this pool process SIGTERM, its graceful stop, when the supervisor dies.

    A pipe whose write end the supervisor holds would need every later-forked
    sibling to close its inherited copy of that end, or a sibling keeps it open;
    ``PR_SET_PDEATHSIG`` is state of this process alone, which a fork does not
    pass on. It fires when the thread that forked this process ends, and the
    supervisor forks from its main thread only. Where prctl is missing (not
    Linux), pool processes outlive a killed supervisor.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if supervisor_died():  # it died before prctl took effect
        raise SystemExit(ExitCode.OK)


def supervisor_died() -> bool:
    """True in a pool process whose supervisor is gone (it has been given another parent)."""
    parent = multiprocessing.parent_process()
    return parent is not None and os.getppid() != parent.pid


def run_pool_process(config: WorkerConfig, index: int, stop, ledger: CrashLedger) -> None:
    """Entry point of a pool process."""
    stop_with_supervisor()
    configure_logging(config.log_format, config.log_level, sys.stdout, cache=True)
    try:
        load_task_modules(config.task_modules)
    except ConfigurationError as error:
        log.error("worker_failed", error=str(error))
        raise SystemExit(ExitCode.USAGE) from None
    raise SystemExit(int(PoolProcess(config, index, stop, ledger).run()))
