"""Dead letters: what cannot be handled is kept, with the reason, and failing casts are retried.

Each server queue ``Q`` gets (names configurable):

- ``Q.dlx``, a durable direct exchange, and ``Q.dlq``, a durable queue bound to it:
  the dead-letter queue. ``Q`` names ``Q.dlx`` as its ``x-dead-letter-exchange``,
  so even a message the server rejects outright ends up there.
- ``Q.retry``, a durable queue nobody consumes: a cast waits there for its next
  attempt (per-message ``expiration``), then the broker dead-letters it back to
  ``Q`` through the default exchange.

A message that can never be handled (not JSON, missing headers, unknown service
or method, a payload that fails its schema) is published to ``Q.dlx`` at once;
a cast or notification whose handler raised is retried up to ``max_attempts``
times, ``retry_delay`` seconds after the first failure and twice as long after
each next one (at most ``retry_delay_max``), then dead-lettered. A handler that
raises one of Tavrida 1.0's *nackable* errors (``exceptions.NackableException``,
``BaseNackableException`` and their subclasses), which asked 1.0 to requeue the
message, gets it requeued as 1.0 did: at once, straight back to ``Q`` through
the default exchange, but counted like any retry and dead-lettered after
``max_attempts`` (1.0 requeued it for ever). The attempt
is counted in the ``x-tavrida2-attempt`` header; a dead letter carries
``x-tavrida2-reason``, ``-error-class``, ``-error-code``, ``-queue``, the
``-exchange`` and ``-routing-key`` it was first published to, and
``-dead-lettered-at`` (epoch ms). Only after that copy is confirmed is the
original acknowledged; if the copy cannot be published, the original is
rejected and the broker dead-letters it itself. Calls are not retried: their
caller gets an Error. Neither are broadcasts (a retry would reach one instance):
a failing one is dead-lettered at once.

On a quorum queue (:mod:`tavrida2.queuetypes`) a failing cast goes back to
``Q`` instead of ``Q.retry`` (which is not declared): RabbitMQ delivers it again
at once and counts the deliveries (``x-delivery-count``, the attempt); the
queue's ``x-delivery-limit`` (``delivery_limit``) lets RabbitMQ dead-letter to
``Q.dlx`` what was returned more often than that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tavrida2 import exceptions
from tavrida2.drivers.topology import BindingSpec, ExchangeSpec, QueueSpec
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import (
    ATTEMPT_HEADER,
    BROADCAST_HEADER,
    DELIVERY_COUNT_HEADER,
    AMQPMessage,
    attempt_in,
    fqcn,
)
from tavrida2.queuetypes import CLASSIC, DEFAULT_DELIVERY_LIMIT, QUORUM

_REASON_LIMIT = 500


@dataclass(frozen=True)
class DeadLetterPolicy:
    """Where a server's dead letters go, and how often a failing cast is tried.

    ``DeadLetterPolicy.for_queue("hello_queue")`` derives the names;
    ``max_attempts=1`` dead-letters a failing cast at once. ``delivery_limit``
    is the ``x-delivery-limit`` of a quorum queue (unused on a classic one).
    """

    exchange: str
    queue: str
    retry_queue: str
    max_attempts: int = 3
    retry_delay: float = 1.0
    retry_delay_max: float = 60.0
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT

    @classmethod
    def for_queue(
        cls,
        queue_name: str,
        exchange: str | None = None,
        queue: str | None = None,
        max_attempts: int = 3,
        retry_delay: float = 1.0,
        retry_delay_max: float = 60.0,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    ) -> DeadLetterPolicy:
        for name, count in (("max_attempts", max_attempts), ("delivery_limit", delivery_limit)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise exceptions.ConfigError(reason=f"{name}={count!r}: expected 1 or more")
        for name, value in (("retry_delay", retry_delay), ("retry_delay_max", retry_delay_max)):
            if not isinstance(value, int | float) or value < 0:
                raise exceptions.ConfigError(
                    reason=f"{name}={value!r}: expected a non-negative number of seconds"
                )
        return cls(
            exchange or f"{queue_name}.dlx",
            queue or f"{queue_name}.dlq",
            f"{queue_name}.retry",
            max_attempts,
            float(retry_delay),
            float(retry_delay_max),
            delivery_limit,
        )

    def check_quorum(self) -> None:
        """Refuse a ``delivery_limit`` that would end a quorum queue's deliveries too early."""
        if self.delivery_limit + 1 < self.max_attempts:
            raise exceptions.ConfigError(
                reason=f"delivery_limit={self.delivery_limit}: RabbitMQ delivers a message of "
                f"a quorum queue at most delivery_limit + 1 times, fewer than "
                f"max_attempts={self.max_attempts}; expected delivery_limit >= "
                f"{self.max_attempts - 1}"
            )

    def queue_arguments(self, queue_name: str, queue_type: str = CLASSIC) -> dict[str, Any]:
        """The arguments of the server queue: rejected messages go to the dead-letter exchange.

        A quorum queue also dead-letters what was returned more than
        ``delivery_limit`` times, and keeps it until the dead-letter queue has it.
        """
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.exchange,
            "x-dead-letter-routing-key": queue_name,
        }
        if queue_type == QUORUM:
            arguments.update(
                {
                    "x-delivery-limit": self.delivery_limit,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",  # what at-least-once needs
                }
            )
        return arguments

    def declarations(
        self, queue_name: str, queue_type: str = CLASSIC
    ) -> list[ExchangeSpec | QueueSpec | BindingSpec]:
        """The dead-letter exchange and queue, and (classic) the retry queue, of ``queue_name``.

        Dead letters of a quorum queue go to a quorum queue: they outlive the
        loss of a node as the messages did, and RabbitMQ's at-least-once
        dead-lettering needs its target up to hand them over.
        """
        dlq_type = (("x-queue-type", QUORUM),) if queue_type == QUORUM else ()
        declared: list[ExchangeSpec | QueueSpec | BindingSpec] = [
            ExchangeSpec(self.exchange, "direct"),
            QueueSpec(self.queue, arguments=dlq_type),
            BindingSpec(self.queue, self.exchange, queue_name),
        ]
        if queue_type != QUORUM:
            back = (("x-dead-letter-exchange", ""), ("x-dead-letter-routing-key", queue_name))
            declared.append(QueueSpec(self.retry_queue, arguments=back))
        return declared

    def last_attempt(self, queue_type: str = CLASSIC) -> int:
        """The attempt after which a failing cast is dead-lettered."""
        if queue_type == QUORUM:
            return min(self.max_attempts, self.delivery_limit + 1)
        return self.max_attempts

    def delay_ms(self, attempt: int) -> int:
        """Milliseconds before the attempt after ``attempt`` (1, 2, ...)."""
        seconds = min(self.retry_delay_max, self.retry_delay * 2 ** (attempt - 1))
        return max(1, int(seconds * 1000))


