"""A logging handler that publishes an application's records to the topic log exchange.

::

    import logging
    from rabbitry import LogExchangeHandler

    logging.getLogger().addHandler(LogExchangeHandler("amqp://guest:guest@localhost:5672/"))
    logging.getLogger("kern").critical("A critical kernel error")   # routing key kern.critical

Each record goes to ``topic_logs`` with routing key ``<facility>.<severity>``:
the facility is the logger name's first part (or the one given), the
severity the lower-cased level name. ``subscribe "kern.*"`` receives it.

structlog uses it through the standard library: configure structlog with
``structlog.stdlib.LoggerFactory()`` (and, if you like, set a
``structlog.stdlib.ProcessorFormatter`` on the handler) and add the handler
to the stdlib logger.

The application thread never waits for the broker. ``emit`` formats the
record and appends it to a bounded buffer; a background thread owns the
connection, publishes with confirms and reconnects by itself.
**Overflow policy:** when the buffer is full (the broker is down or slower
than the application), the new record is dropped, and counted in
:attr:`LogExchangeHandler.dropped`; the older records already buffered are
kept, so what is published has no holes in the middle. ``close()`` publishes
what is buffered and waits for its confirms, for at most ``close_timeout``.

**When the broker blocks publishing** (a memory or disk alarm), the handler
does as during an outage: the application goes on without waiting, records
fill the buffer and then are dropped (counted), and the background thread
keeps its connection and waits for the alarm to clear, however long, without
reconnecting or publishing anything twice. ``close()`` still returns within
``close_timeout`` (and a short grace): it counts what was left in
:attr:`~LogExchangeHandler.unsent` and drops the blocked connection.

**At exit** the handler closes itself from an :mod:`atexit` hook, which runs
before the one :func:`logging.shutdown` registered, so a short script that
logs and exits still delivers its records; what ``close`` could not send is
counted in :attr:`~LogExchangeHandler.unsent` and said in one line on stderr.
"""

import atexit
import collections
import dataclasses
import logging
import math
import sys
import threading
import time
import weakref

import structlog

# The background thread connects with these two; imported here, in the importing thread, so that
# the thread never imports anything itself, which can stall while the interpreter is exiting.
import rabbitry.common.amqp.opening  # noqa: F401
import rabbitry.common.local.registry  # noqa: F401
from rabbitry.common.errors import RabbitryError
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import log_exchange
from rabbitry.common.transport.wire_limits import MAX_SHORT_STRING_BYTES
from rabbitry.producers.log_emitter import LogEmitter

log = structlog.get_logger("rabbitry.log_handler")

#: Records held for the background thread before new ones are dropped.
DEFAULT_CAPACITY = 10_000
DEFAULT_CLOSE_TIMEOUT_S = 5.0
#: The background thread wakes at least this often, to keep heartbeats and confirms flowing.
_IDLE_WAKEUP_S = 0.5
_MAX_SEVERITY_BYTES = 32
_MAX_LOGGER_BYTES = 1024
#: Extra wait for the thread after close gave up on the broker.
_STOP_GRACE_S = 2.0


