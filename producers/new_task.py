"""``new-task``: queue tasks on a durable work queue, each confirmed by the broker.

As in the RabbitMQ tutorial, ``new-task "Hello..."`` queues a task that
works one second per dot. Every task id is printed once the broker has
confirmed it, and an exit status of 0 means every task is safely queued.
"""

import sys

import click
import structlog

from rabbitry.common.cli import RabbitryCommand, broker_options, check_work_queue, logging_options
from rabbitry.common.errors import ExitCode, MessageError
from rabbitry.common.messages import PLAIN_TEXT_TASK, TaskMessage, parse_json
from rabbitry.common.topology import DEFAULT_QUEUE_TYPE, DEFAULT_TASK_QUEUE, QUEUE_TYPES
from rabbitry.producers.tasks import TaskSubmitter
from rabbitry.producers.waiting import queue_and_wait

log = structlog.get_logger("rabbitry.new_task")


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


def read_task_file(path: str) -> list[TaskMessage]:
    """Parse a JSON-lines file of ``{"task": …, "args": […], "kwargs": {…}}``, all before sending any."""
    messages = []
    with click.open_file(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = parse_json(line.encode())
                message = TaskMessage.from_dict(
                    {key: data[key] for key in ("task", "args", "kwargs", "id") if key in data}
                    if isinstance(data, dict) else data)
                message.encode()  # too big? refuse the file before anything is sent
                messages.append(message)
            except (ValueError, MessageError) as error:
                raise click.BadParameter(f"line {number}: {error}", param_hint="'--file'") from None
    return messages


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("words", nargs=-1)
@click.option("--task", "task_name", default=None, help=f"Task to run [default: {PLAIN_TEXT_TASK}].")
@click.option("--args", "task_args", callback=_json_option(list, "array"), metavar="JSON",
              help='Positional arguments, a JSON array: --args \'[1, "two"]\'.')
@click.option("--kwargs", "task_kwargs", callback=_json_option(dict, "object"), metavar="JSON",
              help='Keyword arguments, a JSON object: --kwargs \'{"seconds": 2}\'.')
@click.option("--count", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Queue this many copies of the task.")
@click.option("--file", "task_file", type=click.Path(dir_okay=False, allow_dash=True),
              help="Queue one task per line of a JSON-lines file ('-' for stdin).")
@click.option("--queue", default=DEFAULT_TASK_QUEUE, show_default=True, callback=check_work_queue, help="Work queue.")
@click.option("--queue-type", type=click.Choice(QUEUE_TYPES), default=DEFAULT_QUEUE_TYPE, show_default=True,
              help="Type of the work queue, if it is created here.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print task ids.")
@click.option("--wait", is_flag=True,
              help="Wait for each task's result and print it as a JSON line beside its id; "
                   "exit 1 if any task failed or timed out.")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="With --wait: seconds to wait for all the results.")
@broker_options
@logging_options()
def new_task(settings, words, task_name, task_args, task_kwargs, count, task_file, queue, queue_type, quiet,
             wait, timeout, log_format, log_level):
    """Queue a task: WORDS is the tutorial's message ("Hello..." works three seconds)."""
    if task_file and (words or task_name or task_args or task_kwargs):
        raise click.UsageError("--file takes the tasks from the file: give no task on the command line")
    if task_file:
        messages = read_task_file(task_file)
    else:
        if words and (task_args or task_kwargs):
            raise click.UsageError("give WORDS or --args/--kwargs, not both")
        if task_name is None or task_name == PLAIN_TEXT_TASK and not task_args:
            task_name, task_args = task_name or PLAIN_TEXT_TASK, task_args or [" ".join(words) or "Hello World!"]
        elif words:
            task_args = list(words)
        messages = (TaskMessage(task_name, task_args, task_kwargs) for _ in range(count))
        for message in [TaskMessage(task_name, task_args, task_kwargs)]:
            message.encode()  # refuse arguments that are not JSON, or too big, before sending anything
    total = len(messages) if isinstance(messages, list) else count
    if wait:  # each task asks for its result, and each result is printed (docs/results.md)
        waited = queue_and_wait(settings, queue, queue_type, messages, timeout, click.get_text_stream("stdout"))
        if not waited.all_succeeded:
            click.echo(f"new-task: {waited.summary()}", err=True)
            raise SystemExit(int(ExitCode.FAILURE))
        return

    out = click.get_text_stream("stdout")

    def print_ids(confirmed):
        if not quiet:
            out.write("".join(m.message_id + "\n" for m in confirmed))

    show_progress = sys.stderr.isatty() and total > 1
    with TaskSubmitter(settings, queue, queue_type, on_confirmed=print_ids) as submitter:
        with click.progressbar(length=total, label="queueing", file=sys.stderr) if show_progress else _Nothing() as bar:
            for _ in submitter.submit_many(messages):
                bar.update(1)
    out.flush()
    if settings.is_local:
        log.warning("in_process_broker", detail="the in-process broker lives inside this command alone, so these "
                    "tasks end with it; run producers and workers in one process, as `rabbitry demo` does")


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass

    def update(self, _n):
        pass


def main():
    new_task(prog_name="new-task")
