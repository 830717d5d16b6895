"""De-duplication on the real RabbitMQ, both engines.

A ``billing`` server whose controller has a ``DeduplicationMiddleware``; the
test publishes the same wire message (headers, body) twice to the server's
exchange with pika, as a broker redelivering it after a lost acknowledgement
would, then a message of another id: the handler runs once per id, the
duplicate is logged, acknowledged (not requeued, not dead-lettered).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, ClassVar

import pika
import pytest

from tavrida2 import discovery, dispatcher, middleware, server, service
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    queue_info,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

LOGGER = "tavrida2.middleware.dedup"


@dispatcher.rpc_service("billing")
class Billing(service.ServiceController):
    rec: ClassVar[Recorder] = Recorder()

    def __init__(self, postprocessor):
        super().__init__(postprocessor)
        self.add_incoming_middleware(middleware.DeduplicationMiddleware(capacity=100))

    @dispatcher.rpc_method(method="charge")
    def charge(self, request, proxy, amount):
        self.rec.add("charge", (request.message_id, amount))


def cast_properties(message_id: str) -> pika.BasicProperties:
    headers: dict[str, Any] = {
        "correlation_id": uuid.uuid4().hex,
        "request_id": uuid.uuid4().hex,
        "message_id": message_id,
        "message_type": "request",
        "reply_to": "",
        "source": "shop.checkout",
        "destination": "billing.charge",
    }
    return pika.BasicProperties(headers=headers, content_type="application/json", delivery_mode=2)


def body(amount: int) -> bytes:
    return json.dumps({"context": {}, "payload": {"amount": amount}}).encode()


def settled(queue: str) -> bool:
    info = queue_info(queue)
    return info is not None and info["messages_ready"] == 0 and info["messages_unacknowledged"] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_the_same_message_published_twice_is_handled_once(
    engine: bool, names: Names, servers: Servers, channel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    Billing.rec = Recorder()
    exchange, queue = names.exchange("billing"), names.queue("billing")
    # the server's dead-letter exchange and queues, deleted after the test too
    names.exchanges.append(f"{queue}.dlx")
    names.queues.extend([f"{queue}.dlq", f"{queue}.retry"])
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("billing", exchange)
    Billing.set_discovery(disc)
    servers.start(
        server.Server(amqp_config(engine, names.connection("billing")), queue, exchange, [Billing])
    )
    first, other = uuid.uuid4().hex, uuid.uuid4().hex
    properties = cast_properties(first)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(2):
            channel.basic_publish(exchange, "billing.charge", body(5), properties, mandatory=True)
        channel.basic_publish(
            exchange, "billing.charge", body(6), cast_properties(other), mandatory=True
        )
        Billing.rec.wait_for("charge", 2)
        wait_until(
            lambda: any(
                f"message_id={first}" in r.getMessage() for r in caplog.records if r.name == LOGGER
            ),
            "the duplicate to be logged",
        )
        wait_until(lambda: settled(queue), f"{queue} to be empty with nothing unacked")

    assert sorted(Billing.rec.of("charge")) == sorted([(first, 5), (other, 6)])
    dead = queue_info(f"{queue}.dlq")
    assert dead is not None and dead["messages_ready"] == 0, "the duplicate was dead-lettered"
    assert len(Billing.rec.of("charge")) == 2
