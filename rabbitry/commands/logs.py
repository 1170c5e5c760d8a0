"""``rabbitry logs``: keep a log exchange's history, and see who subscribes to it.

::

    rabbitry logs retain --max-age 7D --max-bytes 1GB   # topic_logs keeps a week, at most 1 GB
    rabbitry logs forget --yes                          # and drops it
    rabbitry logs subscriptions                         # named queues bound to topic_logs

History lives in a stream bound to the exchange (see
:mod:`rabbitry.common.logs.history`); ``subscribe --since`` reads it. Listing
subscriptions needs RabbitMQ's management API: AMQP cannot list bindings.
"""

import json

import click

from rabbitry.common.amqp.management import ManagementApi
from rabbitry.common.cli import (
    RabbitryGroup,
    broker_options,
    json_option,
    log_exchange_options,
    logging_options,
    management_url_option,
)
from rabbitry.common.connect import connect
from rabbitry.common.durations import rabbitmq_age
from rabbitry.common.errors import ConfigurationError, ManagementUnavailable
from rabbitry.common.logs.history import retain as retain_history
from rabbitry.common.retention import Retention, parse_size
from rabbitry.common.topology import history_stream_name


@click.group(cls=RabbitryGroup, context_settings={"help_option_names": ["-h", "--help"]})
def logs():
    """Keep the history of a log exchange, and list its durable subscriptions."""


def _size(ctx, param, value):
    try:
        return None if value is None else parse_size(value)
    except ConfigurationError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


def _age(ctx, param, value):
    """``--max-age`` in any duration form (common/durations.py), written as RabbitMQ reads an x-max-age."""
    try:
        return None if value is None else rabbitmq_age(value)
    except ConfigurationError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


@logs.command()
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@log_exchange_options
@click.option(
    "--max-age",
    metavar="DURATION",
    callback=_age,
    help="Drop lines older than DURATION: 7d, 12h, 1w, 1h30m, 3600, or as RabbitMQ writes it, "
    "with Y, M (months), D, h, m (minutes) or s: 7D.",
)
@click.option("--max-bytes", metavar="SIZE", callback=_size, help="Keep at most SIZE: 1GB, 500MB, 64MiB, bytes.")
@click.option(
    "--segment-bytes",
    metavar="SIZE",
    callback=_size,
    help="The stream's segment size, the grain of retention  [default: a tenth of --max-bytes, at most 500MB]",
)
@broker_options
@logging_options()
def retain(settings, keys, exchange, max_age, max_bytes, segment_bytes, log_format, log_level):
    """Keep every line of a log exchange in a stream (a direct exchange: the lines of each KEY).

    Idempotent: run it again, with the same limits, at any time; after a broker
    restart it binds the stream to the exchange again.
    """
    if keys and exchange.type != "direct":
        raise click.BadParameter(
            f"a {exchange.type} exchange's history keeps every line: give no key", param_hint="KEY"
        )
    try:
        retention = Retention(max_age, max_bytes, segment_bytes)
    except ConfigurationError as error:
        raise click.BadParameter(str(error), param_hint="--max-age") from None
    with connect(settings, "rabbitry-logs") as connection:
        try:
            stream = retain_history(connection, exchange, retention, tuple(keys))
        except ConfigurationError as error:
            raise click.BadParameter(str(error), param_hint="KEY") from None
    click.echo(f"history of exchange {exchange.name!r} is kept in stream {stream!r}: {retention.describe()}")


@logs.command()
@log_exchange_options
@click.option("--yes", is_flag=True, help="Yes, drop the history kept so far.")
@broker_options
@logging_options()
def forget(settings, exchange, yes, log_format, log_level):
    """Stop keeping a log exchange's history, and drop what was kept."""
    stream = history_stream_name(exchange.name)
    if not yes:
        raise click.UsageError(f"this drops every line kept in stream {stream!r}: add --yes")
    with connect(settings, "rabbitry-logs") as connection:
        existed = connection.queue_state(stream) is not None
        connection.delete_queue(stream)
    click.echo(
        f"history of exchange {exchange.name!r} dropped"
        if existed
        else f"no history was kept for exchange {exchange.name!r}"
    )


def subscription_rows(api: ManagementApi, exchange: str) -> list[dict]:
    """The named queues bound to ``exchange`` (and its history stream), with keys, backlog and consumers."""
    keys: dict[str, list[str]] = {}
    for binding in api.bindings_from(exchange):
        if binding.get("destination_type") == "queue":
            keys.setdefault(binding["destination"], []).append(binding["routing_key"])
    queues = {queue["name"]: queue for queue in api.queues() if queue["name"] in keys}
    rows = []
    for name in sorted(keys):
        queue = queues.get(name, {})
        if queue.get("exclusive") or name.startswith("amq.gen-"):
            continue  # a running subscriber's own queue: it goes with it
        kind = "history" if queue.get("type") == "stream" or name == history_stream_name(exchange) else "queue"
        rows.append(
            {
                "queue": name,
                "kind": kind,
                "binding_keys": sorted(keys[name]),
                "messages": None if kind == "history" else queue.get("messages"),
                "consumers": queue.get("consumers"),
            }
        )
    return rows


def render_rows(rows: list[dict], exchange: str) -> str:
    """The subscriptions as a table for a terminal."""
    if not rows:
        return f"no named queue is bound to exchange {exchange!r}"
    width = max(len("queue"), *(len(row["queue"]) for row in rows))
    lines = [f"{'queue':<{width}}  {'backlog':>9}  {'consumers':>9}  binding keys"]
    for row in rows:
        backlog = (
            "history" if row["kind"] == "history" else ("-" if row["messages"] is None else f"{row['messages']:,}")
        )
        consumers = "-" if row["consumers"] is None else row["consumers"]
        keys = " ".join(repr(key) if key else "''" for key in row["binding_keys"])
        lines.append(f"{row['queue']:<{width}}  {backlog:>9}  {consumers:>9}  {keys}")
    return "\n".join(lines)


@logs.command()
@log_exchange_options
@json_option()
@management_url_option(", to list the bindings with")
@broker_options
def subscriptions(settings, exchange, as_json, management_url):
    """List the named queues bound to a log exchange: their binding keys, backlog and consumers."""
    if settings.is_local:
        raise ManagementUnavailable("the in-process model has no management API to list bindings with")
    api = ManagementApi.for_broker(settings.urls[0], management_url)
    rows = subscription_rows(api, exchange.name)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        click.echo(render_rows(rows, exchange.name))
