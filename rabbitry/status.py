"""``rabbitry status``: how full a work queue and its side queues are, and who serves them."""

import json

import click

from rabbitry.common.broker import connect
from rabbitry.common.cli import broker_options, check_work_queue
from rabbitry.common.topology import DEFAULT_TASK_QUEUE, work_queue_names


@click.command()
@click.option("--queue", "queues", multiple=True, default=[DEFAULT_TASK_QUEUE], show_default=True,
              callback=check_work_queue,
              help="Work queue to show (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per queue.")
@broker_options
def status(settings, queues, as_json):
    """Show messages and consumers of work queues, their retry queues and dead letters."""
    rows = []
    with connect(settings, "rabbitry-status") as connection:
        for queue in queues:
            for name in work_queue_names(queue):
                state = connection.queue_state(name)
                if state is not None or name == queue:
                    rows.append({"queue": name, "exists": state is not None,
                                 "messages": state.messages if state else 0,
                                 "consumers": state.consumers if state else 0})
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
