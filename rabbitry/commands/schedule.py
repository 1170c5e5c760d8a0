"""``rabbitry schedule FILE``: queue a schedule's tasks on time (docs/schedules.md).

Start as many as you like, on any hosts, for availability: one of them holds
the schedule's lease on the broker and queues each tick exactly once; the
others wait to take over. SIGTERM or Ctrl-C stops one; its lease passes on.
"""

import datetime
import signal
import threading

import click

from rabbitry.common.cli import RabbitryCommand, broker_options, logging_options
from rabbitry.common.errors import ConfigurationError
from rabbitry.producers.periodic import load_schedule
from rabbitry.producers.scheduler import Scheduler

#: How many coming ticks --check shows per entry.
_SHOWN_TICKS = 3


@click.command(cls=RabbitryCommand)
@click.argument("schedule_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="The schedule's name on the broker [default: the file's, or 'default'].")
@click.option("--check", is_flag=True, help="Check the file and show each entry's next ticks; queue nothing.")
@broker_options
@logging_options()
def schedule(settings, schedule_file, name, check, log_format, log_level):
    """Queue the tasks of the schedule in FILE (TOML) on time, each tick exactly once."""
    try:
        loaded = load_schedule(schedule_file, name)
    except UnicodeDecodeError as error:  # TOML is UTF-8: tomllib lets a decoding error out as it is
        raise ConfigurationError(
            f"schedule {click.format_filename(schedule_file)} is not valid TOML: not UTF-8 at byte {error.start}"
        ) from None
    if check:
        now = datetime.datetime.now(datetime.UTC).timestamp()
        click.echo(f"schedule {loaded.name!r}: {len(loaded.entries)} entries")
        for entry in loaded.entries:
            when = f"cron {entry.cron!r} in {entry.timezone}" if entry.cron else f"every {entry.every_s:g} s"
            ticks, tick = [], now
            for _ in range(_SHOWN_TICKS):
                tick = entry.next_tick(tick)
                ticks.append(datetime.datetime.fromtimestamp(tick, entry.zone).isoformat())
            click.echo(f"  {entry.name}: {entry.task} on {entry.queue}, {when}; next {', '.join(ticks)}")
        return
    if settings.is_local:
        raise ConfigurationError(
            "the in-process broker lives inside one command: run the scheduler against "
            "RabbitMQ, or start rabbitry.producers.scheduler.Scheduler in your process"
        )
    stop = threading.Event()

    def stopping(_signum, _frame):
        threading.Thread(target=stop.set, daemon=True).start()  # Event.set may need a lock held right now

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    Scheduler(settings, loaded, stop).run()
