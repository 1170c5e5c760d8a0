"""The task message format: what goes in comes out, and parse_json is json.loads exactly.

These test pure functions, so no broker is involved; the worker tests
check the same format end to end through RabbitMQ.
"""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rabbitry.common.errors import MessageError
from rabbitry.common.messages import JSON_CONTENT_TYPE, TaskMessage, parse_json
from rabbitry.common.transport.contract import Delivery

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


def outcome(parse, body: bytes):
    """What ``parse`` makes of ``body``: the value as canonical JSON, or that it raised ValueError."""
    try:
        return json.dumps(parse(body), sort_keys=True)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return "ValueError"


@settings(max_examples=500, deadline=None)
@given(
    value=json_values,
    indent=st.sampled_from([None, 0, 2]),
    ensure_ascii=st.booleans(),
    padding=st.sampled_from(["", " ", "\n", "\t "]),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]),
)
def test_parse_json_reads_every_document_as_json_loads_does(value, indent, ensure_ascii, padding, encoding):
    body = (padding + json.dumps(value, indent=indent, ensure_ascii=ensure_ascii) + padding).encode(encoding)
    assert outcome(parse_json, body) == outcome(json.loads, body) != "ValueError"


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=40) | st.text(alphabet='{}[]",:0123456789.eE+-tfnulrs \\\ufeff').map(str.encode))
def test_parse_json_accepts_and_refuses_what_json_loads_does(body):
    assert outcome(parse_json, body) == outcome(json.loads, body)


def delivery_of(message: TaskMessage) -> Delivery:
    outgoing = message.to_outgoing("tasks")
    return Delivery(
        outgoing.body,
        "tasks",
        "",
        1,
        content_type=outgoing.content_type,
        message_id=outgoing.message_id,
        timestamp=outgoing.timestamp,
        type=outgoing.type,
    )


def test_a_task_comes_back_as_it_was_sent_with_its_creation_time_to_the_millisecond():
    sent = TaskMessage("echo", [1, "two", {"three": 3.0}], {"key": None}, attempt=2)
    received = TaskMessage.from_delivery(delivery_of(sent))
    assert (received.task, received.args, received.kwargs, received.id, received.attempt) == (
        sent.task,
        sent.args,
        sent.kwargs,
        sent.id,
        sent.attempt,
    )
    assert math.isclose(received.created_at, sent.created_at, abs_tol=0.0005)


def test_a_body_without_an_id_takes_the_message_id_as_plain_text_does():
    for body, content_type in [(b'{"task": "echo"}', JSON_CONTENT_TYPE), (b"..", "text/plain")]:
        delivery = Delivery(body, "tasks", "", 1, content_type=content_type, message_id="from-another-client")
        assert TaskMessage.from_delivery(delivery).id == "from-another-client"
    with_id = Delivery(
        b'{"task": "echo", "id": "its-own"}',
        "tasks",
        "",
        1,
        content_type=JSON_CONTENT_TYPE,
        message_id="from-another-client",
    )
    assert TaskMessage.from_delivery(with_id).id == "its-own"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"task": "echo"', "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"task": ""}', "'task' must be a non-empty string"),
        (b'{"task": "echo", "args": {}}', "'args' must be a JSON array"),
        (b'{"task": "echo", "attempt": -1}', "'attempt' must be a non-negative integer"),
        (b'{"task": "echo", "created_at": null}', "'created_at' must be a number"),
        (b'{"task": "echo", "created_at": Infinity}', "'created_at' must be a number"),
        (b'{"v": 2, "task": "echo"}', "unsupported message format version 2"),
        (b'{"task": "echo", "args": ' + b"[" * 100_000, "nested too deeply"),  # json.loads: RecursionError
        (b'{"task": "' + b"x" * 300 + b'"}', "task name is 300 bytes long"),
        (b'{"task": "echo", "id": "' + b"i" * 300 + b'"}', "task id is 300 bytes long"),
        (b'{"task": "bad\\udcff"}', "task name 'bad\\\\udcff' is not valid UTF-8"),
    ],
)
def test_a_malformed_body_is_one_clear_message_error(body, error):
    delivery = Delivery(body, "tasks", "", 1, content_type=JSON_CONTENT_TYPE)
    with pytest.raises(MessageError, match=error) as raised:
        TaskMessage.from_delivery(delivery)
    assert "\n" not in str(raised.value)


def test_arguments_nested_too_deeply_to_encode_are_a_message_error():
    args: list = []
    for _ in range(100_000):
        args = [args]
    with pytest.raises(MessageError, match="nested too deeply"):
        TaskMessage("echo", args).encode()


@pytest.mark.parametrize("name", ["", "é" * 128, 42, None])
def test_the_producer_refuses_a_task_name_exactly_as_the_worker_does(name):
    with pytest.raises(MessageError) as sent:
        TaskMessage(name).encode()  # type: ignore[arg-type]
    with pytest.raises(MessageError) as received:
        TaskMessage.from_dict({"task": name})

    assert str(sent.value) == str(received.value)
