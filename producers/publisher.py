"""A publisher that survives a lost connection without losing or faking a confirm."""

import threading
import time
from collections.abc import Callable

import structlog

from rabbitry.common.connect import connect_with_retry
from rabbitry.common.errors import ConfirmTimeout, ConnectionLost, Interrupted, PublishingBlocked, RabbitryError
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import Topology
from rabbitry.common.transport.contract import Connection, OutgoingMessage, PublishFailure, QueueState

log = structlog.get_logger("rabbitry.publisher")

#: Messages allowed in flight before publishing waits for confirms.
DEFAULT_WINDOW = 2000
#: Pause before publishing nacked messages again.
NACK_RETRY_DELAY_S = 0.5
#: The failure of a message that a full queue refused (x-max-length with overflow reject-publish).
REFUSED = "refused"
#: Before a channel is renewed for nacked messages, the broker's answers to the rest in flight
#: on it are awaited this long, so that no message it queued is taken for unconfirmed.
_HEAR_THE_REST_S = 2.0
#: A wait for confirms looks up this often, to notice a stop and a broker that blocks publishing.
_LOOK_UP_EVERY_S = 0.1


def nack_is_refusal(nacked_before: bool, queue: QueueState | None) -> bool:
    """Whether a nack is a full queue's answer rather than a passing fault.

    A quorum queue that loses its leader nacks what the channel had in flight,
    and takes the same messages once they are published again on a fresh
    channel. A queue that is full (``x-max-length`` with overflow
    ``reject-publish``, set by argument or by policy) nacks them again on any
    channel, and answers a passive declare with the messages it holds; a quorum
    queue without a leader answers with none. So a nack is a refusal when the
    message was nacked before, on another channel, and its queue answers with
    messages in it.
    """
    return nacked_before and queue is not None and queue.messages > 0


def _queue_of(message: OutgoingMessage) -> str | None:
    """The queue a message goes to, when the default exchange routes it by name."""
    return message.routing_key if message.exchange == "" else None


