"""``emit-log``: publish log messages to a fanout, direct or topic exchange.

As in the RabbitMQ tutorials 3-5::

    emit-log kern.critical "A critical kernel error"     # topic_logs
    emit-log --exchange-type direct error "disk full"     # direct_logs
    emit-log --exchange-type fanout "hello all"           # logs

With no message it reads standard input, one message per line, on one
connection with pipelined confirms: ``tail -f app.log | emit-log app.info``.
Nothing is printed on success. A message no queue was bound to receive is
reported on standard error; ``--require-route`` makes it an error. A failure
(a lost broker, a broker that blocks publishing past ``--blocked-timeout``)
writes one summary line on standard error before the error: how many
messages were confirmed, and how many may or may not have been delivered.
"""

import os
import select
from collections.abc import Iterator

import click
import structlog

from rabbitry.common.cli import (
    RabbitryCommand,
    binary_stream,
    blocked_timeout_option,
    broker_options,
    log_exchange_options,
    logging_options,
)
from rabbitry.common.errors import ExitCode, PublishFailed, RabbitryError, Unroutable
from rabbitry.common.transport.contract import PublishFailure
from rabbitry.common.transport.routing import check_routing_key
from rabbitry.producers.log_emitter import LogEmitter

log = structlog.get_logger("rabbitry.emit_log")

#: With no input for this long, the connection is serviced (heartbeats, confirms).
IDLE_POLL_S = 1.0
_READ_SIZE = 1 << 16


def line_batches(fd: int, idle_s: float = IDLE_POLL_S) -> Iterator[list[bytes]]:
    """The lines read from ``fd``, a batch for each read, without their line ends.

    A batch holds whatever one read returned, so a fast producer gives big
    batches and ``tail -f`` gives one line at a time, at once. An empty batch
    comes after ``idle_s`` of silence, to let the caller service its connection.
    """
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], idle_s)
        if not ready:
            yield []
            continue
        chunk = os.read(fd, _READ_SIZE)
        if not chunk:
            if pending:
                yield [pending.rstrip(b"\r")]
            return
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield [line[:-1] if line.endswith(b"\r") else line for line in lines]


class FailureReport:
    """Counts refused and unroutable messages; warns once, or fails with --require-route."""

    def __init__(self, exchange: str, require_route: bool):
        self.exchange = exchange
        self.require_route = require_route
        self.unroutable = 0
        self.nacked = 0

    def add(self, failures: list[PublishFailure]) -> None:
        for failure in failures:
            key = failure.message.routing_key
            if failure.reason != "unroutable":
                self.nacked += 1
                continue
            self.unroutable += 1
            if self.require_route:
                raise Unroutable(
                    f"message unroutable: no queue is bound to exchange {self.exchange!r} for routing key {key!r}"
                )
            if self.unroutable == 1:
                log.warning(
                    "unroutable",
                    exchange=self.exchange,
                    routing_key=key,
                    detail="no queue is bound for this key: the message was dropped",
                )

    def summary(self, emitter: LogEmitter) -> str:
        """One line: what was confirmed, refused, and neither."""
        unconfirmed = emitter.emitted - emitter.confirmed - self.nacked - self.unroutable
        return (
            f"summary: {emitter.confirmed} confirmed, {self.nacked} refused, {self.unroutable} unroutable, "
            f"{unconfirmed} unconfirmed (may or may not be delivered)"
        )

    def finish(self, emitted: int) -> None:
        """Warn about (or fail for) what went wrong over the whole run."""
        if self.nacked:
            raise PublishFailed(f"the broker refused {self.nacked} of {emitted} messages")
        if self.unroutable > 1:
            log.warning("unroutable_total", exchange=self.exchange, unroutable=self.unroutable, emitted=emitted)


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("words", nargs=-1, metavar="[ROUTING_KEY] [MESSAGE]...")
@log_exchange_options
@click.option(
    "--require-route", is_flag=True, help="Fail (exit status 5) when a message has no queue bound to receive it."
)
@click.option("--app-id", default="emit-log", show_default=True, help="The AMQP app_id property.")
@broker_options
@blocked_timeout_option
@logging_options()
def emit_log(settings, words, exchange, require_route, app_id, log_format, log_level):
    """Publish MESSAGE under ROUTING_KEY, or each line of standard input if no MESSAGE is given.

    The routing key is `<facility>.<severity>` for a topic exchange (kern.critical),
    a severity for a direct one (error), and absent for fanout.
    """
    if exchange.type == "fanout":
        routing_key, message_words = "", words
    else:
        if not words:
            raise click.UsageError(
                f"a {exchange.type} exchange needs a ROUTING_KEY "
                f"(for example {'kern.critical' if exchange.type == 'topic' else 'error'})"
            )
        routing_key, message_words = words[0], words[1:]
        check_routing_key(routing_key)
    report = FailureReport(exchange.name, require_route)
    interrupted = False
    with LogEmitter(settings, exchange, app_id=app_id) as emitter:
        try:
            if message_words:  # an explicit "" is an empty message, not a request to read stdin
                emitter.emit(routing_key, " ".join(message_words))
            else:
                interrupted = _stream_lines(emitter, routing_key, report)
            report.add(emitter.flush())
            report.finish(emitter.emitted)
        except RabbitryError:
            click.echo(report.summary(emitter), err=True)
            raise  # one "Error: ..." line, the last, as for any other error
    if interrupted:
        raise SystemExit(ExitCode.INTERRUPTED)


def _stream_lines(emitter: LogEmitter, routing_key: str, report: FailureReport) -> bool:
    """Publish each line of standard input; return True if Ctrl-C ended the stream."""
    try:
        for batch in line_batches(binary_stream("stdin").fileno()):
            for line in batch:
                if line:  # blank lines carry nothing worth a message
                    emitter.emit(routing_key, line)
            report.add(emitter.poll())
    except KeyboardInterrupt:  # `tail -f | emit-log` ends this way: what was read is still confirmed
        return True
    return False


def main():
    emit_log(prog_name="emit-log")
