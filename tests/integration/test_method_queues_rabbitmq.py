"""``rpc_method(prefetch=N, timeout=S)`` on RabbitMQ, on both engines.

A slow method with ``prefetch=1`` does not hold up the other methods of its
server, runs one message at a time, and a Tavrida 1.0 publish of
``service.method`` to the service exchange reaches it once. A handler past its
``timeout`` answers its caller with HandlerTimeout (an async one is cancelled),
and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pika
import pytest

from tavrida2 import client, discovery, dispatcher, server, service
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    queue_info,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]


class Gate:
    """Holds ``mq.slow`` until released; counts how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def make_service(gate: Gate, seen: Recorder) -> type[service.ServiceController]:
    @dispatcher.rpc_service("mq")
    class MQ(service.ServiceController):
        @dispatcher.rpc_method(method="slow", prefetch=1)
        def slow(self, request, proxy, n):
            gate.enter()
            seen.add("slow", n)
            try:
                gate.release.wait(30)
            finally:
                gate.leave()
            return {"slow": n}

        @dispatcher.rpc_method(method="fast")
        def fast(self, request, proxy, n):
            seen.add("fast", n)
            return {"fast": n}

    return MQ


def start(engine: bool, names: Names, servers: Servers, cls: type) -> tuple[str, str]:
    exchange, queue = names.exchange("mq"), names.queue("mq")
    names.queues.append(f"{queue}.mq.slow")
    names.exchanges += [f"{queue}.mq.by-method", f"{queue}.mq.other-methods"]
    conf = amqp_config(engine, names.connection("mq"), prefetch_count=10)
    servers.start(server.Server(conf, queue, exchange, [cls], dead_letters=False))
    return exchange, queue


@pytest.mark.parametrize("engine", ENGINES)
def test_a_slow_method_with_prefetch_1_does_not_hold_up_the_others(
    engine: bool, names: Names, servers: Servers
) -> None:
    gate, seen = Gate(), Recorder()
    exchange, queue = start(engine, names, servers, make_service(gate, seen))
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("mq", exchange)
    with client.RPCClient(amqp_config(engine), disc, source="it") as cli:
        slow = [cli.mq.slow(n=i).call_async(timeout=40) for i in range(3)]
        seen.wait_for("slow", 1)
        started = time.monotonic()
        answers = [cli.mq.fast(n=i).call(timeout=10).payload for i in range(5)]
        assert time.monotonic() - started < 5
        assert answers == [{"fast": i} for i in range(5)]
        # prefetch=1: the other two wait in the method's queue, not in the server
        info = wait_until(
            lambda: (i := queue_info(f"{queue}.mq.slow")) and int(i["messages_ready"]) == 2 and i,
            "two slow calls waiting in the method's queue",
        )
        assert int(info["consumers"]) == 1
        assert len(seen.of("slow")) == 1
        gate.release.set()
        assert sorted(p.result().payload["slow"] for p in slow) == [0, 1, 2]
    assert gate.most == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tavrida_1_publish_of_service_method_reaches_the_method_once(
    engine: bool, names: Names, servers: Servers, channel: Any
) -> None:
    gate, seen = Gate(), Recorder()
    gate.release.set()
    exchange, queue = start(engine, names, servers, make_service(gate, seen))
    for method, n in (("slow", 1), ("fast", 2)):
        headers = {
            "correlation_id": uuid.uuid4().hex,
            "request_id": uuid.uuid4().hex,
            "message_id": uuid.uuid4().hex,
            "message_type": "request",
            "reply_to": "",
            "source": "legacy_svc.method",
            "destination": f"mq.{method}",
        }
        body = json.dumps({"context": {}, "payload": {"n": n}}).encode()
        channel.basic_publish(
            exchange,
            f"mq.{method}",
            body,
            pika.BasicProperties(content_type="application/json", delivery_mode=2, headers=headers),
            mandatory=True,
        )
    seen.wait_for("slow", 1)
    seen.wait_for("fast", 1)
    time.sleep(1.0)  # a second copy, if the routing made one, would be handled by now
    assert seen.of("slow") == [1] and seen.of("fast") == [2]
    for name in (queue, f"{queue}.mq.slow"):
        info = queue_info(name)
        assert info is not None and int(info["messages_ready"]) == 0, info


@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_that_gains_a_method_queue_drops_its_old_binding(
    engine: bool, names: Names, servers: Servers
) -> None:
    seen = Recorder()

    @dispatcher.rpc_service("mq")
    class Before(service.ServiceController):
        @dispatcher.rpc_method(method="slow")
        def slow(self, request, proxy, n):
            seen.add("before", n)

    gate = Gate()
    gate.release.set()
    exchange, queue = names.exchange("mq"), names.queue("mq")
    names.queues.append(f"{queue}.mq.slow")
    names.exchanges += [f"{queue}.mq.by-method", f"{queue}.mq.other-methods"]
    conf = amqp_config(engine, names.connection("mq"))
    before = server.Server(conf, queue, exchange, [Before], dead_letters=False)
    servers.start(before)
    servers.stop(before)
    after = make_service(gate, seen)
    servers.start(server.Server(conf, queue, exchange, [after], dead_letters=False))
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("mq", exchange)
    with client.RPCClient(amqp_config(engine), disc, source="it") as cli:
        cli.mq.slow(n=7).cast()
        seen.wait_for("slow", 1)
    time.sleep(1.0)
    assert seen.of("slow") == [7] and seen.of("before") == []
    info = queue_info(queue)
    assert info is not None and int(info["messages_ready"]) == 0


def timed_service(engine: bool, cancelled: Recorder) -> type[service.ServiceController]:
    class Timed(service.ServiceController):
        @dispatcher.rpc_method(service="mq", method="late", timeout=0.2)
        def late(self, request, proxy):
            time.sleep(1.0)
            return {"late": True}

        @dispatcher.rpc_method(service="mq", method="quick", timeout=5)
        def quick(self, request, proxy):
            return {"quick": True}

    if not engine:
        return dispatcher.rpc_service("mq")(Timed)

    class TimedAsync(Timed):
        @dispatcher.rpc_method(service="mq", method="never", timeout=0.2)
        async def never(self, request, proxy):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.add("never", True)
                raise

    return dispatcher.rpc_service("mq")(TimedAsync)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_handler_past_its_timeout_answers_handler_timeout(
    engine: bool, names: Names, servers: Servers
) -> None:
    cancelled = Recorder()
    exchange, queue = names.exchange("mq"), names.queue("mq")
    conf = amqp_config(engine, names.connection("mq"))
    servers.start(server.Server(conf, queue, exchange, [timed_service(engine, cancelled)]))
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("mq", exchange)
    with client.RPCClient(amqp_config(engine), disc, source="it") as cli:
        ok, (code, result) = cli.mq.late().try_call(timeout=10)
        assert (ok, code, result["class"]) == (True, 1063, "tavrida2.exceptions.HandlerTimeout")
        assert "0.2 s" in result["message"]
        if engine:  # async handlers run on the async engine only
            started = time.monotonic()
            ok, (code, result) = cli.mq.never().try_call(timeout=10)
            assert (ok, code) == (True, 1063)
            assert time.monotonic() - started < 5
            cancelled.wait_for("never", 1)
        assert cli.mq.quick().call(timeout=10).payload == {"quick": True}
