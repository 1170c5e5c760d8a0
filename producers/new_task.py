"""``new-task``: queue tasks on a durable work queue, each confirmed by the broker.

As in the RabbitMQ tutorial, ``new-task "Hello..."`` queues a task that
works one second per dot. Every task id is printed once the broker has
confirmed it, and an exit status of 0 means every task is safely queued.
Whatever ends the command (success, Ctrl-C, a lost broker, a full queue, a
blocked broker), standard error ends with one summary line; docs/new-task.md
tells the rest.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterable

import click
import structlog

from rabbitry.common.cli import (
    RabbitryCommand,
    blocked_timeout_option,
    broker_options,
    error_message,
    logging_options,
    queue_type_option,
    text_stream,
    work_queue_option,
)
from rabbitry.common.delays import due_time, parse_time
from rabbitry.common.durations import parse_duration
from rabbitry.common.errors import ConfigurationError, ExitCode, Interrupted, MessageError, RabbitryError
from rabbitry.common.messages import PLAIN_TEXT_TASK, TaskMessage, parse_json
from rabbitry.common.topology import DEFAULT_TASK_QUEUE
from rabbitry.producers.progress import ProgressBar
from rabbitry.producers.task_batch import ON_REFUSED, BatchAccount, TaskBatch, outcome
from rabbitry.producers.waiting import Waited, queue_and_wait

log = structlog.get_logger("rabbitry.new_task")

#: After Ctrl-C, how long the confirms of tasks already sent are awaited (a second Ctrl-C stops at once).
INTERRUPT_GRACE_S = 5.0


def _json_option(kind: type, what: str):
    def convert(ctx, param, value):
        if value is None:
            return kind()
        try:
            parsed = parse_json(value.encode())
        except UnicodeEncodeError:  # a lone surrogate: the command line was not UTF-8
            raise click.BadParameter("not valid UTF-8", ctx=ctx, param=param) from None
        except ValueError as error:
            raise click.BadParameter(f"not valid JSON: {error}", ctx=ctx, param=param) from None
        if not isinstance(parsed, kind):
            raise click.BadParameter(f"must be a JSON {what}", ctx=ctx, param=param)
        return parsed

    return convert


def read_task_file(path: str, eta: float | None = None) -> list[TaskMessage]:
    """Parse a JSON-lines file of ``{"task": …, "args": […], "kwargs": {…}}``, all before sending any;
    each task is due at ``eta`` (None: now)."""
    try:
        with click.open_file(path, "rb") as lines:
            return [_task_line(line, number, eta) for number, line in enumerate(lines, 1) if line.strip()]
    except OSError as error:  # missing, a folder, not readable
        raise click.BadParameter(
            f"cannot read {click.format_filename(path)!r}: {error.strerror}", param_hint="'--file'"
        ) from None


def _task_line(line: bytes, number: int, eta: float | None) -> TaskMessage:
    """The task on line ``number`` of a ``--file``, checked as it will be sent."""
    try:
        line.decode()
        data = parse_json(line)
        message = TaskMessage.from_dict(
            {key: data[key] for key in ("task", "args", "kwargs", "id") if key in data} | {"eta": eta}
            if isinstance(data, dict)
            else data
        )
        message.to_outgoing(DEFAULT_TASK_QUEUE)  # too big, or due too late? refuse the file before sending
        return message
    except UnicodeDecodeError:
        raise click.BadParameter(f"line {number}: not valid UTF-8", param_hint="'--file'") from None
    except (ValueError, MessageError) as error:
        raise click.BadParameter(f"line {number}: {error}", param_hint="'--file'") from None


def _time_option(parse):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value)
        except ConfigurationError as error:
            raise click.BadParameter(str(error), ctx=ctx, param=param) from None

    return convert


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("words", nargs=-1)
@click.option("--task", "task_name", default=None, help=f"Task to run [default: {PLAIN_TEXT_TASK}].")
@click.option(
    "--args",
    "task_args",
    callback=_json_option(list, "array"),
    metavar="JSON",
    help="Positional arguments, a JSON array: --args '[1, \"two\"]'.",
)
@click.option(
    "--kwargs",
    "task_kwargs",
    callback=_json_option(dict, "object"),
    metavar="JSON",
    help="Keyword arguments, a JSON object: --kwargs '{\"seconds\": 2}'.",
)
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Queue this many copies of the task.",
)
@click.option(
    "--file",
    "task_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Queue one task per line of a JSON-lines file ('-' for stdin).",
)
@click.option(
    "--delay",
    callback=_time_option(parse_duration),
    metavar="DURATION",
    help="Run the task this long from now (90s, 10m, 24h, 1h30m; up to 97 days), the broker holding it till then.",
)
@click.option(
    "--eta",
    callback=_time_option(parse_time),
    metavar="TIME",
    help="Run the task at this time, ISO 8601 (2026-12-01T09:00:00Z; UTC without an offset).",
)
@work_queue_option()
@queue_type_option
@click.option("--quiet", "-q", is_flag=True, help="Print no task ids, and no summary unless something failed.")
@click.option(
    "--on-refused",
    type=click.Choice(ON_REFUSED),
    default="stop",
    show_default=True,
    help="When a full queue refuses a task: stop queueing, or go on with the others.",
)
@click.option(
    "--refused-file",
    type=click.File("w", lazy=False),
    metavar="PATH",
    help="Write the ids of refused tasks here, one a line, instead of to standard error.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for each task's result and print it as a JSON line beside its id; "
    "exit 1 if any task failed or timed out.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="With --wait: seconds to wait for all the results.",
)
@broker_options
@blocked_timeout_option
@logging_options()
def new_task(
    settings,
    words,
    task_name,
    task_args,
    task_kwargs,
    count,
    task_file,
    delay,
    eta,
    queue,
    queue_type,
    quiet,
    on_refused,
    refused_file,
    wait,
    timeout,
    log_format,
    log_level,
):
    """Queue a task: WORDS is the tutorial's message ("Hello..." works three seconds)."""
    if task_file and (words or task_name or task_args or task_kwargs):
        raise click.UsageError("--file takes the tasks from the file: give no task on the command line")
    if delay is not None and eta is not None:
        raise click.UsageError("give --delay or --eta, not both")
    if wait and settings.is_local:  # no worker reaches this command's own broker: the wait could only time out
        raise click.UsageError(
            "--wait waits for a worker's results, and no worker can reach the in-process broker of one "
            "command: give a RabbitMQ --url, or submit from Python beside an in-process worker"
        )
    due = due_time(delay, eta)
    if task_file:
        messages: Iterable[TaskMessage] = read_task_file(task_file, due)
    else:
        if words and (task_args or task_kwargs):
            raise click.UsageError("give WORDS or --args/--kwargs, not both")
        if task_name is None or task_name == PLAIN_TEXT_TASK and not task_args:
            task_name, task_args = task_name or PLAIN_TEXT_TASK, task_args or [" ".join(words) or "Hello World!"]
        elif words:
            task_args = list(words)
        messages = (TaskMessage(task_name, task_args, task_kwargs, eta=due) for _ in range(count))
        for message in [TaskMessage(task_name, task_args, task_kwargs, eta=due)]:
            message.to_outgoing(queue)  # refuse arguments that are not JSON, or too big, or too late, before sending
    total = len(messages) if isinstance(messages, list) else count
    if wait:  # each task asks for its result, and each result is printed (docs/results.md)
        _queue_and_wait(settings, queue, queue_type, messages, total, timeout, quiet)
        return

    out = text_stream("stdout")
    account, stop, error = BatchAccount(planned=total), threading.Event(), None
    output_closed: list[bool] = []

    def print_ids(confirmed):
        if quiet or output_closed:
            return
        try:
            out.write("".join(m.message_id + "\n" for m in confirmed))
        except BrokenPipeError:  # `new-task … | head`: nobody reads the ids any more, so stop queueing
            output_closed.append(True)
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # what is still buffered goes nowhere
            stop.set()

    def report_refused(message):
        if refused_file is not None:
            refused_file.write(message.message_id + "\n")
        else:
            click.echo(f"refused {message.message_id}", err=True)

    with CtrlC(stop) as ctrl_c:
        batch = TaskBatch(settings, queue, queue_type, account, print_ids, report_refused, on_refused, stop)
        try:
            batch.connect()
            with _progress_bar(total, quiet) as bar:
                batch.submit(messages, bar.update if bar is not None else None)
        except Interrupted:
            with ctrl_c.grace(INTERRUPT_GRACE_S), contextlib.suppress(RabbitryError):
                batch.flush()  # what was sent and confirmed in the grace is printed too
        except RabbitryError as failure:
            error = failure
        finally:
            batch.close()
    try:
        out.flush()
    except BrokenPipeError:
        output_closed.append(True)
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    if output_closed and error is None:
        error = RabbitryError("standard output was closed: stopped queueing")
    if refused_file is not None:
        refused_file.flush()
    code = ExitCode.INTERRUPTED if ctrl_c.count else outcome(account, error)
    if ctrl_c.count:
        click.echo("Interrupted.", err=True)
    elif error is not None:
        click.echo(f"Error: {error_message(error, click.get_current_context())}", err=True)
    if code or not quiet:
        click.echo(account.summary(), err=True)
    if settings.is_local:
        log.warning(
            "in_process_broker",
            detail="the in-process broker lives inside this command alone, so these "
            "tasks end with it; run producers and workers in one process, as `rabbitry demo` does",
        )
    click.get_current_context().exit(int(code))


