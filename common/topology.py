"""Every exchange, queue and binding rabbitry uses, declared in one place.

Producers, workers and subscribers all declare through these functions, so
the arguments always agree and nobody meets PRECONDITION_FAILED from a
mismatch. The defaults match the official RabbitMQ tutorials, so their
programs and ours interoperate.
"""

from dataclasses import dataclass, field
from typing import Any

from rabbitry.common.errors import ConfigurationError
from rabbitry.common.transport.routing import check_routing_key
from rabbitry.common.transport.wire_limits import MAX_SHORT_STRING_BYTES

DEFAULT_TASK_QUEUE = "task_queue"
QUEUE_TYPES = ("quorum", "classic")
DEFAULT_QUEUE_TYPE = "quorum"

#: Dead letters of every work queue go through this exchange, routed by the
#: work queue's name to ``<queue>.dead-letter``.
DEAD_LETTER_EXCHANGE = "rabbitry.dead-letter"

#: The exchange names of the official tutorials 3, 4 and 5.
LOG_EXCHANGES = {"fanout": "logs", "direct": "direct_logs", "topic": "topic_logs"}
EXCHANGE_TYPES = tuple(LOG_EXCHANGES)

#: Delays (a task's own, and a retry's backoff) are held by the broker in a
#: chain of queues, level k holding a message for 2**k seconds (see
#: :func:`delay_levels` and :mod:`rabbitry.common.delays`). 23 levels hold any
#: whole number of seconds up to 2**23 - 1 (97 days); the longest level's TTL,
#: 2**22 s, is within RabbitMQ's limit for a TTL (2**32 - 1 ms).
DELAY_LEVELS = 23
#: Each level is a topic exchange and a queue of this name and its number.
DELAY_LEVEL_PREFIX = "rabbitry.delay."
#: A message whose delay is spent leaves the levels here, routed to its work queue by name.
DELAY_DELIVERY_EXCHANGE = "rabbitry.delay.deliver"
#: A delayed message whose work queue is gone when it is due waits here (the delivery
#: exchange's alternate exchange and its queue), rather than in the levels for ever.
DELAY_UNROUTED = "rabbitry.delay.unrouted"
#: Retry backoff: exponential from 1 s, capped.
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
    #: Only ``alternate-exchange`` is modelled in-process.
    arguments: dict[str, Any] = field(default_factory=dict)


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
class ExchangeBinding:
    """A binding of exchange ``destination`` to exchange ``source`` under ``routing_key``."""

    source: str
    destination: str
    routing_key: str = ""


@dataclass(frozen=True)
class Topology:
    """A set of declarations, applied in order: exchanges, queues, bindings, exchange bindings."""

    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()
    exchange_bindings: tuple[ExchangeBinding, ...] = ()

    def __add__(self, other: "Topology") -> "Topology":
        return Topology(
            self.exchanges + other.exchanges,
            self.queues + other.queues,
            self.bindings + other.bindings,
            self.exchange_bindings + other.exchange_bindings,
        )


def existing_may_serve(reply_code: int, reply_text: str) -> bool:
    """Whether a refused declare of a queue or exchange should fall back to using it as it exists.

    Yes when the user may not configure it (ACCESS_REFUSED), and when it carries an argument
    rabbitry does not set, such as an operator's ``x-max-length`` (PRECONDITION_FAILED,
    "received none"). No when an argument rabbitry sets differs (a classic queue where a
    quorum one was asked for): that is a mistake to report.
    """
    if reply_code == 403:
        return True
    return reply_code == 406 and "inequivalent arg" in reply_text and "received none but current is" in reply_text


def check_queue_type(queue_type: str) -> str:
    """Return ``queue_type`` if RabbitMQ knows it, else raise ConfigurationError."""
    if queue_type not in QUEUE_TYPES:
        raise ConfigurationError(f"unknown queue type {queue_type!r}: choose quorum or classic")
    return queue_type


def dead_letter_queue_name(queue: str) -> str:
    """The dead-letter queue of work queue ``queue``."""
    return f"{queue}.dead-letter"


def retry_delay_s(attempt: int) -> float:
    """The nominal backoff before retry number ``attempt + 1``: exponential from 1 s, capped."""
    return min(RETRY_BASE_DELAY_S * 2 ** min(attempt, 64), RETRY_MAX_DELAY_S)


def delay_level_name(level: int) -> str:
    """The exchange and the queue of delay level ``level`` (they share the name)."""
    return f"{DELAY_LEVEL_PREFIX}{level}"


def delay_level_names() -> list[str]:
    """Every delay level's queue, the shortest first: the order a message goes up them."""
    return [delay_level_name(level) for level in range(DELAY_LEVELS)]


