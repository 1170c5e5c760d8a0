"""``rabbitry schedule``: queue each entry of a schedule on time, exactly once, from one of
any number of schedulers.

Which scheduler queues is decided by the broker. Every scheduler of a
schedule consumes its lease queue, a single-active-consumer queue: RabbitMQ
delivers only to one consumer, which keeps the lease message unacknowledged
while it runs. When that scheduler dies or stops, its connection closes, the
lease goes back to the queue and on to the next scheduler.

What was queued is recorded by the broker too. Each tick is one publish,
with publisher confirms, to the work queue and (through the ``BCC`` header,
which RabbitMQ routes and then removes) to the entry's ledger queue, which
keeps only the last one. A scheduler that takes the lease reads each ledger
and goes on after the tick it holds: a tick is in both queues or in neither,
so none is queued twice and none already queued is skipped.
"""

import datetime
import threading
import time
from collections.abc import Callable

import structlog

from rabbitry.common.connect import connect, connect_with_retry
from rabbitry.common.errors import ConnectionLost, RabbitryError
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import schedule_lease_queue, schedule_ledger_queue, schedule_queues, work_queue
from rabbitry.common.transport.contract import Connection, Delivery, OutgoingMessage
from rabbitry.producers.periodic import Plan, Schedule, ScheduleEntry, plan

log = structlog.get_logger("rabbitry.scheduler")

#: The header of a queued tick (and of its copy in the ledger): the tick's POSIX time in
#: milliseconds (AMQP headers, as pika writes them, take integers, not floats).
TICK_HEADER = "x-rabbitry-tick-ms"
SCHEDULE_HEADER = "x-rabbitry-schedule"
#: How often a waiting scheduler wakes up: to see whether it holds the lease, or a tick is due.
_TICK_S = 0.1
#: How often a scheduler without the lease makes sure a lease message exists (one lost with a
#: purged queue is replaced; more than one does no harm, as only one consumer receives).
_LEASE_CHECK_S = 5.0
#: How long a tick's confirm is awaited before the connection is given up on.
_CONFIRM_TIMEOUT_S = 30.0
#: How long a leader waits when the next tick it computes is not ahead of now (a fault in the
#: ticks): it waits, and says so, rather than compute the same tick again at once, forever.
_NOT_AHEAD_PAUSE_S = 1.0


