"""What every rabbitry command shares: its options, and error handling.

Options that several commands take are declared once here, each with its
environment variable shown in ``--help``, and applied by decorators, as in rq. A
RabbitryError raised by a command becomes one ``Error: …`` line on standard
error and the error's exit code, and so does a usage mistake (an unknown
option, a missing argument, a bad value), with ExitCode.USAGE. A usage mistake,
click's or a RabbitryError of ExitCode.USAGE, ends as click's own do, with
``Try '<command> --help' for help.``; a user never sees a traceback, nor a
usage block, for a mistake they can make.
"""

import dataclasses
import functools
from typing import BinaryIO, TextIO

import click

from rabbitry.common.amqp.management import MANAGEMENT_PORT, MANAGEMENT_URL_ENVVAR
from rabbitry.common.errors import ConfigurationError, ExitCode, RabbitryError
from rabbitry.common.logconfig import LOG_FORMATS, configure_logging
from rabbitry.common.settings import (
    DEFAULT_URL,
    LOCAL_URL,
    TLS_CA_ENVVAR,
    TLS_CERT_ENVVAR,
    TLS_KEY_ENVVAR,
    URL_ENVVAR,
    BrokerSettings,
    TlsSettings,
    split_urls,
)
from rabbitry.common.topology import (
    DEFAULT_QUEUE_TYPE,
    DEFAULT_TASK_QUEUE,
    EXCHANGE_TYPES,
    LOG_EXCHANGES,
    QUEUE_TYPES,
    check_work_queue_name,
    log_exchange,
)
from rabbitry.common.transport.routing import check_routing_key


def text_stream(name: str) -> TextIO:
    """Standard ``stdin``, ``stdout`` or ``stderr`` as click opens it, with its error handling."""
    # click 8.5 deprecates get_text_stream (to go in click 9) and serves it through a module
    # __getattr__, which mypy reads as returning object; before 8.5 it is typed.
    return click.get_text_stream(name)  # type: ignore[operator,unused-ignore]


def binary_stream(name: str) -> BinaryIO:
    """Standard ``stdin``, ``stdout`` or ``stderr`` as bytes, as click opens it."""
    return click.get_binary_stream(name)  # type: ignore[operator,unused-ignore]  # as text_stream


def help_hint(ctx: click.Context) -> str:
    """click's own pointer to the help of the command at hand: ``Try 'worker --help' for help.``"""
    help_option = max(ctx.help_option_names, key=len, default="--help")
    return f"Try '{ctx.command_path} {help_option}' for help."


def with_help_hint(message: str, ctx: click.Context) -> str:
    """A usage mistake's one line: the message, then :func:`help_hint`."""
    message = message.rstrip()
    return f"{message}{'' if message.endswith(('.', '!', '?')) else '.'} {help_hint(ctx)}"


def error_message(error: RabbitryError, ctx: click.Context) -> str:
    """What the ``Error:`` line of a RabbitryError says: a usage mistake (ExitCode.USAGE, bad input)
    also names the help to read."""
    return with_help_hint(str(error), ctx) if error.exit_code == ExitCode.USAGE else str(error)


class CommandFailed(click.ClickException):
    """A RabbitryError, shown as one line (:func:`error_message`) with the error's own exit code."""

    def __init__(self, error: RabbitryError, ctx: click.Context):
        super().__init__(error_message(error, ctx))
        # click declares exit_code a ClassVar; this one is the RabbitryError's own.
        self.exit_code = int(error.exit_code)  # type: ignore[misc]


class UsageMistake(click.ClickException):
    """A click usage error, shown as one line that names the help to read, not as a usage block."""

    exit_code = int(ExitCode.USAGE)

    def __init__(self, error: click.UsageError, ctx: click.Context):
        super().__init__(with_help_hint(error.format_message(), error.ctx or ctx))


