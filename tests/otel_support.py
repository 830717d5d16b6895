"""Shared by the OpenTelemetry tests (memory broker and RabbitMQ): the services, the spans.

The chain: a script calls ``test_hello.hello``, whose handler calls
``test_world.world``, whose handler calls ``test_chuck.chuck``; every call waits
(``call(wait=True)``). On the async engine ``hello`` is an ``async def``
handler (awaited in the delivery's task) and ``world`` a plain one (run in an
executor thread), so both ways a handler runs carry the context on.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tavrida2 import discovery, dispatcher, service
from tavrida2.otel import Telemetry

SECRET_URL = "amqp://app:letmein@db.internal/"


def in_memory_telemetry() -> tuple[Telemetry, InMemorySpanExporter, TracerProvider]:
    """A Telemetry whose spans end up in an in-memory exporter (the global propagator)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Telemetry(tracer_provider=provider), exporter, provider


def chain_services(
    is_async: bool, exchanges: dict[str, str], seen: list[dict[str, Any]] | None = None
) -> list[type[service.ServiceController]]:
    """Hello -> World -> Chuck (see the module); ``exchanges`` maps each service to its exchange.

    ``seen`` gets the headers of every request Chuck handles.
    """
    seen = seen if seen is not None else []
    lock = threading.Lock()

    def discovery_of(*names: str) -> discovery.LocalDiscovery:
        disc = discovery.LocalDiscovery()
        for name in names:
            disc.register_remote_service(name, exchanges[name])
        return disc

    @dispatcher.rpc_service("test_chuck")
    class Chuck(service.ServiceController):
        @dispatcher.rpc_method(method="chuck")
        def chuck(self, request, proxy, n):
            with lock:
                seen.append(dict(request.headers))
            return {"n": n + 1}

        @dispatcher.rpc_method(method="fail")
        def fail(self, request, proxy, n):
            raise ValueError(f"no chuck for {n} at {SECRET_URL}")

        @dispatcher.rpc_method(method="note")
        def note(self, request, proxy, n):
            with lock:
                seen.append(dict(request.headers))

        @dispatcher.rpc_method(method="explode")
        def explode(self, request, proxy, n):
            raise KeyError(n)

    @dispatcher.rpc_service("test_world")
    class World(service.ServiceController):
        @dispatcher.rpc_method(method="world")
        def world(self, request, proxy, n):
            answer = proxy.test_chuck.chuck(n=n + 1).call(wait=True, timeout=10)
            return {"n": answer.payload["n"]}

    if is_async:

        @dispatcher.rpc_service("test_hello")
        class Hello(service.ServiceController):
            @dispatcher.rpc_method(method="hello")
            async def hello(self, request, proxy, n):
                answer = await proxy.test_world.world(n=n + 1).call(wait=True, timeout=10)
                return {"n": answer.payload["n"]}

    else:

        @dispatcher.rpc_service("test_hello")
        class Hello(service.ServiceController):  # type: ignore[no-redef]
            @dispatcher.rpc_method(method="hello")
            def hello(self, request, proxy, n):
                answer = proxy.test_world.world(n=n + 1).call(wait=True, timeout=10)
                return {"n": answer.payload["n"]}

    Hello.set_discovery(discovery_of("test_world"))
    World.set_discovery(discovery_of("test_chuck"))
    Chuck.set_discovery(discovery_of())
    return [Hello, World, Chuck]


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    """The one span called ``name`` of ``kind``."""
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, f"{name} ({kind}): {[(s.name, s.kind) for s in spans]}"
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def assert_chain(
    spans: list[ReadableSpan], root: ReadableSpan, exchanges: dict[str, str], correlation_id: str
) -> None:
    """The chain's spans: one trace under ``root``, each hop the child of the one before.

    script -> send test_hello.hello (CLIENT) -> process test_hello.hello (SERVER)
    -> send test_world.world (CLIENT) -> process test_world.world (SERVER)
    -> send test_chuck.chuck (CLIENT) -> process test_chuck.chuck (SERVER).
    """
    expected = [root]
    for hop in ("test_hello.hello", "test_world.world", "test_chuck.chuck"):
        expected.append(one(spans, f"send {hop}", SpanKind.CLIENT))
        expected.append(one(spans, f"process {hop}", SpanKind.SERVER))
    assert len(spans) == len(expected), [(s.name, s.kind) for s in spans]
    assert {trace_id(s) for s in spans} == {trace_id(root)}
    for parent, child in itertools.pairwise(expected):
        assert parent_of(child) == span_id(parent), f"{child.name} under {parent.name}"
        assert child.status.status_code is StatusCode.UNSET
    for sent, processed in zip(expected[1::2], expected[2::2], strict=True):
        service_name = processed.name.split()[1].split(".")[0]
        for span in (sent, processed):
            attributes = dict(span.attributes or {})
            assert attributes["messaging.system"] == "rabbitmq"
            assert attributes["messaging.destination.name"] == exchanges[service_name]
            assert attributes["messaging.rabbitmq.destination.routing_key"] == span.name.split()[1]
            assert attributes["messaging.message.conversation_id"] == correlation_id
            assert attributes["tavrida2.message_type"] == "request"
            assert attributes["messaging.message.body.size"] > 0
        assert sent.attributes is not None and processed.attributes is not None
        assert sent.attributes["messaging.operation.type"] == "send"
        assert processed.attributes["messaging.operation.type"] == "process"
        # the span of the sender and of the receiver name the same message
        for key in ("messaging.message.id", "tavrida2.request_id", "tavrida2.source"):
            assert sent.attributes[key] == processed.attributes[key]


def wait_for_spans(
    exporter: InMemorySpanExporter,
    count: int,
    wait: Callable[[Callable[[], Any], str], Any],
) -> list[ReadableSpan]:
    """The finished spans, once there are ``count`` of them."""
    wait(lambda: len(exporter.get_finished_spans()) >= count, f"{count} spans")
    return list(exporter.get_finished_spans())
