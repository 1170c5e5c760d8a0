"""``rabbitry queue delete``: remove a work queue with its dead-letter queue."""

import click

from rabbitry.common.cli import RabbitryCommand, RabbitryGroup, broker_options, check_work_queue
from rabbitry.common.connect import connect
from rabbitry.common.errors import ConfigurationError, ExitCode, RabbitryError
from rabbitry.common.topology import work_queue_names
from rabbitry.common.transport.contract import QueueState


class QueueInUse(RabbitryError):
    """A queue still holds messages, or is served, and --force was not given."""

    exit_code = ExitCode.FAILURE


def refusal(states: dict[str, QueueState]) -> str | None:
    """Why deleting these queues would lose something (messages, or a worker's queue), or None."""
    held = {name: state.messages for name, state in states.items() if state.messages}
    served = {name: state.consumers for name, state in states.items() if state.consumers}
    reasons = [f"{count:,} message(s) in {name!r}" for name, count in held.items()]
    reasons += [f"{count} consumer(s) on {name!r}" for name, count in served.items()]
    return "; ".join(reasons) or None


@click.group(cls=RabbitryGroup)
def queue():
    """Manage work queues."""


@queue.command("delete", cls=RabbitryCommand)
@click.argument("name", callback=check_work_queue)
@click.option("--force", is_flag=True, help="Delete even while the queues hold messages or have consumers.")
@broker_options
def delete(settings, name, force):
    """Delete work queue NAME together with its dead-letter queue.

    Refuses, without --force, while either holds messages or is consumed from.
    Its tasks still waiting in the delay levels, which every work queue shares,
    go to rabbitry.delay.unrouted when they are due.
    """
    with connect(settings, "rabbitry-queue") as connection:
        states = {
            queue_name: state
            for queue_name in work_queue_names(name)
            if (state := connection.queue_state(queue_name)) is not None
        }
        if not states:
            raise ConfigurationError(f"there is no work queue {name!r}, nor its dead-letter queue")
        problem = refusal(states)
        if problem and not force:
            raise QueueInUse(f"not deleted: {problem}; give --force to delete them all the same")
        for queue_name in states:
            connection.delete_queue(queue_name)
    dropped = sum(state.messages for state in states.values())
    click.echo(
        f"deleted {len(states)} queue(s) of {name!r}: {', '.join(states)}"
        + (f" ({dropped:,} message(s) dropped)" if dropped else "")
    )
