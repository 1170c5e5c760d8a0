"""The worker's settings: plain data, handed to every pool process."""

from dataclasses import dataclass, field

from rabbitry.common.messages import MAX_MESSAGE_BYTES
from rabbitry.common.settings import BrokerSettings
from rabbitry.common.topology import DEFAULT_QUEUE_TYPE, DEFAULT_TASK_QUEUE, Topology, work_queue

DEFAULT_PREFETCH = 16
DEFAULT_MAX_RETRIES = 3
#: Deliveries of one task that may end in a crash before it is dead-lettered.
DEFAULT_DELIVERY_LIMIT = 5


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
    max_retries: int = DEFAULT_MAX_RETRIES
    time_limit: float | None = None
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    max_message_bytes: int = MAX_MESSAGE_BYTES
    log_format: str = "auto"
    log_level: str = "info"

    @property
    def topology(self) -> Topology:
        """The work queue's topology, with a retry queue per retry."""
        return work_queue(self.queue, self.queue_type, self.max_retries)
