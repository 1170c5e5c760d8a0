"""AMQP routing rules, as RabbitMQ applies them.

A topic key is a list of words separated by dots. In a binding key, ``*``
stands for exactly one word and ``#`` for zero or more words; either is a
wildcard only when it is a whole word (``a#b`` is the literal word ``a#b``).
Words may be empty (``a..b`` has three words), and the empty key has no
words at all, so ``#`` matches it and ``*`` does not.
"""

from rabbitry.common.errors import InvalidRoutingKey
from rabbitry.common.transport.wire_limits import check_short_string


def _words(key: str) -> list[str]:
    return key.split(".") if key else []


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """True if a topic exchange routes ``routing_key`` to a ``binding_key`` binding."""
    pattern, words = _words(binding_key), _words(routing_key)

    def closure(positions: set[int]) -> set[int]:
        # '#' may match zero words: a position on a '#' also stands after it.
        todo, seen = list(positions), set(positions)
        while todo:
            position = todo.pop()
            if position < len(pattern) and pattern[position] == "#" and position + 1 not in seen:
                seen.add(position + 1)
                todo.append(position + 1)
        return seen

    positions = closure({0})
    for word in words:
        advanced = set()
        for position in positions:
            if position == len(pattern):
                continue
            token = pattern[position]
            if token == "#":
                advanced.add(position)
            elif token == "*" or token == word:
                advanced.add(position + 1)
        if not advanced:
            return False
        positions = closure(advanced)
    return len(pattern) in positions


def binding_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """True if an exchange of ``exchange_type`` routes ``routing_key`` along a ``binding_key`` binding."""
    if exchange_type == "fanout":
        return True
    if exchange_type == "direct":
        return binding_key == routing_key
    return topic_matches(binding_key, routing_key)


def check_routing_key(key: str, what: str = "routing key") -> str:
    """Return ``key`` if RabbitMQ accepts it: valid UTF-8, at most 255 bytes."""
    return check_short_string(key, what, InvalidRoutingKey, from_command_line=True)


def literal_wildcards(binding_key: str) -> list[str]:
    """Words of a binding key that contain ``*`` or ``#`` without being wildcards.

    RabbitMQ accepts them, as literal text, but they are usually a mistake
    (``kern*`` for ``kern.*``), so commands warn about them.
    """
    return [w for w in _words(binding_key) if w not in ("*", "#") and ("*" in w or "#" in w)]
