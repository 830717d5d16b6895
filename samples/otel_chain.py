"""OpenTelemetry: a chain of three services is one trace (needs ``tavrida2[otel]`` and the SDK).

A script calls ``test_hello.hello``; Hello calls ``test_world.world`` and waits
for the answer, World calls ``test_chuck.chuck`` the same way. Every server and
the client run with ``otel=True``: each message sent gets a span (CLIENT for a
call), each message handled a span (SERVER for a call) whose parent is the
span that sent it, found by the ``traceparent`` header the message carries.
The spans go to the global TracerProvider, set up here with the SDK and an
in-memory exporter, and are printed as a tree at the end. Hello runs on the
async engine (an ``async def`` handler), World and Chuck on the sync one.

Run (``pip install 'tavrida2[otel]' opentelemetry-sdk`` first)::

    python samples/otel_chain.py
    python samples/otel_chain.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tavrida2 import client, config, discovery, dispatcher, server, service

EXCHANGES = {"test_hello": "otel_hello", "test_world": "otel_world", "test_chuck": "otel_chuck"}


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(method="hello")
    async def hello(self, request, proxy, name):
        # the call's span is a child of this handler's span: the context is the task's
        answer = await proxy.test_world.world(name=name).call(wait=True, timeout=10)
        return {"greeting": f"hello, {answer.payload['greeting']}"}


@dispatcher.rpc_service("test_world")
class WorldController(service.ServiceController):
    @dispatcher.rpc_method(method="world")
    def world(self, request, proxy, name):
        answer = proxy.test_chuck.chuck(name=name).call(wait=True, timeout=10)
        return {"greeting": f"world, {answer.payload['greeting']}"}


@dispatcher.rpc_service("test_chuck")
class ChuckController(service.ServiceController):
    @dispatcher.rpc_method(method="chuck")
    def chuck(self, request, proxy, name):
        # the handler's span is the current one: add to it, or start spans under it
        trace.get_current_span().set_attribute("app.name", name)
        return {"greeting": f"chuck says hi to {name}"}


def discovery_of(*services: str) -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    for name in services:
        disc.register_remote_service(name, EXCHANGES[name])
    return disc


def print_tree(spans: list[ReadableSpan]) -> bool:
    """Print the spans of each trace under their parents; True if there is one trace."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)

    def show(span: ReadableSpan, depth: int) -> None:
        exchange = (span.attributes or {}).get("messaging.destination.name")
        where = f" exchange={exchange}" if exchange is not None else ""
        print(f"{'  ' * depth}{span.name} ({span.kind.name}){where}")
        assert span.context is not None
        for child in children.get(span.context.span_id, []):
            show(child, depth + 1)

    roots = children.get(None, [])
    for root in roots:
        assert root.context is not None
        print(f"trace {root.context.trace_id:032x}: {len(spans)} spans")
        show(root, 0)
    return len(roots) == 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://otel", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    HelloController.set_discovery(discovery_of("test_world"))
    WorldController.set_discovery(discovery_of("test_chuck"))
    ChuckController.set_discovery(discovery_of())
    servers = [
        server.Server(
            config.ConnectionConfig.from_url(args.url, async_engine=cls is HelloController),
            queue_name=f"{EXCHANGES[cls.service_name]}_queue",
            exchange_name=EXCHANGES[cls.service_name],
            service_list=[cls],
            otel=True,
        )
        for cls in (HelloController, WorldController, ChuckController)
    ]
    threads = server.run_servers(servers)
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        tracer = trace.get_tracer("sample")
        with (
            client.RPCClient(conf, discovery_of("test_hello"), source="script", otel=True) as cli,
            tracer.start_as_current_span("script"),
        ):
            answer = cli.test_hello.hello(name="ann").call(timeout=10)
        print(f"client: {answer.payload['greeting']}")
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(timeout=5)
    one_trace = print_tree(list(exporter.get_finished_spans()))
    ok = one_trace and len(exporter.get_finished_spans()) == 7
    print("done: one trace, each hop under the one before" if ok else "FAILED: not one trace")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
