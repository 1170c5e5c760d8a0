"""Reading a log exchange's history, then following it live: ``subscribe --since``.

The seam between history and live lines is exact because there is no seam:
the subscriber reads the history stream alone, from the start point to
whatever is appended while it runs, in the stream's one order. It declares
no queue of its own, so no line can arrive twice (once from the stream and
once from a live queue) and none can fall between the two. The binding keys
are applied here, by :func:`~rabbitry.common.transport.routing.binding_matches`, the
function the in-process broker routes with; the stream itself is bound with
``#`` (or, for a direct exchange, the keys it keeps).

The stream is asked to start a little before ``--since``
(:data:`~.since.LOOKUP_MARGIN_S`), so the first lines may be older: each
line's AMQP timestamp (whole seconds) is compared with ``--since``
(:func:`~.since.in_window`). After a reconnect it
reads on from the offset after the last line it handled, so a lost
connection loses and repeats nothing either.
"""

import datetime
import time
from collections.abc import Callable, Iterable

import structlog

from rabbitry.common.logs.history import require_history
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Exchange
from rabbitry.common.transport.contract import Connection, Delivery
from rabbitry.common.transport.routing import binding_matches
from rabbitry.subscribers.log_subscriber import DEFAULT_PREFETCH, LogSubscriber
from rabbitry.subscribers.since import StartPoint, in_window

log = structlog.get_logger("rabbitry.subscriber")

STREAM_OFFSET = "x-stream-offset"
#: Stream deliveries are acknowledged together, one ack for this share of the prefetch: an ack
#: only gives the stream credit, and one per line would cost as much as the line itself.
_ACK_EVERY_PREFETCH_SHARE = 4
#: Routing keys whose verdict is remembered: logs repeat their keys.
_MATCH_CACHE_SIZE = 4096


