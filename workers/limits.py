"""Start-up check: do the worker's time limits fit under the broker's consumer_timeout?

RabbitMQ closes the channel of a delivery left unacknowledged longer than its
``consumer_timeout`` and requeues the delivery, so a task allowed to run
longer than that would be run again and again instead of being stopped by
``--time-limit`` or its own ``time_limit``. A task given neither runs under a
limit safely below the consumer_timeout. A prefetched task waits
unacknowledged too, behind the tasks before it.
"""

import structlog

from rabbitry.common.errors import ConfigurationError
from rabbitry.common.transport.contract import Connection
from rabbitry.workers.config import WorkerConfig
from rabbitry.workers.consumer_timeout import ConsumerTimeout, read_consumer_timeout
from rabbitry.workers.registry import registry

log = structlog.get_logger("rabbitry.worker")

#: Without --time-limit, a task with no time_limit of its own may run this share of the
#: broker's consumer_timeout: the rest leaves time to record its failure before the broker gives up.
DEFAULT_TIME_LIMIT_SHARE = 0.9


def default_time_limit(timeout: ConsumerTimeout) -> float | None:
    """The time limit of a task given none: safely below the consumer_timeout, if there is one."""
    if timeout.seconds is None:
        return None
    return round(timeout.seconds * DEFAULT_TIME_LIMIT_SHARE, 3)


def longest_time_limit(config: WorkerConfig) -> tuple[float | None, str, str]:
    """The longest time limit a task may run under here; how to name it, and the setting to lower."""
    if config.time_limit is not None:
        return config.time_limit, f"--time-limit {config.time_limit:g} s", "--time-limit"
    limited = [(task.time_limit, task.name) for task in registry if task.time_limit is not None]
    if not limited:
        return None, "", ""
    limit, name = max(limited)
    return limit, f"the time_limit of task {name!r}, {limit:g} s,", "that time_limit (or give --time-limit)"


def check_time_limit(config: WorkerConfig, connection: Connection) -> float | None:
    """The time limit of tasks that have none: without ``--time-limit``, one safely below the
    broker's consumer_timeout; None otherwise, or when the broker has no consumer_timeout.

    Raises ConfigurationError if ``--time-limit``, or the longest of the tasks' own time limits,
    cannot fit under the broker's consumer_timeout; only warns when the timeout could not be
    read and RabbitMQ's default is assumed.
    """
    if config.settings.is_local:
        return None
    url = getattr(connection, "url", config.settings.urls[0])
    timeout = read_consumer_timeout(url, connection.server_properties)
    if timeout.seconds is None:
        log.info("consumer_timeout_disabled", source=timeout.source)
        return None
    default = None
    if config.time_limit is None:
        default = default_time_limit(timeout)
        log.info(
            "time_limit_defaulted",
            time_limit_s=default,
            consumer_timeout_s=timeout.seconds,
            source=timeout.source,
            detail=f"no --time-limit: a task without a time_limit of its own that runs over {default:g} s is "
            f"stopped and failed, before the broker's consumer_timeout of {timeout.seconds:g} s would "
            "have it run again; set --time-limit or the task's time_limit to choose another",
        )
    limit, described, setting = longest_time_limit(config)
    # A process that chooses its own prefetch holds about 0.1 s of work (workers/prefetch.py).
    held = None if config.adapts_prefetch else config.prefetch
    if limit is None:
        return default
    if limit >= timeout.seconds:
        problem = (
            f"{described} does not fit under the broker's consumer_timeout of "
            f"{timeout.seconds:g} s ({timeout.source}): the broker would close the channel of a task "
            f"running that long and redeliver it. Lower {setting}, or raise consumer_timeout in "
            "rabbitmq.conf"
        )
        if timeout.known:
            raise ConfigurationError(problem)
        log.warning("time_limit_over_consumer_timeout", problem=problem)
    elif held is not None and limit * held >= timeout.seconds:
        log.warning(
            "prefetched_tasks_may_time_out",
            problem=f"with --prefetch {held}, a task may wait unacknowledged behind others for "
            f"up to {limit * held:g} s, over the broker's consumer_timeout of "
            f"{timeout.seconds:g} s ({timeout.source}); lower --prefetch or {setting}",
        )
    else:
        log.info("time_limit_fits", time_limit_s=limit, consumer_timeout_s=timeout.seconds, source=timeout.source)
    return default
