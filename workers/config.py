"""The worker's settings: plain data, handed to every pool process."""

from dataclasses import dataclass, field

from rabbitry.common.messages import MAX_MESSAGE_BYTES
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_QUEUE_TYPE, DEFAULT_TASK_QUEUE, Topology, work_queue
from rabbitry.workers.registry import registry

DEFAULT_PREFETCH = 16
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
    #: those waiting behind it. 1 gives perfectly fair dispatch.
    prefetch: int = DEFAULT_PREFETCH
    processes: int = 2
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
    def most_retries(self) -> int:
        """The most retries any registered task may take here: one retry queue per delay up to it."""
        if self.max_retries is not None:
            return self.max_retries
        return max([DEFAULT_MAX_RETRIES, *(task.max_retries or 0 for task in registry)])

    @property
    def topology(self) -> Topology:
        """The work queue's topology, with a retry queue per retry."""
        return work_queue(self.queue, self.queue_type, self.most_retries)
