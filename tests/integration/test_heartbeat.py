"""A handler longer than two heartbeat intervals does not cost the server its connection.

With ``?heartbeat=1`` a handler runs 3.5 s; the broker connection stays the
same (same pid, no "connection ... lost"), the caller gets its answer and the
request is acknowledged once (its queue is empty, it was handled once).
"""

from __future__ import annotations

import logging
import time

import pytest

from tavrida2 import client, discovery, dispatcher, server, service
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.pika_sync import PikaDriver
from tests.integration.conftest import (
    BROKER_URL,
    ENGINES,
    Names,
    Recorder,
    Servers,
    connection_pids,
    queue_info,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

HANDLER_SECONDS = 3.5


@dispatcher.rpc_service("slow")
class Slow(service.ServiceController):
    rec = Recorder()

    @dispatcher.rpc_method(service="slow", method="work")
    def work(self, request, proxy, n):
        self.rec.add("work", n)
        time.sleep(HANDLER_SECONDS)
        return {"done": n}

    @dispatcher.rpc_method(service="slow", method="beating")
    def beating(self, request, proxy, n):
        self.rec.add("work", n)
        deadline = time.monotonic() + HANDLER_SECONDS
        while time.monotonic() < deadline:
            self.send_heartbeat()
            time.sleep(0.1)
        return {"done": n}


@dispatcher.rpc_service("caller")
class Caller(service.ServiceController):
    rec = Recorder()

    @dispatcher.rpc_method(service="caller", method="start")
    def start(self, request, proxy, method, n):
        getattr(proxy.slow, method)(n=n).call()

    @dispatcher.rpc_response_method(service="slow", method="work")
    def work_done(self, response, proxy, done):
        self.rec.add("answer", done)

    @dispatcher.rpc_response_method(service="slow", method="beating")
    def beating_done(self, response, proxy, done):
        self.rec.add("answer", done)


def _config(engine: bool, connection_name: str) -> ConnectionConfig:
    return ConnectionConfig.from_url(
        f"{BROKER_URL}?heartbeat=1&connection_name={connection_name}",
        async_engine=engine,
        retry_delay=0.2,
    )


def _run_slow_call(engine: bool, method: str, names: Names, servers: Servers, caplog) -> None:
    caplog.set_level(logging.WARNING)
    Slow.rec, Caller.rec = Recorder(), Recorder()
    slow_ex, caller_ex = names.exchange("slow"), names.exchange("caller")
    for cls in (Slow, Caller):
        disc = discovery.LocalDiscovery()
        disc.register_remote_service("slow", slow_ex)
        disc.register_remote_service("caller", caller_ex)
        cls.set_discovery(disc)
    slow_name = names.connection("slow")
    slow = server.Server(_config(engine, slow_name), names.queue("slow"), slow_ex, [Slow])
    caller = server.Server(
        _config(engine, names.connection("caller")), names.queue("caller"), caller_ex, [Caller]
    )
    servers.start(slow, caller)
    [pid_before] = wait_until(lambda: connection_pids(slow_name), "the slow server's connection")

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("caller", caller_ex)
    conf = ConnectionConfig.from_url(BROKER_URL, connection_name=names.connection("client"))
    with client.RPCClient(conf, disc, source="cli") as cli:
        cli.caller.start(method=method, n=5).cast()

    assert Caller.rec.wait_for("answer") == [5]

    def settled() -> bool:
        info = queue_info(slow.queue_name) or {}
        return info.get("messages_ready") == 0 and info.get("messages_unacknowledged") == 0

    wait_until(settled, "the request acknowledged")
    assert Slow.rec.of("work") == [5]
    assert connection_pids(slow_name) == [pid_before]
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert lost == []
    closed = [r.getMessage() for r in caplog.records if r.name.startswith(("pika", "aiormq"))]
    assert closed == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_handler_longer_than_two_heartbeats_keeps_the_connection(
    engine: bool, names: Names, servers: Servers, caplog
) -> None:
    _run_slow_call(engine, "work", names, servers, caplog)


def test_send_heartbeat_from_a_handler_keeps_the_connection(
    names: Names, servers: Servers, caplog, monkeypatch
) -> None:
    # only the handler's send_heartbeat() services the connection: no helper thread
    monkeypatch.setattr(PikaDriver, "_service_while_handling", lambda self: None)
    _run_slow_call(False, "beating", names, servers, caplog)