class DeadLetters:
    """Builds the dead letters and retries of one server queue (see the module docstring).

    The engines publish what :meth:`after_failure` and :meth:`unhandleable`
    return, each with their own driver, and acknowledge the original once it
    is confirmed; on a quorum queue, :meth:`after_failure` returns None for a
    cast to give back to the queue (requeue), which the broker delivers again.
    """

    def __init__(
        self, policy: DeadLetterPolicy, queue_name: str, queue_type: str = CLASSIC
    ) -> None:
        self.policy = policy
        self.queue_name = queue_name
        self.queue_type = queue_type
        #: The attempt after which a failing cast is dead-lettered.
        self.last_attempt = policy.last_attempt(queue_type)

    def unhandleable(
        self, message: AMQPMessage, error: BaseException
    ) -> tuple[str, str, AMQPMessage]:
        """``(exchange, routing_key, copy)``: the dead letter of an unhandleable message."""
        return self._dead_letter(message, f"cannot be handled: {error}", error)

    def after_failure(
        self, message: AMQPMessage, error: BaseException
    ) -> tuple[str, str, AMQPMessage, bool] | None:
        """``(exchange, routing_key, copy, retried)`` for a cast whose handler failed.

        A failure that can never succeed (a caller's mistake: bad parameters,
        a payload that fails its schema) is dead-lettered at once; a nackable
        one (Tavrida 1.0's request to requeue) is retried without delay, with
        the copy published straight to the queue (its ``expiration`` None).
        None: on a quorum queue, give the delivery back to the queue for its
        next attempt.
        """
        cause = error.__cause__ if isinstance(error, exceptions.HandlerFailed) else error
        attempt = attempt_in(message.headers)
        # a retry would go through the server queue, to one instance only
        broadcast = BROADCAST_HEADER in message.headers
        hopeless = isinstance(cause, exceptions.AckableException) or broadcast
        if hopeless or attempt >= self.last_attempt:
            reason = (
                f"handler failed ({cause})"
                if hopeless
                else f"handler failed {attempt} time(s), last: {cause}"
            )
            if broadcast:
                reason = f"broadcast handler failed (broadcasts are not retried): {cause}"
            return (*self._dead_letter(message, reason, cause or error), False)
        if self.queue_type == QUORUM:
            return None
        headers = self._origin_headers(message)
        headers[ATTEMPT_HEADER] = attempt + 1
        if isinstance(cause, exceptions.NackableException):
            return "", self.queue_name, AMQPMessage(message.body, headers), True
        retry = AMQPMessage(message.body, headers, expiration=str(self.policy.delay_ms(attempt)))
        return "", self.policy.retry_queue, retry, True

    def _dead_letter(
        self, message: AMQPMessage, reason: str, error: BaseException
    ) -> tuple[str, str, AMQPMessage]:
        headers = self._origin_headers(message)
        text = mask_url_passwords(reason)
        headers.update(
            {
                "x-tavrida2-reason": text[:_REASON_LIMIT],
                "x-tavrida2-error-class": fqcn(error),
                "x-tavrida2-error-code": exceptions.error_code(error)
                if isinstance(error, Exception)
                else exceptions.UNKNOWN_ERROR,
                "x-tavrida2-queue": self.queue_name,
                "x-tavrida2-dead-lettered-at": int(time.time() * 1000),
            }
        )
        return self.policy.exchange, self.queue_name, AMQPMessage(message.body, headers)

    @staticmethod
    def _origin_headers(message: AMQPMessage) -> dict[str, Any]:
        """The headers, with where the message was first published (kept across retries).

        The broker's delivery count of a quorum queue becomes tavrida2's attempt
        header: a copy is a new message, which the broker counts afresh.
        """
        headers = dict(message.headers) if isinstance(message.headers, dict) else {}
        if DELIVERY_COUNT_HEADER in headers:
            headers[ATTEMPT_HEADER] = attempt_in(headers)
            del headers[DELIVERY_COUNT_HEADER]
        headers.setdefault("x-tavrida2-exchange", message.exchange)
        headers.setdefault("x-tavrida2-routing-key", message.routing_key)
        return headers


__all__ = ["DeadLetterPolicy", "DeadLetters"]
