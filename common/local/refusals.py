"""The refusals of the in-process broker, worded as RabbitMQ words them.

A refusal closes the channel, as on the real broker; the connection
(:mod:`rabbitry.common.local.connection`) does that when it sees one.
"""

from rabbitry.common.errors import BrokerRefused, MessageRefused

# AMQP reply codes, as the real broker names them in its refusals.
NOT_FOUND = "NOT_FOUND (404)"
ACCESS_REFUSED = "ACCESS_REFUSED (403)"
RESOURCE_LOCKED = "RESOURCE_LOCKED (405)"
PRECONDITION_FAILED = "PRECONDITION_FAILED (406)"
COMMAND_INVALID = "COMMAND_INVALID (503)"


def refused(code: str, text: str) -> BrokerRefused:
    """The error for an operation the real broker would refuse with ``code``."""
    name, number = code.split()
    return BrokerRefused(f"the broker refused: {name} - {text} {number}")


def too_large(size: int, max_size: int) -> MessageRefused:
    """The error for a message body over the broker's ``max_message_size``, worded as RabbitMQ's."""
    name, number = PRECONDITION_FAILED.split()
    text = f"message size {size} is larger than configured max size {max_size}"
    return MessageRefused(f"the broker refused a message: {name} - {text} {number}", max_size=max_size)
