"""Start-up check: does the worker's time limit fit under the broker's consumer_timeout?

RabbitMQ closes the channel of a delivery left unacknowledged longer than its
``consumer_timeout`` and requeues the delivery, so a task allowed to run
longer than that would be run again and again instead of being stopped by
``--time-limit``. Without ``--time-limit``, the worker takes a limit safely
below the consumer_timeout. A prefetched task waits unacknowledged too,
behind the tasks before it.
"""

import structlog

from rabbitry.common.consumer_timeout import ConsumerTimeout, read_consumer_timeout
from rabbitry.common.errors import ConfigurationError
from rabbitry.common.transport import Connection
from rabbitry.workers.config import WorkerConfig

log = structlog.get_logger("rabbitry.worker")

#: Without --time-limit, tasks may run this share of the broker's consumer_timeout: the
#: rest leaves time to record the failure and acknowledge before the broker gives up.
DEFAULT_TIME_LIMIT_SHARE = 0.9


def default_time_limit(timeout: ConsumerTimeout) -> float | None:
    """The time limit of a worker given none: safely below the consumer_timeout, if there is one."""
    if timeout.seconds is None:
        return None
    return round(timeout.seconds * DEFAULT_TIME_LIMIT_SHARE, 3)


def check_time_limit(config: WorkerConfig, connection: Connection) -> float | None:
    """The time limit the worker's tasks run under: ``--time-limit``, or one safely below the
    broker's consumer_timeout when none was given.

    Raises ConfigurationError if ``--time-limit`` cannot fit under the broker's
    consumer_timeout; only warns when the timeout could not be read and RabbitMQ's
    default is assumed.
    """
    limit = config.time_limit
    if config.settings.is_local:
        return limit
    url = getattr(connection, "url", config.settings.urls[0])
    timeout = read_consumer_timeout(url, connection.server_properties)
    if timeout.seconds is None:
        log.info("consumer_timeout_disabled", source=timeout.source)
        return limit
    if limit is None:
        limit = default_time_limit(timeout)
        log.info("time_limit_defaulted", time_limit_s=limit, consumer_timeout_s=timeout.seconds, source=timeout.source,
                 detail=f"no --time-limit: a task running over {limit:g} s is stopped and failed, before the broker's "
                        f"consumer_timeout of {timeout.seconds:g} s would have it run again; set --time-limit to "
                        "choose another")
        return limit
    if limit >= timeout.seconds:
        problem = (f"--time-limit {limit:g} s does not fit under the broker's consumer_timeout of "
                   f"{timeout.seconds:g} s ({timeout.source}): the broker would close the channel of a task "
                   "running that long and redeliver it. Lower --time-limit, or raise consumer_timeout in "
                   "rabbitmq.conf")
        if timeout.known:
            raise ConfigurationError(problem)
        log.warning("time_limit_over_consumer_timeout", problem=problem)
    elif limit * config.prefetch >= timeout.seconds:
        log.warning("prefetched_tasks_may_time_out",
                    problem=f"with --prefetch {config.prefetch}, a task may wait unacknowledged behind others for "
                            f"up to {limit * config.prefetch:g} s, over the broker's consumer_timeout of "
                            f"{timeout.seconds:g} s ({timeout.source}); lower --prefetch or --time-limit")
    else:
        log.info("time_limit_fits", time_limit_s=limit, consumer_timeout_s=timeout.seconds, source=timeout.source)
    return limit
