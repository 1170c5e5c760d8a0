"""``rabbitry status``: how full a work queue and its side queues are, and who serves them."""

import datetime
import json
import signal
import sys
import threading
import time

import click

from rabbitry.commands.watch import AmqpSampler, ManagementSampler, QueueWatch, render
from rabbitry.common.cli import (
    MANAGEMENT_URL_DEFAULT,
    broker_options,
    json_option,
    management_url_option,
    work_queue_option,
)
from rabbitry.common.connect import connect
from rabbitry.common.errors import BrokerUnavailable
from rabbitry.common.topology import DELAY_LEVEL_PREFIX, DELAY_UNROUTED, delay_level_names, work_queue_names


@click.command()
@work_queue_option(repeatable=True)
@json_option()
@click.option(
    "--watch",
    is_flag=True,
    help="Sample again every --interval, with rates in and out: redrawn on a terminal, "
    "one JSON object per sample on a pipe. Ctrl-C ends it.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between samples, with --watch.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop after N samples, with --watch  [default: until Ctrl-C]",
)
@management_url_option(
    ", for rates in and out with --watch (an empty URL: none)", default=MANAGEMENT_URL_DEFAULT + ", if it answers"
)
@broker_options
def status(settings, queues, as_json, watch, interval, count, management_url):
    """Show messages and consumers of work queues and their dead letters, and the tasks
    waiting in the delay levels (delayed tasks and retries of every work queue)."""
    if watch:
        return watch_queues(settings, queues, interval, count, management_url, as_json)
    rows: list[dict] = []
    with connect(settings, "rabbitry-status") as connection:
        for queue in queues:
            for name in work_queue_names(queue):
                state = connection.queue_state(name)
                if state is not None or name == queue:
                    rows.append(
                        {
                            "queue": name,
                            "exists": state is not None,
                            "messages": state.messages if state else 0,
                            "consumers": state.consumers if state else 0,
                        }
                    )
        rows += delay_rows(connection)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    width = max(len(row["queue"]) for row in rows)
    click.echo(f"{'queue':<{width}}  {'messages':>9}  {'consumers':>9}")
    for row in rows:
        if row["exists"]:
            click.echo(f"{row['queue']:<{width}}  {row['messages']:>9,}  {row['consumers']:>9}")
        else:
            click.echo(f"{row['queue']:<{width}}  {'(none)':>9}  {'':>9}")
    if any("levels" in row for row in rows):
        click.echo(f"{DELAY_LEVEL_PREFIX}*: delayed tasks and retries of every work queue, held by the broker")


def delay_rows(connection) -> list[dict]:
    """What waits in the delay levels, all of them together, and in the unrouted queue, if they exist."""
    levels = [state for name in delay_level_names() if (state := connection.queue_state(name)) is not None]
    unrouted = connection.queue_state(DELAY_UNROUTED)
    if not levels:
        return []
    rows = [
        {
            "queue": f"{DELAY_LEVEL_PREFIX}*",
            "exists": True,
            "levels": len(levels),
            "messages": sum(state.messages for state in levels),
            "consumers": 0,
        }
    ]
    if unrouted is not None and unrouted.messages:
        rows.append(
            {"queue": DELAY_UNROUTED, "exists": True, "messages": unrouted.messages, "consumers": unrouted.consumers}
        )
    return rows


def watch_queues(settings, queues, interval, count, management_url, as_json) -> None:
    """Sample ``queues`` every ``interval`` seconds, ``count`` times (None: until Ctrl-C).

    Ctrl-C ends the watch between two samples: raised inside a sample, its KeyboardInterrupt
    could leave pika's connection mid-exchange, and closing it then waits for ever.
    """
    on_terminal = sys.stdout.isatty() and not as_json
    interrupted = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()  # where a handler can be set
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set()) if in_main_thread else None
    try:
        with connect(settings, "rabbitry-status") as connection:
            sampler = _sampler(settings, connection, management_url)
            watch = QueueWatch(sampler, queues)
            taken = 0
            while not interrupted.is_set():
                started = time.monotonic()
                rows = watch.rows()
                taken += 1
                if on_terminal:
                    click.clear()
                    click.echo(f"{datetime.datetime.now():%H:%M:%S}  every {interval:g} s  (Ctrl-C ends)")
                    click.echo(render(rows, sampler.source))
                else:
                    click.echo(
                        json.dumps(
                            {
                                "time": datetime.datetime.now(datetime.UTC).isoformat(),
                                "source": sampler.source,
                                "queues": rows,
                            }
                        )
                    )
                    sys.stdout.flush()
                if count is not None and taken >= count:
                    return
                interrupted.wait(max(0.0, interval - (time.monotonic() - started)))
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def _sampler(settings, connection, management_url):
    """The management API's sampler if it answers (it must, if named), else AMQP's."""
    if settings.is_local or management_url == "":
        return AmqpSampler(connection)
    sampler = ManagementSampler.for_broker(connection, settings.urls[0], management_url)
    try:
        sampler.check()
    except BrokerUnavailable:
        if management_url:
            raise
        click.echo(
            f"note: no management API at {sampler.url}: rates in and out are not shown (--management-url names one)",
            err=True,
        )
        return AmqpSampler(connection)
    return sampler
