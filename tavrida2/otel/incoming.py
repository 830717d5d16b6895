"""A span per delivery a server handles, current while its handlers run.

The span's parent is the context the message carries (``traceparent``); a
message without one, or with one that does not parse, starts a new trace.
Its kind is SERVER for a request whose sender waits for the answer, CONSUMER
for everything else (casts, notifications, answers to a service's response
handlers). It ends once the delivery's disposition is decided.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import AsyncDeliveryCallback, DeliveryCallback, Disposition
from tavrida2.messages import AMQPMessage
from tavrida2.otel import attributes as attr
from tavrida2.otel.carrier import extract
from tavrida2.otel.settings import Telemetry
from tavrida2.otel.status import mark_failed

_HANDLING = context.create_key("tavrida2-handling")


class Handling:
    """The span of the delivery being handled, and the failure recorded on it."""

    __slots__ = ("recorded", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.recorded: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        """Mark the span failed by ``error``, once (the engine and an Error answer both tell)."""
        if error is self.recorded:
            return
        self.recorded = error
        mark_failed(self.span, error)


def current_handling() -> Handling | None:
    """The delivery being handled in this thread or task, if it is traced."""
    value = context.get_value(_HANDLING)
    return value if isinstance(value, Handling) else None


def report_failure(error: Exception) -> None:
    """The delivery in hand could not be handled: its span says so."""
    handling = current_handling()
    if handling is not None:
        handling.fail(error)


class FailedSpans:
    """The engine's :class:`~tavrida2.engine.DeliveryEvents` of a traced server.

    A delivery no handler took, or whose handler raised, marks the span of
    the delivery in hand as failed; retries and dead letters follow from that
    and add nothing to it.
    """

    def unhandleable(self, error: Exception) -> None:
        report_failure(error)

    def failed(self, error: Exception) -> None:
        report_failure(error)

    def retried(self) -> None:
        pass

    def dead_lettered(self, reason: str) -> None:
        pass


class DeliveryTracing:
    """Wraps a server engine's ``on_delivery`` in a span per delivery."""

    def __init__(self, telemetry: Telemetry, config: ConnectionConfig) -> None:
        self._telemetry = telemetry
        self._attributes = {
            **attr.connection_attributes(config),
            attr.OPERATION_TYPE: attr.PROCESS,
            attr.OPERATION_NAME: attr.PROCESS,
        }

    def _start(self, amqp_message: AMQPMessage) -> tuple[Handling, Context]:
        headers: Any = amqp_message.headers
        parent = extract(self._telemetry.propagator, headers)
        if not isinstance(headers, dict):
            headers = {}
        waited = headers.get("message_type") == "request" and bool(
            headers.get("reply_to") or amqp_message.reply_to
        )
        attributes = dict(self._attributes)
        attributes.update(attr.message_attributes(headers))
        attributes[attr.DESTINATION] = amqp_message.exchange
        routing_key = amqp_message.routing_key or _entry_point(headers)
        if routing_key:
            attributes[attr.ROUTING_KEY] = routing_key
        if isinstance(amqp_message.body, bytes | bytearray | str):
            attributes[attr.BODY_SIZE] = len(amqp_message.body)
        span = self._telemetry.tracer.start_span(
            f"{attr.PROCESS} {routing_key}".rstrip(),
            parent,
            SpanKind.SERVER if waited else SpanKind.CONSUMER,
            attributes,
        )
        handling = Handling(span)
        current = context.set_value(_HANDLING, handling, trace.set_span_in_context(span, parent))
        return handling, current

    @contextlib.contextmanager
    def _handling(self, amqp_message: AMQPMessage) -> Iterator[None]:
        """The delivery's span, current while the engine handles it; ended after."""
        handling, current = self._start(amqp_message)
        token = context.attach(current)
        try:
            yield
        except BaseException as exc:
            handling.fail(exc)
            raise
        finally:
            context.detach(token)
            handling.span.end()

    def wrap_sync(self, on_delivery: DeliveryCallback) -> DeliveryCallback:
        """The sync engine's ``on_delivery``, each call in its span."""

        def traced(amqp_message: AMQPMessage) -> Disposition:
            with self._handling(amqp_message):
                return on_delivery(amqp_message)

        return traced

    def wrap_async(self, on_delivery: AsyncDeliveryCallback) -> AsyncDeliveryCallback:
        """The async engine's ``on_delivery``: its task runs in the span's context."""

        async def traced(amqp_message: AMQPMessage) -> Disposition:
            with self._handling(amqp_message):
                return await on_delivery(amqp_message)

        return traced


def _entry_point(headers: dict[str, Any]) -> str:
    """Where a message goes by its headers: a notification's source, else its destination."""
    key = "source" if headers.get("message_type") == "notification" else "destination"
    value = headers.get(key)
    return value if isinstance(value, str) else ""


__all__ = ["DeliveryTracing", "FailedSpans", "Handling", "current_handling", "report_failure"]