class ReliablePublisher:
    """Publishes with pipelined confirms, reconnecting when the connection drops.

    A message counts as published only once the broker confirmed it. Messages
    in flight when the connection dropped are published again on the new
    connection, so a message may reach the queue twice, never zero times.
    Messages the broker nacked (a quorum queue electing a new leader after a
    node was lost, say) are published again after a pause, on a new
    connection, for as long as ``settings.reconnect_for``; only then are they
    reported as failures. A nack that is a full queue's refusal (see
    :func:`nack_is_refusal`) is reported at once, as a failure whose reason is
    :data:`REFUSED`, and so is every later nack from that queue.
    While the broker blocks publishing (a memory or disk alarm), the publisher
    says so once and waits, on the same connection, for at most
    ``settings.blocked_timeout``; then it raises PublishingBlocked.
    ``on_confirmed`` is called with each batch of confirmed messages, and
    ``on_connected`` with every new connection, once its topology is declared
    and before anything is published on it.
    Setting ``stop`` ends any wait: the call raises Interrupted.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topology: Topology | None = None,
        name: str = "rabbitry-publisher",
        window: int = DEFAULT_WINDOW,
        on_confirmed: Callable[[list[OutgoingMessage]], None] | None = None,
        stop: threading.Event | None = None,
        on_connected: Callable[[Connection], object] | None = None,
    ):  # its result is ignored
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
        self._full_queues: set[str] = set()
        self._blocked_reason: str | None = None
        self._blocked_since = 0.0
        self._stop = stop or threading.Event()
        self._connection: Connection | None = None

    def connect(self, give_up_after: float | None = 0) -> "ReliablePublisher":
        """Open the first connection; by default fail at once if the broker is down."""
        self._connection = connect_with_retry(self.settings, self.name, self._stop, give_up_after)
        if self._connection is not None:
            self._prepare(self._connection)
        return self

    @property
    def _live(self) -> Connection:
        """The connection every call but connect() and close() works on."""
        if self._connection is None:  # connect() was stopped, or not called
            raise Interrupted("the publisher has no connection: connect() was stopped, or never called")
        return self._connection

    def _prepare(self, connection: Connection) -> None:
        """Declare the topology on a new connection, and hand it to ``on_connected``."""
        if self.topology is not None:
            connection.declare(self.topology)
        if self.on_connected is not None:
            self.on_connected(connection)

    def call_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the publisher's thread, in its next :meth:`poll`. Safe from any thread."""
        self._live.call_threadsafe(callback)

    def publish(self, message: OutgoingMessage, mandatory: bool = False) -> None:
        """Publish one message; waits only when the confirm window is full."""
        try:
            connection = self._live
            connection.publish(message, mandatory)
            if connection.unconfirmed >= self.window:
                # Wait for half the window only, so the pipeline never runs dry.
                failed = self._wait_for_confirms(down_to=self.window // 2)
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
            self._live.process_events(timeout)
            self._note_blocking()
            self._collect()
        except ConnectionLost as error:
            self._recover(error)
        return self.take_failures()

    def take_failures(self) -> list[PublishFailure]:
        """Return (and clear) the failures known so far, without doing any I/O."""
        if not self._failures:
            return []
        failures, self._failures = self._failures, []
        return failures

    def flush(self, timeout: float | None = None) -> list[PublishFailure]:
        """Wait until every message is confirmed; return (and clear) the failures.

        Raises ConfirmTimeout if ``timeout`` passes first.
        """
        while True:
            try:
                failed = self._wait_for_confirms(timeout)
                self._failures.extend(self._publish_nacked_again(failed))
                if not self._live.unconfirmed:
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
        confirmed, failed = self._live.take_confirmed()
        if confirmed and self._nacked_since:
            for message in confirmed:
                self._nacked_since.pop(message.message_id, None)
        self._failures.extend(self._publish_nacked_again(failed))
        if confirmed:
            self.confirmed_count += len(confirmed)
            if self.on_confirmed:
                self.on_confirmed(confirmed)

    def _wait_for_confirms(self, timeout: float | None = None, down_to: int = 0) -> list[PublishFailure]:
        """The connection's wait for confirms, looking up now and then for a stop or a block."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._note_blocking()
            wait = (
                _LOOK_UP_EVERY_S if deadline is None else max(0.0, min(_LOOK_UP_EVERY_S, deadline - time.monotonic()))
            )
            try:
                failed = self._live.wait_for_confirms(wait, down_to)
            except ConfirmTimeout:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ConfirmTimeout(
                        f"{self._live.unconfirmed} message(s) not confirmed within {timeout:g} s"
                    ) from None
                if self._stop.is_set():
                    raise Interrupted(f"stopped with {self._live.unconfirmed} message(s) unconfirmed") from None
                continue
            self._note_blocking()
            return failed

    def _note_blocking(self) -> None:
        """Log once when the broker starts blocking publishing, and when it stops."""
        reason = self._live.blocked_reason
        if reason == self._blocked_reason:
            return
        if reason is not None:
            self._blocked_since = time.monotonic()
            log.warning(
                "publishing_blocked",
                publisher=self.name,
                reason=reason,
                unconfirmed=self._live.unconfirmed,
                gives_up_in_s=self.settings.blocked_timeout,
                detail="the broker accepts no message until its memory or disk alarm clears",
            )
        else:
            log.info(
                "publishing_unblocked", publisher=self.name, blocked_s=round(time.monotonic() - self._blocked_since, 1)
            )
        self._blocked_reason = reason

    def _publish_nacked_again(self, failed: list[PublishFailure]) -> list[PublishFailure]:
        """Publish nacked messages again, until they have been nacked for too long or their
        queue is found full; return the rest."""
        now, again, final = time.monotonic(), [], []
        states = self._states_of_queues_nacking_again(failed)
        for failure in failed:
            message_id, queue = failure.message.message_id, _queue_of(failure.message)
            if (
                failure.reason == "nacked"
                and queue is not None
                and (queue in self._full_queues or nack_is_refusal(message_id in self._nacked_since, states.get(queue)))
            ):
                self._nacked_since.pop(message_id, None)
                if queue not in self._full_queues:
                    self._full_queues.add(queue)
                    state = states[queue]
                    assert state is not None  # a refusal: the queue answered with messages in it
                    log.warning(
                        "queue_full",
                        queue=queue,
                        messages=state.messages,
                        detail="the queue refuses what it has no room for (x-max-length with "
                        "overflow reject-publish): refused messages are reported, not retried",
                    )
                final.append(PublishFailure(failure.message, REFUSED, failure.mandatory))
                continue
            first = self._nacked_since.setdefault(message_id, now)
            if failure.reason == "nacked" and now - first < self.settings.reconnect_for:
                again.append((failure.message, failure.mandatory))
            else:
                self._nacked_since.pop(message_id, None)
                final.append(failure)
        if again:
            self._unsent += again
            if not self._recovering:
                # A fresh channel: one whose quorum-queue client lost the leader keeps nacking.
                log.warning("publisher_nacked", messages=len(again), retry_in_s=NACK_RETRY_DELAY_S)
                self._stop.wait(NACK_RETRY_DELAY_S)
                self._hear_the_rest()
                self._recover(ConnectionLost(f"the broker nacked {len(again)} message(s)"))
        return final

    def _hear_the_rest(self) -> None:
        """Wait, for a bounded time, for the broker's answer to every message still in flight on
        this channel. Renewing the channel loses the confirms it has not had yet: a message the
        queue already holds would be published again and, by a full queue, refused again, and so
        reported refused although it is queued."""
        self._recovering = True  # nacks heard now join the messages to publish again
        try:
            self._failures.extend(self._publish_nacked_again(self._live.wait_for_confirms(_HEAR_THE_REST_S)))
        except (ConfirmTimeout, ConnectionLost):
            pass  # what is still unanswered is published again, as after any lost connection
        finally:
            self._recovering = False

    def _states_of_queues_nacking_again(self, failed: list[PublishFailure]) -> dict[str, QueueState | None]:
        """The state of each queue that nacked a message again, as a passive declare tells it."""
        queues = {
            queue
            for f in failed
            if f.reason == "nacked"
            and f.message.message_id in self._nacked_since
            and (queue := _queue_of(f.message)) is not None
        }
        queues -= self._full_queues
        if not queues or self._recovering or self._live.blocked_reason is not None:
            return {}  # no connection to ask on: nacked again, they are published again
        states: dict[str, QueueState | None] = {}
        for queue in queues:
            try:
                states[queue] = self._live.queue_state(queue)
            except RabbitryError:
                states[queue] = None
        return states

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
        pending = self._take_pending(self._live)
        if isinstance(error, PublishingBlocked):  # a new connection would be blocked the same way
            raise PublishingBlocked(
                f"the broker blocked publishing ({self._blocked_reason or 'a resource alarm'}) for longer than "
                f"{self.settings.blocked_timeout:g} s; gave up with {len(pending)} message(s) unconfirmed"
            ) from None
        if self.settings.reconnect_for <= 0:
            raise error
        log.warning("publisher_reconnecting", error=str(error), unconfirmed=len(pending))
        while True:
            connection = connect_with_retry(self.settings, self.name, self._stop)
            if connection is None:
                raise Interrupted(
                    f"stopped while reconnecting, with {len(pending)} message(s) unconfirmed ({error})"
                ) from None
            self._connection = connection
            republished = 0
            try:
                self._prepare(connection)
                for message, mandatory in pending:
                    connection.publish(message, mandatory)
                    republished += 1
                log.info("publisher_reconnected", republished=len(pending))
                return
            except PublishingBlocked:
                raise
            except ConnectionLost as again:
                # Lost again: keep what this connection did not confirm, and what it never got.
                pending = self._take_pending(connection) + pending[republished:]
                error = again
