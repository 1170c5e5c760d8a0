"""``rabbitry dlq``: inspect, replay or drop the dead letters of a work queue.

Every step is confirmed, so nothing is lost between the queues: a dead letter
is taken unacknowledged, a replay is published to the work queue with
publisher confirms (and the mandatory flag), and only once the broker has
confirmed it is the dead letter acknowledged. Letters that are not selected,
or whose replay was not confirmed, go back to the dead-letter queue when the
connection closes. If the connection drops between the confirm and the ack,
the letter stays in the dead-letter queue as well as in the work queue: a
duplicate, never a loss.
"""

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable

import click

from rabbitry.common.cli import RabbitryCommand, RabbitryGroup, broker_options, json_option, work_queue_option
from rabbitry.common.connect import connect
from rabbitry.common.errors import ConfigurationError, ExitCode, MessageError, RabbitryError
from rabbitry.common.messages import TaskMessage
from rabbitry.common.topology import dead_letter_queue_name
from rabbitry.common.transport.contract import UNREADABLE_HEADERS, Connection, Delivery, OutgoingMessage
from rabbitry.workers.execution import ERROR_HEADER, LEFT_OUT_HEADER, QUEUE_HEADER, REASON_HEADER, TASK_HEADER

#: How long to wait for the broker to confirm replayed letters.
CONFIRM_TIMEOUT_S = 60.0
#: Header counting how often a letter was replayed.
REPLAYED_HEADER = "x-rabbitry-replayed"
#: Headers a replay drops: why the letter died, and the broker's own counts.
_DEAD_LETTER_HEADERS = (
    REASON_HEADER,
    ERROR_HEADER,
    TASK_HEADER,
    QUEUE_HEADER,
    LEFT_OUT_HEADER,
    UNREADABLE_HEADERS,
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
)


#: Characters of a letter's error that ``dlq list`` shows (``dlq show`` shows it whole).
ERROR_COLUMN_WIDTH = 70


