"""``rabbitry``: one command for what spans the work queue and the logs.

Each subcommand lives in its own module and is loaded only when it runs,
so ``rabbitry --help`` stays quick.
"""

import importlib

import click

from rabbitry.common.cli import RabbitryGroup

#: Subcommand name -> "module:attribute" of its click command.
SUBCOMMANDS = {
    "status": "rabbitry.status:status",
    "dlq": "rabbitry.dlq:dlq",
    "demo": "rabbitry.demo:demo",
    "compare": "rabbitry.compare:compare",
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
