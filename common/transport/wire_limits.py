"""AMQP 0-9-1's size limits, in one place for every side: both transports, messages, commands.

Names (of exchanges and queues), routing keys and the message properties
rabbitry sets are *short strings*: at most 255 bytes of UTF-8. pika refuses
to encode a longer one before anything is sent; the in-process broker
refuses the same ones, so code tried on it does not fail on RabbitMQ alone.
A message's properties and headers travel in one content header frame,
which must fit in the frame size negotiated with the broker.
"""

from typing import TYPE_CHECKING

from rabbitry.common.errors import RabbitryError, Unencodable
from rabbitry.common.transport.contract import OutgoingMessage

if TYPE_CHECKING:
    from rabbitry.common.topology import Topology

#: The longest short string, in bytes of UTF-8.
MAX_SHORT_STRING_BYTES = 255
#: The fields of an :class:`~rabbitry.common.transport.contract.OutgoingMessage` that travel as short strings.
SHORT_STRING_FIELDS = ("exchange", "routing_key", "message_id", "type", "app_id", "content_type", "expiration")
#: Text of up to 63 characters is surely within 255 bytes, whatever the characters (4 bytes at most each).
_SURELY_SHORT = MAX_SHORT_STRING_BYTES // 4
#: What a content header frame holds besides the properties: the frame's header (type, channel,
#: size), the class id, weight and body size, and the frame-end octet.
_CONTENT_HEADER_OVERHEAD = 7 + 12 + 1


def given_bytes(text: str) -> bytes | str:
    """The bytes a command line gave for ``text`` (Python keeps bad ones as surrogates)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text


def check_short_string(
    text: str, what: str, error: type[RabbitryError] = Unencodable, from_command_line: bool = False
) -> str:
    """Return ``text`` if it can travel as a short string: valid UTF-8, at most 255 bytes.

    Otherwise raise ``error`` saying why, naming ``what`` the text is; text
    ``from_command_line`` that is not UTF-8 is shown as the bytes it came as.
    """
    if text.isascii() and len(text) <= MAX_SHORT_STRING_BYTES:
        return text  # every usual name: no need to encode it
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate, as from a command line that is not UTF-8
        shown = given_bytes(text) if from_command_line else text
        raise error(f"{what} {shown!r} is not valid UTF-8") from None
    if size > MAX_SHORT_STRING_BYTES:
        raise error(f"{what} is {size} bytes long; AMQP allows at most {MAX_SHORT_STRING_BYTES}")
    return text


def check_topology(topology: "Topology", doing: str = "declaring the topology") -> None:
    """Unencodable, as pika refuses it, if a name or key in ``topology`` cannot be a short string."""
    names = (
        [e.name for e in topology.exchanges]
        + [q.name for q in topology.queues]
        + [text for b in topology.bindings for text in (b.exchange, b.queue, b.routing_key)]
        + [text for b in topology.exchange_bindings for text in (b.source, b.destination, b.routing_key)]
    )
    for name in names:
        check_short_string(name, f"{doing}: a name")


def may_be_too_long(message: OutgoingMessage) -> bool:
    """Whether a short-string field of ``message`` is long enough to be over the limit.

    Cheap enough for every message's path: only when it says yes need
    :func:`check_message` look closer.
    """
    return (
        len(message.routing_key) > _SURELY_SHORT
        or len(message.exchange) > _SURELY_SHORT
        or len(message.message_id or "") > _SURELY_SHORT
        or len(message.type or "") > _SURELY_SHORT
        or len(message.app_id or "") > _SURELY_SHORT
        or len(message.content_type or "") > _SURELY_SHORT
        or len(message.expiration or "") > _SURELY_SHORT
    )


def check_message(message: OutgoingMessage) -> None:
    """Unencodable if a short-string field of ``message`` is not valid UTF-8 or over 255 bytes.

    Header values are not looked at here: how large the headers may be
    depends on the frame size (see :func:`check_content_header`).
    """
    for name in SHORT_STRING_FIELDS:
        text = getattr(message, name)
        if text is not None:
            check_short_string(text, f"the message's {name}")


def check_content_header(properties_bytes: int, frame_max: int) -> None:
    """Unencodable if properties and headers encoded in ``properties_bytes`` exceed one ``frame_max`` frame."""
    if _CONTENT_HEADER_OVERHEAD + properties_bytes > frame_max:
        raise Unencodable(
            f"its properties and headers take {properties_bytes} bytes, more than one {frame_max}-byte frame can carry"
        )


#: The largest message body RabbitMQ takes whatever its ``max_message_size`` says (512 MiB);
#: its default is 128 MiB up to 3.13 and 16 MiB from 4.0. A body over the broker's limit is
#: refused by closing the channel it came on.
RABBITMQ_MAX_MESSAGE_SIZE = 512 * 1024 * 1024
