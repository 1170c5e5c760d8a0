"""The connection thread of a pool process: consuming, settling, publishing with confirms.

It runs on the process's main thread and owns the connection: it receives
deliveries and hands them over in batches, acks and rejects what the task
thread finished, publishes retries, dead letters and replies, and keeps
heartbeats flowing however long a task runs. Nothing else touches the
connection; the task thread reaches this thread only through the
:class:`~workers.handover.Handover`. It also chooses the prefetch, when the
process was given none (:mod:`workers.prefetch`), and ends the process over a
plain task past its time limit.

A retry or a dead letter is acked only once the broker has confirmed it, so a
task is never lost between the work queue and where it goes next; its log line
(``task_failed``, ``task_dead_lettered``) is written only then. A channel the
broker closes is noticed at the next call, and the thread connects again; a
refused reply teaches it the broker's ``max_message_size``
(:mod:`workers.broker_limits`).
"""

import os
import threading
import time
from collections.abc import Callable

import structlog

from rabbitry.common.connect import connect_with_retry
from rabbitry.common.errors import (
    AcknowledgementTimedOut,
    BrokerRefused,
    ChannelClosed,
    ConnectionLost,
    ExitCode,
    MessageRefused,
    RabbitryError,
    Unencodable,
)
from rabbitry.common.transport.contract import UNPUBLISHABLE, Connection, Delivery, OutgoingMessage
from rabbitry.workers import metrics
from rabbitry.workers.broker_limits import ASSUMED_MAX_MESSAGE_SIZE, within_limit
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.coroutines import CoroutineTasks
from rabbitry.workers.execution import REASON_HEADER, UNPUBLISHABLE_REASON, Disposition, failure
from rabbitry.workers.handover import Handover
from rabbitry.workers.prefetch import AdaptivePrefetch
from rabbitry.workers.task_thread import TaskThread

log = structlog.get_logger("rabbitry.worker")

#: A pool process that killed a task over its time limit exits with this code.
EXIT_TIME_LIMIT = 75
#: How often the connection thread wakes up to check stop and time limits.
_TICK_S = 0.1
_CONFIRM_TIMEOUT_S = 30.0
#: How long a graceful stop goes on settling what the task thread finished (publishing its retries
#: and dead letters, waiting for their confirms, acking): well within the 30 s a container is given
#: to stop (compose.yaml's stop_grace_period). What is left then is not logged as done, and the
#: broker requeues it when the connection closes.
STOP_SETTLING_S = 20.0