def _queue_and_wait(settings, queue, queue_type, messages, total, timeout, quiet) -> None:
    """``new-task --wait``: queue, print each result, then the summary; exit as docs/new-task.md says."""
    waited, wake = Waited(planned=total), threading.Event()
    with CtrlC(wake) as ctrl_c:
        interrupted = lambda: ctrl_c.count > 0  # noqa: E731
        error = None
        try:
            queue_and_wait(
                settings,
                queue,
                queue_type,
                messages,
                timeout,
                text_stream("stdout"),
                waited,
                wake,
                interrupted,
                close_timeout=INTERRUPT_GRACE_S,
            )
        except RabbitryError as failure:
            error = failure
    if ctrl_c.count:
        code = ExitCode.INTERRUPTED
        click.echo("Interrupted.", err=True)
    elif error is not None:
        code = error.exit_code
        click.echo(f"Error: {error}", err=True)
    else:
        code = ExitCode.OK if waited.all_succeeded else ExitCode.FAILURE
    if code or not quiet:
        click.echo(waited.summary(), err=True)
    click.get_current_context().exit(int(code))


class CtrlC:
    """Turns Ctrl-C (SIGINT) into setting ``stop``; :attr:`count` says how many came."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.count = 0

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():  # the only thread that may handle signals
            self._previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *_):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupted(self, _signum, _frame):
        self.count += 1
        # Event.set takes a lock the interrupted code may hold at this instant: set it from a thread.
        threading.Thread(target=self.stop.set, daemon=True).start()

    @contextlib.contextmanager
    def grace(self, seconds: float):
        """Let waits go on after the first Ctrl-C, for at most ``seconds``, or until Ctrl-C comes again."""
        self.stop.clear()
        if self.count > 1:
            self.stop.set()
        timer = threading.Timer(seconds, self.stop.set)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


def _progress_bar(total: int, quiet: bool):
    """A progress bar on standard error if it is a terminal, unless the ids are printed on that same terminal."""
    if total > 1 and sys.stderr.isatty() and (quiet or not _same_terminal(sys.stdout, sys.stderr)):
        return ProgressBar(total, sys.stderr)
    return contextlib.nullcontext()


def _same_terminal(one, other) -> bool:
    try:
        return one.isatty() and os.path.samestat(os.fstat(one.fileno()), os.fstat(other.fileno()))
    except (OSError, ValueError):  # not a real file: a test runner's capture, say
        return False


def main():
    new_task(prog_name="new-task")
