"""The Tavrida tutorial on the real RabbitMQ, on both engines.

Hello -> World call with a response handler and an error handler; pub/sub with
two subscriber controllers in one server; a cast from ``client.RPCClient``;
discovery from a ``.ds`` file; and a sync-engine service and an async-engine
service calling each other. Each test runs in a RabbitMQ vhost of its own, with
the servers of tavrida2's pytest plugin (``tavrida2_server`` on ``rabbitmq_vhost``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from tavrida2 import client, discovery, dispatcher, server, service
from tavrida2.testing import RunningServices
from tests.integration.conftest import ENGINES, Recorder

pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.timeout(90),
    # the plugin's broker: a vhost of the test's own (rabbitmq_vhost), deleted after it
    pytest.mark.parametrize("tavrida2_broker_url", ["rabbitmq"], indirect=True),
]


class Recording(service.ServiceController):
    rec: ClassVar[Recorder] = Recorder()


@dispatcher.rpc_service("test_hello")
class Hello(Recording):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def hello(self, request, proxy, param):
        self.rec.add("hello", param)
        proxy.test_world.world(param=param).call()
        proxy.test_world.fail(reason="no such planet").call()
        proxy.publish(param=param)

    @dispatcher.rpc_method(service="test_hello", method="announce")
    def announce(self, request, proxy, param):
        proxy.publish(param=param)

    @dispatcher.rpc_response_method(service="test_world", method="world")
    def world_resp(self, response, proxy, param):
        self.rec.add("world_resp", (response.payload, dict(response.headers)))

    @dispatcher.rpc_error_method(service="test_world", method="fail")
    def world_error(self, error, proxy):
        self.rec.add("world_error", (error.payload, dict(error.headers)))


@dispatcher.rpc_service("test_world")
class World(Recording):
    @dispatcher.rpc_method(service="test_world", method="world")
    def world(self, request, proxy, param):
        return {"param": f"world {param}"}

    @dispatcher.rpc_method(service="test_world", method="fail")
    def fail(self, request, proxy, reason):
        raise ValueError(reason)

    @dispatcher.rpc_method(service="test_world", method="count")
    def count(self, request, proxy, n):
        self.rec.add("count", (n, dict(request.headers)))


@dispatcher.rpc_service("sub_a")
class SubA(Recording):
    @dispatcher.subscription_method(service="test_hello", method="hello")
    def on_hello(self, notification, proxy, param):
        self.rec.add("sub_a", param)

    @dispatcher.subscription_method(service="test_hello", method="announce")
    def on_announce(self, notification, proxy, param):
        self.rec.add("sub_a", param)


@dispatcher.rpc_service("sub_b")
class SubB(Recording):
    @dispatcher.subscription_method(service="test_hello", method="announce")
    def on_announce(self, notification, proxy, param):
        self.rec.add("sub_b", (param, dict(notification.headers)))


@dispatcher.rpc_service("mixed_sync")
class MixedSync(Recording):
    @dispatcher.rpc_method(service="mixed_sync", method="start")
    def start(self, request, proxy, n):
        proxy.mixed_async.ping(n=n).call()

    @dispatcher.rpc_method(service="mixed_sync", method="ping")
    def ping(self, request, proxy, n):
        return {"pong": n, "by": "sync"}

    @dispatcher.rpc_response_method(service="mixed_async", method="ping")
    def pong(self, response, proxy, pong, by):
        self.rec.add("sync_got", (pong, by))


@dispatcher.rpc_service("mixed_async")
class MixedAsync(Recording):
    @dispatcher.rpc_method(service="mixed_async", method="start")
    async def start(self, request, proxy, n):
        await proxy.mixed_sync.ping(n=n).call()

    @dispatcher.rpc_method(service="mixed_async", method="ping")
    async def ping(self, request, proxy, n):
        return {"pong": n, "by": "async"}

    @dispatcher.rpc_response_method(service="mixed_sync", method="ping")
    async def pong(self, response, proxy, pong, by):
        self.rec.add("async_got", (pong, by))


@pytest.fixture
def rec() -> Recorder:
    Recording.rec = Recorder()
    return Recording.rec


class Tutorial:
    """Exchange names, the discovery the tutorial's services use, their servers and clients."""

    hello_ex = "hello_exchange"
    world_ex = "world_exchange"
    notif_ex = "hello_notifications"
    sub_ex = "sub_exchange"

    def __init__(self, running: RunningServices) -> None:
        self.running = running

    def local_discovery(self) -> None:
        hello = discovery.LocalDiscovery()
        hello.register_remote_service("test_world", self.world_ex)
        hello.register_local_publisher("test_hello", self.notif_ex)
        Hello.set_discovery(hello)
        world = discovery.LocalDiscovery()
        world.register_remote_service("test_hello", self.hello_ex)
        World.set_discovery(world)
        for cls in (SubA, SubB):
            subscriber = discovery.LocalDiscovery()
            subscriber.register_remote_publisher("test_hello", self.notif_ex)
            cls.set_discovery(subscriber)

    def server(
        self, engine: bool, exchange: str, *classes: type[service.ServiceController]
    ) -> server.Server:
        return self.running(*classes, exchange=exchange, async_engine=engine)

    def client(self, service_name: str, exchange: str) -> client.RPCClient:
        disc = discovery.LocalDiscovery()
        disc.register_remote_service(service_name, exchange)
        return self.running.make_client(source="client_app", discovery=disc)


