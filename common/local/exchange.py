"""Routing in the in-process broker: exchanges, their bindings, and where a key goes.

An exchange stores no messages: it names the queues a routing key reaches,
by RabbitMQ's rules for its type (:func:`rabbitry.common.transport.routing.binding_matches`),
each queue at most once. The queues keep the messages
(:mod:`rabbitry.common.local.queue`), and :mod:`rabbitry.common.local.broker`
joins the two, as kombu's ``virtual/exchange.py`` and ``memory.py`` do.
"""

from dataclasses import dataclass, field

from rabbitry.common.local.refusals import ACCESS_REFUSED, COMMAND_INVALID, PRECONDITION_FAILED, refused
from rabbitry.common.transport.routing import binding_matches

EXCHANGE_TYPES = ("direct", "fanout", "topic")
#: Exchanges every RabbitMQ vhost has (amq.headers aside: rabbitry routes no headers).
PREDECLARED_EXCHANGES = {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic"}
#: Routing keys whose queues an exchange remembers; past that it starts afresh.
_ROUTE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class BoundQueue:
    """One binding of an exchange: the queue, and the binding key it was bound with."""

    queue: str
    binding_key: str


@dataclass(eq=False)
class LocalExchange:
    """An exchange and its bindings."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    bindings: list[BoundQueue] = field(default_factory=list)
    #: Where what this exchange routes nowhere goes instead (``alternate-exchange``).
    alternate: str | None = None
    #: Exchange-to-exchange bindings: each destination exchange (in ``queue``) and its key.
    exchange_bindings: list[BoundQueue] = field(default_factory=list)
    _route_cache: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def declared(
        cls, name: str, kind: str, durable: bool, auto_delete: bool, alternate: str | None = None
    ) -> "LocalExchange":
        """A new exchange, as exchange.declare makes one; refused for an unknown type or a reserved name."""
        if kind not in EXCHANGE_TYPES:
            raise refused(COMMAND_INVALID, f"invalid exchange type '{kind}'")
        if name.startswith("amq."):
            raise refused(ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'")
        return cls(name, kind, durable, auto_delete, alternate=alternate)

    def check_equivalent(self, kind: str, durable: bool, auto_delete: bool) -> None:
        """PRECONDITION_FAILED unless a new declaration matches this exchange."""
        if (self.type, self.durable, self.auto_delete) != (kind, durable, auto_delete):
            raise refused(
                PRECONDITION_FAILED,
                f"inequivalent arg for exchange '{self.name}': declared as "
                f"{self.type} (durable={self.durable}, auto_delete={self.auto_delete})",
            )

    def route(self, routing_key: str) -> list[str]:
        """Names of the queues a message with ``routing_key`` goes to, each once."""
        # Topic matching costs most, and logs repeat their keys: remember the answers.
        cached = self._route_cache.get(routing_key)
        if cached is None:
            if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            cached = list(
                dict.fromkeys(
                    bound.queue for bound in self.bindings if binding_matches(self.type, bound.binding_key, routing_key)
                )
            )
            self._route_cache[routing_key] = cached
        return cached

    def passes(self, routing_key: str) -> list[str]:
        """Names of the exchanges bound to this one that a message with ``routing_key`` goes on to."""
        return [
            bound.queue
            for bound in self.exchange_bindings
            if binding_matches(self.type, bound.binding_key, routing_key)
        ]

    def bind_exchange(self, destination: str, binding_key: str) -> None:
        """Bind exchange ``destination`` under ``binding_key`` (binding twice changes nothing)."""
        bound = BoundQueue(destination, binding_key)
        if bound not in self.exchange_bindings:
            self.exchange_bindings.append(bound)

    def unbind_exchange(self, destination: str) -> None:
        """Remove every binding of exchange ``destination``."""
        self.exchange_bindings = [bound for bound in self.exchange_bindings if bound.queue != destination]

    def bind(self, queue: str, binding_key: str) -> None:
        """Bind ``queue`` under ``binding_key`` (binding twice changes nothing)."""
        bound = BoundQueue(queue, binding_key)
        if bound not in self.bindings:
            self.bindings.append(bound)
            self._route_cache.clear()

    def unbind(self, queue: str, binding_key: str) -> None:
        """Remove the binding of ``queue`` under ``binding_key``, if there is one."""
        bound = BoundQueue(queue, binding_key)
        if bound in self.bindings:
            self.bindings.remove(bound)
            self._route_cache.clear()

    def binding_keys(self, queue: str) -> list[str]:
        """The keys ``queue`` is bound under, in the order they were bound."""
        return [bound.binding_key for bound in self.bindings if bound.queue == queue]

    def binds(self, queue: str) -> bool:
        """Whether ``queue`` is bound to this exchange."""
        return any(bound.queue == queue for bound in self.bindings)

    def unbind_queue(self, queue: str) -> None:
        """Remove every binding of ``queue``."""
        self.bindings = [bound for bound in self.bindings if bound.queue != queue]
        self._route_cache.clear()


def predeclared_exchanges() -> dict[str, LocalExchange]:
    """The exchanges a new broker starts with, by name."""
    return {name: LocalExchange(name, kind, durable=True) for name, kind in PREDECLARED_EXCHANGES.items()}
