"""A publisher that survives a lost connection without losing or faking a confirm."""

import threading
from collections.abc import Callable

import structlog

from common.broker import connect_with_retry
from common.errors import ConnectionLost
from common.settings import BrokerSettings
from common.topology import Topology
from common.transport import Connection, OutgoingMessage, PublishFailure

log = structlog.get_logger("rabbitry.publisher")

#: Messages allowed in flight before publishing waits for confirms.
DEFAULT_WINDOW = 2000


class ReliablePublisher:
    """Publishes with pipelined confirms, reconnecting when the connection drops.

    A message counts as published only once the broker confirmed it. Messages
    in flight when the connection dropped are published again on the new
    connection, so a message may reach the queue twice, never zero times.
    ``on_confirmed`` is called with each batch of confirmed messages.
    """

    def __init__(self, settings: BrokerSettings, topology: Topology | None = None,
                 name: str = "rabbitry-publisher", window: int = DEFAULT_WINDOW,
                 on_confirmed: Callable[[list[OutgoingMessage]], None] | None = None,
                 stop: threading.Event | None = None):
        self.settings = settings
        self.topology = topology
        self.name = name
        self.window = window
        self.on_confirmed = on_confirmed
        self.confirmed_count = 0
        self._failures: list[PublishFailure] = []
        self._stop = stop or threading.Event()
        self._connection: Connection | None = None

    def connect(self, give_up_after: float | None = 0) -> "ReliablePublisher":
        """Open the first connection; by default fail at once if the broker is down."""
        self._connection = connect_with_retry(self.settings, self.name, self._stop, give_up_after)
        if self._connection is not None and self.topology is not None:
            self._connection.declare(self.topology)
        return self

    def publish(self, message: OutgoingMessage, mandatory: bool = False) -> None:
        """Publish one message; waits only when the confirm window is full."""
        try:
            self._connection.publish(message, mandatory)
            if self._connection.unconfirmed >= self.window:
                self._connection.wait_for_confirms()
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
                self._failures.extend(self._connection.wait_for_confirms(timeout))
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
        self._failures.extend(failed)
        if confirmed:
            self.confirmed_count += len(confirmed)
            if self.on_confirmed:
                self.on_confirmed(confirmed)

    def _recover(self, error: ConnectionLost) -> None:
        """Reconnect, re-declare, and publish again what was not confirmed."""
        self._collect()
        pending = self._connection.take_unconfirmed()
        self._connection.close()
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
                if self.topology is not None:
                    connection.declare(self.topology)
                for message, mandatory in pending:
                    connection.publish(message, mandatory)
                    republished += 1
                log.info("publisher_reconnected", republished=len(pending))
                return
            except ConnectionLost as again:
                # Lost again: keep what this connection did not confirm, and what it never got.
                self._collect()
                pending = connection.take_unconfirmed() + pending[republished:]
                connection.close()
                error = again