#: click 8.2+ shows a group's help through this usage error when it is given no arguments.
_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineErrors(click.Command):
    """Turns RabbitryError and click's usage errors, from parsing or from the command, into one line."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            if isinstance(error, _SHOWS_HELP):
                raise
            raise UsageMistake(error, ctx) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RabbitryError as error:
            raise CommandFailed(error, ctx) from None
        except click.UsageError as error:
            if isinstance(error, _SHOWS_HELP):
                raise
            raise UsageMistake(error, ctx) from None


class RabbitryCommand(_OneLineErrors, click.Command):
    """A click command whose every mistake is one ``Error: …`` line with a named exit code."""


class RabbitryGroup(_OneLineErrors, click.Group):
    """A click group whose mistakes, and its subcommands', are one ``Error: …`` line each."""

    command_class = RabbitryCommand


def _bad_parameter(check):
    """A click callback that applies ``check`` to the value (each value, if repeated);
    a ConfigurationError becomes click's one-line usage error."""

    def callback(ctx, param, value):
        try:
            for item in value if isinstance(value, tuple) else [value]:
                if item is not None:
                    check(item)
        except ConfigurationError as error:
            raise click.BadParameter(str(error), ctx=ctx, param=param) from None
        return value

    return callback


#: Callbacks for --queue (a work queue) and for queue and exchange names.
check_work_queue = _bad_parameter(check_work_queue_name)
check_queue_name = _bad_parameter(lambda name: check_routing_key(name, "queue name"))
check_exchange_name = _bad_parameter(lambda name: check_routing_key(name, "exchange name"))


def _check_url(ctx, param, value):
    try:
        split_urls(value)
    except ConfigurationError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    return value


#: The words of the options declared below with a parameter: a command may add words of its own after
#: them, never others (tests/test_cli_options.py holds every command to them).
BROKER_HELP = "'local' runs on the in-process broker instead of RabbitMQ"
WORK_QUEUE_HELP = "Work queue"
JSON_HELP = "Print JSON, one object a line, instead of text"
MANAGEMENT_URL_HELP = "RabbitMQ's management API"
#: What --management-url is when it is not given.
MANAGEMENT_URL_DEFAULT = f"port {MANAGEMENT_PORT} of the broker's host"


def broker_options(func=None, *, auto: bool = False):
    """Add --url/--broker and the TLS options; pass ``settings: BrokerSettings``.

    With ``auto``, --broker also offers 'auto', its default, and the choice is passed on as
    ``broker`` too: the command tries RabbitMQ and falls back to the in-process broker itself.
    """
    if func is None:
        return functools.partial(broker_options, auto=auto)
    choices = ("auto", "amqp", "local") if auto else ("amqp", "local")

    @click.option(
        "--url",
        envvar=URL_ENVVAR,
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        callback=_check_url,
        help=f"Broker URL; several comma-separated for a cluster; {LOCAL_URL} for in-process.",
    )
    @click.option(
        "--broker",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=BROKER_HELP
        + ("; 'auto' on RabbitMQ if one answers at --url, else on the in-process broker." if auto else "."),
    )
    @click.option(
        "--tls-ca-file",
        type=click.Path(exists=True, dir_okay=False),
        envvar=TLS_CA_ENVVAR,
        show_envvar=True,
        help="CA bundle to verify an amqps:// broker.",
    )
    @click.option(
        "--tls-cert-file",
        type=click.Path(exists=True, dir_okay=False),
        envvar=TLS_CERT_ENVVAR,
        show_envvar=True,
        help="Client certificate for amqps://.",
    )
    @click.option(
        "--tls-key-file",
        type=click.Path(exists=True, dir_okay=False),
        envvar=TLS_KEY_ENVVAR,
        show_envvar=True,
        help="Private key of the client certificate.",
    )
    @functools.wraps(func)
    def wrapper(*args, url, broker, tls_ca_file, tls_cert_file, tls_key_file, **kwargs):
        tls = TlsSettings(ca_file=tls_ca_file, cert_file=tls_cert_file, key_file=tls_key_file)
        settings = BrokerSettings.from_url(LOCAL_URL if broker == "local" else url, tls=tls)
        if auto:
            kwargs["broker"] = broker
        return func(*args, settings=settings, **kwargs)

    return wrapper


def work_queue_option(repeatable: bool = False):
    """Add --queue, a work queue's name, checked; ``repeatable``: any number of them, passed as ``queues``."""
    if repeatable:
        return click.option(
            "--queue",
            "queues",
            multiple=True,
            default=[DEFAULT_TASK_QUEUE],
            show_default=True,
            callback=check_work_queue,
            help=WORK_QUEUE_HELP + " (repeatable).",
        )
    return click.option(
        "--queue", default=DEFAULT_TASK_QUEUE, show_default=True, callback=check_work_queue, help=WORK_QUEUE_HELP + "."
    )


