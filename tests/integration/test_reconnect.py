"""A server survives the broker closing its connection, and the deletion of its queue.

Delivery is at least once: after a reconnect every cast was handled (some may
have been handled twice), and the queue has exactly one consumer again, never
two (a leftover consumer of the old subscription) and never none.
"""

from __future__ import annotations

import logging
import threading
import time

import pika
import pytest

from tavrida2 import client, discovery, dispatcher, server, service
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    close_connection,
    connection_pids,
    consumers,
    pika_params,
    queue_info,
    wait_until,
)
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

CASTS = 1000


@dispatcher.rpc_service("counter")
class Counter(service.ServiceController):
    rec = Recorder()

    @dispatcher.rpc_method(service="counter", method="count")
    def count(self, request, proxy, n):
        time.sleep(0.002)  # the backlog outlasts the closing of the connection
        self.rec.add("count", n)


def _start(
    engine: bool, names: Names, servers: Servers, proxy: TcpProxy | None = None
) -> tuple[server.Server, str, str]:
    """Start a Counter server (through ``proxy``); return it, its exchange, its connection name."""
    Counter.rec = Recorder()
    exchange, connection_name = names.exchange("counter"), names.connection("counter")
    port = {"port": proxy.port} if proxy is not None else {}
    conf = amqp_config(engine, connection_name, retry_delay=0.1, **port)
    srv = server.Server(conf, names.queue("counter"), exchange, [Counter])
    servers.start(srv)
    return srv, exchange, connection_name


def _client(names: Names, exchange: str) -> client.RPCClient:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("counter", exchange)
    return client.RPCClient(amqp_config(False, names.connection("client")), disc, "cli")


def _handled() -> set[int]:
    return set(Counter.rec.of("count"))


def _one_connection(connection_name: str) -> str:
    """The pid of the one open connection named ``connection_name``."""
    pids = wait_until(lambda: connection_pids(connection_name), f"connection {connection_name}")
    assert len(pids) == 1, pids
    return pids[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine", ENGINES)
def test_server_connection_closed_by_the_broker_during_a_stream_of_casts(
    engine: bool, names: Names, servers: Servers
) -> None:
    srv, exchange, connection_name = _start(engine, names, servers)
    old_pid = _one_connection(connection_name)
    sent: list[int] = []
    failures: list[BaseException] = []

    def cast_all() -> None:
        try:
            with _client(names, exchange) as cli:
                for n in range(CASTS):
                    cli.counter.count(n=n).cast()
                    sent.append(n)
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    caster = threading.Thread(target=cast_all, daemon=True)
    caster.start()
    wait_until(lambda: len(_handled()) >= 100, "the first 100 casts handled")
    close_connection(old_pid, "test")
    caster.join(60)
    assert not caster.is_alive()
    assert failures == []
    assert len(sent) == CASTS

    wait_until(lambda: len(_handled()) == CASTS, f"all {CASTS} casts handled", timeout=30)
    assert _handled() == set(range(CASTS))
    new_pid = _one_connection(connection_name)
    assert new_pid != old_pid
    wait_until(lambda: (queue_info(srv.queue_name) or {}).get("messages_ready") == 0, "drained")
    assert consumers(srv.queue_name) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_server_resubscribes_after_its_queue_was_deleted(
    engine: bool, names: Names, servers: Servers
) -> None:
    srv, exchange, _connection_name = _start(engine, names, servers)
    assert consumers(srv.queue_name) == 1
    with _client(names, exchange) as cli:
        cli.counter.count(n=1).cast()
        Counter.rec.wait_for("count")

        connection = pika.BlockingConnection(pika_params())
        try:
            connection.channel().queue_delete(srv.queue_name)
        finally:
            connection.close()
        # the broker cancels the consumer; the server declares its queue again
        wait_until(lambda: consumers(srv.queue_name) == 1, "the queue back, with a consumer")
        cli.counter.count(n=2).cast()
        assert Counter.rec.wait_for("count", 2) == [1, 2]
    assert consumers(srv.queue_name) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_server_reconnects_when_the_network_comes_back(
    engine: bool, names: Names, servers: Servers, proxy: TcpProxy
) -> None:
    srv, exchange, _connection_name = _start(engine, names, servers, proxy)
    with _client(names, exchange) as cli:  # the client's connection does not go through proxy
        cli.counter.count(n=1).cast()
        Counter.rec.wait_for("count")
        proxy.drop()
        wait_until(lambda: consumers(srv.queue_name) == 0, "the broker to see the server gone")
        cli.counter.count(n=2).cast()  # waits in the queue
        proxy.start()
        wait_until(lambda: consumers(srv.queue_name) == 1, "the server back")
        assert set(Counter.rec.wait_for("count", 2)) == {1, 2}
        cli.counter.count(n=3).cast()
        assert Counter.rec.wait_for("count", 3)[-1] == 3
    assert consumers(srv.queue_name) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_while_the_broker_is_unreachable(
    engine: bool, names: Names, servers: Servers, proxy: TcpProxy, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="tavrida2")
    srv, _exchange, _connection_name = _start(engine, names, servers, proxy)
    proxy.drop()

    def retrying() -> bool:
        return any("cannot connect" in r.getMessage() for r in caplog.records)

    wait_until(retrying, "the server retrying to connect")
    servers.stop(srv)  # fails unless the server stops within the bound
