"""Every command's options: the same words for the same option, each environment variable shown and documented.

Options that several commands take are declared once, in rabbitry.common.cli,
and applied by decorators. These tests read what ``--help`` shows, so an
option declared again in a command with other words fails here; so does an
environment variable that ``--help`` hides, or that docs/configuration.md
leaves out.
"""

import collections
import importlib
import pathlib
import re

import click
import pytest
from click.testing import CliRunner

from rabbitry import plots
from rabbitry.cli import rabbitry
from rabbitry.common import cli
from rabbitry.common.errors import ExitCode

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The folders of the package: each installs as a subpackage of rabbitry (see pyproject.toml).
PACKAGE_FOLDERS = ("common", "producers", "workers", "subscribers", "rabbitry")
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"

#: Options declared with a parameter: the words every command shows first, before words of its own.
SHARED_WORDING = {
    "--broker": cli.BROKER_HELP,
    "--queue": cli.WORK_QUEUE_HELP,
    "--json": cli.JSON_HELP,
    "--management-url": cli.MANAGEMENT_URL_HELP,
    "--plot": plots.PLOT_HELP,
}
#: Options whose name means another thing in some commands: (option, command) -> what it is there.
OTHER_MEANINGS = {
    ("--queue", "subscribe"): "the subscriber's own durable queue, not a work queue",
    ("--count", "new-task"): "copies of the task to queue",
    ("--count", "status"): "samples to take",
    ("--count", "subscribe"): "messages to print",
    ("--timeout", "new-task"): "how long to wait for results",
    ("--timeout", "subscribe"): "how long without a message",
    ("--tasks", "compare"): "how many no-op tasks, not task modules",
    ("--concurrency", "compare"): "threads and coroutines of the concurrency forms",
}