class LogExchangeHandler(logging.Handler):
    """Publishes log records to a topic exchange, from a background thread.

    ``settings`` is a :class:`BrokerSettings` or a broker URL (default:
    ``$AMQP_URL``). ``facility`` overrides the logger name's first part in
    the routing key. Counters: :attr:`dropped` (records lost to a full
    buffer, or logged after ``close``), :attr:`published` (confirmed by the
    broker) and :attr:`unsent` (still held when ``close`` gave up).
    """

    def __init__(
        self,
        settings: BrokerSettings | str | None = None,
        exchange: str | None = None,
        durable: bool = False,
        facility: str | None = None,
        app_id: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
        level: int = logging.NOTSET,
    ):
        super().__init__(level)
        if not isinstance(settings, BrokerSettings):
            settings = BrokerSettings.from_url(settings)
        # Never give up reconnecting, nor waiting out an alarm: the buffer, not a deadline, bounds what they cost.
        self.settings = dataclasses.replace(settings, reconnect_for=math.inf, blocked_timeout=None)
        self.exchange = log_exchange("topic", exchange, durable)
        self.facility = facility
        self.app_id = app_id
        self.capacity = capacity
        self.close_timeout = close_timeout
        self.dropped = 0
        self.unsent = 0
        self._buffer: collections.deque = collections.deque()
        self._routes: dict[tuple[str, int], tuple[str, str, str]] = {}
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._stop = threading.Event()
        self._close_deadline = math.inf
        self._emitter: LogEmitter | None = None
        # A daemon, so an application that never closes the handler can still exit;
        # logging.shutdown() closes every handler at exit, and close() flushes and stops the thread.
        self._thread = threading.Thread(target=self._run, name="rabbitry-log-handler", daemon=True)
        self._thread.start()
        # logging.shutdown() also closes the handler at exit, but from its own atexit hook,
        # registered when logging was imported and so run last; this one runs before it.
        atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def published(self) -> int:
        """Records the broker has confirmed."""
        return self._emitter.confirmed if self._emitter else 0

    # -- application threads ----------------------------------------------
    def handle(self, record: logging.LogRecord) -> bool:
        """Take a record, unless it comes from the handler's own thread (pika's logging).

        Refused before the handler's lock is taken: ``logging.shutdown`` holds that lock while
        it waits in :meth:`close` for the thread, so the thread must never ask for it.
        """
        if record.thread == self._thread.ident:
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer the record for the background thread; never waits, never raises."""
        if len(self._buffer) >= self.capacity or self._closing.is_set():
            self.dropped += 1  # under the handler's lock: emit calls never overlap
            return
        try:
            route = self._routes.get((record.name, record.levelno)) or self._route(record)
            self._buffer.append((route, self.format(record), record.created, record.name))
            if not self._wakeup.is_set():
                self._wakeup.set()
        except Exception:  # a record that cannot be formatted must not break the application
            self.handleError(record)

    def _route(self, record: logging.LogRecord) -> tuple[str, str, str]:
        """(routing key, severity, facility) of a logger and level; remembered."""
        # A routing key is at most 255 bytes of UTF-8: a long logger name is cut to fit.
        severity = _cut(record.levelname.lower().replace(" ", "-"), _MAX_SEVERITY_BYTES)
        facility = _cut(
            self.facility or record.name.split(".", 1)[0] or "root", MAX_SHORT_STRING_BYTES - 1 - len(severity.encode())
        )
        route = (f"{facility}.{severity}", severity, facility)
        self._routes[(record.name, record.levelno)] = route
        return route

    @property
    def closing(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closing.is_set()

    def close(self) -> None:
        """Publish what is buffered and wait for its confirms, for at most ``close_timeout``.

        What could not be sent by then is counted in :attr:`unsent`.
        """
        if not self._closing.is_set():
            self._close_deadline = time.monotonic() + self.close_timeout
            self._closing.set()
            self._wakeup.set()
            self._thread.join(self.close_timeout)
            if self._thread.is_alive():  # the broker is away: give up on it
                self._stop.set()
                self._thread.join(_STOP_GRACE_S)
            if self._thread.is_alive():  # still stuck: count from here what it holds
                self.unsent = self._holding()
        super().close()

    def _holding(self) -> int:
        """Records buffered, or published and not yet confirmed."""
        emitter = self._emitter
        return len(self._buffer) + (emitter.emitted - emitter.confirmed if emitter else 0)

    # -- the background thread --------------------------------------------
    def _run(self) -> None:
        emitter = LogEmitter(
            self.settings,
            self.exchange,
            app_id=self.app_id,
            report_unroutable=False,
            name="rabbitry-log-handler",
            stop=self._stop,
        )
        self._emitter = emitter
        try:
            emitter.connect(give_up_after=math.inf)  # returns without a connection only if stopped
            while not self._stop.is_set():
                self._wakeup.wait(_IDLE_WAKEUP_S)
                self._wakeup.clear()
                self._publish_buffered(emitter)
                emitter.poll()
                if self._closing.is_set() and not self._buffer:
                    emitter.flush(max(0.0, self._close_deadline - time.monotonic()))
                    break
        except RabbitryError as error:  # refused, or stopped while the broker was away
            if not self._stop.is_set():
                log.error("log_handler_stopped", error=str(error), buffered=len(self._buffer))
        finally:
            self.unsent = self._holding()
            emitter.close()

    def _publish_buffered(self, emitter: LogEmitter) -> None:
        buffer = self._buffer
        while buffer:
            (routing_key, severity, facility), text, created, logger_name = buffer[0]
            emitter.emit(
                routing_key,
                text,
                severity=severity,
                facility=facility,
                headers={"logger": _cut(logger_name, _MAX_LOGGER_BYTES)},
                timestamp=created,
            )
            buffer.popleft()  # only once handed over: a record in hand when the connection drops is kept


def _close_at_exit(handler_ref: "weakref.ref[LogExchangeHandler]") -> None:
    """Close a handler still alive at exit, and say on stderr what it could not send."""
    handler = handler_ref()
    if handler is None or handler.closing:
        return
    handler.close()
    if handler.unsent:
        print(
            f"rabbitry: {handler.unsent} log record(s) not sent to {handler.exchange.name!r}: "
            f"no broker confirmed them within {handler.close_timeout:g} s",
            file=sys.stderr,
        )


def _cut(text: str, limit: int) -> str:
    """``text`` as valid UTF-8 of at most ``limit`` bytes."""
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore")
