"""The Discovery chapter of the Tavrida 1.0 docs: LocalDiscovery, .ds files, the factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    exceptions,
    messages,
    server,
    service,
)
from tavrida2.drivers.memory import MemoryBroker

BROKER = "discovery"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")

DOCS_DS = """\
[service1]
exchange=service1_exchange
notifications=service1_notifications

[service2]
exchange=service2_exchange
notifications=service2_notifications

[service3]
exchange=service3_exchange
notifications=service3_notifications

[service4]
exchange=service4_exchange
"""

HELLO_WORLD_DS = """\
[test_hello]
exchange=test_exchange
notifications=test_notification_exchange

[test_world]
exchange=test_world_exchange
"""


@pytest.fixture
def docs_ds(tmp_path: Path) -> Path:
    path = tmp_path / "services.ds"
    path.write_text(DOCS_DS, encoding="utf-8")
    return path


# -- LocalDiscovery --------------------------------------------------------------


def test_local_discovery_registers_the_three_kinds_of_services() -> None:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("remote_service", "remote_service_exchange")
    disc.register_local_publisher("local_service", "local_service_exchange")
    disc.register_remote_publisher("remote_service", "remote_notifications_exchange")

    assert isinstance(disc, discovery.AbstractDiscovery)
    assert disc.get_remote("remote_service") == "remote_service_exchange"
    assert disc.get_local_publisher("local_service") == "local_service_exchange"
    assert disc.get_remote_publisher("remote_service") == "remote_notifications_exchange"
    # the three tables are separate
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_remote("local_service")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_local_publisher("remote_service")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_remote_publisher("local_service")
    assert disc.get_all_exchanges() == {
        "remote": ["remote_service_exchange"],
        "remote_publisher": ["remote_notifications_exchange"],
        "local_publisher": ["local_service_exchange"],
    }


def test_local_discovery_keyword_registration_and_re_registration() -> None:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service(service_name="test_hello", exchange_name="test_exchange")
    disc.register_remote_service(service_name="test_world", exchange_name="test_exchange")
    disc.register_remote_service(service_name="test_audit", exchange_name="audit_exchange")
    disc.register_remote_service(service_name="test_audit", exchange_name="audit_exchange_2")

    assert disc.get_remote("test_audit") == "audit_exchange_2"
    assert disc.get_all_exchanges() == {
        "remote": ["test_exchange", "audit_exchange_2"],
        "remote_publisher": [],
        "local_publisher": [],
    }


def test_local_discovery_unregister() -> None:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("remote_service", "remote_service_exchange")
    disc.register_local_publisher("local_service", "local_service_exchange")
    disc.register_remote_publisher("remote_service", "remote_notifications_exchange")

    disc.unregister_remote_service("remote_service")
    with pytest.raises(exceptions.UnableToDiscover) as raised:
        disc.get_remote("remote_service")
    assert raised.value.code == 1007
    assert disc.get_remote_publisher("remote_service") == "remote_notifications_exchange"

    disc.unregister_remote_publisher("remote_service")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_remote_publisher("remote_service")
    disc.unregister_local_publisher("local_service")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_local_publisher("local_service")
    disc.unregister_remote_service("never_registered")
    assert disc.get_all_exchanges() == {"remote": [], "remote_publisher": [], "local_publisher": []}


def test_own_discovery_class_from_abstract_discovery_serves_a_controller() -> None:
    class DictDiscovery(discovery.AbstractDiscovery):
        def __init__(self, remote: dict[str, str]) -> None:
            self.remote = remote

        def register_remote_service(self, service_name, exchange_name):
            self.remote[service_name] = exchange_name

        def register_remote_publisher(self, service_name, exchange_name):
            raise NotImplementedError

        def register_local_publisher(self, service_name, exchange_name):
            raise NotImplementedError

        def get_remote(self, service_name):
            try:
                return self.remote[service_name]
            except KeyError:
                raise exceptions.UnableToDiscover(service=service_name) from None

        def get_remote_publisher(self, service_name):
            raise exceptions.UnableToDiscover(service=service_name)

        def get_local_publisher(self, service_name):
            raise exceptions.UnableToDiscover(service=service_name)

        def get_all_exchanges(self):
            remote = sorted(set(self.remote.values()))
            return {"remote": remote, "remote_publisher": [], "local_publisher": []}

    seen: list[Any] = []

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            seen.append(request)

    HelloController.set_discovery(DictDiscovery({}))
    server.Server(
        CONF,
        queue_name="test_service",
        exchange_name="test_exchange",
        service_list=[HelloController],
    ).start()
    with client.RPCClient(
        config=CONF, discovery=DictDiscovery({"test_hello": "test_exchange"}), source="script"
    ) as cli:
        cli.test_hello.hello(param=1).cast()
    MemoryBroker.get(BROKER).run_until_idle()

    [request] = seen
    assert request.payload == {"param": 1}
    assert request.headers["source"] == "script"


# -- .ds file --------------------------------------------------------------------


def test_file_based_discovery_reads_the_docs_ds_file(docs_ds: Path) -> None:
    disc = discovery.FileBasedDiscoveryService(str(docs_ds), "service1")

    assert isinstance(disc, discovery.LocalDiscovery)
    assert disc.service_name == "service1"
    assert disc.service_exchange == "service1_exchange"
    for number in range(1, 5):
        assert disc.get_remote(f"service{number}") == f"service{number}_exchange"
    assert disc.get_local_publisher("service1") == "service1_notifications"
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_local_publisher("service2")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_remote_publisher("service2")
    assert disc.get_all_exchanges() == {
        "remote": [f"service{n}_exchange" for n in range(1, 5)],
        "remote_publisher": [],
        "local_publisher": ["service1_notifications"],
    }


def test_file_based_discovery_with_subscriptions(docs_ds: Path) -> None:
    disc = discovery.FileBasedDiscoveryService(
        docs_ds, "service4", subscriptions=["service1", "service3"]
    )

    assert disc.service_exchange == "service4_exchange"
    assert disc.get_remote_publisher("service1") == "service1_notifications"
    assert disc.get_remote_publisher("service3") == "service3_notifications"
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_remote_publisher("service2")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_local_publisher("service4")  # service4 has no notifications exchange
    assert disc.get_all_exchanges()["remote_publisher"] == [
        "service1_notifications",
        "service3_notifications",
    ]
    assert disc.get_all_exchanges()["local_publisher"] == []


@pytest.mark.parametrize("publisher", ["service4", "service5"])
def test_subscribing_to_a_service_without_notifications_fails(
    docs_ds: Path, publisher: str
) -> None:
    with pytest.raises(exceptions.CantRegisterRemotePublisher):
        discovery.FileBasedDiscoveryService(docs_ds, "service1", subscriptions=[publisher])


def test_discovery_factory(docs_ds: Path) -> None:
    from_file = discovery.DiscoveryFactory(docs_ds).get_discovery_service(
        "service2", subscriptions=["service1"]
    )
    assert type(from_file) is discovery.FileBasedDiscoveryService
    assert from_file.service_exchange == "service2_exchange"
    assert from_file.get_local_publisher("service2") == "service2_notifications"
    assert from_file.get_remote_publisher("service1") == "service1_notifications"
    assert from_file.get_remote("service4") == "service4_exchange"

    file_ds = discovery.DiscoveryFactory(str(docs_ds)).get_file_ds("service3", None)
    assert file_ds.service_exchange == "service3_exchange"

    local = discovery.DiscoveryFactory().get_discovery_service()
    assert type(local) is discovery.LocalDiscovery
    assert local.get_all_exchanges() == {
        "remote": [],
        "remote_publisher": [],
        "local_publisher": [],
    }
    assert type(discovery.DiscoveryFactory(docs_ds).get_local_ds()) is discovery.LocalDiscovery
    with pytest.raises(ValueError):
        discovery.DiscoveryFactory().get_file_ds("service1", None)
    with pytest.raises(ValueError):
        discovery.DiscoveryFactory(docs_ds).get_discovery_service()


def test_hello_and_world_run_on_discovery_from_a_ds_file(tmp_path: Path) -> None:
    path = tmp_path / "services.ds"
    path.write_text(HELLO_WORLD_DS, encoding="utf-8")
    seen: list[tuple[str, Any]] = []

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            seen.append(("hello", request))
            proxy.test_world.world(param=12345).call()
            proxy.publish(param="hello publication")

        @dispatcher.rpc_response_method(service="test_world", method="world")
        def world_resp(self, response, proxy, param):
            seen.append(("world_resp", response))

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, param):
            seen.append(("world", request))
            return {"param": "world response"}

        @dispatcher.subscription_method(service="test_hello", method="hello")
        def hello_subscription(self, notification, proxy, param):
            seen.append(("hello_subscription", notification))

    factory = discovery.DiscoveryFactory(path)
    HelloController.set_discovery(factory.get_discovery_service("test_hello"))
    WorldController.set_discovery(
        discovery.FileBasedDiscoveryService(path, "test_world", subscriptions=["test_hello"])
    )
    hello_ds = HelloController.get_discovery()
    world_ds = WorldController.get_discovery()
    assert isinstance(hello_ds, discovery.FileBasedDiscoveryService)
    assert isinstance(world_ds, discovery.FileBasedDiscoveryService)
    for disc, cls in ((hello_ds, HelloController), (world_ds, WorldController)):
        server.Server(
            CONF,
            queue_name=f"{cls.service_name}_queue",
            exchange_name=disc.service_exchange,
            service_list=[cls],
        ).start()
    with client.RPCClient(
        config=CONF, discovery=factory.get_file_ds("test_hello", []), source="client_app"
    ) as cli:
        cli.test_hello.hello(param=123).cast(correlation_id="ds-chain")
    broker = MemoryBroker.get(BROKER)
    assert broker.run_until_idle() == 4
    assert broker.is_idle()
    assert broker.unroutable == broker.discarded == []

    assert [name for name, _ in seen] == ["hello", "world", "hello_subscription", "world_resp"]
    got = dict(seen)
    assert type(got["world"]) is messages.IncomingRequestCall
    assert type(got["world_resp"]) is messages.IncomingResponse
    assert type(got["hello_subscription"]) is messages.IncomingNotification
    assert got["world"].payload == {"param": 12345}
    assert got["world_resp"].payload == {"param": "world response"}
    assert got["hello_subscription"].payload == {"param": "hello publication"}
    assert {m.correlation_id for m in got.values()} == {"ds-chain"}
    assert got["world_resp"].request_id == got["world"].request_id
    assert got["hello_subscription"].headers["source"] == "test_hello.hello"
    assert broker.bindings("test_notification_exchange") == [
        ("test_world_queue", "test_hello.hello")
    ]
