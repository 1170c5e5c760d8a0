"""Direct reply-to on the in-process broker, as RabbitMQ does it.

A channel that consumes the pseudo-queue ``amq.rabbitmq.reply-to`` (without
acks: RabbitMQ refuses a reply consumer that would acknowledge) gets an
address of its own, ``amq.rabbitmq.reply-to.<token>``. A message it
publishes with ``reply_to`` set to the pseudo-queue's name goes out with
that address in its place; a channel that does not consume the pseudo-queue
may not publish such a message. Publishing to an address on the default
exchange hands the message straight to the consumer that owns it, if its
channel is still open, and to nobody otherwise: no queue ever holds it.
"""

import dataclasses
import secrets

from rabbitry.common.local.queue import Consumer
from rabbitry.common.local.refusals import PRECONDITION_FAILED, refused
from rabbitry.common.replies import DIRECT_REPLY_TO
from rabbitry.common.transport.contract import OutgoingMessage

ADDRESS_PREFIX = DIRECT_REPLY_TO + "."


def is_reply_address(exchange: str, routing_key: str) -> bool:
    """Whether a publish goes to a direct reply-to address."""
    return exchange == "" and routing_key.startswith(ADDRESS_PREFIX)


def check_reply_consumer(auto_ack: bool) -> None:
    """RabbitMQ's refusal of a reply consumer that would acknowledge."""
    if not auto_ack:
        raise refused(PRECONDITION_FAILED, "reply consumer cannot acknowledge")


def add_reply_consumer_locked(consumers: dict[str, Consumer], consumer: Consumer) -> str:
    """Give ``consumer`` an address of its own among the broker's ``consumers``; return it."""
    address = ADDRESS_PREFIX + secrets.token_urlsafe(16)
    consumers[address] = consumer
    return address


def reply_owner_locked(consumers: dict[str, Consumer], address: str) -> Consumer | None:
    """The live consumer that ``address`` belongs to, or None."""
    consumer = consumers.get(address)
    return None if consumer is None or consumer.cancelled else consumer


def addressed(message: OutgoingMessage, address: str | None) -> OutgoingMessage:
    """``message`` as the broker routes it: asking for direct reply-to, it carries the
    publishing channel's own address (a copy: the publisher's message is left as it was)."""
    if message.reply_to != DIRECT_REPLY_TO:
        return message
    if address is None:
        raise refused(PRECONDITION_FAILED, "fast reply consumer does not exist")
    return dataclasses.replace(message, reply_to=address)