def utc_text(moment: float) -> str:
    """A POSIX time as ISO 8601 in UTC, for log lines."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat().replace("+00:00", "Z")


class Scheduler:
    """Queues the entries of ``schedule`` on time while it holds the schedule's lease.

    ``run`` returns when ``stop`` is set. ``clock`` gives POSIX time (a test
    may pass another).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        schedule: Schedule,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "rabbitry-schedule",
    ):
        self.settings = settings
        self.schedule = schedule
        self.stop = stop or threading.Event()
        self.clock = clock
        self.name = name
        self.leading = threading.Event()  # set while this scheduler holds the lease
        self.queued = 0

    def run(self) -> None:
        """Serve the schedule until ``stop``; the first connection fails at once if the broker is down."""
        connection: Connection | None = connect(self.settings, self.name)
        while connection is not None:
            try:
                self._serve(connection)
                return
            except ConnectionLost as error:
                log.warning(
                    "scheduler_connection_lost",
                    schedule=self.schedule.name,
                    error=str(error),
                    detail="the lease goes to another scheduler; reconnecting to wait for it again",
                )
            finally:
                self.leading.clear()
                connection.close()
            connection = connect_with_retry(self.settings, self.name, self.stop)

    # -- the lease ----------------------------------------------------------
    def _serve(self, connection: Connection) -> None:
        schedule = self.schedule
        topology = schedule_queues(schedule.name, [entry.name for entry in schedule.entries])
        for queue in sorted({entry.queue for entry in schedule.entries}):
            topology += work_queue(queue)
        connection.declare(topology)
        lease = schedule_lease_queue(schedule.name)
        held: list[Delivery] = []
        self._offer_lease(connection, lease)
        connection.consume(lease, held.append, prefetch=1)
        log.info(
            "scheduler_waiting",
            schedule=schedule.name,
            entries=len(schedule.entries),
            detail="queues ticks once it holds the lease",
        )
        checked = time.monotonic()
        while not held:
            if self.stop.is_set():
                return
            connection.process_events(_TICK_S)
            if time.monotonic() - checked > _LEASE_CHECK_S:
                self._offer_lease(connection, lease)
                checked = time.monotonic()
        self.leading.set()
        self._lead(connection)

    @staticmethod
    def _offer_lease(connection: Connection, lease: str) -> None:
        """Put a lease message in the queue unless one is waiting there already."""
        state = connection.queue_state(lease)
        if state is not None and state.messages == 0:
            connection.publish(OutgoingMessage(lease, b"lease", content_type="text/plain"))
            if connection.wait_for_confirms(_CONFIRM_TIMEOUT_S):
                raise ConnectionLost("the broker refused the schedule's lease message")

    # -- leading ------------------------------------------------------------
    def _lead(self, connection: Connection) -> None:
        schedule = self.schedule
        started = self.clock()
        after = {}
        for entry in schedule.entries:
            last = self._last_queued(connection, entry)
            after[entry.name] = started if last is None else last
        log.info(
            "scheduler_leading",
            schedule=schedule.name,
            last_ticks={name: utc_text(moment) for name, moment in after.items()},
        )
        while not self.stop.is_set():
            now = self.clock()
            for entry in schedule.entries:
                after[entry.name] = self._carry_out(
                    connection, entry, plan(entry, after[entry.name], now), after[entry.name], now
                )
            due = min(entry.next_tick(after[entry.name]) for entry in schedule.entries)
            if due <= now:  # every tick due by now was dealt with: one not ahead is a fault in the ticks
                log.error(
                    "schedule_next_tick_not_ahead",
                    schedule=schedule.name,
                    next_tick=utc_text(due),
                    now=utc_text(now),
                    detail=f"waiting {_NOT_AHEAD_PAUSE_S:g} s rather than computing it again at once",
                )
                self._pause(connection, _NOT_AHEAD_PAUSE_S)
                continue
            while not self.stop.is_set() and (wait := due - self.clock()) > 0:
                connection.process_events(min(wait, _TICK_S))

    def _pause(self, connection: Connection, seconds: float) -> None:
        """Serve the connection for ``seconds`` of monotonic time, or until ``stop``."""
        until = time.monotonic() + seconds
        while not self.stop.is_set() and (wait := until - time.monotonic()) > 0:
            connection.process_events(min(wait, _TICK_S))

    def _last_queued(self, connection: Connection, entry: ScheduleEntry) -> float | None:
        """The tick the entry's ledger holds (the last queued), or None if it never ran."""
        delivery = connection.get(schedule_ledger_queue(self.schedule.name, entry.name))
        if delivery is None:
            return None
        connection.reject(delivery.delivery_tag, requeue=True)
        try:
            return int(delivery.headers[TICK_HEADER]) / 1000
        except (KeyError, TypeError, ValueError):
            log.warning("schedule_ledger_unreadable", entry=entry.name, detail="starting from now")
            return None

    def _carry_out(
        self, connection: Connection, entry: ScheduleEntry, decided: Plan, after: float, now: float
    ) -> float:
        """Queue the plan's ticks, log what it skipped; return the last tick dealt with."""
        if decided.skipped_span is not None:  # some ticks skipped
            first, last = decided.skipped_span
            log.warning(
                "schedule_ticks_skipped",
                entry=entry.name,
                skipped=decided.skipped,
                first=utc_text(first),
                last=utc_text(last),
                detail="no scheduler ran when they fell due; set catch_up = true to queue the "
                "latest missed tick instead",
            )
            after = max(after, last)
        for tick in decided.ticks:
            self._queue(connection, entry, tick)
            after = tick
        return after

    def _queue(self, connection: Connection, entry: ScheduleEntry, tick: float) -> None:
        message = entry.message(self.schedule.name, tick)
        outgoing = message.to_outgoing(entry.queue)
        outgoing.headers = {
            TICK_HEADER: round(tick * 1000),
            SCHEDULE_HEADER: self.schedule.name,
            "BCC": [schedule_ledger_queue(self.schedule.name, entry.name)],
        }
        connection.publish(outgoing, mandatory=True)
        try:
            failures = connection.wait_for_confirms(_CONFIRM_TIMEOUT_S)
        except RabbitryError as error:  # the tick may or may not be queued: the ledger knows
            raise ConnectionLost(f"no confirm for tick {utc_text(tick)} of {entry.name}: {error}") from None
        if failures:
            log.error(
                "schedule_tick_refused",
                entry=entry.name,
                tick=utc_text(tick),
                task_id=message.id,
                reason=failures[0].reason,
                queue=entry.queue,
            )
            return
        self.queued += 1
        log.info(
            "schedule_tick_queued",
            entry=entry.name,
            task=entry.task,
            task_id=message.id,
            tick=utc_text(tick),
            late_s=round(max(0.0, self.clock() - tick), 3),
            queue=entry.queue,
        )
