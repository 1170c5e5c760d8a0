"""Publishing log messages to a log exchange, from Python, ``emit-log`` or the logging handler."""

import threading

from rabbitry.common.logs.history import keep_history_bound
from rabbitry.common.logs.messages import log_message, routing_metadata
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Exchange, Topology, log_exchange
from rabbitry.common.transport.contract import PublishFailure
from rabbitry.producers.publisher import ReliablePublisher


class LogEmitter:
    """Publishes log messages to one log exchange, with pipelined publisher confirms.

    :meth:`emit` returns at once. :meth:`poll` sends what is buffered and
    returns the messages found unroutable (published ``mandatory`` when
    ``report_unroutable``) or refused since the last call; :meth:`flush`
    does the same after waiting for every confirm. The connection is
    re-opened, and unconfirmed messages published again, if it drops.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        exchange: Exchange | None = None,
        app_id: str | None = None,
        report_unroutable: bool = True,
        name: str = "rabbitry-emit-log",
        stop: threading.Event | None = None,
    ):
        self.exchange = exchange or log_exchange()
        self.app_id = app_id
        self.report_unroutable = report_unroutable
        self.emitted = 0
        self._persistent = self.exchange.durable  # a durable exchange is for logs meant to survive a restart
        # A history stream loses its binding with a non-durable exchange when the broker restarts:
        # each new connection binds it again, if it exists (see common/logs/history.py).
        self._publisher = ReliablePublisher(
            settings,
            Topology(exchanges=(self.exchange,)),
            name=name,
            stop=stop,
            on_connected=lambda connection: keep_history_bound(connection, self.exchange),
        )

    def connect(self, give_up_after: float | None = 0) -> "LogEmitter":
        """Connect and declare the exchange; by default fail at once if the broker is down."""
        self._publisher.connect(give_up_after)
        return self

    def emit(
        self,
        routing_key: str,
        text: str | bytes,
        severity: str | None = None,
        facility: str | None = None,
        headers: dict | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Publish one log message; severity and facility default to what the key says."""
        if severity is None and facility is None:
            severity, facility = routing_metadata(self.exchange.type, routing_key)
        body = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        self._publisher.publish(
            log_message(
                self.exchange.name,
                routing_key,
                body,
                severity=severity,
                facility=facility,
                app_id=self.app_id,
                persistent=self._persistent,
                timestamp=timestamp,
                headers=headers,
            ),
            mandatory=self.report_unroutable,
        )
        self.emitted += 1

    def poll(self) -> list[PublishFailure]:
        """Send what is buffered and read the confirms that arrived; return new failures."""
        return self._publisher.poll()

    def flush(self, timeout: float | None = None) -> list[PublishFailure]:
        """Wait for every confirm; return the failures not returned before."""
        return self._publisher.flush(timeout)

    @property
    def confirmed(self) -> int:
        """Messages the broker has confirmed so far."""
        return self._publisher.confirmed_count

    def close(self) -> None:
        """Close the connection (call :meth:`flush` first to keep every message)."""
        self._publisher.close()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc_info):
        self.close()
