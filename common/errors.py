"""rabbitry's exception hierarchy and the CLI's exit codes.

pika's exceptions never leave :mod:`rabbitry.common.amqp`; they are translated into
these, so callers handle one family of errors whatever the transport.
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


class ConsumerCancelled(ConnectionLost):
    """The broker cancelled a consumer: its queue was deleted, or moved away.

    Like a lost connection, it calls for reconnecting and declaring again.
    """


class BrokerRefused(RabbitryError):
    """The broker refused an operation (authentication, a topology mismatch).

    Retrying blindly does not help: the configuration has to change.
    """

    exit_code = ExitCode.BROKER_REFUSED


class PublishFailed(RabbitryError):
    """The broker nacked a message, or it was not confirmed in time."""


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


class UnknownTask(RabbitryError):
    """A message names a task that no registered module provides."""

    exit_code = ExitCode.USAGE


class DuplicateTask(ConfigurationError):
    """Two different functions registered under one task name."""
