"""The type of a server's queue: ``classic`` (the default) or ``quorum``.

A quorum queue is RabbitMQ's replicated queue (Raft over the cluster's
nodes): it survives the loss of a minority of nodes, at the cost of writing
every message to a majority of them. It is declared durable with
``x-queue-type: quorum``. With dead letters, it also gets

- ``x-delivery-limit`` (``DeadLetterPolicy.delivery_limit``, default
  :data:`DEFAULT_DELIVERY_LIMIT`): RabbitMQ dead-letters a message that was
  returned to the queue more often than that, even one whose deliveries never
  ended (a server killed by it each time);
- ``x-dead-letter-strategy: at-least-once`` (which needs
  ``x-overflow: reject-publish``): RabbitMQ keeps a message it dead-letters
  until the dead-letter queue has it.

A cast whose handler failed goes back to its queue (a negative
acknowledgement with requeue) instead of through the retry queue: RabbitMQ
counts its deliveries in the ``x-delivery-count`` header, and that count is
the attempt (:func:`tavrida2.messages.attempt_in`). The retry delay does not
apply: the broker delivers it again at once. Only the server's queue has the
type: answers come back by direct reply-to, and an instance's broadcast queue
is auto-delete, which quorum queues cannot be; both stay classic.

RabbitMQ cannot change the type or the arguments of an existing queue: a
server that declares its queue otherwise than it exists gets
:class:`~tavrida2.exceptions.QueueTypeMismatch`, which says how to migrate.
"""

from __future__ import annotations

import re
from typing import Any

from tavrida2 import exceptions

CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
#: RabbitMQ's limit of a quorum queue's returns before it dead-letters a message
#: (``x-delivery-limit``), unless the dead-letter policy names another. The
#: server dead-letters a cast whose handler kept failing after ``max_attempts``
#: itself, with the reason; this limit ends the deliveries that never finish.
DEFAULT_DELIVERY_LIMIT = 20

# Arguments that only a quorum server queue of tavrida2's has.
_QUORUM_ONLY = ("x-queue-type", "x-overflow", "x-dead-letter-strategy", "x-delivery-limit")
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")


def check_queue_type(value: Any) -> str:
    """``value`` if it is a queue type; ``ConfigError`` naming the allowed ones otherwise."""
    if value not in QUEUE_TYPES:
        raise exceptions.ConfigError(
            reason=f"queue_type={value!r}: expected {' or '.join(map(repr, QUEUE_TYPES))}"
        )
    return str(value)


def queue_type_arguments(queue_type: str) -> dict[str, Any]:
    """The arguments that give a server queue its type (none for classic)."""
    return {"x-queue-type": QUORUM} if queue_type == QUORUM else {}


def mismatch(
    queue: str, queue_type: str, arguments: dict[str, Any], error: exceptions.PreconditionFailed
) -> exceptions.QueueTypeMismatch:
    """The error of a server queue that exists with other arguments than ``arguments``.

    RabbitMQ names the first argument that differs; when it is one that only
    quorum queues of tavrida2's have, the queue's type is what changed.
    """
    text = str(error.kwargs.get("reason", error))
    match = _INEQUIVALENT.search(text)
    argument = match.group(1) if match else ""
    other = CLASSIC if queue_type == QUORUM else QUORUM
    if argument in _QUORUM_ONLY and argument != "x-delivery-limit":
        found = f"it exists as a {other} queue and this server declares a {queue_type} queue"
    elif argument == "x-delivery-limit" and queue_type == QUORUM and "received none" not in text:
        found = "it exists with another x-delivery-limit (delivery_limit changed)"
    else:
        found = (
            f"it exists with other arguments (this server declares a {queue_type} queue "
            "with its dead-letter settings)"
        )
    wanted = ", ".join(f"{key}={value!r}" for key, value in sorted(arguments.items()))
    return exceptions.QueueTypeMismatch(
        name=queue,
        found=found,
        wanted=wanted or "no arguments",
        reason=text,
        queue_type=queue_type,
    )


__all__ = [
    "CLASSIC",
    "DEFAULT_DELIVERY_LIMIT",
    "QUEUE_TYPES",
    "QUORUM",
    "check_queue_type",
    "mismatch",
    "queue_type_arguments",
]