def utc_text(timestamp: float | None) -> str | None:
    """``2026-11-28T09:00:00Z``, or None."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HistoryProgress:
    """Where a replay stands: lines read, lines shown, and the time of the last line read."""

    def __init__(self):
        self.read = 0
        self.shown = 0
        self.offset: int | None = None
        self.timestamp: int | None = None
        self.started = time.monotonic()

    def lag_s(self, now: float | None = None) -> float | None:
        """How far behind now the last line read is, in seconds (None before any line)."""
        if self.timestamp is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.timestamp)

    def describe(self) -> str:
        """One line for a terminal."""
        rate = self.read / max(1e-6, time.monotonic() - self.started)
        lag = self.lag_s()
        where = f" at {utc_text(self.timestamp)} ({lag:,.0f} s behind)" if lag is not None else ""
        return f"history: {self.read:,} lines read, {self.shown:,} shown, {rate:,.0f} lines/s{where}"


class HistorySubscriber(LogSubscriber):
    """Prints the history of a log exchange from ``start``, then its live lines, each once, in order.

    ``until`` (epoch seconds) ends the run at the first line stamped later, or
    once it is past and nothing more comes. ``on_progress`` is called about
    twice a second with a :class:`HistoryProgress` while the replay runs.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        exchange: Exchange,
        binding_keys: Iterable[str] = (),
        start: StartPoint = StartPoint("first", None),
        until: float | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        name: str = "rabbitry-subscribe",
        on_progress: Callable[[HistoryProgress], None] | None = None,
    ):
        super().__init__(settings, exchange, binding_keys, prefetch=prefetch, name=name)
        self.start = start
        self.until = until
        self.on_progress = on_progress
        self.progress = HistoryProgress()
        self.next_offset: int | None = None  # after a reconnect, read on from here
        self._began = time.time()  # lines stamped before this are history: --timeout waits for the replay
        self._matches: dict[str, bool] = {}
        self._ended = False
        self._unacked_tag = 0
        self._unacked = 0
        self._connection: Connection | None = None
        self._last_progress = 0.0

    def matches(self, routing_key: str) -> bool:
        """Whether a line with ``routing_key`` matches one of the binding keys."""
        verdict = self._matches.get(routing_key)
        if verdict is None:
            if len(self._matches) >= _MATCH_CACHE_SIZE:
                self._matches.clear()
            verdict = self._matches[routing_key] = any(
                binding_matches(self.exchange.type, key, routing_key) for key in self.binding_keys
            )
        return verdict

    def _start(self, connection, on_message, done) -> None:
        stream = require_history(connection, self.exchange)
        self._connection = connection
        self._unacked = 0
        ack_every = max(1, self.prefetch // _ACK_EVERY_PREFETCH_SHARE)
        progress, since, until = self.progress, self.start.since, self.until

        def on_delivery(delivery: Delivery) -> None:
            if done():
                return  # the stream keeps it: nothing to give back
            offset = int(delivery.headers.get(STREAM_OFFSET, -1))
            if self.next_offset is not None and 0 <= offset < self.next_offset:
                self._ack(delivery.delivery_tag, ack_every)
                return  # read before a reconnect
            if progress.read == 0:
                self._say_where_history_begins(offset, delivery.timestamp)
            progress.read += 1
            progress.offset, progress.timestamp = offset, delivery.timestamp
            self.next_offset = offset + 1
            verdict = in_window(delivery.timestamp, since, until)
            if verdict is None:
                self._ended = True
            elif verdict and self.matches(delivery.routing_key):
                on_message(delivery)
                progress.shown += 1
                self.received += 1
                self._last_received = time.monotonic()
            elif delivery.timestamp is not None and delivery.timestamp < self._began:
                self._last_received = time.monotonic()  # still replaying: not idle
            self._ack(delivery.delivery_tag, ack_every)

        start_at = self.start.stream_offset if self.next_offset is None else self.next_offset
        connection.consume(stream, on_delivery, prefetch=self.prefetch, arguments={STREAM_OFFSET: start_at})
        log.info(
            "subscribed",
            exchange=self.exchange.name,
            exchange_type=self.exchange.type,
            stream=stream,
            binding_keys=[key for key in self.binding_keys if self.exchange.type != "fanout"],
            since=utc_text(self.start.since) if self.start.since is not None else str(start_at),
            until=utc_text(until),
        )

    def _reconnect_detail(self) -> str:
        return (
            f"reconnecting; reading on from offset {self.next_offset}"
            if self.next_offset is not None
            else "reconnecting"
        )

    def _ack(self, delivery_tag: int, ack_every: int) -> None:
        self._unacked += 1
        self._unacked_tag = delivery_tag
        if self._unacked >= ack_every:
            assert self._connection is not None  # set by _start, before any delivery
            self._connection.ack(delivery_tag, multiple=True)
            self._unacked = 0

    def _settle(self, connection: Connection) -> None:
        if self._unacked:
            connection.ack(self._unacked_tag, multiple=True)
            self._unacked = 0

    def _say_where_history_begins(self, offset: int, timestamp: int | None) -> None:
        """Say so when the history kept begins after the start asked for: retention dropped the rest."""
        asked = self.next_offset if self.next_offset is not None else self.start.stream_offset
        # A stream's offsets may skip one where a segment begins (a record of its own), so a resumed
        # read that starts one further on has lost nothing.
        later_offset = offset > 0 and (asked == "first" or (isinstance(asked, int) and offset > asked + 1))
        later_time = (
            offset > 0 and self.start.since is not None and timestamp is not None and timestamp > int(self.start.since)
        )
        if later_offset or later_time:
            log.warning(
                "history_begins_later",
                offset=offset,
                stamped=utc_text(timestamp),
                detail=f"history now begins at offset {offset} ({utc_text(timestamp)}): older lines "
                "were removed by the stream's retention, or never kept",
            )
        else:
            log.info("history_begins", offset=offset, stamped=utc_text(timestamp))

    def _finished(self) -> bool:
        if self._ended:
            return True
        # Past --until with nothing more to read: the end has been reached.
        return self.until is not None and time.time() > self.until + 1 and time.monotonic() - self._last_received > 1

    def on_tick(self) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.on_progress(self.progress)
