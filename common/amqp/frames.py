"""Reading a connection's frames: a delivery's three by a short path, every other by pika.

A consuming pool process spends about a third of its connection thread in
``pika.frame.decode_frame``, for the three frames of each delivery (the
``basic.deliver`` method, the content header, the body). pika's decoder is
general: it slices each frame twice, looks the method class up, and reads
the properties through one helper call per field. :func:`decode_frame` reads
those three frames directly into the same pika objects, with the same
values, in two thirds of the time (4.1 µs a delivery instead of 6.5 on the
2-core VM of docs/benchmarks.md), and hands every other frame, and any
frame it does not find well formed, to pika's decoder (by way of
:func:`~rabbitry.common.amqp.headers.decode_frame_forgivingly`), so that
what pika accepts, refuses or forgives stays exactly as it was.
``tests/test_amqp_frames.py`` checks that both read the same frames alike.
"""

import struct

from pika import data, frame, spec

from rabbitry.common.amqp.headers import decode_frame_forgivingly
from rabbitry.common.amqp.pika_internals import DecodedFrame

_FRAME_HEADER = struct.Struct(">BHL")  # type, channel, payload size
_U64 = struct.Struct(">Q")
_DELIVER_ID = struct.pack(">I", spec.Basic.Deliver.INDEX)
_BASIC_CLASS = spec.BasicProperties.INDEX

_SHORT, _OCTET, _TIMESTAMP, _TABLE = range(4)
#: The content header's properties in the order they are encoded, with their flags and kinds.
_PROPERTIES = tuple(
    (getattr(spec.BasicProperties, "FLAG_" + name.upper()), name, kind)
    for name, kind in (
        ("content_type", _SHORT),
        ("content_encoding", _SHORT),
        ("headers", _TABLE),
        ("delivery_mode", _OCTET),
        ("priority", _OCTET),
        ("correlation_id", _SHORT),
        ("reply_to", _SHORT),
        ("expiration", _SHORT),
        ("message_id", _SHORT),
        ("timestamp", _TIMESTAMP),
        ("type", _SHORT),
        ("user_id", _SHORT),
        ("app_id", _SHORT),
        ("cluster_id", _SHORT),
    )
)
#: The properties a flag word names, (name, kind) in order, for the flag words seen so far (a
#: producer sets the same ones on every message, so there are few).
_present: dict[int, tuple[tuple[str, int], ...]] = {}


def decode_frame(received: bytes) -> DecodedFrame:
    """``pika.frame.decode_frame`` (forgiving of unreadable header tables): (bytes used, frame),
    or (0, None) until a whole frame has arrived."""
    try:
        frame_type, channel, size = _FRAME_HEADER.unpack_from(received)
    except struct.error:
        return 0, None  # pika's answer to fewer than 7 bytes too
    end = size + 8  # the 7-byte header, the payload, the frame-end octet
    if end > len(received):
        return 0, None
    decoded = None
    if received[end - 1] == spec.FRAME_END:
        payload = received[7 : end - 1]
        if frame_type == spec.FRAME_BODY:
            decoded = frame.Body(channel, payload)
        else:
            try:
                if frame_type == spec.FRAME_METHOD:
                    decoded = _deliver(channel, payload)
                elif frame_type == spec.FRAME_HEADER:
                    decoded = _content_header(channel, payload)
            except Exception:  # whatever a malformed payload raises here: pika's decoder tells
                decoded = None
    return (end, decoded) if decoded is not None else decode_frame_forgivingly(received)


def _deliver(channel: int, payload: bytes) -> frame.Method | None:
    if payload[:4] != _DELIVER_ID:
        return None
    consumer_tag, position = _short_string(payload, 4)
    delivery_tag = _U64.unpack_from(payload, position)[0]
    redelivered = bool(payload[position + 8] & 1)
    exchange, position = _short_string(payload, position + 9)
    routing_key, position = _short_string(payload, position)
    if position > len(payload):
        return None
    return frame.Method(channel, spec.Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key))


def _content_header(channel: int, payload: bytes) -> frame.Header | None:
    if (payload[0] << 8 | payload[1]) != _BASIC_CLASS:
        return None
    body_size = _U64.unpack_from(payload, 4)[0]
    flags = payload[12] << 8 | payload[13]
    present = _present.get(flags)
    if present is None:
        if flags & 1:  # a second flag word, which no AMQP 0-9-1 property uses
            return None
        present = _present[flags] = tuple((name, kind) for flag, name, kind in _PROPERTIES if flags & flag)
    properties = spec.BasicProperties()
    position = 14
    value: object
    for name, kind in present:
        if kind == _SHORT:
            value, position = _short_string(payload, position)
        elif kind == _OCTET:
            value = payload[position]
            position += 1
        elif kind == _TIMESTAMP:
            value = _U64.unpack_from(payload, position)[0]
            position += 8
        else:  # a table pika cannot read raises: ForgivingProperties, by way of pika's decoder, tells
            value, position = data.decode_table(payload, position)
        setattr(properties, name, value)
    if position > len(payload):
        return None
    return frame.Header(channel, body_size, properties)


def _short_string(payload: bytes, position: int) -> tuple[str | bytes, int]:
    """A short string and the position after it; bytes where it is not UTF-8, as pika reads it."""
    end = position + 1 + payload[position]
    value = payload[position + 1 : end]
    try:
        return value.decode(), end
    except UnicodeDecodeError:
        return value, end
