"""A publisher that survives a lost connection without losing or faking a confirm."""

import threading
import time
from collections.abc import Callable

import structlog

from rabbitry.common.broker import connect_with_retry
from rabbitry.common.errors import ConnectionLost
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Topology
from rabbitry.common.transport import Connection, OutgoingMessage, PublishFailure

log = structlog.get_logger("rabbitry.publisher")

#: Messages allowed in flight before publishing waits for confirms.
DEFAULT_WINDOW = 2000
#: Pause before publishing nacked messages again.
NACK_RETRY_DELAY_S = 0.5


class ReliablePublisher:
    """Publishes with pipelined confirms, reconnecting when the connection drops.

    A message counts as published only once the broker confirmed it. Messages
    in flight when the connection dropped are published again on the new
    connection, so a message may reach the queue twice, never zero times.
    Messages the broker nacked (a quorum queue electing a new leader after a
    node was lost, say) are published again after a pause, on a new
    connection, for as long as ``settings.reconnect_for``; only then are they
    reported as failures.
    ``on_confirmed`` is called with each batch of confirmed messages, and
    ``on_connected`` with every new connection, once its topology is declared
    and before anything is published on it.
    """

    def __init__(self, settings: BrokerSettings, topology: Topology | None = None,
                 name: str = "rabbitry-publisher", window: int = DEFAULT_WINDOW,
                 on_confirmed: Callable[[list[OutgoingMessage]], None] | None = None,
                 stop: threading.Event | None = None,
                 on_connected: Callable[[Connection], None] | None = None):
        self.settings = settings
        self.topology = topology
        self.name = name
        self.window = window
        self.on_confirmed = on_confirmed
        self.on_connected = on_connected
        self.confirmed_count = 0
        self._failures: list[PublishFailure] = []
        self._nacked_since: dict[str, float] = {}  # message id -> when the broker first nacked it
        self._unsent: list[tuple[OutgoingMessage, bool]] = []  # nacked, not yet published again
        self._recovering = False
        self._stop = stop or threading.Event()
        self._connection: Connection | None = None

    def connect(self, give_up_after: float | None = 0) -> "ReliablePublisher":
        """Open the first connection; by default fail at once if the broker is down."""
        self._connection = connect_with_retry(self.settings, self.name, self._stop, give_up_after)
        if self._connection is not None:
            self._prepare(self._connection)
        return self

    def _prepare(self, connection: Connection) -> None:
        """Declare the topology on a new connection, and hand it to ``on_connected``."""
        if self.topology is not None:
            connection.declare(self.topology)
        if self.on_connected is not None:
            self.on_connected(connection)

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the publisher's thread, in its next :meth:`poll`. Safe from any thread."""
        self._connection.call_threadsafe(callback)

    def publish(self, message: OutgoingMessage, mandatory: bool = False) -> None:
        """Publish one message; waits only when the confirm window is full."""
        try:
            self._connection.publish(message, mandatory)
            if self._connection.unconfirmed >= self.window:
                # Wait for half the window only, so the pipeline never runs dry.
                failed = self._connection.wait_for_confirms(down_to=self.window // 2)
                self._failures.extend(self._publish_nacked_again(failed))
            self._collect()
        except ConnectionLost as error:
            self._recover(error)

    def poll(self, timeout: float = 0) -> list[PublishFailure]:
        """Send what is buffered and read the confirms that arrived, without
        waiting for the rest; return (and clear) the failures known so far.

        A streaming publisher calls this whenever its input pauses, so that
        nothing sits in the send buffer and heartbeats keep flowing.
        """
        try:
            self._connection.process_events(timeout)
            self._collect()
        except ConnectionLost as error:
            self._recover(error)
        failures, self._failures = self._failures, []
        return failures

    def flush(self, timeout: float | None = None) -> list[PublishFailure]:
        """Wait until every message is confirmed; return (and clear) the failures."""
        while True:
            try:
                failed = self._connection.wait_for_confirms(timeout)
                self._failures.extend(self._publish_nacked_again(failed))
                if not self._connection.unconfirmed:
                    break
            except ConnectionLost as error:
                self._recover(error)
        self._collect()
        failures, self._failures = self._failures, []
        return failures

    def close(self) -> None:
        """Close the connection (call :meth:`flush` first to keep every message)."""
        if self._connection is not None:
            self._connection.close()

    def __enter__(self):
        return self.connect() if self._connection is None else self

    def __exit__(self, *exc_info):
        self.close()

    def _collect(self) -> None:
        confirmed, failed = self._connection.take_confirmed()
        if confirmed and self._nacked_since:
            for message in confirmed:
                self._nacked_since.pop(message.message_id, None)
        self._failures.extend(self._publish_nacked_again(failed))
        if confirmed:
            self.confirmed_count += len(confirmed)
            if self.on_confirmed:
                self.on_confirmed(confirmed)

    def _publish_nacked_again(self, failed: list[PublishFailure]) -> list[PublishFailure]:
        """Publish nacked messages again, until they have been nacked for too long; return the rest."""
        now, again, final = time.monotonic(), [], []
        for failure in failed:
            first = self._nacked_since.setdefault(failure.message.message_id, now)
            if failure.reason == "nacked" and now - first < self.settings.reconnect_for:
                again.append((failure.message, failure.mandatory))
            else:
                self._nacked_since.pop(failure.message.message_id, None)
                final.append(failure)
        if again:
            self._unsent += again
            if not self._recovering:
                # A fresh channel: one whose quorum-queue client lost the leader keeps nacking.
                log.warning("publisher_nacked", messages=len(again), retry_in_s=NACK_RETRY_DELAY_S)
                self._stop.wait(NACK_RETRY_DELAY_S)
                self._recover(ConnectionLost(f"the broker nacked {len(again)} message(s)"))
        return final

    def _take_pending(self, connection: Connection) -> list[tuple[OutgoingMessage, bool]]:
        """Settle what a lost connection had confirmed, close it, and return what it had not
        (nacked messages included)."""
        self._recovering = True
        try:
            self._collect()
        finally:
            self._recovering = False
        pending, self._unsent = connection.take_unconfirmed() + self._unsent, []
        connection.close()
        return pending

    def _recover(self, error: ConnectionLost) -> None:
        """Reconnect, re-declare, and publish again what was not confirmed."""
        pending = self._take_pending(self._connection)
        if self.settings.reconnect_for <= 0:
            raise error
        log.warning("publisher_reconnecting", error=str(error), unconfirmed=len(pending))
        while True:
            connection = connect_with_retry(self.settings, self.name, self._stop)
            if connection is None:  # stopped while waiting for the broker
                raise error
            self._connection = connection
            republished = 0
            try:
                self._prepare(connection)
                for message, mandatory in pending:
                    connection.publish(message, mandatory)
                    republished += 1
                log.info("publisher_reconnected", republished=len(pending))
                return
            except ConnectionLost as again:
                # Lost again: keep what this connection did not confirm, and what it never got.
                pending = self._take_pending(connection) + pending[republished:]
                error = again
