"""RabbitMQ itself agrees with tavrida2.drivers.routing.topic_matches on every case.

Plain pika, no tavrida2 driver: one temporary topic exchange, one exclusive
queue per binding key of the table, each routing key published once (mandatory,
with confirms), then ``basic_get`` on every queue shows which ones took it.
This proves that the memory broker, which routes with ``topic_matches``, routes
as RabbitMQ does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pika
import pytest

from tavrida2.drivers.routing import topic_matches
from tests.unit.test_routing import TOPIC_CASES

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

PARAMS = pika.ConnectionParameters(
    host="127.0.0.1",
    port=5672,
    virtual_host="/",
    credentials=pika.PlainCredentials("guest", "guest"),
    connection_attempts=3,
    retry_delay=1,
    socket_timeout=5,
    blocked_connection_timeout=10,
)
DEADLINE_SECONDS = 20.0


@pytest.fixture
def channel() -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(PARAMS)
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        yield ch
    finally:
        if connection.is_open:
            connection.close()


def _drain(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> list[str]:
    """Every routing key waiting in ``queue`` (the body carries the routing key's index)."""
    got: list[str] = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append(body.decode())


def test_rabbitmq_topic_routing_agrees_with_topic_matches(channel) -> None:
    started = time.monotonic()
    exchange = f"tavrida2-topic-test-{uuid.uuid4().hex}"
    channel.exchange_declare(exchange, "topic", durable=False, auto_delete=False)
    try:
        bindings = sorted({binding for binding, _, _ in TOPIC_CASES})
        routing_keys = sorted({routing for _, routing, _ in TOPIC_CASES})
        queues: dict[str, str] = {}
        for binding in bindings:
            queue = f"tavrida2-topic-test-{uuid.uuid4().hex}"
            channel.queue_declare(queue, durable=False, exclusive=True, auto_delete=True)
            channel.queue_bind(queue, exchange, routing_key=binding)
            queues[binding] = queue
        # a catch-all queue makes every publish routable, so mandatory never bounces
        catch_all = f"tavrida2-topic-test-{uuid.uuid4().hex}"
        channel.queue_declare(catch_all, durable=False, exclusive=True, auto_delete=True)
        channel.queue_bind(catch_all, exchange, routing_key="#")
        for index, routing in enumerate(routing_keys):
            channel.basic_publish(exchange, routing, str(index).encode(), mandatory=True)
        received: dict[str, set[str]] = {}
        for binding, queue in queues.items():
            indexes = _drain(channel, queue)
            assert len(indexes) == len(set(indexes)), f"{binding!r} got a message twice"
            received[binding] = {routing_keys[int(i)] for i in indexes}
        assert {routing_keys[int(i)] for i in _drain(channel, catch_all)} == set(routing_keys)
        assert time.monotonic() - started < DEADLINE_SECONDS
    finally:
        channel.exchange_delete(exchange)

    disagreements = []
    for binding, routing, expected in TOPIC_CASES:
        by_rabbitmq = routing in received[binding]
        if by_rabbitmq != expected or by_rabbitmq != topic_matches(binding, routing):
            disagreements.append((binding, routing, expected, by_rabbitmq))
    assert disagreements == [], "(binding, routing, table, RabbitMQ)"
    # and the full cross product, beyond the table's chosen pairs
    for binding in bindings:
        expected_keys = {r for r in routing_keys if topic_matches(binding, r)}
        assert received[binding] == expected_keys, binding