#: --queue-type: the type a work queue is declared with where it does not exist yet.
queue_type_option = click.option(
    "--queue-type",
    type=click.Choice(QUEUE_TYPES),
    default=DEFAULT_QUEUE_TYPE,
    show_default=True,
    help="Type of the work queue, if it is created here.",
)


def json_option(detail: str = ""):
    """Add --json, passed as ``as_json``; ``detail`` says more of what is printed (": its fields", say)."""
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP + detail + ".")


def management_url_option(detail: str = "", default: str = MANAGEMENT_URL_DEFAULT):
    """Add --management-url (None if not given); ``detail`` says what the command asks the API, ``default``
    what it does without the option."""
    return click.option(
        "--management-url",
        envvar=MANAGEMENT_URL_ENVVAR,
        show_envvar=True,
        metavar="URL",
        show_default=default,
        help=MANAGEMENT_URL_HELP + detail + ".",
    )


#: How long a publishing command waits, by default, while the broker blocks publishing.
DEFAULT_BLOCKED_TIMEOUT_S = 300.0
#: The environment variables of --blocked-timeout, --log-format and --log-level.
BLOCKED_TIMEOUT_ENVVAR = "RABBITRY_BLOCKED_TIMEOUT"
LOG_FORMAT_ENVVAR, LOG_LEVEL_ENVVAR = "RABBITRY_LOG_FORMAT", "RABBITRY_LOG_LEVEL"


def blocked_timeout_option(func):
    """Add --blocked-timeout, into ``settings.blocked_timeout`` (apply it below :func:`broker_options`)."""

    @click.option(
        "--blocked-timeout",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        default=DEFAULT_BLOCKED_TIMEOUT_S,
        show_default=True,
        envvar=BLOCKED_TIMEOUT_ENVVAR,
        show_envvar=True,
        help="While the broker blocks publishing (a memory or disk alarm), wait this long; "
        "then give up with exit status 6.",
    )
    @functools.wraps(func)
    def wrapper(*args, settings: BrokerSettings, blocked_timeout: float, **kwargs):
        return func(*args, settings=dataclasses.replace(settings, blocked_timeout=blocked_timeout), **kwargs)

    return wrapper


def logging_options(stream: str = "stderr"):
    """Add --log-format and --log-level, and configure logging before the command runs."""

    def decorator(func):
        @click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default="auto",
            show_default=True,
            envvar=LOG_FORMAT_ENVVAR,
            show_envvar=True,
            help="console on a TTY and json otherwise, by default.",
        )
        @click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"]),
            default="info",
            show_default=True,
            envvar=LOG_LEVEL_ENVVAR,
            show_envvar=True,
            help="The least severe log lines shown.",
        )
        @functools.wraps(func)
        def wrapper(*args, log_format, log_level, **kwargs):
            configure_logging(log_format, log_level, text_stream(stream))
            return func(*args, log_format=log_format, log_level=log_level, **kwargs)

        return wrapper

    return decorator


def log_exchange_options(func):
    """Add --exchange-type, --exchange and --durable; pass ``exchange: Exchange``."""

    @click.option(
        "--exchange-type",
        type=click.Choice(EXCHANGE_TYPES),
        default="topic",
        show_default=True,
        help="direct and topic route by key; fanout sends every message to every queue.",
    )
    @click.option(
        "--exchange",
        "exchange_name",
        default=None,
        metavar="NAME",
        callback=check_exchange_name,
        help="Exchange name [default: the tutorials' " + ", ".join(LOG_EXCHANGES.values()) + "].",
    )
    @click.option(
        "--durable",
        is_flag=True,
        help="Declare the exchange durable; emit-log and subscribe must agree on this. emit-log's "
        "messages are then persistent.",
    )
    @functools.wraps(func)
    def wrapper(*args, exchange_type, exchange_name, durable, **kwargs):
        return func(*args, exchange=log_exchange(exchange_type, exchange_name, durable), **kwargs)

    return wrapper