def leaf_commands(group: click.Group = rabbitry, path: tuple[str, ...] = ()):
    """(path, command) of every command under ``group``, each once, by its own name (``beat`` is ``schedule``)."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if command.name != name:
            continue
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


COMMANDS = dict(leaf_commands())
#: click's own notes after an option's words: [env var: …; default: …; required], and ranges.
_CLICK_NOTES = re.compile(r"(\s+\[[^\[\]]*\])+$")


def shown_options(path: str, command: click.Command) -> dict[str, tuple[str, click.Option]]:
    """Each option of ``command`` -> (the words its line of ``--help`` shows, click's notes left out; the option)."""
    context = click.Context(command, info_name=path)
    shown = {}
    for param in command.get_params(context):
        record = param.get_help_record(context) if isinstance(param, click.Option) else None
        if record is not None and param.opts[0] != "--help":
            shown[param.opts[0]] = (_CLICK_NOTES.sub("", " ".join(record[1].split())), param)
    return shown


def help_text(path: str) -> str:
    """``rabbitry PATH --help``, as printed, on one line."""
    result = CliRunner().invoke(rabbitry, [*path.split(), "--help"], prog_name="rabbitry")
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_every_command_of_the_house_is_checked_here():
    assert {
        "worker",
        "new-task",
        "emit-log",
        "subscribe",
        "logs retain",
        "logs forget",
        "logs subscriptions",
        "queue delete",
        "status",
        "schedule",
        "dlq list",
        "dlq show",
        "dlq replay",
        "dlq purge",
        "demo",
        "compare",
    } <= set(COMMANDS)
    # The commands installed on their own are these very objects.
    from rabbitry.producers.emit_log import emit_log
    from rabbitry.producers.new_task import new_task
    from rabbitry.subscribers.subscribe import subscribe
    from rabbitry.workers.cli import worker

    assert [COMMANDS[name] for name in ("worker", "new-task", "emit-log", "subscribe")] == [
        worker,
        new_task,
        emit_log,
        subscribe,
    ]


def test_an_option_shows_the_same_words_in_every_command_that_takes_it():
    words = collections.defaultdict(dict)  # (option, what it means) -> {command: its words}
    for path, command in COMMANDS.items():
        for option, (shown, _param) in shown_options(path, command).items():
            words[option, OTHER_MEANINGS.get((option, path), "")][path] = shown

    differing = {}
    for (option, meaning), by_command in words.items():
        shared = SHARED_WORDING.get(option) if not meaning else None
        if shared is not None:
            if not all(text.startswith(shared) for text in by_command.values()):
                differing[option] = by_command
        elif len(set(by_command.values())) > 1:
            differing[option] = by_command
    assert not differing, (
        "an option is declared again with other words: declare it once in "
        f"rabbitry/common/cli.py and apply it, or name its other meaning: {differing}"
    )


def test_every_other_meaning_named_here_is_still_there():
    for option, path in OTHER_MEANINGS:
        assert option in shown_options(path, COMMANDS[path]), (option, path)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_shows_the_environment_variable_of_every_option_that_has_one(path):
    shown = help_text(path)

    for option, (_words, param) in shown_options(path, COMMANDS[path]).items():
        if param.envvar:
            assert param.show_envvar, f"rabbitry {path} {option}: declare it with show_envvar=True"
            assert f"[env var: {param.envvar}" in shown, f"rabbitry {path} --help hides {option}'s {param.envvar}"


def test_the_shared_options_are_where_the_house_says_they_are():
    for path in ("compare", "demo"):
        assert {"--url", "--broker", "--tls-ca-file", "--tls-cert-file", "--tls-key-file"} <= set(
            shown_options(path, COMMANDS[path])
        )
    url_checks = {
        shown_options(path, command)["--url"][1].callback
        for path, command in COMMANDS.items()
        if "--url" in shown_options(path, command)
    }
    assert len(url_checks) == 1 and None not in url_checks  # every --url is checked, by the same callback


@pytest.mark.parametrize("args", [["--url", "local://"], ["--broker", "local"]])
def test_compare_refuses_to_compare_the_in_process_model_with_itself_at_once(args):
    result = CliRunner().invoke(rabbitry, ["compare", *args], prog_name="rabbitry")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [result.output.strip()], (
        result.output
    )
    assert "in-process model" in result.output


# The environment variables, in the code and in docs/configuration.md.

#: Where the code names an environment variable: envvar=X, os.environ.get(X), os.environ[X], "X" in os.environ.
_NAMING_A_VARIABLE = re.compile(
    r"""(?<!\w)envvar=(?P<a>\w+|"[^"]*")"""
    r"""|environ(?:\.get|\.pop|\.setdefault)?\(\s*(?P<b>\w+|"[^"]*")"""
    r"""|environ\[\s*(?P<c>\w+|"[^"]*")\s*\]"""
    r"""|getenv\(\s*(?P<d>\w+|"[^"]*")"""
    r"""|(?P<e>"[^"]*")\s+(?:not\s+)?in\s+os\.environ"""
)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[1:] if parts[0] == "rabbitry" else parts
    return ".".join(("rabbitry", *parts)).removesuffix(".__init__")


def variables_in_the_code() -> dict[str, str]:
    """Every environment variable the package's code names -> where, a name being resolved in its module."""
    found = {}
    for folder in PACKAGE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for match in _NAMING_A_VARIABLE.finditer(path.read_text(encoding="utf-8")):
                named = next(value for value in match.groupdict().values() if value)
                if named.startswith('"'):
                    variable = named.strip('"')
                else:
                    variable = getattr(importlib.import_module(_module_name(path)), named, None)
                    assert isinstance(variable, str), f"{path}: {named} does not name an environment variable"
                found.setdefault(variable, str(path.relative_to(ROOT)))
    for path, command in COMMANDS.items():
        for _option, (_words, param) in shown_options(path, command).items():
            if param.envvar:
                found.setdefault(param.envvar, f"rabbitry {path}")
    return found


def variables_in_the_table() -> set[str]:
    """The variables docs/configuration.md's table lists, one a row."""
    first_table = CONFIGURATION_PAGE.read_text(encoding="utf-8").split("\n## ")[0]  # not Compose's, nor the tests'
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", first_table, re.M))


def test_every_environment_variable_the_code_reads_is_in_the_configuration_table():
    in_the_code = variables_in_the_code()
    assert {"AMQP_URL", "AMQP_TLS_CA_FILE", "RABBITMQ_MANAGEMENT_URL", "RABBITRY_LOG_LEVEL"} <= set(in_the_code)

    missing = {variable: where for variable, where in in_the_code.items() if variable not in variables_in_the_table()}
    assert not missing, f"docs/configuration.md's table leaves out {missing}"


def test_the_configuration_table_lists_no_variable_the_code_does_not_read():
    assert variables_in_the_table() - set(variables_in_the_code()) == set()
