"""OpenTelemetry over the real RabbitMQ: the trace context survives AMQP's header tables.

The chain Hello -> World -> Chuck of :mod:`tests.otel_support`, three servers
on one engine (sync or async) and a script's ``RPCClient``, is one trace with
each hop the child of the one before; a cast published by a foreign peer with
plain pika continues the trace its ``traceparent`` names, or, with a broken
one, starts a new trace.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tavrida2 import client, discovery, server
from tests.integration.conftest import ENGINES, WAIT, Names, Servers, amqp_config, wait_until
from tests.otel_support import (
    assert_chain,
    chain_services,
    in_memory_telemetry,
    one,
    parent_of,
    trace_id,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

GOOD_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Chain:
    """The three servers of the chain on ``async_engine``, traced into one exporter."""

    def __init__(self, async_engine: bool, names: Names, servers: Servers) -> None:
        self.telemetry, self.exporter, self.provider = in_memory_telemetry()
        self.exchanges = {n: names.exchange(n) for n in ("test_hello", "test_world", "test_chuck")}
        self.seen: list[dict] = []
        classes = chain_services(async_engine, self.exchanges, self.seen)
        servers.start(
            *(
                server.Server(
                    amqp_config(async_engine),
                    names.queue(cls.service_name),
                    self.exchanges[cls.service_name],
                    [cls],
                    otel=self.telemetry,
                )
                for cls in classes
            )
        )

    def discovery(self) -> discovery.LocalDiscovery:
        disc = discovery.LocalDiscovery()
        disc.register_remote_service("test_hello", self.exchanges["test_hello"])
        return disc

    def spans(self, count: int) -> list[ReadableSpan]:
        wait_until(lambda: len(self.exporter.get_finished_spans()) >= count, f"{count} spans")
        return list(self.exporter.get_finished_spans())


@pytest.fixture(params=ENGINES)
def chain(request: pytest.FixtureRequest, names: Names, servers: Servers) -> Iterator[Chain]:
    made = Chain(request.param, names, servers)
    yield made
    servers.stop_all()
    made.provider.shutdown()


def test_a_three_service_chain_is_one_trace(chain: Chain) -> None:
    tracer = chain.provider.get_tracer("script")
    with (
        client.RPCClient(
            amqp_config(False), chain.discovery(), source="script", otel=chain.telemetry
        ) as cli,
        tracer.start_as_current_span("script") as root,
    ):
        answer = cli.test_hello.hello(n=1).call(timeout=WAIT)
    assert answer.payload == {"n": 4}
    spans = chain.spans(7)
    assert_chain(
        spans, one(spans, "script", SpanKind.INTERNAL), chain.exchanges, answer.correlation_id
    )
    assert root.get_span_context().trace_id == trace_id(spans[0])
    [headers] = chain.seen
    assert isinstance(headers["traceparent"], str)
    server_span = one(spans, "process test_chuck.chuck", SpanKind.SERVER)
    assert server_span.attributes is not None
    assert server_span.attributes["server.address"] == "127.0.0.1"
    assert server_span.attributes["server.port"] == 5672


def publish_cast(chain: Chain, extra_headers: dict) -> None:
    """A Tavrida cast to ``test_chuck.note``, as a foreign peer publishes it with pika."""
    headers = {
        "correlation_id": uuid.uuid4().hex,
        "request_id": uuid.uuid4().hex,
        "message_id": uuid.uuid4().hex,
        "message_type": "request",
        "reply_to": "",
        "source": "foreign",
        "destination": "test_chuck.note",
        **extra_headers,
    }
    body = json.dumps({"context": {}, "payload": {"n": 1}}).encode()
    connection = pika.BlockingConnection(
        pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F")
    )
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            chain.exchanges["test_chuck"],
            "test_chuck.note",
            body,
            pika.BasicProperties(headers=headers, content_type="application/json"),
            mandatory=True,
        )
    finally:
        connection.close()


def test_a_foreign_peers_traceparent_is_continued_and_a_broken_one_ignored(chain: Chain) -> None:
    publish_cast(chain, {"traceparent": GOOD_TRACEPARENT, "tracestate": "vendor=1"})
    [continued] = chain.spans(1)
    publish_cast(chain, {"traceparent": "00-not-a-trace-context"})
    [fresh] = [s for s in chain.spans(2) if s is not continued]
    for span in (continued, fresh):
        assert (span.name, span.kind) == ("process test_chuck.note", SpanKind.CONSUMER)
        assert span.status.status_code is StatusCode.UNSET
    assert f"{trace_id(continued):032x}" == GOOD_TRACEPARENT.split("-")[1]
    assert continued.parent is not None
    assert f"{continued.parent.span_id:016x}" == GOOD_TRACEPARENT.split("-")[2]
    assert continued.parent.trace_state.get("vendor") == "1"
    assert parent_of(fresh) is None
    assert trace_id(fresh) != trace_id(continued)
    assert len(chain.seen) == 2
