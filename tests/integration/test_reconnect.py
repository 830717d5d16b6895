"""A server survives losing its connection, and the deletion of its queue.

The connection is closed by the broker (``rabbitmqctl close_connection``) or
cut by the network (a TCP proxy that drops everything and refuses new
connections for a while). Delivery is at least once: after a reconnect every
cast was handled (some may have been handled twice), and the queue has exactly
one consumer again, never two (a leftover consumer of the old subscription) and
never none. A server also stops when asked while it cannot reach the broker.
"""

from __future__ import annotations

import logging
import threading
import time

import pika
import pytest

from tavrida2 import client, discovery, dispatcher, exceptions, server, service
from tests.integration.conftest import (
    ENGINES,
    WAIT,
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


def _settled(queue: str) -> bool:
    """Whether ``queue`` holds no message, ready or unacknowledged."""
    info = queue_info(queue) or {}
    return info.get("messages_ready") == 0 and info.get("messages_unacknowledged") == 0


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
    # mid-stream on both sides: the client is still sending, the server handling
    wait_until(lambda: len(sent) >= 300 and len(_handled()) >= 50, "the stream under way")
    close_connection(old_pid, "test")
    caster.join(60)
    assert not caster.is_alive()
    assert failures == []
    assert len(sent) == CASTS

    wait_until(lambda: len(_handled()) == CASTS, f"all {CASTS} casts handled", timeout=30)
    assert _handled() == set(range(CASTS))
    new_pid = _one_connection(connection_name)
    assert new_pid != old_pid
    wait_until(lambda: _settled(srv.queue_name), "the queue drained")
    assert consumers(srv.queue_name) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_server_resubscribes_after_its_queue_was_deleted(
    engine: bool, names: Names, servers: Servers
) -> None:
    srv, exchange, _connection_name = _start(engine, names, servers)
    assert consumers(srv.queue_name) == 1
    with _client(names, exchange) as cli:
        cli.counter.count(n=1).cast()
        wait_until(lambda: _handled() == {1} and _settled(srv.queue_name), "the first cast acked")

        connection = pika.BlockingConnection(pika_params())
        try:
            connection.channel().queue_delete(srv.queue_name)
        finally:
            connection.close()
        # the broker cancels the consumer; the server declares its queue again
        wait_until(lambda: consumers(srv.queue_name) == 1, "the queue back, with a consumer")
        cli.counter.count(n=2).cast()
        wait_until(lambda: _handled() == {1, 2}, "a cast sent after the queue came back")
    assert consumers(srv.queue_name) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_server_reconnects_when_the_network_comes_back(
    engine: bool, names: Names, servers: Servers, proxy: TcpProxy
) -> None:
    srv, exchange, _connection_name = _start(engine, names, servers, proxy)
    with _client(names, exchange) as cli:  # the client's connection does not go through proxy
        cli.counter.count(n=1).cast()
        wait_until(lambda: _handled() == {1} and _settled(srv.queue_name), "the first cast acked")
        proxy.drop()
        wait_until(lambda: consumers(srv.queue_name) == 0, "the broker to see the server gone")
        cli.counter.count(n=2).cast()  # waits in the queue
        proxy.start()
        wait_until(lambda: consumers(srv.queue_name) == 1, "the server back")
        wait_until(lambda: _handled() == {1, 2}, "the cast sent while it was away")
        cli.counter.count(n=3).cast()
        wait_until(lambda: _handled() == {1, 2, 3}, "a cast sent after it came back")
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


@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_that_gives_up_reconnecting_stops_with_connection_failed(
    engine: bool, names: Names, proxy: TcpProxy
) -> None:
    conf = amqp_config(
        engine, names.connection("counter"), retry_delay=0.1, reconnect_attempts=2, port=proxy.port
    )
    srv = server.Server(conf, names.queue("counter"), names.exchange("counter"), [Counter])
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            srv.run()
        except BaseException as exc:  # checked below
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started.is_set() or not thread.is_alive(), "the server started")
        assert srv.started.is_set(), outcome
        proxy.drop()
        thread.join(WAIT)
    finally:
        srv.stop()
        thread.join(WAIT)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, exceptions.ConnectionFailed)
