"""What an in-process connection sends its broker, as frames on a socket: publishes, acks, rejects.

A connection buffers them as :class:`Publish` and :class:`AckOrReject` and sends
them to the broker in order, in batches, under the broker's lock.
"""

from dataclasses import dataclass

from rabbitry.common.transport.contract import OutgoingMessage

#: What an :class:`AckOrReject` does with its deliveries.
ACK, REQUEUE, DEAD_LETTER = "ack", "requeue", "dead-letter"


@dataclass(slots=True)
class Publish:
    """A basic.publish on its way to the broker."""

    message: OutgoingMessage
    mandatory: bool


@dataclass(slots=True)
class AckOrReject:
    """A basic.ack or basic.reject (a negative acknowledgement) on its way to the broker."""

    delivery_tag: int  # with ``multiple``, 0 stands for every outstanding delivery, as in AMQP
    multiple: bool
    outcome: str  # ACK, REQUEUE or DEAD_LETTER
