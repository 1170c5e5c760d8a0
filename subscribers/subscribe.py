"""``subscribe``: print the messages of a log exchange that match binding keys.

As in the RabbitMQ tutorials 3-5::

    subscribe "kern.*" "*.critical"         # topic_logs
    subscribe --exchange-type direct error  # direct_logs
    subscribe --exchange-type fanout        # logs

and beyond them::

    subscribe --since 1h "kern.*"           # the last hour's history, then live
    subscribe --queue kern.sub              # resume a durable subscription, keys and all
    subscribe --queue kern.sub --unbind "kern.info"

Messages go to standard output, one line each (``--json`` for scripts); the
command's own logs go to standard error.
"""

import os
import signal
import sys
import threading
import time

import click
import structlog

from rabbitry.common.cli import (
    RabbitryCommand,
    broker_options,
    check_queue_name,
    json_option,
    log_exchange_options,
    logging_options,
    management_url_option,
    text_stream,
)
from rabbitry.common.errors import ConfigurationError
from rabbitry.subscribers.history_subscriber import HistoryProgress, HistorySubscriber
from rabbitry.subscribers.log_subscriber import LogSubscriber
from rabbitry.subscribers.output import json_line, readable_line
from rabbitry.subscribers.since import parse_since, parse_until

log = structlog.get_logger("rabbitry.subscriber")


def _stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM end the command cleanly, after the message in hand."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


class ProgressLine:
    """The replay's progress, redrawn in place on a terminal's standard error; nothing elsewhere."""

    def __init__(self, stream):
        self.stream = stream
        self.drawn = False
        self.caught_up = False

    def __call__(self, progress: HistoryProgress) -> None:
        if self.caught_up:
            return
        lag = progress.lag_s()
        text = progress.describe()
        if lag is not None and lag < 2:
            self.caught_up = True
            text = f"history: {progress.read:,} lines read, {progress.shown:,} shown; caught up, following live"
        self.stream.write("\r\x1b[K" + text + ("\n" if self.caught_up else ""))
        self.stream.flush()
        self.drawn = not self.caught_up

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _parsed(parse, text: str | None, now: float, option: str):
    """``parse(text, now)``, a bad value being click's one-line usage error for ``option``."""
    if text is None:
        return None
    try:
        return parse(text, now)
    except ConfigurationError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("binding_keys", nargs=-1, metavar="[BINDING_KEY]...")
@log_exchange_options
@click.option(
    "--queue",
    default=None,
    metavar="NAME",
    callback=check_queue_name,
    help="Consume a durable named queue, which keeps messages while no subscriber runs. With no "
    "BINDING_KEY it resumes with the bindings the queue has. Default: an exclusive queue "
    "named by the broker.",
)
@click.option(
    "--unbind",
    multiple=True,
    metavar="KEY",
    help="Remove the binding KEY from the --queue (repeatable), then subscribe with what is left; "
    "its last key only with a BINDING_KEY to bind in its place.",
)
@click.option(
    "--since",
    default=None,
    metavar="WHEN",
    help="Replay the exchange's history from WHEN, then follow live: 'first', a duration (30s, "
    "10m, 1h) or a time (2026-11-28T09:00Z). Needs `rabbitry logs retain`.",
)
@click.option(
    "--until", default=None, metavar="WHEN", help="With --since, stop at WHEN: a duration from now or a time."
)
@json_option(": each message's routing key, body, properties and headers; with --since, its offset and timestamp too")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N messages.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Exit after SECONDS without a message (with --since: after the replay).",
)
@management_url_option(", to read a named queue's bindings and check that --unbind keys are bound")
@broker_options
@logging_options()
def subscribe(
    settings,
    binding_keys,
    exchange,
    queue,
    unbind,
    since,
    until,
    as_json,
    count,
    timeout,
    management_url,
    log_format,
    log_level,
):
    """Print each message whose routing key matches a BINDING_KEY ('*' is one word, '#' any number)."""
    if since is not None and queue:
        raise click.UsageError(
            "--since reads the exchange's history stream, not a queue: give one of --since and --queue"
        )
    if until is not None and since is None:
        raise click.UsageError("--until goes with --since")
    now = time.time()
    start = _parsed(parse_since, since, now, "--since")
    end = _parsed(parse_until, until, now, "--until")
    progress = ProgressLine(text_stream("stderr")) if since and sys.stderr.isatty() else None
    try:
        if start is not None:
            subscriber: LogSubscriber = HistorySubscriber(
                settings, exchange, binding_keys, start=start, until=end, on_progress=progress
            )
        else:
            subscriber = LogSubscriber(
                settings, exchange, binding_keys, queue=queue, unbind=unbind, management_url=management_url
            )
    except ConfigurationError as error:
        raise click.BadParameter(str(error), param_hint="--unbind" if unbind and not queue else "BINDING_KEY") from None
    out = text_stream("stdout")
    color = out.isatty() and "NO_COLOR" not in os.environ
    stop = threading.Event()
    _stop_on_signals(stop)
    history = start is not None

    def show(delivery):
        try:
            out.write((json_line(delivery, history) if as_json else readable_line(delivery, color)) + "\n")
        except BrokenPipeError:  # `subscribe | head -3`: the reader has gone
            gone()

    def gone():
        stop.set()
        sys.stdout = open(os.devnull, "w")  # nothing more to flush at exit

    def flush():
        # Lines are flushed after each round of deliveries: at once for a live line, a pipe
        # included, and without a system call per line through a replay.
        try:
            out.flush()
        except BrokenPipeError:
            gone()

    try:
        subscriber.run(show, stop, count=count, idle_timeout=timeout, after_round=flush)
    finally:
        if progress is not None:
            progress.finish()


def main():
    subscribe(prog_name="subscribe")
