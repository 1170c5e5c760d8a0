"""``rabbitry``: one command for everything, the work queue, the logs and their tools.

``rabbitry worker``, ``new-task``, ``emit-log`` and ``subscribe`` are the
very commands also installed on their own under those names. Each subcommand lives in its own module
and is loaded only when it runs, so ``rabbitry --help`` stays quick.
"""

import importlib

import click

from rabbitry.common.cli import RabbitryGroup

#: Subcommand name -> "module:attribute" of its click command.
SUBCOMMANDS = {
    "worker": "rabbitry.workers.cli:worker",
    "new-task": "rabbitry.producers.new_task:new_task",
    "emit-log": "rabbitry.producers.emit_log:emit_log",
    "subscribe": "rabbitry.subscribers.subscribe:subscribe",
    "logs": "rabbitry.commands.logs:logs",
    "queue": "rabbitry.commands.queue:queue",
    "status": "rabbitry.commands.status:status",
    "schedule": "rabbitry.commands.schedule:schedule",
    "beat": "rabbitry.commands.schedule:schedule",  # Celery's name for it
    "dlq": "rabbitry.commands.dlq:dlq",
    "demo": "rabbitry.commands.demo:demo",
    "compare": "rabbitry.compare.command:compare",
}


class LazyGroup(RabbitryGroup):
    """A group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rabbitry")
def rabbitry():
    """rabbitry: tasks and logs over RabbitMQ (or in-process, with --broker local)."""


def main():
    rabbitry(prog_name="rabbitry")
