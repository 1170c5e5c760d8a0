"""``subscribe``: print the messages of a log exchange that match binding keys.

As in the RabbitMQ tutorials 3-5::

    subscribe "kern.*" "*.critical"         # topic_logs
    subscribe --exchange-type direct error  # direct_logs
    subscribe --exchange-type fanout        # logs

Messages go to standard output, one line each (``--json`` for scripts); the
command's own logs go to standard error.
"""

import os
import signal
import sys
import threading

import click

from rabbitry.common.cli import RabbitryCommand, broker_options, check_queue_name, log_exchange_options, logging_options
from rabbitry.common.errors import ConfigurationError
from rabbitry.subscribers.log_subscriber import LogSubscriber
from rabbitry.subscribers.output import json_line, readable_line


def _stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM end the command cleanly, after the message in hand."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("binding_keys", nargs=-1, metavar="[BINDING_KEY]...")
@log_exchange_options
@click.option("--queue", default=None, metavar="NAME", callback=check_queue_name,
              help="Consume a durable named queue, which keeps messages while no subscriber runs "
                   "(bindings from earlier runs stay). Default: an exclusive queue named by the broker.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message: routing key, body, "
                                                      "properties and headers.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N messages.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Exit after SECONDS without a message.")
@broker_options
@logging_options()
def subscribe(settings, binding_keys, exchange, queue, as_json, count, timeout,
              log_format, log_level):
    """Print each message whose routing key matches a BINDING_KEY ('*' is one word, '#' any number)."""
    try:
        subscriber = LogSubscriber(settings, exchange, binding_keys, queue=queue)  # checks the keys
    except ConfigurationError as error:
        raise click.BadParameter(str(error), param_hint="BINDING_KEY") from None
    out = click.get_text_stream("stdout")
    color = out.isatty() and "NO_COLOR" not in os.environ
    stop = threading.Event()
    _stop_on_signals(stop)

    def show(delivery):
        try:
            out.write((json_line(delivery) if as_json else readable_line(delivery, color)) + "\n")
            out.flush()  # a line is worth seeing at once, in a pipe too
        except BrokenPipeError:  # `subscribe | head -3`: the reader has gone
            stop.set()
            sys.stdout = open(os.devnull, "w")  # nothing more to flush at exit

    subscriber.run(show, stop, count=count, idle_timeout=timeout)


def main():
    subscribe(prog_name="subscribe")
