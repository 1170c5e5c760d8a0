"""Start-up check: does the worker's time limit fit under the broker's consumer_timeout?

RabbitMQ closes the channel of a delivery left unacknowledged longer than its
``consumer_timeout`` and requeues the delivery, so a task allowed to run
longer than that would be run again and again instead of being stopped by
``--time-limit`` or its own ``time_limit``. A prefetched task waits
unacknowledged too, behind the tasks before it.
"""

import structlog

from rabbitry.common.consumer_timeout import read_consumer_timeout
from rabbitry.common.errors import ConfigurationError
from rabbitry.common.transport import Connection
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.registry import registry

log = structlog.get_logger("rabbitry.worker")


def longest_time_limit(config: WorkerConfig) -> tuple[float | None, str, str]:
    """The longest time limit a task may run under here; how to name it, and the setting to lower."""
    if config.time_limit is not None:
        return config.time_limit, f"--time-limit {config.time_limit:g} s", "--time-limit"
    limited = [(task.time_limit, task.name) for task in registry if task.time_limit is not None]
    if not limited:
        return None, "", ""
    limit, name = max(limited)
    return limit, f"the time_limit of task {name!r}, {limit:g} s,", "that time_limit (or give --time-limit)"


def check_time_limit(config: WorkerConfig, connection: Connection) -> None:
    """Raise ConfigurationError if ``--time-limit``, or the longest of the tasks' own time limits,
    cannot fit under the broker's consumer_timeout.

    Only warns when the timeout could not be read and RabbitMQ's default is assumed.
    """
    limit, described, setting = longest_time_limit(config)
    if limit is None or config.settings.is_local:
        return
    url = getattr(connection, "url", config.settings.urls[0])
    timeout = read_consumer_timeout(url, connection.server_properties)
    if timeout.seconds is None:
        log.info("consumer_timeout_disabled", source=timeout.source)
        return
    if limit >= timeout.seconds:
        problem = (f"{described} does not fit under the broker's consumer_timeout of "
                   f"{timeout.seconds:g} s ({timeout.source}): the broker would close the channel of a task "
                   f"running that long and redeliver it. Lower {setting}, or raise consumer_timeout in "
                   "rabbitmq.conf")
        if timeout.known:
            raise ConfigurationError(problem)
        log.warning("time_limit_over_consumer_timeout", problem=problem)
    elif limit * config.prefetch >= timeout.seconds:
        log.warning("prefetched_tasks_may_time_out",
                    problem=f"with --prefetch {config.prefetch}, a task may wait unacknowledged behind others for "
                            f"up to {limit * config.prefetch:g} s, over the broker's consumer_timeout of "
                            f"{timeout.seconds:g} s ({timeout.source}); lower --prefetch or {setting}")
    else:
        log.info("time_limit_fits", time_limit_s=limit, consumer_timeout_s=timeout.seconds, source=timeout.source)
