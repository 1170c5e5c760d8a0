"""Every exchange, queue and binding rabbitry uses, declared in one place.

Producers, workers and subscribers all declare through these functions, so
the arguments always agree and nobody meets PRECONDITION_FAILED from a
mismatch. The defaults match the official RabbitMQ tutorials, so their
programs and ours interoperate.
"""

from dataclasses import dataclass, field
from typing import Any

from rabbitry.common.errors import ConfigurationError
from rabbitry.common.routing import MAX_KEY_BYTES, check_routing_key

DEFAULT_TASK_QUEUE = "task_queue"
QUEUE_TYPES = ("quorum", "classic")
DEFAULT_QUEUE_TYPE = "quorum"

#: Dead letters of every work queue go through this exchange, routed by the
#: work queue's name to ``<queue>.dead-letter``.
DEAD_LETTER_EXCHANGE = "rabbitry.dead-letter"

#: The exchange names of the official tutorials 3, 4 and 5.
LOG_EXCHANGES = {"fanout": "logs", "direct": "direct_logs", "topic": "topic_logs"}
EXCHANGE_TYPES = tuple(LOG_EXCHANGES)

#: Retry delays, held by the broker in TTL'd queues that dead-letter back.
RETRY_BASE_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 300.0
#: The most retries a task may have.
MOST_RETRIES = 100


@dataclass(frozen=True)
class Exchange:
    """An exchange declaration."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False


@dataclass(frozen=True)
class Queue:
    """A queue declaration. An empty ``name`` asks the broker to name it."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    """A binding of ``queue`` to ``exchange`` under ``routing_key``."""

    exchange: str
    queue: str
    routing_key: str = ""


@dataclass(frozen=True)
class Topology:
    """A set of declarations, applied in order: exchanges, queues, bindings."""

    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()

    def __add__(self, other: "Topology") -> "Topology":
        return Topology(self.exchanges + other.exchanges, self.queues + other.queues,
                        self.bindings + other.bindings)


def check_queue_type(queue_type: str) -> str:
    """Return ``queue_type`` if RabbitMQ knows it, else raise ConfigurationError."""
    if queue_type not in QUEUE_TYPES:
        raise ConfigurationError(f"unknown queue type {queue_type!r}: choose quorum or classic")
    return queue_type


def dead_letter_queue_name(queue: str) -> str:
    """The dead-letter queue of work queue ``queue``."""
    return f"{queue}.dead-letter"


def retry_queue_name(queue: str, delay_ms: int) -> str:
    """The delay queue that holds retries of ``queue`` for about ``delay_ms``."""
    return f"{queue}.retry.{delay_ms}ms"


def retry_delays_ms(max_retries: int) -> list[int]:
    """The nominal delay of each retry: exponential from 1 s, capped."""
    return [int(min(RETRY_BASE_DELAY_S * 2 ** n, RETRY_MAX_DELAY_S) * 1000) for n in range(max_retries)]


def work_queue_names(queue: str) -> list[str]:
    """Every queue work queue ``queue`` may have: itself, its retry queues (for any number of
    retries) and its dead-letter queue."""
    delays = sorted(set(retry_delays_ms(MOST_RETRIES)))
    return [queue, *(retry_queue_name(queue, delay) for delay in delays), dead_letter_queue_name(queue)]


def check_work_queue_name(queue: str) -> str:
    """Return ``queue`` if RabbitMQ accepts it, and the names of its retry and dead-letter queues.

    Names are AMQP short strings: at most 255 bytes of UTF-8, less here the
    longest suffix the work queue's own queues add (``.retry.300000ms``).
    """
    if not queue:
        raise ConfigurationError("a work queue needs a name")
    longest = retry_queue_name(queue, int(RETRY_MAX_DELAY_S * 1000))
    check_routing_key(queue, "queue name")  # valid UTF-8, at most 255 bytes
    if len(longest.encode()) > MAX_KEY_BYTES:
        suffix = longest[len(queue):]
        raise ConfigurationError(f"queue name is {len(queue.encode())} bytes long; a work queue's name can be at "
                                 f"most {MAX_KEY_BYTES - len(suffix)}, leaving room for its retry queues "
                                 f"('<queue>{suffix}')")
    return queue


def work_queue(queue: str = DEFAULT_TASK_QUEUE, queue_type: str = DEFAULT_QUEUE_TYPE,
               max_retries: int = 0) -> Topology:
    """The durable task queue, its dead-letter queue and its retry queues.

    The task queue carries no argument but its type, exactly as the official
    tutorial declares it, so ``new_task.py`` and ``worker.py`` from the
    tutorial can share it. Dead-lettering is done by the worker, which
    republishes (with confirms) to the dead-letter exchange, adding the
    reason to the headers.
    """
    check_queue_type(queue_type)
    typed = {"x-queue-type": queue_type}
    queues = [Queue(queue, arguments=typed), Queue(dead_letter_queue_name(queue), arguments=typed)]
    # Expired retries go back to the work queue through the default exchange;
    # a quorum queue can do it at least once (RabbitMQ >= 3.10), so that a
    # retry is not dropped if the work queue is briefly unavailable then.
    returning = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
    if queue_type == "quorum":
        returning |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    for delay_ms in sorted(set(retry_delays_ms(max_retries))):
        queues.append(Queue(retry_queue_name(queue, delay_ms), arguments={**typed, **returning}))
    return Topology(
        exchanges=(Exchange(DEAD_LETTER_EXCHANGE, "direct", durable=True),),
        queues=tuple(queues),
        bindings=(Binding(DEAD_LETTER_EXCHANGE, dead_letter_queue_name(queue), queue),),
    )


def log_exchange(exchange_type: str = "topic", name: str | None = None, durable: bool = False) -> Exchange:
    """A log exchange; by default the tutorials' name for its type, not durable."""
    if exchange_type not in LOG_EXCHANGES:
        raise ConfigurationError(
            f"unknown exchange type {exchange_type!r}: choose one of {', '.join(EXCHANGE_TYPES)}")
    return Exchange(name or LOG_EXCHANGES[exchange_type], exchange_type, durable=durable)
