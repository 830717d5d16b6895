"""Quorum server queues on the real RabbitMQ (3.10, one node), both engines.

A quorum server answers calls and handles casts; a cast whose handler keeps
failing is delivered again by the broker (``x-delivery-count`` is the attempt)
and dead-lettered after ``max_attempts`` with the count; what the broker
returns more often than ``delivery_limit`` it dead-letters itself; a queue
declared classic and then quorum (or the other way) gives the migration error.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pika
import pytest

from tavrida2 import client, discovery, dispatcher, dlq, exceptions, server, service
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.messages import attempt_in
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    pika_params,
    rabbitmqctl,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]


@dispatcher.rpc_service("quorum_svc")
class Quorum(service.ServiceController):
    """``work`` fails while ``failures`` is positive; every delivery records its attempt."""

    rec: ClassVar[Recorder] = Recorder()
    failures: ClassVar[int] = 0

    @dispatcher.rpc_method(service="quorum_svc", method="work")
    def work(self, request, proxy, n):
        self.rec.add("attempt", (n, attempt_in(request.headers)))
        if Quorum.failures > 0:
            Quorum.failures -= 1
            raise RuntimeError(f"down for {n}")
        self.rec.add("done", n)
        return {"n": n}


class Setup:
    def __init__(self, names: Names, servers: Servers) -> None:
        Quorum.rec, Quorum.failures = Recorder(), 0
        self.names, self.servers = names, servers
        self.exchange = names.exchange("quorum")
        self.queue = names.queue("quorum")
        self.disc = discovery.LocalDiscovery()
        self.disc.register_remote_service("quorum_svc", self.exchange)
        Quorum.set_discovery(self.disc)

    def server(self, engine: bool, queue_type: str = "quorum", **policy: Any) -> server.Server:
        conf = amqp_config(engine, self.names.connection("quorum"))
        return server.Server(
            conf,
            self.queue,
            self.exchange,
            [Quorum],
            dead_letters=DeadLetterPolicy.for_queue(self.queue, **policy),
            queue_type=queue_type,
        )

    def client(self) -> client.RPCClient:
        return client.RPCClient(amqp_config(False), self.disc, source="quorum-test")

    def queue_type(self) -> str:
        for line in rabbitmqctl("list_queues", "name", "type", "-q").splitlines():
            name, _, kind = line.partition("\t")
            if name == self.queue:
                return kind.strip()
        raise AssertionError(f"no queue {self.queue}")

    def dead_letters(self) -> list[tuple[Any, bytes]]:
        connection = pika.BlockingConnection(pika_params())
        try:
            channel = connection.channel()
            found = []
            while True:
                method, props, body = channel.basic_get(f"{self.queue}.dlq", auto_ack=True)
                if method is None:
                    return found
                found.append((props, body))
        finally:
            connection.close()


@pytest.fixture
def setup(names: Names, servers: Servers) -> Setup:
    return Setup(names, servers)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_quorum_server_answers_calls_and_handles_casts(engine: bool, setup: Setup) -> None:
    setup.servers.start(setup.server(engine))
    assert setup.queue_type() == "quorum"
    with setup.client() as cli:
        assert [cli.quorum_svc.work(n=i).call(timeout=10).payload for i in range(5)] == [
            {"n": i} for i in range(5)
        ]
        for i in range(5, 55):
            cli.quorum_svc.work(n=i).cast()
    assert sorted(setup_done := Quorum.rec.wait_for("done", 55)) == list(range(55))
    assert len(setup_done) == 55
    assert setup.dead_letters() == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_cast_is_counted_by_the_broker_then_dead_lettered(
    engine: bool, setup: Setup
) -> None:
    setup.servers.start(setup.server(engine, max_attempts=3, delivery_limit=5))
    Quorum.failures = 100
    with setup.client() as cli:
        cli.quorum_svc.work(n=7).cast()
    wait_until(lambda: len(Quorum.rec.of("attempt")) >= 3, "three attempts")
    letters = wait_until(setup.dead_letters, "the dead letter")
    assert Quorum.rec.of("attempt") == [(7, 1), (7, 2), (7, 3)]
    [(props, body)] = letters
    headers = props.headers
    assert headers["x-tavrida2-reason"] == "handler failed 3 time(s), last: down for 7"
    assert headers["x-tavrida2-attempt"] == 3
    # the count of the server queue is not carried over; the dead-letter queue (a
    # quorum queue too) gives its own first delivery a count of 0
    assert headers.get("x-delivery-count", 0) == 0
    assert json.loads(body)["payload"] == {"n": 7}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cast_that_recovers_is_handled_at_its_attempt(engine: bool, setup: Setup) -> None:
    setup.servers.start(setup.server(engine, max_attempts=3))
    Quorum.failures = 2
    with setup.client() as cli:
        cli.quorum_svc.work(n=1).cast()
    Quorum.rec.wait_for("done")
    assert Quorum.rec.of("attempt") == [(1, 1), (1, 2), (1, 3)]
    assert setup.dead_letters() == []


def test_the_broker_dead_letters_past_the_delivery_limit(setup: Setup) -> None:
    """Deliveries that never end (here: a consumer that only returns them) stop at the limit."""
    srv = setup.server(False, max_attempts=2, delivery_limit=1)
    setup.servers.start(srv)
    setup.servers.stop(srv)
    connection = pika.BlockingConnection(pika_params())
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", setup.queue, b'{"payload": {}}', mandatory=True)
        counts = []
        for _ in range(2):
            method, props, _ = wait_until(
                lambda: _get(channel, setup.queue), "a delivery of the quorum queue"
            )
            counts.append(props.headers["x-delivery-count"])
            channel.basic_nack(method.delivery_tag, requeue=True)
    finally:
        connection.close()
    assert counts == [0, 1]
    conf = amqp_config(False)
    total, letters = wait_until(
        lambda: (found := dlq.peek(conf, f"{setup.queue}.dlq"))[0] and found,
        "the broker's dead letter",
    )
    assert total == 1
    assert "more often than its x-delivery-limit" in letters[0].reason


def _get(channel: Any, queue: str) -> Any:
    method, props, body = channel.basic_get(queue, auto_ack=False)
    return (method, props, body) if method is not None else None


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("before", "after"), [("classic", "quorum"), ("quorum", "classic")])
def test_changing_the_queue_type_says_how_to_migrate(
    engine: bool, before: str, after: str, setup: Setup
) -> None:
    first = setup.server(False, queue_type=before)
    setup.servers.start(first)
    setup.servers.stop(first)
    with pytest.raises(exceptions.QueueTypeMismatch) as raised:
        setup.server(engine, queue_type=after).run()
    text = str(raised.value)
    assert f"it exists as a {before} queue and this server declares a {after} queue" in text
    assert "PRECONDITION_FAILED - inequivalent arg" in text
    assert f"rabbitmqctl delete_queue {setup.queue}" in text
    assert setup.queue_type() == before  # nothing was changed
