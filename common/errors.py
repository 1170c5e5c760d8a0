"""rabbitry's exception hierarchy and the CLI's exit codes.

pika's exceptions never leave :mod:`rabbitry.common.amqp`; they are translated into these
(by :mod:`rabbitry.common.amqp.translation`), so callers handle one family of errors whatever the transport.
"""

import enum


class ExitCode(enum.IntEnum):
    """Exit statuses of every rabbitry command."""

    OK = 0
    FAILURE = 1  # work was attempted and some of it failed (e.g. unconfirmed)
    USAGE = 2  # bad input: click's own code for usage errors
    BROKER_UNAVAILABLE = 3  # could not connect, or lost the broker for good
    BROKER_REFUSED = 4  # the broker said no: access refused, precondition failed
    UNROUTABLE = 5  # a message had no queue to go to
    PUBLISHING_BLOCKED = 6  # the broker blocked publishing (memory or disk alarm) past --blocked-timeout
    QUEUE_FULL = 7  # a full queue refused messages (x-max-length with overflow reject-publish)
    NO_HISTORY = 8  # subscribe --since: no history is kept for the exchange (rabbitry logs retain)
    MANAGEMENT_UNAVAILABLE = 9  # the management HTTP API, needed to list bindings, did not answer
    EXTRA_MISSING = 10  # an optional extra is not installed (--plot needs rabbitry[plot])
    INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT


class RabbitryError(Exception):
    """Base of every error rabbitry raises on purpose."""

    exit_code = ExitCode.FAILURE


class ConfigurationError(RabbitryError):
    """A setting is invalid: a bad URL, an unknown queue type, a bad key."""

    exit_code = ExitCode.USAGE


class InvalidRoutingKey(ConfigurationError):
    """A routing or binding key RabbitMQ would not accept."""


class BrokerUnavailable(RabbitryError):
    """No broker could be reached at any of the configured URLs."""

    exit_code = ExitCode.BROKER_UNAVAILABLE


class ConnectionLost(BrokerUnavailable):
    """An established connection dropped; reconnecting may help."""


class PublishingBlocked(ConnectionLost):
    """The broker blocked publishing (a memory or disk alarm) for longer than allowed.

    A lost connection to code that reconnects; a publisher gives up on it instead,
    since a new connection would be blocked the same way.
    """

    exit_code = ExitCode.PUBLISHING_BLOCKED


class ConsumerCancelled(ConnectionLost):
    """The broker cancelled a consumer: its queue was deleted, or moved away.

    Like a lost connection, it calls for reconnecting and declaring again.
    """


class AcknowledgementTimedOut(ConnectionLost):
    """The broker closed the channel because a delivery stayed unacknowledged past its
    ``consumer_timeout``; it requeues what the channel held."""


class NoHistory(RabbitryError):
    """A subscriber asked for history (``--since``) of an exchange whose history no stream keeps."""

    exit_code = ExitCode.NO_HISTORY


class ManagementUnavailable(BrokerUnavailable):
    """RabbitMQ's management HTTP API, the only way to list queues and bindings, did not answer."""

    exit_code = ExitCode.MANAGEMENT_UNAVAILABLE


class ExtraMissing(RabbitryError):
    """A feature needs an optional extra that is not installed, e.g. ``--plot`` without ``rabbitry[plot]``."""

    exit_code = ExitCode.EXTRA_MISSING


class NotBound(ConfigurationError):
    """A key to unbind that the subscription's queue is not bound with."""


class BrokerRefused(RabbitryError):
    """The broker refused an operation (authentication, a topology mismatch).

    Retrying blindly does not help: the configuration has to change.
    """

    exit_code = ExitCode.BROKER_REFUSED


class ChannelClosed(BrokerRefused):
    """The broker refused something sent on a channel (a publish, an ack) and closed the channel:
    what the channel held unacknowledged goes back to its queues. A consumer may connect again."""


class MessageRefused(ChannelClosed):
    """The broker refused a published message as larger than its ``max_message_size``, and
    closed the channel: what the channel held unacknowledged goes back to its queues.

    ``max_size`` is the broker's limit, from its refusal; the same message is refused again.
    """

    def __init__(self, message: str, max_size: int):
        super().__init__(message)
        self.max_size = max_size


class PublishFailed(RabbitryError):
    """The broker nacked a message, or it was not confirmed in time."""


class ConfirmTimeout(PublishFailed):
    """Published messages were not confirmed within the time given."""


class QueueFull(PublishFailed):
    """A full queue refused messages: it has ``x-max-length`` with overflow ``reject-publish``.

    An answer, not a fault: publishing the same messages again is refused again
    until consumers make room.
    """

    exit_code = ExitCode.QUEUE_FULL


class Interrupted(RabbitryError):
    """Publishing was stopped (Ctrl-C, or a program closing) before every message was confirmed or refused."""

    exit_code = ExitCode.INTERRUPTED


class Unroutable(PublishFailed):
    """A mandatory message had no queue bound to take it."""

    exit_code = ExitCode.UNROUTABLE


class MessageError(RabbitryError):
    """A message body could not be encoded or decoded."""

    exit_code = ExitCode.USAGE


class Unencodable(MessageError):
    """A message, name or argument AMQP cannot carry: over 255 bytes where AMQP allows a
    short string, a header of a type AMQP lacks, text that is not UTF-8."""


class MessageTooLarge(MessageError):
    """A message exceeds the configured size limit."""


class InvalidDelay(ConfigurationError, MessageError, ValueError):
    """A delay or eta rabbitry cannot hold: not a number, negative, not finite, beyond
    :data:`~rabbitry.common.delays.MAX_DELAY_S` (97 days), or both a delay and an eta.

    The one error a bad delay raises, from ``delay()``, ``TaskSubmitter.submit`` and the
    rest of the Python API; a ValueError, and a ConfigurationError (exit status 2).
    """


class UnknownTask(RabbitryError):
    """A message names a task that no registered module provides."""

    exit_code = ExitCode.USAGE


class DuplicateTask(ConfigurationError):
    """Two different functions registered under one task name."""