def delay_binding_key(level: int, bit: str) -> str:
    """The binding key of level ``level``'s exchange that matches a routing key whose bit for
    this level is ``bit``: the routing key's words are the delay's bits, highest level first."""
    return "*." * (DELAY_LEVELS - 1 - level) + bit + ".#"


def delay_levels() -> Topology:
    """The delay levels, shared by every work queue of a vhost.

    Level k is a topic exchange and a quorum queue, both ``rabbitry.delay.k``;
    the queue holds each message for 2**k seconds (its ``x-message-ttl``),
    then dead-letters it, at least once, to level k + 1's exchange. Each
    exchange looks at its own bit of the routing key: a 1 puts the message in
    its queue, a 0 passes it on (an exchange-to-exchange binding) to the next
    level up. Above the last level is the delivery exchange, where each work
    queue is bound under its own name (:func:`delay_delivery_binding`); what
    finds no work queue there goes to ``rabbitry.delay.unrouted``. Every
    message in one level's queue has the same TTL, so the queue expires in
    order and a short delay never waits behind a long one.

    A message goes up, its shortest level first, so that its hops come early
    and its longest wait last: tasks queued together with different delays
    hop at different moments, and a broker outage in the middle of a long
    delay seldom meets one of them (a hop due while the broker is down
    happens when it is back, and every later level counts from then).
    """
    exchanges = [
        Exchange(DELAY_UNROUTED, "fanout", durable=True),
        Exchange(DELAY_DELIVERY_EXCHANGE, "topic", durable=True, arguments={"alternate-exchange": DELAY_UNROUTED}),
    ]
    queues = [Queue(DELAY_UNROUTED, arguments={"x-queue-type": "quorum"})]
    bindings, passes = [Binding(DELAY_UNROUTED, DELAY_UNROUTED)], []
    for level in range(DELAY_LEVELS):
        last = level == DELAY_LEVELS - 1
        name, above = delay_level_name(level), DELAY_DELIVERY_EXCHANGE if last else delay_level_name(level + 1)
        exchanges.append(Exchange(name, "topic", durable=True))
        queues.append(
            Queue(
                name,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": 2**level * 1000,
                    "x-dead-letter-exchange": above,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
        bindings.append(Binding(name, name, delay_binding_key(level, "1")))
        passes.append(ExchangeBinding(name, above, delay_binding_key(level, "0")))
    return Topology(
        exchanges=tuple(exchanges), queues=tuple(queues), bindings=tuple(bindings), exchange_bindings=tuple(passes)
    )


def delay_delivery_binding(queue: str) -> Binding:
    """The binding that brings ``queue``'s delayed messages to it: every bit word, then its name."""
    return Binding(DELAY_DELIVERY_EXCHANGE, queue, "*." * DELAY_LEVELS + queue)


def work_queue_names(queue: str) -> list[str]:
    """The queues of work queue ``queue`` alone: itself and its dead-letter queue (the delay
    levels, which hold its delayed tasks and retries, are shared by every work queue)."""
    return [queue, dead_letter_queue_name(queue)]


def check_work_queue_name(queue: str) -> str:
    """Return ``queue`` if RabbitMQ accepts it as a work queue, else raise ConfigurationError.

    Names are AMQP short strings: at most 255 bytes of UTF-8, less what its
    queues and keys add: the dead-letter queue's suffix, and the delay bits
    before the name in the routing key of a delayed task. A word ``*`` or
    ``#`` would be a wildcard in the binding that delivers delayed tasks.
    """
    if not queue:
        raise ConfigurationError("a work queue needs a name")
    check_routing_key(queue, "queue name")  # valid UTF-8, at most 255 bytes
    prefix = delay_delivery_binding(queue).routing_key[: -len(queue)]
    room = MAX_SHORT_STRING_BYTES - len(prefix)
    if len(queue.encode()) > room:
        raise ConfigurationError(
            f"queue name is {len(queue.encode())} bytes long; a work queue's name can be at "
            f"most {room}, leaving room for the {DELAY_LEVELS} delay bits in front of it in "
            f"the routing key of a delayed task"
        )
    if {"*", "#"} & set(queue.split(".")):
        raise ConfigurationError(
            f"queue name {queue!r} has '*' or '#' as a word: a work queue's name is the "
            "binding key of its delayed tasks, where those are wildcards"
        )
    return queue


def work_queue(queue: str = DEFAULT_TASK_QUEUE, queue_type: str = DEFAULT_QUEUE_TYPE) -> Topology:
    """The durable task queue, its dead-letter queue, and the delay levels it shares.

    The task queue carries no argument but its type, exactly as the official
    tutorial declares it, so ``new_task.py`` and ``worker.py`` from the
    tutorial can share it. Dead-lettering is done by the worker, which
    republishes (with confirms) to the dead-letter exchange, adding the
    reason to the headers. Delayed tasks and retries wait in the delay levels.
    """
    check_queue_type(queue_type)
    typed = {"x-queue-type": queue_type}
    own = Topology(
        exchanges=(Exchange(DEAD_LETTER_EXCHANGE, "direct", durable=True),),
        queues=(Queue(queue, arguments=typed), Queue(dead_letter_queue_name(queue), arguments=typed)),
        bindings=(Binding(DEAD_LETTER_EXCHANGE, dead_letter_queue_name(queue), queue),),
    )
    delivery = Topology(bindings=(delay_delivery_binding(queue),))
    return own + delay_levels() + delivery


def schedule_lease_queue(schedule: str) -> str:
    """The queue whose one message, the lease, only the active scheduler of ``schedule`` holds."""
    return f"rabbitry.schedule.{schedule}.lease"


def schedule_ledger_queue(schedule: str, entry: str) -> str:
    """The queue that keeps the last tick queued for ``entry`` of ``schedule``."""
    return f"rabbitry.schedule.{schedule}.entry.{entry}"


def schedule_queues(schedule: str, entries) -> Topology:
    """A schedule's lease and its entries' ledgers.

    The lease queue is a single-active-consumer queue: every scheduler of the
    schedule consumes it, the broker delivers only to one of them, which holds
    the lease message unacknowledged for as long as its connection lives. Each
    ledger keeps one message (``x-max-length`` 1, the older dropped): a copy
    of the entry's last queued tick, routed there by the same publish that
    queued the task (its ``BCC`` header), so the two cannot disagree.
    """
    quorum = {"x-queue-type": "quorum"}
    return Topology(
        queues=(
            Queue(schedule_lease_queue(schedule), arguments={**quorum, "x-single-active-consumer": True}),
            *(
                Queue(schedule_ledger_queue(schedule, entry), arguments={**quorum, "x-max-length": 1})
                for entry in entries
            ),
        )
    )


def log_exchange(exchange_type: str = "topic", name: str | None = None, durable: bool = False) -> Exchange:
    """A log exchange; by default the tutorials' name for its type, not durable."""
    if exchange_type not in LOG_EXCHANGES:
        raise ConfigurationError(f"unknown exchange type {exchange_type!r}: choose one of {', '.join(EXCHANGE_TYPES)}")
    return Exchange(name or LOG_EXCHANGES[exchange_type], exchange_type, durable=durable)


#: A log exchange's history is kept in a stream named after it with this suffix.
HISTORY_SUFFIX = ".history"


def history_stream_name(exchange: str) -> str:
    """The stream that keeps the history of log exchange ``exchange`` (``topic_logs.history``)."""
    name = f"{exchange}{HISTORY_SUFFIX}"
    check_routing_key(name, "history stream name")  # a queue name: at most 255 bytes
    return name


def history_binding_keys(exchange_type: str, keys: tuple[str, ...] = ()) -> tuple[str, ...]:
    """What a history stream is bound with: every key of a topic (``#``) or fanout exchange; for a
    direct exchange, which routes by exact key only, the keys named (at least one)."""
    if exchange_type == "topic":
        return ("#",)
    if exchange_type == "fanout":
        return ("",)
    if not keys:
        raise ConfigurationError(
            "a direct exchange routes each key to its own bindings: name the keys whose "
            "history to keep, such as 'info warning error'"
        )
    for key in keys:
        check_routing_key(key, "binding key")
    return tuple(dict.fromkeys(keys))


def log_history(exchange: Exchange, arguments: dict[str, Any], keys: tuple[str, ...] = ()) -> Topology:
    """The log exchange, the stream that keeps its history (with ``arguments``, see
    :class:`~rabbitry.common.retention.Retention`) and the stream's bindings."""
    stream = history_stream_name(exchange.name)
    return Topology(
        exchanges=(exchange,),
        queues=(Queue(stream, durable=True, arguments=arguments),),
        bindings=tuple(Binding(exchange.name, stream, key) for key in history_binding_keys(exchange.type, keys)),
    )


def history_rebinding(exchange: Exchange) -> Topology:
    """The bindings of an existing history stream of a topic or fanout exchange, to declare again
    (a non-durable exchange loses them when the broker restarts); nothing for a direct one."""
    if exchange.type == "direct":
        return Topology()
    stream = history_stream_name(exchange.name)
    return Topology(bindings=tuple(Binding(exchange.name, stream, key) for key in history_binding_keys(exchange.type)))
