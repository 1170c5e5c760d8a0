"""The private parts of pika that rabbitry reaches, and nothing else: one small adapter.

pika 1.x has no public way to do four things rabbitry needs:

- publish and track confirms on a ``BlockingChannel`` without waiting for
  each confirm in turn: its asynchronous channel, ``BlockingChannel._impl``;
- read what the connection negotiated and what the broker said of itself:
  ``BlockingConnection._impl.params.frame_max`` and ``.server_properties``;
- write a batch of buffered frames with one system call: the transport's
  ``_tx_buffers``;
- read the frames of one connection with a decoder of its own (for header
  tables pika cannot read, and faster): the connection's ``_read_frame`` and
  ``_frame_buffer``.

:func:`check` looks for all of them; ``tests/test_pika_internals.py`` runs it,
so a pika upgrade that moves one fails there, naming it and pika's version.
"""

import collections
from collections.abc import Callable
from typing import Any

import pika
import pika.channel
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

#: What a frame decoder returns, as ``pika.frame.decode_frame`` does: (bytes used, frame or None).
DecodedFrame = tuple[int, Any]


class PikaInternalsChanged(RuntimeError):
    """The installed pika lacks a private attribute this module relies on."""


def _private(owner: Any, name: str) -> Any:
    """``owner.name``, or PikaInternalsChanged naming it and pika's version."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise PikaInternalsChanged(
            f"pika {pika.__version__} has no {type(owner).__name__}.{name}, which "
            f"rabbitry.common.amqp.pika_internals relies on: update it for this pika"
        ) from None


def async_channel(channel: BlockingChannel) -> pika.channel.Channel:
    """The asynchronous channel a ``BlockingChannel`` drives."""
    return _private(channel, "_impl")


def frame_max(connection: BlockingConnection) -> int:
    """The largest frame the connection and the broker agreed on, in bytes."""
    return _private(_private(connection, "_impl"), "params").frame_max


def server_properties(connection: BlockingConnection) -> dict[str, Any]:
    """What the broker said about itself when the connection opened."""
    return dict(_private(_private(connection, "_impl"), "server_properties") or {})


def coalesce_output(connection: BlockingConnection) -> None:
    """Join the connection's buffered frames into one chunk before they are written.

    pika writes each buffered frame with its own send() call, three per
    message; joined, a batch of messages goes out in one. Skipped quietly
    if pika's internals differ: only speed depends on it, and :func:`check`
    reports it.
    """
    buffers = getattr(getattr(getattr(connection, "_impl", None), "_transport", None), "_tx_buffers", None)
    if isinstance(buffers, collections.deque) and len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)


def read_frames_with(connection: BlockingConnection, decode: Callable[[bytes], DecodedFrame]) -> None:
    """Make this connection, and no other, decode the frames it receives with ``decode``.

    ``decode`` takes the bytes received so far and returns what
    ``pika.frame.decode_frame`` would: (bytes used, frame), or (0, None)
    until a whole frame has arrived.
    """
    impl = _private(connection, "_impl")
    _private(impl, "_read_frame")  # what pika calls for each frame: replaced on this instance only
    _private(impl, "_frame_buffer")
    impl._read_frame = lambda: decode(impl._frame_buffer)


def terminate(connection: BlockingConnection, error: Exception) -> None:
    """Close the connection's socket at once, as if it were lost with ``error``, with no closing
    handshake: pika has no public call for that."""
    _private(_private(connection, "_impl"), "_terminate_stream")(error)


def check(connection: BlockingConnection) -> None:
    """PikaInternalsChanged unless every private part this module uses is on an open ``connection``."""
    channel = connection.channel()
    try:
        if not isinstance(async_channel(channel), pika.channel.Channel):
            raise PikaInternalsChanged(f"pika {pika.__version__}: BlockingChannel._impl is not a pika.channel.Channel")
    finally:
        channel.close()
    if not isinstance(frame_max(connection), int) or not isinstance(server_properties(connection), dict):
        raise PikaInternalsChanged(
            f"pika {pika.__version__}: the connection's params.frame_max or server_properties has changed type"
        )
    impl = _private(connection, "_impl")
    if not isinstance(_private(_private(impl, "_transport"), "_tx_buffers"), collections.deque):
        raise PikaInternalsChanged(f"pika {pika.__version__}: the transport's _tx_buffers is not a deque")
    if not callable(_private(impl, "_terminate_stream")):
        raise PikaInternalsChanged(f"pika {pika.__version__}: the connection's _terminate_stream is not callable")
    if not callable(_private(impl, "_read_frame")) or not isinstance(_private(impl, "_frame_buffer"), bytes):
        raise PikaInternalsChanged(
            f"pika {pika.__version__}: the connection's _read_frame or _frame_buffer has changed"
        )
