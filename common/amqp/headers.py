"""Header tables pika cannot read: a message that carries one arrives with a note instead.

pika fails in the middle of reading a frame on a header it cannot represent,
such as a timestamp past the year 9999 that another client sent: the
connection drops, the broker redelivers the message, and no consumer ever
gets past it. A rabbitry connection decodes its frames with
:func:`rabbitry.common.amqp.frames.decode_frame`, which leaves every frame it does
not read itself to :func:`decode_frame_forgivingly` (see
:func:`rabbitry.common.amqp.pika_internals.read_frames_with`), so such a message
arrives with its other properties and ``{UNREADABLE_HEADERS: reason}`` for
headers, and the worker dead-letters it as malformed. Other pika connections
in the process are left as they are.
"""

import struct

from pika import frame, spec

from rabbitry.common.amqp.pika_internals import DecodedFrame
from rabbitry.common.transport.contract import UNREADABLE_HEADERS


class ForgivingProperties(spec.BasicProperties):
    """Message properties whose header table, if pika cannot read it, becomes a note saying why."""

    def decode(self, encoded, offset=0):
        try:
            return super().decode(encoded, offset)
        except Exception as error:  # anything pika's decoder raises on bad input
            without = _without_headers(encoded, offset)
            if without is None:
                raise
            super().decode(without)
            self.headers = {UNREADABLE_HEADERS: f"{type(error).__name__}: {error}"[:1000]}
            return self


def _without_headers(encoded: bytes, offset: int) -> bytes | None:
    """The encoded properties with their header table cut out, or None if there is none to cut."""
    try:
        flags = struct.unpack_from(">H", encoded, offset)[0]
        if not flags & spec.BasicProperties.FLAG_HEADERS:
            return None
        position = offset + 2
        if flags & 1:  # a second flag word, which no AMQP 0-9-1 property uses
            return None
        for flag in (spec.BasicProperties.FLAG_CONTENT_TYPE, spec.BasicProperties.FLAG_CONTENT_ENCODING):
            if flags & flag:
                position += 1 + encoded[position]  # a short string: its length, then its bytes
        table_end = position + 4 + struct.unpack_from(">I", encoded, position)[0]
    except (struct.error, IndexError):
        return None
    if table_end > len(encoded):
        return None
    flags &= ~spec.BasicProperties.FLAG_HEADERS
    return struct.pack(">H", flags) + encoded[offset + 2 : position] + encoded[table_end:]


def decode_frame_forgivingly(received: bytes) -> DecodedFrame:
    """``pika.frame.decode_frame``, but a content header frame's properties are read as ForgivingProperties."""
    try:
        return frame.decode_frame(received)
    except Exception:  # whatever pika's decoder raises on bad input
        header = _forgiving_header_frame(received)
        if header is None:
            raise
        return header


def _forgiving_header_frame(received: bytes) -> DecodedFrame | None:
    """The whole content header frame ``received`` starts with, read with ForgivingProperties, or None."""
    try:
        frame_type, channel_number, size = struct.unpack_from(">BHL", received)
        frame_end = spec.FRAME_HEADER_SIZE + size + spec.FRAME_END_SIZE
        if frame_type != spec.FRAME_HEADER or received[frame_end - 1] != spec.FRAME_END:
            return None
        class_id, _weight, body_size = struct.unpack_from(">HHQ", received, spec.FRAME_HEADER_SIZE)
    except (struct.error, IndexError):
        return None
    if class_id != spec.BasicProperties.INDEX:
        return None
    properties = ForgivingProperties()
    properties.decode(received[spec.FRAME_HEADER_SIZE + 12 : frame_end - 1])
    return frame_end, frame.Header(channel_number, body_size, properties)
