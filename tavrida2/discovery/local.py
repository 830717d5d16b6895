"""Discovery held in memory, filled in code."""

from __future__ import annotations

from tavrida2 import exceptions
from tavrida2.discovery.base import AbstractDiscovery


class LocalDiscovery(AbstractDiscovery):
    """Discovery whose tables are filled by ``register_*`` calls.

    Example::

        disc = LocalDiscovery()
        disc.register_remote_service("test_world", "test_world_exchange")
        disc.register_local_publisher("test_hello", "test_notification_exchange")
        HelloController.set_discovery(disc)
    """

    def __init__(self) -> None:
        self._remote: dict[str, str] = {}
        self._remote_publishers: dict[str, str] = {}
        self._local_publishers: dict[str, str] = {}

    @staticmethod
    def _check(service_name: str, exchange_name: str) -> None:
        if not service_name or not isinstance(service_name, str):
            raise exceptions.ConfigError(reason=f"service name must be text, got {service_name!r}")
        if not exchange_name or not isinstance(exchange_name, str):
            raise exceptions.ConfigError(
                reason=f"exchange of service {service_name!r} must be text, got {exchange_name!r}"
            )

    # Tavrida 1.0's hooks, behind the public register_* methods: a subclass may override either
    def _register_remote(self, service_name: str, exchange_name: str) -> None:
        self._check(service_name, exchange_name)
        self._remote[service_name] = exchange_name

    def _register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
        self._check(service_name, exchange_name)
        self._remote_publishers[service_name] = exchange_name

    def _register_local_publisher(self, service_name: str, exchange_name: str) -> None:
        self._check(service_name, exchange_name)
        self._local_publishers[service_name] = exchange_name

    def unregister_remote_service(self, service_name: str) -> None:
        self._remote.pop(service_name, None)

    def unregister_remote_publisher(self, service_name: str) -> None:
        self._remote_publishers.pop(service_name, None)

    def unregister_local_publisher(self, service_name: str) -> None:
        self._local_publishers.pop(service_name, None)

    def get_remote(self, service_name: str) -> str:
        try:
            return self._remote[service_name]
        except KeyError:
            raise exceptions.UnableToDiscover(service=service_name) from None

    def get_remote_publisher(self, service_name: str) -> str:
        try:
            return self._remote_publishers[service_name]
        except KeyError:
            raise exceptions.UnableToDiscover(service=service_name) from None

    def get_local_publisher(self, service_name: str) -> str:
        try:
            return self._local_publishers[service_name]
        except KeyError:
            raise exceptions.UnableToDiscover(service=service_name) from None

    def get_all_exchanges(self) -> dict[str, list[str]]:
        return {
            "remote": list(dict.fromkeys(self._remote.values())),
            "remote_publisher": list(dict.fromkeys(self._remote_publishers.values())),
            "local_publisher": list(dict.fromkeys(self._local_publishers.values())),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(remote={self._remote!r}, "
            f"remote_publishers={self._remote_publishers!r}, "
            f"local_publishers={self._local_publishers!r})"
        )


class ChainedDiscovery(AbstractDiscovery):
    """Looks names up in several discoveries in turn; registrations go to its own table.

    A server uses it to answer requests that reached none of its services.
    """

    def __init__(self, *discoveries: AbstractDiscovery) -> None:
        self.own = LocalDiscovery()
        self._chain: list[AbstractDiscovery] = [self.own, *discoveries]

    def register_remote_service(self, service_name: str, exchange_name: str) -> None:
        self.own.register_remote_service(service_name, exchange_name)

    def register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
        self.own.register_remote_publisher(service_name, exchange_name)

    def register_local_publisher(self, service_name: str, exchange_name: str) -> None:
        self.own.register_local_publisher(service_name, exchange_name)

    def _first(self, getter: str, service_name: str) -> str:
        for discovery in self._chain:
            try:
                return getattr(discovery, getter)(service_name)  # type: ignore[no-any-return]
            except exceptions.UnableToDiscover:
                continue
        raise exceptions.UnableToDiscover(service=service_name)

    def get_remote(self, service_name: str) -> str:
        return self._first("get_remote", service_name)

    def get_remote_publisher(self, service_name: str) -> str:
        return self._first("get_remote_publisher", service_name)

    def get_local_publisher(self, service_name: str) -> str:
        return self._first("get_local_publisher", service_name)

    def get_all_exchanges(self) -> dict[str, list[str]]:
        merged: dict[str, list[str]] = {"remote": [], "remote_publisher": [], "local_publisher": []}
        for discovery in self._chain:
            for kind, names in discovery.get_all_exchanges().items():
                merged[kind].extend(n for n in names if n not in merged[kind])
        return merged


__all__ = ["ChainedDiscovery", "LocalDiscovery"]
