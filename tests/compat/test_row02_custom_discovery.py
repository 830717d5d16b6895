"""Rows 2a-2e of docs/migrating-notes-a.md: discovery classes of one's own.

Tavrida 1.0's ``AbstractDiscovery`` has public ``register_remote_service``,
``register_remote_publisher`` and ``register_local_publisher`` calling the
protected ``_register_remote``, ``_register_remote_publisher`` and
``_register_local_publisher`` a subclass implements, with ``get_remote``,
``get_remote_publisher``, ``get_local_publisher`` and ``get_all_exchanges``.
tavrida2's subclasses implement the public methods; both kinds work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tavrida2 import client, config, discovery, dispatcher, exceptions, server, service
from tavrida2.drivers.memory import MemoryBroker

BROKER = "compat-discovery"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")


class TablesDiscovery(discovery.AbstractDiscovery):
    """A discovery written the Tavrida 1.0 way: the protected hooks and the getters."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, str]] = {
            "remote": {},
            "remote_publisher": {},
            "local_publisher": {},
        }

    def _register_remote(self, service_name: str, exchange_name: str) -> None:
        self.tables["remote"][service_name] = exchange_name

    def _register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
        self.tables["remote_publisher"][service_name] = exchange_name

    def _register_local_publisher(self, service_name: str, exchange_name: str) -> None:
        self.tables["local_publisher"][service_name] = exchange_name

    def _get(self, table: str, service_name: str) -> str:
        try:
            return self.tables[table][service_name]
        except KeyError:
            raise exceptions.UnableToDiscover(service=service_name) from None

    def get_remote(self, service_name: str) -> str:
        return self._get("remote", service_name)

    def get_remote_publisher(self, service_name: str) -> str:
        return self._get("remote_publisher", service_name)

    def get_local_publisher(self, service_name: str) -> str:
        return self._get("local_publisher", service_name)

    def get_all_exchanges(self) -> dict[str, list[str]]:
        return {table: sorted(set(names.values())) for table, names in self.tables.items()}


def test_row_02a_a_1_0_style_discovery_is_filled_through_the_public_methods() -> None:
    disc = TablesDiscovery()
    disc.register_remote_service("world", "world_exchange")
    disc.register_remote_publisher("news", "news_notifications")
    disc.register_local_publisher("hello", "hello_notifications")

    assert disc.get_remote("world") == "world_exchange"
    assert disc.get_remote_publisher("news") == "news_notifications"
    assert disc.get_local_publisher("hello") == "hello_notifications"
    assert disc.get_all_exchanges() == {
        "remote": ["world_exchange"],
        "remote_publisher": ["news_notifications"],
        "local_publisher": ["hello_notifications"],
    }


def test_row_02a_a_1_0_style_discovery_serves_a_controller_and_a_client() -> None:
    seen: list[Any] = []

    @dispatcher.rpc_service("compat_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="compat_hello", method="hello")
        def hello(self, request: Any, proxy: Any, param: int) -> None:
            seen.append(param)

    HelloController.set_discovery(TablesDiscovery())
    server.Server(
        CONF,
        queue_name="compat_hello_queue",
        exchange_name="compat_hello_exchange",
        service_list=[HelloController],
    ).start()
    disc = TablesDiscovery()
    disc.register_remote_service("compat_hello", "compat_hello_exchange")
    with client.RPCClient(config=CONF, discovery=disc, source="script") as cli:
        cli.compat_hello.hello(param=7).cast()
    MemoryBroker.get(BROKER).run_until_idle()

    assert seen == [7]


def test_row_02b_a_tavrida2_style_discovery_still_works() -> None:
    class PublicDiscovery(discovery.AbstractDiscovery):
        def __init__(self) -> None:
            self.remote: dict[str, str] = {}

        def register_remote_service(self, service_name: str, exchange_name: str) -> None:
            self.remote[service_name] = exchange_name

        def register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
            self.remote[service_name] = exchange_name

        def register_local_publisher(self, service_name: str, exchange_name: str) -> None:
            self.remote[service_name] = exchange_name

        def get_remote(self, service_name: str) -> str:
            return self.remote[service_name]

        get_remote_publisher = get_local_publisher = get_remote

        def get_all_exchanges(self) -> dict[str, list[str]]:
            return {"remote": list(self.remote.values())}

    disc = PublicDiscovery()
    disc.register_remote_service("a", "a_exchange")
    assert disc.get_remote("a") == "a_exchange"


def test_row_02c_a_discovery_implementing_neither_way_names_what_is_missing() -> None:
    class HalfDiscovery(discovery.AbstractDiscovery):
        def _register_remote(self, service_name: str, exchange_name: str) -> None:
            pass

        def register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
            pass

        def get_remote(self, service_name: str) -> str:
            return ""

    with pytest.raises(TypeError) as raised:
        HalfDiscovery()  # type: ignore[abstract]
    message = str(raised.value)
    assert "HalfDiscovery" in message
    assert "register_local_publisher() or _register_local_publisher()" in message
    assert "get_remote_publisher()" in message
    assert "get_all_exchanges()" in message
    assert "_register_remote_publisher" not in message
    assert "register_remote_service" not in message


def test_row_02d_a_local_discovery_subclass_overriding_a_hook_sees_every_registration(
    tmp_path: Path,
) -> None:
    registered: list[tuple[str, str]] = []

    class RecordingDiscovery(discovery.LocalDiscovery):
        def _register_remote(self, service_name: str, exchange_name: str) -> None:
            registered.append((service_name, exchange_name))
            super()._register_remote(service_name, exchange_name)

    disc = RecordingDiscovery()
    disc.register_remote_service("world", "world_exchange")
    assert registered == [("world", "world_exchange")]
    assert disc.get_remote("world") == "world_exchange"

    class RecordingFileDiscovery(discovery.FileBasedDiscoveryService):
        def _register_remote(self, service_name: str, exchange_name: str) -> None:
            registered.append((service_name, exchange_name))
            super()._register_remote(service_name, exchange_name)

    path = tmp_path / "services.ds"
    path.write_text("[a]\nexchange=a_exchange\n[b]\nexchange=b_exchange\n", encoding="utf-8")
    registered.clear()
    RecordingFileDiscovery(path, "a")
    assert sorted(registered) == [("a", "a_exchange"), ("b", "b_exchange")]


def test_row_02e_kept_unregistering_an_unknown_service_is_not_an_error() -> None:
    # 1.0's LocalDiscovery raised KeyError; tavrida2 removes the name if it is there
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("world", "world_exchange")
    disc.unregister_remote_service("world")
    disc.unregister_remote_service("world")
    disc.unregister_remote_publisher("nobody")
    disc.unregister_local_publisher("nobody")
    with pytest.raises(exceptions.UnableToDiscover):
        disc.get_remote("world")