class ConnectionThread:
    """Serves a pool process's connection, reconnecting, until told to stop."""

    #: The connection served now (see :meth:`use`).
    _connection: Connection

    def __init__(
        self,
        config: WorkerConfig,
        handover: Handover,
        tasks: TaskThread,
        coroutines: CoroutineTasks | None,
        prefetch: AdaptivePrefetch | None,
        stop: threading.Event,
        shared_stop,
        enforces_time_limits: bool = True,
    ):
        self.config = config
        self._handover = handover
        self._tasks = tasks
        self._coroutines = coroutines
        self._prefetch = prefetch  # the prefetch this process chooses itself, when it was given none
        self._stop = stop  # this process's own
        self._shared_stop = shared_stop  # the whole pool's, set by the supervisor
        self._enforces_time_limits = enforces_time_limits
        self._settling = False  # in settle_outbox: the serve loop calls it, and a wait for confirms may call back
        self._settle_until: float | None = None  # on a graceful stop: when to leave the rest to the broker
        #: The largest body the broker takes: its max_message_size once it has refused a message.
        self.max_message_size = ASSUMED_MAX_MESSAGE_SIZE
        #: Hands a batch of deliveries (or None, to stop) over to the task thread.
        self.hand_over = handover.hand_over if coroutines is None else coroutines.hand_over

    def run(self) -> int:
        """Connect, serve, and connect again when the connection is lost, until stopped;
        return the process exit code."""
        try:
            while not self._stopping():
                connection = connect_with_retry(self.config.settings, f"rabbitry-worker-{os.getpid()}", self._stop)
                if connection is None:
                    break
                try:
                    self._serve(connection)
                except AcknowledgementTimedOut as error:
                    metrics.recorder.connection_lost()
                    log.error(
                        "delivery_acknowledgement_timed_out",
                        error=str(error),
                        hint="a task ran, or waited behind others, longer than the broker's consumer_timeout: "
                        "lower --time-limit or --prefetch",
                    )
                except ConnectionLost as error:
                    metrics.recorder.connection_lost()
                    log.warning("connection_lost", error=str(error))
                except MessageRefused as error:
                    metrics.recorder.connection_lost()
                    self.max_message_size = error.max_size
                    log.error(
                        "message_refused",
                        error=str(error),
                        max_message_size=error.max_size,
                        detail="the broker closed the channel and requeues what it held; from now on a result "
                        "over its max_message_size is dead-lettered as result_too_large",
                    )
                except ChannelClosed as error:  # not a fault of the worker's settings: connect again
                    metrics.recorder.connection_lost()
                    log.error("channel_closed", error=str(error))
                finally:
                    self._handover.channel_gone()  # whatever the old channel held will be redelivered
                    connection.close()
        except BrokerRefused as error:
            log.error("broker_refused", error=str(error))
            return ExitCode.BROKER_REFUSED
        except RabbitryError as error:
            log.error("worker_failed", error=str(error))
            return error.exit_code
        return ExitCode.OK

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._shared_stop.is_set()

    def use(self, connection: Connection) -> None:
        """Serve ``connection`` from now on: a new channel, whose deliveries are yet to come."""
        self._connection = connection
        self._handover.attach(connection.call_threadsafe, self.settle_outbox)
        if self._coroutines is not None:
            self._coroutines.acks.reset()

    def _serve(self, connection: Connection) -> None:
        self.use(connection)
        handover = self._handover
        outbox = handover.outbox
        connection.declare(self.config.topology)
        generation = handover.generation
        arrived: list[Delivery] = []  # what the last turn of the loop delivered
        prefetch = self.config.channel_prefetch if self._prefetch is None else self._prefetch.prefetch
        consumer_tag = self._consume(connection, arrived.append, prefetch)
        log.debug("consuming", queue=self.config.queue, prefetch=prefetch)
        while not self._stopping():
            connection.process_events(_TICK_S)
            quiet = not arrived
            if arrived:
                self.hand_over((generation, arrived.copy()))
                arrived.clear()
            # Settle what is done when it is worth an ack, or on a quiet turn (a tick): a task
            # that runs long holds back no ack of those that ran before it.
            if outbox and (quiet or len(outbox) >= handover.ack_every):
                self.settle_outbox()
            self._enforce_time_limit()
            if self._coroutines is not None:
                self._coroutines.watch()
            if self._prefetch is not None and (changed := self._prefetch.change()) is not None:
                connection.cancel(consumer_tag)  # what it holds is acked as usual
                consumer_tag = self._consume(connection, arrived.append, changed)
                log.info("prefetch_changed", prefetch=changed, longest_task_s=round(self._prefetch.longest_s, 6))
        # Stop taking work, let the running task finish and settle it; closing
        # the connection then requeues whatever was prefetched but not started.
        connection.cancel(consumer_tag)
        handover.stop_accepting()
        while not handover.wait_until_idle(_TICK_S):
            connection.process_events(0)
            self._enforce_time_limit()
        self._settle_until = time.monotonic() + STOP_SETTLING_S
        try:
            self.settle_outbox()
        finally:
            self._settle_until = None
        if outbox:
            log.warning(
                "settling_cut_short",
                unsettled=len(outbox),
                detail=f"not settled within {STOP_SETTLING_S:g} s of stopping: the broker requeues them",
            )
            outbox.clear()

    def _consume(self, connection: Connection, on_delivery: Callable[[Delivery], None], prefetch: int) -> str:
        self._handover.ack_every = max(1, prefetch // 4)
        return connection.consume(self.config.queue, on_delivery, prefetch=prefetch)

    def settle_outbox(self) -> None:
        """Ack, reject and publish what the task thread finished, in the order it finished."""
        if self._settling:
            # Called back from inside the wait for a retry's confirm in the settling already running,
            # where a multiple ack could cover that delivery before its retry is confirmed: the
            # running one goes on with whatever has come, and the task thread may ask again.
            self._handover.reset_wake()
            return
        self._settling = True
        try:
            self._settle_outbox()
        finally:
            self._settling = False

    def _settle_outbox(self) -> None:
        handover = self._handover
        handover.reset_wake()  # before draining, so nothing appended later is missed
        outbox, current = handover.outbox, handover.generation
        connection = self._connection
        coroutines = self._coroutines
        ack_up_to = None
        succeeded = []  # with coroutines, which finish in any order
        replied = False
        settle_until = self._settle_until
        while outbox:
            if settle_until is not None and time.monotonic() > settle_until:
                break
            generation, disposition = outbox.popleft()
            if generation != current:
                continue  # from a channel that is gone: the broker redelivers it
            if disposition.reply is not None and len(disposition.reply.body) > self.max_message_size:
                disposition = within_limit(disposition, self.config, self.max_message_size)
            if disposition.publish is None and coroutines is not None:
                succeeded.append(disposition.delivery.delivery_tag)
            elif disposition.publish is None:
                ack_up_to = disposition.delivery.delivery_tag
            else:
                if ack_up_to is not None:
                    connection.ack(ack_up_to, multiple=True)
                    ack_up_to = None
                self.publish_then_ack(disposition)
                if coroutines is not None:
                    coroutines.acks.settled(disposition.delivery.delivery_tag)
            if disposition.reply is not None:
                self._reply(disposition.delivery, disposition.reply)
                replied = True
        if ack_up_to is not None:
            connection.ack(ack_up_to, multiple=True)
        if coroutines is not None:
            coroutines.acks.ack(connection, succeeded)
        if replied:
            self._forget_replies()

    def _reply(self, delivery: Delivery, reply: OutgoingMessage) -> None:
        """Send the result its caller waits for, without waiting for a confirm.

        If the caller has gone, RabbitMQ drops the reply (3.10 returns even
        delivered direct replies when they are mandatory, so a return tells
        nothing): the task is settled as usual either way.
        """
        self._connection.publish(reply)
        log.debug("task_replied", task_id=delivery.message_id, reply_to=reply.routing_key)

    def _forget_replies(self) -> None:
        """Drop the confirms of replies sent, so they do not pile up; log any the broker refused."""
        for refused in self._connection.take_confirmed()[1]:
            log.warning("reply_not_sent", task_id=refused.message.message_id, reason=refused.reason)

    def publish_then_ack(self, disposition: Disposition) -> None:
        """Publish a retry or dead letter, and ack its delivery only once the broker has confirmed it.

        A disposition that cannot be encoded is sent in a plainer form instead
        (see :meth:`Disposition.fallback`), never requeued to fail again.
        """
        connection = self._connection
        message: OutgoingMessage | None = disposition.publish
        while message is not None:
            try:
                connection.check_publishable(message)
                connection.publish(message, mandatory=True)
                failures = connection.wait_for_confirms(_CONFIRM_TIMEOUT_S)
                connection.take_confirmed()
                if not failures or failures[0].reason != UNPUBLISHABLE:
                    break
                raise Unencodable("pika could not encode it")
            except Unencodable as error:
                message = self._fallback(disposition, message, str(error))
        if message is None:
            return
        if failures:
            log.error(
                "republish_failed",
                task_id=disposition.delivery.message_id,
                reason=failures[0].reason,
                queue=message.routing_key,
            )
            if failures[0].reason == "nacked":
                # A channel whose quorum-queue client lost the leader keeps nacking:
                # reconnect, and the broker redelivers the task to the new channel.
                raise ConnectionLost("the broker nacked a retry or dead letter")
            connection.reject(disposition.delivery.delivery_tag, requeue=True)
        else:
            connection.ack(disposition.delivery.delivery_tag)
            if disposition.announce is not None:
                disposition.announce()  # confirmed and acked: only now is it done

    def _fallback(self, disposition: Disposition, failed: OutgoingMessage, why: str) -> OutgoingMessage | None:
        """The plainer form to publish after ``failed``; None (the delivery dropped) if there is none."""
        task_id = disposition.delivery.message_id
        fallback = disposition.fallback(failed, self.config.queue, why)
        if fallback is None:  # not even a bare letter: drop it rather than run it again and again
            log.error("settlement_dropped", task_id=task_id, error=why)
            self._connection.reject(disposition.delivery.delivery_tag, requeue=False)
        elif (fallback.headers or {}).get(REASON_HEADER) == UNPUBLISHABLE_REASON:
            log.warning("sent_as_bare_letter", task_id=task_id, error=why)
        else:  # the delivery's own headers, most likely
            log.warning("headers_left_out", task_id=task_id, error=why)
        return fallback

    def _enforce_time_limit(self) -> None:
        if not self._enforces_time_limits or (overdue := self._tasks.overdue()) is None:
            return
        delivery, message, limit = overdue
        # The task thread cannot be interrupted: record the failure, then end
        # this process with it. The supervisor starts a fresh one.
        try:
            self.settle_outbox()
            disposition = failure(
                delivery, message, self.config, f"TimeLimitExceeded: ran over the {limit:g} s time limit"
            )
            self.publish_then_ack(disposition)
            if disposition.reply is not None:
                self._reply(delivery, disposition.reply)
                self._connection.wait_for_confirms(_CONFIRM_TIMEOUT_S)
        except RabbitryError as error:  # not recorded: the broker redelivers the task instead
            log.error("time_limit_not_recorded", task_id=message.id, error=str(error))
        self._connection.close()  # the ledger still names the task, for the supervisor's log line
        os._exit(EXIT_TIME_LIMIT)
