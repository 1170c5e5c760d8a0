"""``worker``: run tasks from a work queue in a pool of processes."""

import os
import sys

import click
import structlog

from rabbitry.common.cli import RabbitryCommand, broker_options, logging_options, queue_type_option, work_queue_option
from rabbitry.common.topology import MOST_RETRIES
from rabbitry.workers.config import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_METRICS_HOST,
    WorkerConfig,
)
from rabbitry.workers.registry import load_task_modules, registry
from rabbitry.workers.threaded import worker_pool

log = structlog.get_logger("rabbitry.worker")


@click.command(cls=RabbitryCommand, context_settings={"help_option_names": ["-h", "--help"]})
@work_queue_option()
@queue_type_option
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(1, 256),
    default=lambda: min(os.cpu_count() or 1, 8),
    show_default="number of CPUs, at most 8",
    help="Pool processes running tasks.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(1, 65535),
    default=None,
    help="Unacknowledged tasks each pool process may hold, running or waiting. "
    "1 is perfectly fair dispatch; more is faster for short tasks  [default: about 0.1 s of "
    "work, from 1 for long tasks to 256 for short ones; with --concurrency C, C times that, "
    "and at least C]",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 10000),
    default=1,
    show_default=True,
    help="Tasks each pool process runs at a time on an event loop: `async def` tasks as coroutines, "
    "plain functions still one at a time. Takes --prefetch deliveries for each.",
)
@click.option(
    "--tasks",
    "task_modules",
    multiple=True,
    metavar="MODULE",
    help="Import path of a module that registers tasks (repeatable); the current folder is on the import path.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(0, MOST_RETRIES),
    default=None,
    help="Retries of a failing task, with exponential backoff, before it is dead-lettered. "
    f"Overrides every task's own max_retries  [default: the task's own, else {DEFAULT_MAX_RETRIES}]",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds a task may run before its process is killed and the task failed. Overrides every "
    "task's own time_limit. Checked at start-up against the broker's consumer_timeout  "
    "[default: the task's own, else 90% of the broker's consumer_timeout]",
)
@click.option(
    "--delivery-limit",
    type=click.IntRange(1, 1000),
    default=DEFAULT_DELIVERY_LIMIT,
    show_default=True,
    help="Crashes of its pool process a task may cause before it is dead-lettered.",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_CONNECT_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long to keep trying to reach the broker at start-up before giving up (exit 3).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics of the whole pool on this port (0: any free one)  [default: off]",
)
@click.option(
    "--metrics-host",
    default=DEFAULT_METRICS_HOST,
    show_default=True,
    metavar="ADDRESS",
    help="Address the metrics endpoint listens on; 0.0.0.0 serves every interface.",
)
@broker_options
@logging_options(stream="stdout")
def worker(
    settings,
    queue,
    queue_type,
    processes,
    prefetch,
    concurrency,
    task_modules,
    max_retries,
    time_limit,
    delivery_limit,
    connect_timeout,
    metrics_port,
    metrics_host,
    log_format,
    log_level,
):
    """Run tasks from QUEUE in a pool of processes, acking each one when it is done."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as Celery's worker does: `--tasks myapp.tasks` from the project folder
    load_task_modules(task_modules)  # fail fast on a bad module, before any process starts
    log.info("tasks_registered", tasks=registry.names())
    config = WorkerConfig(
        settings=settings,
        queue=queue,
        queue_type=queue_type,
        prefetch=prefetch,
        processes=processes,
        concurrency=concurrency,
        task_modules=tuple(task_modules),
        max_retries=max_retries,
        time_limit=time_limit,
        delivery_limit=delivery_limit,
        log_format=log_format,
        log_level=log_level,
        connect_timeout=connect_timeout,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
    )
    raise SystemExit(worker_pool(config).run())


def main():
    worker(prog_name="worker")
