"""How subscribe shows a message, and what a log message carries (no broker needed)."""

import json

import click

from rabbitry.common.logs.messages import log_message, routing_metadata, severity_of
from rabbitry.common.transport.contract import Delivery
from rabbitry.subscribers.output import json_line, readable_line


def delivery(routing_key: str, body: bytes, headers: dict | None = None) -> Delivery:
    return Delivery(body=body, routing_key=routing_key, exchange="topic_logs", delivery_tag=1, headers=headers or {})


def test_routing_keys_name_severity_and_facility_as_the_tutorials_shape_them():
    assert routing_metadata("topic", "kern.critical") == ("critical", "kern")
    assert routing_metadata("topic", "kern.disk.error") == ("error", "kern")
    assert routing_metadata("direct", "error") == ("error", None)
    assert routing_metadata("fanout", "") == (None, None)


def test_metadata_rides_in_headers_and_properties():
    message = log_message(
        "topic_logs",
        "kern.critical",
        b"panic",
        severity="critical",
        facility="kern",
        app_id="emit-log",
        timestamp=1764165000.5,
    )
    assert message.body == b"panic"
    assert (message.timestamp, message.app_id, message.persistent) == (1764165000, "emit-log", False)
    assert {k: message.headers[k] for k in ("severity", "facility")} == {"severity": "critical", "facility": "kern"}
    assert message.headers["host"]


def test_a_readable_line_colours_the_severity_only_on_a_terminal():
    message = delivery("kern.critical", b"A critical kernel error", {"severity": "critical"})
    assert readable_line(message).split() == ["kern.critical", "CRITICAL", "A", "critical", "kernel", "error"]
    coloured = readable_line(message, color=True)
    assert coloured != readable_line(message) and click.unstyle(coloured) == readable_line(message)


def test_a_tutorial_message_without_headers_takes_its_severity_from_the_key():
    assert severity_of(delivery("auth.warning", b"x")) == "warning"
    assert severity_of(delivery("auth.stuff", b"x")) is None
    assert readable_line(delivery("", b"hello all")) == "hello all"


def test_a_message_cannot_drive_the_terminal_and_its_further_lines_are_indented():
    # U+009B: CSI
    message = delivery("app.error", b"\x1b[2J\x1b]0;owned\x07cleared\rover\tkept\nTraceback:\n  boom\xc2\x9b")

    assert readable_line(message) == (
        "app.error ERROR    \\x1b[2J\\x1b]0;owned\\x07cleared\\x0dover\tkept\n    Traceback:\n      boom\\x9b"
    )


def test_json_lines_carry_key_body_properties_and_headers():
    record = json.loads(json_line(delivery("kern.info", "café".encode(), {"severity": "info", "raw": b"\x01"})))
    assert (record["routing_key"], record["body"], record["headers"]["severity"]) == ("kern.info", "café", "info")
    assert set(record["properties"]) >= {"timestamp", "app_id", "content_type", "message_id"}
    binary = json.loads(json_line(delivery("kern.info", b"\xff\xfe")))
    assert binary["body_base64"] == "//4=" and "body" not in binary
