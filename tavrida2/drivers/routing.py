"""Topic exchange matching, exactly as RabbitMQ does it.

Keys are split on ``.`` into words; the empty key has no words (``"a."`` has
two: ``a`` and the empty word). In a binding key ``*`` matches exactly one
word and ``#`` zero or more.
"""

from __future__ import annotations

from functools import lru_cache


def split_key(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


@lru_cache(maxsize=65536)
def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether a topic binding with ``binding_key`` takes ``routing_key``."""
    words = split_key(routing_key)
    count = len(words)
    reachable = {0}  # positions in words reachable after the pattern words seen so far
    for token in split_key(binding_key):
        if token == "#":
            reachable = set(range(min(reachable), count + 1))
        elif token == "*":
            reachable = {i + 1 for i in reachable if i < count}
        else:
            reachable = {i + 1 for i in reachable if i < count and words[i] == token}
        if not reachable:
            return False
    return count in reachable


def matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether a binding of an exchange of ``exchange_type`` takes ``routing_key``."""
    if exchange_type == "topic":
        return topic_matches(binding_key, routing_key)
    if exchange_type == "direct":
        return binding_key == routing_key
    if exchange_type == "fanout":
        return True
    raise ValueError(f"exchange type {exchange_type!r} is not supported")


__all__ = ["matches", "split_key", "topic_matches"]
