"""A span per message a server or client sends, and the trace context in its headers.

Requests get a CLIENT span when an answer is expected (``call()``, also
Tavrida 1.0's call whose answer goes to a response handler) and a PRODUCER
span otherwise (casts, broadcasts, notifications). The span is the parent
of what the message sets off: its context is what the message's
``traceparent`` carries. A call that waits has its span end when the answer
came (or the wait failed); other sends when the publish returned, or, when
it returned a future or a coroutine, once that is done. Answers (responses,
errors) get no span of their own: they carry the handler's span, and an
Error answer marks that span failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Callable, Coroutine
from contextvars import Token
from typing import Any

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tavrida2.config import ConnectionConfig
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.messages import AMQPMessage, Error, Message, MessageType, Request
from tavrida2.otel import attributes as attr
from tavrida2.otel.carrier import inject
from tavrida2.otel.incoming import current_handling
from tavrida2.otel.settings import Telemetry
from tavrida2.otel.status import mark_failed
from tavrida2.postprocessor import Calls, PostProcessor, Publisher

_SENDING = context.create_key("tavrida2-sending")

Future = asyncio.Future[Any] | concurrent.futures.Future[Any]


def send_kind(message: Message) -> SpanKind | None:
    """The kind of a message's span; None for answers, which have none."""
    kind = message.message_type
    if kind == MessageType.REQUEST:
        return SpanKind.CLIENT if message.headers.get("reply_to") else SpanKind.PRODUCER
    if kind == MessageType.NOTIFICATION:
        return SpanKind.PRODUCER
    return None


class TracedPostProcessor(PostProcessor):
    """A :class:`PostProcessor` that traces what it sends (see the module)."""

    def __init__(
        self,
        driver: Publisher,
        discovery: AbstractDiscovery,
        calls: Calls | None = None,
        *,
        telemetry: Telemetry,
        config: ConnectionConfig,
    ) -> None:
        super().__init__(driver, discovery, calls)
        self._telemetry = telemetry
        self._attributes = {
            **attr.connection_attributes(config),
            attr.OPERATION_TYPE: attr.SEND,
            attr.OPERATION_NAME: attr.SEND,
        }

    def _wire(self, message_obj: Message) -> tuple[str, str, bool, AMQPMessage]:
        inject(self._telemetry.propagator, message_obj.headers)
        exchange, routing_key, mandatory, amqp_message = super()._wire(message_obj)
        sending = context.get_value(_SENDING)
        if isinstance(sending, Span):
            sending.set_attribute(attr.DESTINATION, exchange)
            if routing_key:
                sending.set_attribute(attr.ROUTING_KEY, routing_key)
            if isinstance(amqp_message.body, bytes):
                sending.set_attribute(attr.BODY_SIZE, len(amqp_message.body))
        elif isinstance(message_obj, Error):
            handling = current_handling()
            if handling is not None:
                handling.fail(message_obj.exception)
        return exchange, routing_key, mandatory, amqp_message

    def _start(self, message: Message, kind: SpanKind) -> tuple[Span, Token[Context]]:
        """Open the span of ``message`` and make it current (the caller detaches it)."""
        attributes = dict(self._attributes)
        attributes.update(attr.message_attributes(message.headers))
        span = self._telemetry.tracer.start_span(
            f"{attr.SEND} {_target(message)}".rstrip(), None, kind, attributes
        )
        current = context.set_value(_SENDING, span, trace.set_span_in_context(span))
        return span, context.attach(current)

    def _traced(self, message: Message, kind: SpanKind | None, send: Callable[[], Any]) -> Any:
        if kind is None:
            return send()
        span, token = self._start(message, kind)
        try:
            result = send()
        except BaseException as exc:
            mark_failed(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _end_when_done(span, result)

    def process(self, message_obj: Message) -> Any:
        send = functools.partial(PostProcessor.process, self, message_obj)
        return self._traced(message_obj, send_kind(message_obj), send)

    def process_async(self, message_obj: Message) -> Any:
        send = functools.partial(PostProcessor.process_async, self, message_obj)
        return self._traced(message_obj, send_kind(message_obj), send)

    async def send(self, message_obj: Message) -> None:
        kind = send_kind(message_obj)
        if kind is None:
            await super().send(message_obj)
            return
        span, token = self._start(message_obj, kind)
        try:
            await super().send(message_obj)
        except BaseException as exc:
            mark_failed(span, exc)
            raise
        finally:
            context.detach(token)
            span.end()

    def call(self, request: Request, timeout: float) -> Any:
        send = functools.partial(PostProcessor.call, self, request, timeout)
        return self._traced(request, SpanKind.CLIENT, send)

    def start_call(self, request: Request, timeout: float) -> Any:
        send = functools.partial(PostProcessor.start_call, self, request, timeout)
        return self._traced(request, SpanKind.CLIENT, send)


def _target(message: Message) -> str:
    """The entry point a message is routed by: a notification's source, else its destination."""
    key = "source" if message.message_type == MessageType.NOTIFICATION else "destination"
    value = message.headers.get(key)
    return value if isinstance(value, str) else ""


def _end_when_done(span: Span, result: Any) -> Any:
    """End ``span`` now, or when the future or coroutine ``result`` is done."""
    if isinstance(result, asyncio.Future | concurrent.futures.Future):
        result.add_done_callback(lambda future: _end_with(span, future))
        return result
    if inspect.iscoroutine(result):
        return _awaited(span, result)
    span.end()
    return result


def _end_with(span: Span, future: Future) -> None:
    if future.cancelled():
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
    else:
        error = future.exception()
        if error is not None:
            mark_failed(span, error)
    span.end()


async def _awaited(span: Span, coroutine: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coroutine
    except BaseException as exc:
        mark_failed(span, exc)
        raise
    finally:
        span.end()


__all__ = ["TracedPostProcessor", "send_kind"]
