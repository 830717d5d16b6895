"""A Tavrida 1.0 peer, played by plain pika, talks to a tavrida2 server on RabbitMQ.

The peer publishes a raw Tavrida 1.0 request (only AMQP headers, no AMQP
``reply_to``/``correlation_id`` properties) to the server's exchange; the
server's discovery maps the peer's service ``legacy_svc`` to the peer's own
exchange, where the peer's queue, bound with ``legacy_svc.#``, receives the
answer. Its headers and body must be those of Tavrida 1.0.
"""

from __future__ import annotations

import json
import uuid

import pika
import pytest

from tavrida2 import discovery, dispatcher, server, service
from tests.integration.conftest import (
    ENGINES,
    Names,
    Servers,
    amqp_config,
    get_message,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


@dispatcher.rpc_service("test_world")
class World(service.ServiceController):
    @dispatcher.rpc_method(service="test_world", method="world")
    def world(self, request, proxy, param):
        return {"param": param + 1, "seen_context": dict(request.context)}

    @dispatcher.rpc_method(service="test_world", method="fail")
    def fail(self, request, proxy, param):
        raise KeyError(param)


def _legacy_request(destination: str, payload: dict) -> tuple[dict[str, str], bytes]:
    headers = {
        "correlation_id": uuid.uuid4().hex,
        "request_id": uuid.uuid4().hex,
        "message_id": uuid.uuid4().hex,
        "message_type": "request",
        "reply_to": "legacy_svc.method",
        "source": "legacy_svc.method",
        "destination": destination,
    }
    body = json.dumps({"context": {"user": "legacy"}, "payload": payload}).encode()
    return headers, body


def _start(engine: bool, names: Names, servers: Servers, channel) -> tuple[str, str]:
    """Start the World server; return (its exchange, the peer's queue)."""
    world_ex, legacy_ex = names.exchange("world"), names.exchange("legacy")
    legacy_queue = names.queue("legacy")
    channel.exchange_declare(legacy_ex, "topic", durable=True)
    channel.queue_declare(legacy_queue, durable=True)
    channel.queue_bind(legacy_queue, legacy_ex, routing_key="legacy_svc.#")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("legacy_svc", legacy_ex)
    World.set_discovery(disc)
    conf = amqp_config(engine, names.connection("world"))
    servers.start(server.Server(conf, names.queue("world"), world_ex, [World]))
    return world_ex, legacy_queue


def _publish(channel, exchange: str, routing_key: str, headers: dict, body: bytes) -> None:
    channel.basic_publish(
        exchange,
        routing_key,
        body,
        pika.BasicProperties(content_type="application/json", delivery_mode=2, headers=headers),
        mandatory=True,
    )


def _check_answer_headers(sent: dict[str, str], got: dict, message_type: str, source: str) -> None:
    assert got["message_type"] == message_type
    assert got["request_id"] == sent["request_id"]
    assert got["correlation_id"] == sent["correlation_id"]
    assert got["source"] == source
    assert got["destination"] == "legacy_svc.method"
    assert got["reply_to"] == ""
    assert got["message_id"]
    assert got["message_id"] != sent["message_id"]
    for value in got.values():
        assert isinstance(value, str | bytes)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tavrida_1_request_gets_a_tavrida_1_response(
    engine: bool, names: Names, servers: Servers, channel
) -> None:
    world_ex, legacy_queue = _start(engine, names, servers, channel)
    headers, body = _legacy_request("test_world.world", {"param": 1})
    _publish(channel, world_ex, "test_world.world", headers, body)

    method, properties, answer = get_message(channel, legacy_queue)
    assert method.routing_key == "legacy_svc.method"
    assert properties.content_type == "application/json"
    _check_answer_headers(headers, properties.headers, "response", "test_world.world")
    decoded = json.loads(answer.decode("utf-8"))
    assert set(decoded) == {"context", "payload"}
    assert decoded["payload"]["param"] == 2
    assert decoded["payload"]["seen_context"]["user"] == "legacy"
    assert decoded["context"]["user"] == "legacy"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tavrida_1_request_gets_a_tavrida_1_error(
    engine: bool, names: Names, servers: Servers, channel
) -> None:
    world_ex, legacy_queue = _start(engine, names, servers, channel)
    headers, body = _legacy_request("test_world.fail", {"param": "missing"})
    _publish(channel, world_ex, "test_world.fail", headers, body)

    _method, properties, answer = get_message(channel, legacy_queue)
    _check_answer_headers(headers, properties.headers, "error", "test_world.fail")
    decoded = json.loads(answer.decode("utf-8"))
    assert set(decoded) == {"context", "payload"}
    assert decoded["payload"]["class"] == "KeyError"
    assert decoded["payload"]["message"] == "'missing'"
    assert isinstance(decoded["payload"]["code"], int)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_waiting_caller_gets_the_answer_on_direct_reply_to(
    engine: bool, names: Names, servers: Servers, channel
) -> None:
    """New in tavrida2: the AMQP ``reply_to`` property sends the answer straight back."""
    world_ex, legacy_queue = _start(engine, names, servers, channel)
    answers: list[tuple] = []
    channel.basic_consume(
        DIRECT_REPLY_TO, lambda _ch, *delivery: answers.append(delivery), auto_ack=True
    )
    headers, body = _legacy_request("test_world.world", {"param": 41})
    properties = pika.BasicProperties(
        content_type="application/json",
        headers=headers,
        reply_to=DIRECT_REPLY_TO,
        correlation_id=headers["request_id"],
        expiration="20000",
    )
    channel.basic_publish(world_ex, "test_world.world", body, properties, mandatory=True)
    wait_until(lambda: answers or channel.connection.process_data_events(0.05), "the answer")

    [(_method, got, answer)] = answers
    assert got.correlation_id == headers["request_id"]
    _check_answer_headers(headers, got.headers, "response", "test_world.world")
    assert json.loads(answer)["payload"]["param"] == 42
    # answered once, and only there
    assert channel.basic_get(legacy_queue, auto_ack=True)[0] is None
