"""rabbitry's frame decoder reads every frame as pika's own does: the same objects, the same
values, the same bytes used, the same refusal of what is malformed."""

from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from rabbitry.common.amqp.frames import decode_frame
from rabbitry.common.amqp.headers import decode_frame_forgivingly
from rabbitry.common.transport.contract import UNREADABLE_HEADERS
from tests.helpers import TIMESTAMP_PAST_9999, RawHeaderProperties, raw_header

short_strings = st.one_of(
    st.text(max_size=40).filter(lambda text: len(text.encode()) <= 255),
    st.binary(max_size=40),  # not always UTF-8: pika hands those over as bytes
)
octets = st.integers(0, 255)
longs = st.integers(0, 2**64 - 1)
header_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), st.text(max_size=20))
tables = st.dictionaries(st.text(min_size=1, max_size=10), header_values, max_size=4)

delivers = st.builds(spec.Basic.Deliver, short_strings, longs, st.booleans(), short_strings, short_strings)
properties = st.builds(
    spec.BasicProperties,
    content_type=st.none() | short_strings,
    content_encoding=st.none() | short_strings,
    headers=st.none() | tables,
    delivery_mode=st.none() | octets,
    priority=st.none() | octets,
    correlation_id=st.none() | short_strings,
    reply_to=st.none() | short_strings,
    expiration=st.none() | short_strings,
    message_id=st.none() | short_strings,
    timestamp=st.none() | longs,
    type=st.none() | short_strings,
    user_id=st.none() | short_strings,
    app_id=st.none() | short_strings,
    cluster_id=st.none() | short_strings,
)
channels = st.integers(1, 2047)
frames = st.one_of(
    st.builds(frame.Method, channels, delivers),
    st.builds(frame.Method, channels, st.builds(spec.Basic.Ack, longs, st.booleans())),
    st.builds(frame.Header, channels, longs, properties),
    st.builds(frame.Body, channels, st.binary(max_size=300)),
    st.builds(frame.Heartbeat),
)


def outcome(decode, received: bytes):
    """What ``decode`` makes of ``received``, comparable with ==: (used, type, attributes), or the error."""
    try:
        used, decoded = decode(received)
    except Exception as error:
        return "raised", type(error)
    if decoded is None:
        return used, None
    attributes = dict(vars(decoded))
    for name in ("method", "properties"):
        if name in attributes:
            attributes[name] = (type(attributes[name]), vars(attributes[name]))
    return used, type(decoded), attributes


def read_alike(received: bytes) -> None:
    assert outcome(decode_frame, received) == outcome(decode_frame_forgivingly, received)


@settings(max_examples=400, deadline=None)
@given(frames, st.binary(max_size=20))
def test_a_frame_is_read_as_pika_reads_it_with_whatever_follows_it(value, following):
    read_alike(value.marshal() + following)


@settings(max_examples=200, deadline=None)
@given(frames, st.data())
def test_a_frame_cut_short_or_with_a_byte_changed_is_read_or_refused_as_pika_does(value, data):
    marshalled = value.marshal()
    read_alike(marshalled[: data.draw(st.integers(0, len(marshalled) - 1), label="length")])
    position = data.draw(st.integers(0, len(marshalled) - 1), label="position")
    changed = bytes([data.draw(octets, label="byte")])
    read_alike(marshalled[:position] + changed + marshalled[position + 1 :])


def test_a_delivery_is_read_into_the_values_it_was_sent_with():
    deliver = spec.Basic.Deliver("ctag1.abc", 2**40 + 7, True, "logs", "kern.critical")
    sent = spec.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id="id-1",
        timestamp=1_796_640_000,
        type="noop",
        headers={"attempt": 1},
    )
    received = (
        frame.Method(3, deliver).marshal() + frame.Header(3, 5, sent).marshal() + frame.Body(3, b"hello").marshal()
    )

    method_used, method = decode_frame(received)
    header_used, header = decode_frame(received[method_used:])
    _, body = decode_frame(received[method_used + header_used :])

    assert (method.channel_number, vars(method.method)) == (3, vars(deliver))
    assert (header.body_size, vars(header.properties)) == (5, vars(sent))
    assert body.fragment == b"hello"


def test_a_header_table_pika_cannot_read_still_arrives_with_a_note():
    table = raw_header("fine", b"S", b"\x00\x00\x00\x02ok") + TIMESTAMP_PAST_9999
    received = frame.Header(1, 8, RawHeaderProperties(table, "text/plain", "unreadable")).marshal()

    used, header = decode_frame(received)

    assert used == len(received)
    assert (header.body_size, header.properties.message_id) == (8, "unreadable")
    assert list(header.properties.headers) == [UNREADABLE_HEADERS]
