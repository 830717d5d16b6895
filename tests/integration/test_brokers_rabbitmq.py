"""Several broker addresses against the real RabbitMQ, both engines and the clients.

The one local broker stands for a cluster: addresses that nobody listens on
stand for nodes that are down, and TCP proxies in front of the broker for
nodes that can be taken away (``TcpProxy.drop``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tavrida2 import client, discovery, dispatcher, exceptions, server, service
from tests.integration.conftest import ENGINES, Names, Recorder, Servers, amqp_config, wait_until
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

BROKER = "127.0.0.1:5672"


@dispatcher.rpc_service("hosts_echo")
class Echo(service.ServiceController):
    rec = Recorder()

    @dispatcher.rpc_method(service="hosts_echo", method="echo")
    def echo(self, request, proxy, n):
        self.rec.add("echo", n)
        return {"n": n}


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hosts_config(engine: bool, names: Names, hosts: list[str], **overrides: Any) -> Any:
    overrides.setdefault("shuffle_hosts", False)
    return amqp_config(engine, names.connection("hosts"), hosts=hosts, **overrides)


class Service:
    """An Echo server on ``hosts``; clients that reach it."""

    def __init__(self, names: Names, servers: Servers) -> None:
        Echo.rec = Recorder()
        self.names, self.servers = names, servers
        self.exchange = names.exchange("hosts")
        self.queue = names.queue("hosts")
        self.disc = discovery.LocalDiscovery()
        self.disc.register_remote_service("hosts_echo", self.exchange)
        Echo.set_discovery(self.disc)

    def start(self, engine: bool, hosts: list[str], **overrides: Any) -> server.Server:
        conf = hosts_config(engine, self.names, hosts, **overrides)
        srv = server.Server(conf, self.queue, self.exchange, [Echo], dead_letters=False)
        self.servers.start(srv)
        return srv

    def call(self, hosts: list[str], n: int, async_client: bool = False) -> Any:
        conf = hosts_config(async_client, self.names, hosts)
        if not async_client:
            with client.RPCClient(conf, self.disc, source="hosts-test") as cli:
                return cli.hosts_echo.echo(n=n).call(timeout=10).payload

        async def call() -> Any:
            async with client.AsyncRPCClient(conf, self.disc, source="hosts-test") as cli:
                return (await cli.hosts_echo.echo(n=n).call(timeout=10)).payload

        return asyncio.run(call())


@pytest.fixture
def svc(names: Names, servers: Servers) -> Service:
    return Service(names, servers)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_and_clients_skip_an_address_that_is_down(engine: bool, svc: Service) -> None:
    hosts = [f"127.0.0.1:{closed_port()}", BROKER]
    srv = svc.start(engine, hosts)
    assert srv.driver is not None
    assert srv.driver._failover.current == ("127.0.0.1", 5672)  # type: ignore[union-attr]
    assert svc.call(hosts, 1) == {"n": 1}
    assert svc.call(hosts, 2, async_client=True) == {"n": 2}
    assert sorted(Echo.rec.of("echo")) == [1, 2]


@pytest.mark.parametrize("engine", ENGINES)
def test_all_addresses_down_is_one_error_naming_each(engine: bool, svc: Service) -> None:
    hosts = [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"]
    conf = hosts_config(engine, svc.names, hosts, connection_attempts=2, retry_delay=0.05)
    srv = server.Server(conf, svc.queue, svc.exchange, [Echo], dead_letters=False)
    started = time.monotonic()
    with pytest.raises(exceptions.ConnectionFailed) as raised:
        srv.run()
    assert time.monotonic() - started < 10  # two rounds, no retry storm
    text = str(raised.value)
    assert "none of the 2 broker addresses answered" in text
    for host in hosts:
        assert f"{host} (" in text
    with pytest.raises(exceptions.ConnectionFailed, match="none of the 2 broker addresses"):
        svc.call(hosts, 1, async_client=engine)


@pytest.fixture
def proxies() -> Iterator[list[TcpProxy]]:
    """Two TCP proxies to the broker: two "nodes" that can be taken away one by one."""
    running = [TcpProxy(), TcpProxy()]
    for proxy in running:
        proxy.start()
    try:
        yield running
    finally:
        for proxy in running:
            proxy.drop()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_lost_node_fails_over_to_the_next(
    engine: bool, proxies: list[TcpProxy], svc: Service
) -> None:
    # (proxies before svc: the server stops before its last "node" goes)
    hosts = [f"127.0.0.1:{proxy.port}" for proxy in proxies]
    srv = svc.start(engine, hosts, heartbeat_interval=2)
    driver: Any = srv.driver
    assert driver._failover.current == ("127.0.0.1", proxies[0].port)
    assert svc.call([BROKER], 1) == {"n": 1}

    proxies[0].drop()  # the first "node" goes, and stays away
    lost = time.monotonic()
    wait_until(
        lambda: driver._failover.current == ("127.0.0.1", proxies[1].port),
        "the server to reconnect through the second address",
    )
    # consuming again: a call through the broker is answered by it
    answer = wait_until(lambda: _try_call(svc, 2), "an answer after the fail-over")
    assert answer == {"n": 2}
    assert time.monotonic() - lost < 15
    # a client on the same list connects through the node that is left
    assert svc.call(hosts, 3, async_client=engine) == {"n": 3}


def _try_call(svc: Service, n: int) -> Any:
    try:
        return svc.call([BROKER], n)
    except exceptions.CallTimeout:
        return None
