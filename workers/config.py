"""The worker's settings: plain data, handed to every pool process."""

from dataclasses import dataclass, field

from rabbitry.common.messages import MAX_MESSAGE_BYTES
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_QUEUE_TYPE, DEFAULT_TASK_QUEUE, Topology, work_queue
from rabbitry.workers.registry import registry

#: The most unacknowledged deliveries a channel's prefetch can allow (a 16-bit count in AMQP).
MAX_PREFETCH = 65535
DEFAULT_MAX_RETRIES = 3
#: Deliveries of one task that may end in a crash before it is dead-lettered.
DEFAULT_DELIVERY_LIMIT = 5
#: How long a worker keeps trying to reach its broker at start-up.
DEFAULT_CONNECT_TIMEOUT_S = 60.0
#: The metrics endpoint listens on loopback only, unless told otherwise.
DEFAULT_METRICS_HOST = "127.0.0.1"


def first_given(*values):
    """The first value that is not None (the last one otherwise)."""
    return next((value for value in values if value is not None), values[-1])


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a pool process needs to serve a work queue."""

    settings: BrokerSettings = field(default_factory=BrokerSettings)
    queue: str = DEFAULT_TASK_QUEUE
    queue_type: str = DEFAULT_QUEUE_TYPE
    #: Unacknowledged tasks each pool process may hold: the one it runs plus
    #: those waiting behind it. 1 gives perfectly fair dispatch; None lets each
    #: process hold about a tenth of a second of its work (see workers/prefetch.py).
    prefetch: int | None = None
    processes: int = 2
    #: Coroutines (``async def`` tasks) each pool process runs at a time on its event loop;
    #: each takes ``prefetch`` deliveries' worth of the channel's prefetch.
    concurrency: int = 1
    task_modules: tuple[str, ...] = ()
    #: Set, these override every task's own option; None leaves each task its own (see *_for).
    max_retries: int | None = None
    time_limit: float | None = None
    #: The time limit of a task that has none, when --time-limit is not given: safely
    #: below the broker's consumer_timeout (see workers/limits.py); None for no limit.
    default_time_limit: float | None = None
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    max_message_bytes: int = MAX_MESSAGE_BYTES
    log_format: str = "auto"
    log_level: str = "info"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    #: Where the supervisor serves Prometheus metrics; no port, no metrics.
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int | None = None

    def max_retries_for(self, task_name: str) -> int:
        """The worker's --max-retries if given, else the task's own option, else the default."""
        task = registry.find(task_name)
        return first_given(self.max_retries, task and task.max_retries, DEFAULT_MAX_RETRIES)

    def time_limit_for(self, task_name: str) -> float | None:
        """The worker's --time-limit if given, else the task's own option, else the default."""
        task = registry.find(task_name)
        return first_given(self.time_limit, task and task.time_limit, self.default_time_limit)

    @property
    def channel_prefetch(self) -> int:
        """The prefetch of each pool process's channel: ``prefetch`` for every coroutine it may run
        (at most AMQP's 65,535); where the process chooses its own, the one it starts with, one
        delivery for each task it may run at a time."""
        return min((self.prefetch or 1) * self.concurrency, MAX_PREFETCH)

    @property
    def adapts_prefetch(self) -> bool:
        """Whether each pool process chooses its own prefetch (see workers/prefetch.py): no --prefetch."""
        return self.prefetch is None

    @property
    def uses_coroutines(self) -> bool:
        """Whether pool processes run an event loop: for --concurrency over 1, or any ``async def`` task."""
        return self.concurrency > 1 or any(task.is_coroutine for task in registry)

    @property
    def topology(self) -> Topology:
        """The work queue's topology, with the delay levels its retries wait in."""
        return work_queue(self.queue, self.queue_type)