def _check_hello_world(rec: Recorder, param: Any, correlation_id: str) -> None:
    assert rec.wait_for("hello") == [param]
    [(payload, headers)] = rec.wait_for("world_resp")
    assert payload == {"param": f"world {param}"}
    assert headers["message_type"] == "response"
    assert headers["source"] == "test_world.world"
    assert headers["destination"] == "test_hello.hello"
    assert headers["correlation_id"] == correlation_id
    [(error, error_headers)] = rec.wait_for("world_error")
    assert error["class"] == "ValueError"
    assert error["message"] == "no such planet"
    assert isinstance(error["code"], int)
    assert error_headers["message_type"] == "error"
    assert error_headers["source"] == "test_world.fail"
    assert error_headers["correlation_id"] == correlation_id


@pytest.mark.parametrize("engine", ENGINES)
def test_hello_calls_world_response_and_error_handlers(
    engine: bool, tavrida2_server: RunningServices, rec: Recorder
) -> None:
    tut = Tutorial(tavrida2_server)
    tut.local_discovery()
    tut.server(engine, tut.hello_ex, Hello)
    tut.server(engine, tut.world_ex, World)
    with tut.client("test_hello", tut.hello_ex) as cli:
        cli.test_hello.hello(param=123).cast(correlation_id="tutorial-correlation")
    _check_hello_world(rec, 123, "tutorial-correlation")


@pytest.mark.parametrize("engine", ENGINES)
def test_two_subscribers_in_one_server_get_the_same_notification(
    engine: bool, tavrida2_server: RunningServices, rec: Recorder
) -> None:
    tut = Tutorial(tavrida2_server)
    tut.local_discovery()
    tut.server(engine, tut.hello_ex, Hello)
    tut.server(engine, tut.sub_ex, SubA, SubB)
    with tut.client("test_hello", tut.hello_ex) as cli:
        cli.test_hello.announce(param="news").cast(correlation_id="pubsub-correlation")
    assert rec.wait_for("sub_a") == ["news"]
    [(param, headers)] = rec.wait_for("sub_b")
    assert param == "news"
    assert headers["message_type"] == "notification"
    assert headers["source"] == "test_hello.announce"
    assert headers["correlation_id"] == "pubsub-correlation"


@pytest.mark.parametrize("engine", ENGINES)
def test_client_cast_reaches_the_service(
    engine: bool, tavrida2_server: RunningServices, rec: Recorder
) -> None:
    tut = Tutorial(tavrida2_server)
    tut.local_discovery()
    tut.server(engine, tut.world_ex, World)
    with tut.client("test_world", tut.world_ex) as cli:
        for n in range(3):
            cli.test_world.count(n=n).cast()
    got = rec.wait_for("count", 3)
    assert sorted(n for n, _ in got) == [0, 1, 2]
    for _, headers in got:
        assert headers["message_type"] == "request"
        assert headers["reply_to"] == ""
        assert headers["source"] == "client_app"
        assert headers["destination"] == "test_world.count"


@pytest.mark.parametrize("engine", ENGINES)
def test_discovery_from_a_ds_file(
    engine: bool, tavrida2_server: RunningServices, rec: Recorder, tmp_path
) -> None:
    tut = Tutorial(tavrida2_server)
    ds = tmp_path / "services.ds"
    ds.write_text(
        f"[test_hello]\nexchange={tut.hello_ex}\nnotifications={tut.notif_ex}\n\n"
        f"[test_world]\nexchange={tut.world_ex}\n\n"
        f"[sub_a]\nexchange={tut.sub_ex}\n",
        encoding="utf-8",
    )
    Hello.set_discovery(discovery.FileBasedDiscoveryService(ds, "test_hello"))
    World.set_discovery(discovery.FileBasedDiscoveryService(ds, "test_world"))
    SubA.set_discovery(
        discovery.FileBasedDiscoveryService(ds, "sub_a", subscriptions=["test_hello"])
    )
    tut.server(engine, tut.hello_ex, Hello)
    tut.server(engine, tut.world_ex, World)
    tut.server(engine, tut.sub_ex, SubA)
    client_disc = discovery.FileBasedDiscoveryService(ds, "sub_a")
    with tavrida2_server.make_client(source="client_app", discovery=client_disc) as cli:
        cli.test_hello.hello(param=7).cast(correlation_id="ds-correlation")
    _check_hello_world(rec, 7, "ds-correlation")
    assert rec.wait_for("sub_a") == [7]


def test_sync_and_async_services_call_each_other(
    tavrida2_server: RunningServices, rec: Recorder
) -> None:
    sync_ex, async_ex = "mixed_sync_exchange", "mixed_async_exchange"
    for cls in (MixedSync, MixedAsync):
        disc = discovery.LocalDiscovery()
        disc.register_remote_service("mixed_sync", sync_ex)
        disc.register_remote_service("mixed_async", async_ex)
        cls.set_discovery(disc)
    tavrida2_server(MixedSync, exchange=sync_ex, async_engine=False)
    tavrida2_server(MixedAsync, exchange=async_ex, async_engine=True)
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("mixed_sync", sync_ex)
    disc.register_remote_service("mixed_async", async_ex)
    with tavrida2_server.make_client(source="cli", discovery=disc) as cli:
        cli.mixed_sync.start(n=1).cast()
        cli.mixed_async.start(n=2).cast()
    assert rec.wait_for("sync_got") == [(1, "async")]
    assert rec.wait_for("async_got") == [(2, "sync")]
