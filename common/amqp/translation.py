"""Translating pika's errors into rabbitry's, where they leave :mod:`.connection` and :mod:`.opening`.

Every pika (or socket) exception is turned here into the matching
:class:`~rabbitry.common.errors.RabbitryError` (see :func:`translated`), so that
none leaves the folder and a user sees one clear line, not pika's traceback.
"""

import contextlib
import re
from typing import TypeGuard

import pika.exceptions as pika_errors

from rabbitry.common.errors import (
    AcknowledgementTimedOut,
    BrokerRefused,
    ChannelClosed,
    ConnectionLost,
    MessageRefused,
    PublishingBlocked,
    RabbitryError,
    Unencodable,
)
from rabbitry.common.settings import mask_url

#: How long a declaration waits for durable queues the node is still starting: for a moment
#: after a restarted node accepts connections, its streams and quorum queues answer
#: "home node ... is down or inaccessible", as they do while their node is down in a cluster.
QUEUE_START_WAIT_S = 30.0

#: What pika raises when a broker answered but refused the login.
LOGIN_REFUSED = (
    pika_errors.ProbableAuthenticationError,
    pika_errors.ProbableAccessDeniedError,
    pika_errors.AuthenticationError,
)
#: What pika raises when it cannot encode a message (a property over 255 bytes, a header
#: of a type AMQP lacks, text that is not UTF-8); it has sent nothing of it by then.
_UNENCODABLE = (pika_errors.ShortStringTooLong, pika_errors.UnsupportedAMQPFieldException, UnicodeEncodeError)
#: How RabbitMQ words its refusal of a message over its ``max_message_size`` ("configured" unless
#: the limit is its hard maximum).
_TOO_LARGE = re.compile(r"message size (\d+) is larger than (?:configured )?max size (\d+)")


def translate(error: BaseException, where: str = "") -> RabbitryError:
    """The rabbitry error that stands for a pika (or socket) error."""
    prefix = f"{where}: " if where else ""
    if isinstance(error, _UNENCODABLE):
        return Unencodable(f"{prefix}cannot be encoded for AMQP: {type(error).__name__}")
    if isinstance(error, LOGIN_REFUSED):
        return BrokerRefused(f"{prefix}the broker refused the login (check user, password and vhost)")
    if queue_not_started(error):
        return ConnectionLost(f"{prefix}{error.reply_text} (waited {QUEUE_START_WAIT_S:g} s for it)")
    if isinstance(error, pika_errors.ChannelClosedByBroker):
        return BrokerRefused(f"{prefix}the broker refused: {error.reply_text} ({error.reply_code})")
    if isinstance(error, pika_errors.ConnectionBlockedTimeout):
        return PublishingBlocked(f"{prefix}the broker blocked publishing for longer than the blocked timeout")
    if isinstance(error, pika_errors.ConnectionClosedByBroker):
        return ConnectionLost(f"{prefix}the broker closed the connection: {error.reply_text} ({error.reply_code})")
    if isinstance(error, pika_errors.AMQPConnectionError) and error.args and isinstance(error.args[0], BaseException):
        return translate(error.args[0], where)
    detail = str(error) or type(error).__name__
    return ConnectionLost(f"{prefix}connection lost: {mask_url(detail)}")


def queue_not_started(error: BaseException) -> TypeGuard[pika_errors.ChannelClosedByBroker]:
    """Whether the broker closed a channel because a durable queue's process is not running (yet)."""
    return (
        isinstance(error, pika_errors.ChannelClosedByBroker)
        and error.reply_code == 404
        and "is down or inaccessible" in str(error.reply_text)
    )


def channel_closure(reason: BaseException) -> RabbitryError | None:
    """The error that says why the broker closed a channel (None if the client closed it).

    A consumer must know some causes by name: a delivery-acknowledgement
    timeout, and a message refused as over the broker's ``max_message_size``
    (the same message would be refused again). Any other closure refuses
    something sent on the channel: a consumer may connect again.
    """
    if not isinstance(reason, pika_errors.ChannelClosedByBroker):
        return None
    text, code = str(reason.reply_text), reason.reply_code
    if code == 406 and "delivery acknowledgement" in text:
        return AcknowledgementTimedOut(
            "the broker closed the channel: a delivery stayed unacknowledged past its consumer_timeout, and "
            f"the broker requeues what the channel held ({text})"
        )
    if code == 406 and (too_large := _TOO_LARGE.search(text)):
        return MessageRefused(f"the broker refused a message: {text} ({code})", max_size=int(too_large[2]))
    return ChannelClosed(f"the broker closed the channel: {text} ({code})")


@contextlib.contextmanager
def translated(where: str = ""):
    """Re-raise any pika or socket error as the matching RabbitryError."""
    try:
        yield
    except (pika_errors.AMQPError, OSError, UnicodeEncodeError) as error:
        raise translate(error, where) from None