def shorten(text: str, width: int) -> str:
    """``text`` on one line in at most ``width`` characters, cut after a whole word and marked
    with an ellipsis if it is longer (mid-word only when its first word alone is too long)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if text[width - 1] != " " and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.") + "…"


class LettersMissing(RabbitryError):
    """Some dead letters asked for are not in the queue."""

    exit_code = ExitCode.FAILURE


def describe(letter: Delivery) -> dict:
    """The facts of one dead letter, as a JSON-able dict."""
    headers = letter.headers
    try:
        body = letter.body.decode()
    except UnicodeDecodeError:
        body = repr(letter.body)
    return {
        "id": letter.message_id,
        "task": headers.get(TASK_HEADER) or letter.type,
        "reason": headers.get(REASON_HEADER),
        "error": headers.get(ERROR_HEADER),
        "queue": headers.get(QUEUE_HEADER),
        "replayed": headers.get(REPLAYED_HEADER, 0),
        "body": body,
    }


def replay_message(letter: Delivery, queue: str) -> OutgoingMessage:
    """The letter as a fresh task for ``queue``: its retries start again from attempt 0."""
    headers = {k: v for k, v in letter.headers.items() if k not in _DEAD_LETTER_HEADERS}
    headers[REPLAYED_HEADER] = int(letter.headers.get(REPLAYED_HEADER, 0) or 0) + 1
    body = letter.body
    try:
        task = TaskMessage.from_delivery(dataclasses.replace(letter, headers=headers))
    except MessageError:
        pass  # a malformed body goes back as it is, so nothing about it is lost
    else:
        if task.attempt:
            task.attempt = 0
            body = task.encode()
    outgoing = letter.republished(routing_key=queue, body=body)
    outgoing.headers = headers
    return outgoing


class DeadLetterQueue:
    """The dead-letter queue of work queue ``queue``, over one connection."""

    def __init__(self, connection: Connection, queue: str):
        self.connection = connection
        self.queue = queue
        self.name = dead_letter_queue_name(queue)
        if connection.queue_state(self.name) is None:
            raise ConfigurationError(
                f"there is no dead-letter queue {self.name!r}: has a worker or new-task "
                f"ever declared work queue {queue!r}?"
            )

    def take(
        self, wanted: Callable[[Delivery], bool] = lambda _letter: True, limit: int | None = None
    ) -> list[Delivery]:
        """Take the wanted letters (unacknowledged), reading at most ``limit`` letters.

        Every letter read stays unacknowledged until :meth:`close`, so each is read once.
        """
        taken, read = [], 0
        while limit is None or read < limit:
            letter = self.connection.get(self.name)
            if letter is None:
                break
            read += 1
            if wanted(letter):
                taken.append(letter)
        return taken

    def replay(self, letters: list[Delivery]) -> int:
        """Publish each letter to the work queue; ack it once its copy is confirmed. Returns the count."""
        tags = {}
        for letter in letters:
            outgoing = replay_message(letter, self.queue)
            tags[id(outgoing)] = letter.delivery_tag
            self.connection.publish(outgoing, mandatory=True)
        failures = self.connection.wait_for_confirms(CONFIRM_TIMEOUT_S)
        confirmed, _ = self.connection.take_confirmed()
        for message in confirmed:
            self.connection.ack(tags[id(message)])
        if failures:
            raise RabbitryError(
                f"{len(failures)} letter(s) not replayed ({failures[0].reason}); they stay in {self.name!r}"
            )
        return len(confirmed)

    def purge(self) -> int:
        """Drop every letter; return how many the broker dropped."""
        return self.connection.purge(self.name)

    def drop(self, letters: list[Delivery]) -> int:
        """Acknowledge (delete) the letters."""
        for letter in letters:
            self.connection.ack(letter.delivery_tag)
        return len(letters)


def _select(ids: tuple[str, ...], select_all: bool) -> Callable[[Delivery], bool]:
    if select_all == bool(ids):
        raise click.UsageError("give the ids of the letters (LETTER_ID...), or --all")
    return (lambda _letter: True) if select_all else (lambda letter: letter.message_id in ids)


def letter_selection(func):
    """Add the LETTER_ID... argument and --all; pass ``wanted``, the test a letter must pass."""

    @click.argument("ids", nargs=-1, metavar="[LETTER_ID]...")
    @click.option("--all", "select_all", is_flag=True, help="Every dead letter, instead of LETTER_IDs.")
    @functools.wraps(func)
    def wrapper(*args, ids, select_all, **kwargs):
        return func(*args, ids=ids, select_all=select_all, wanted=_select(ids, select_all), **kwargs)

    return wrapper


@contextlib.contextmanager
def dead_letter_queue(settings, queue: str):
    """The dead-letter queue of ``queue`` on a connection of its own, closed at the end
    (which hands back every letter taken and not acknowledged)."""
    with connect(settings, "rabbitry-dlq") as connection:
        yield DeadLetterQueue(connection, queue)


def _take_found(letters: DeadLetterQueue, ids: tuple[str, ...], wanted) -> list[Delivery]:
    """Take the wanted letters; raise, changing nothing, if any of ``ids`` is not there."""
    taken = letters.take(wanted)
    missing = set(ids) - {letter.message_id for letter in taken}
    if missing:
        raise LettersMissing(f"no dead letter with id {', '.join(sorted(missing))}: nothing was changed")
    return taken


def dlq_command(name: str):
    """A subcommand of ``rabbitry dlq`` with the work-queue and broker options."""

    def decorator(func):
        func = work_queue_option()(func)
        return dlq.command(name, cls=RabbitryCommand)(broker_options(func))

    return decorator


@click.group(cls=RabbitryGroup)
def dlq():
    """Inspect, replay or drop dead letters (every step confirmed by the broker)."""


@dlq_command("list")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="List at most this many letters.")
@json_option()
def list_letters(settings, queue, limit, as_json):
    """List dead letters: id, task, reason and error."""
    with dead_letter_queue(settings, queue) as dead_letters:
        letters = dead_letters.take(limit=limit)
    rows = [describe(letter) for letter in letters]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(f"{len(rows)} dead letter(s) of {queue!r}")
    for row in rows:
        error = shorten(row["error"] or "", ERROR_COLUMN_WIDTH)
        click.echo(f"{row['id'] or '-':<34} {row['task'] or '-':<20} {row['reason'] or '-':<18} {error}")


@dlq_command("show")
@click.argument("letter_id")
def show(settings, queue, letter_id):
    """Show one dead letter in full: its headers and body."""
    with dead_letter_queue(settings, queue) as letters:
        (letter,) = _take_found(letters, (letter_id,), lambda letter: letter.message_id == letter_id)[:1]
    click.echo(
        json.dumps(
            {**describe(letter), "content_type": letter.content_type, "headers": letter.headers}, indent=2, default=str
        )
    )


@dlq_command("replay")
@letter_selection
def replay(settings, queue, ids, select_all, wanted):
    """Send dead letters back to the work queue, with their retries reset."""
    with dead_letter_queue(settings, queue) as letters:
        count = letters.replay(_take_found(letters, ids, wanted))
    click.echo(f"replayed {count} dead letter(s) to {queue!r}")


@dlq_command("purge")
@letter_selection
def purge(settings, queue, ids, select_all, wanted):
    """Drop dead letters for good."""
    with dead_letter_queue(settings, queue) as letters:
        count = letters.purge() if select_all else letters.drop(_take_found(letters, ids, wanted))
    click.echo(f"dropped {count} dead letter(s) of {queue!r}")
