"""The discovery interface: service name -> exchange name."""

from __future__ import annotations

import abc


class AbstractDiscovery(abc.ABC):
    """Maps service names to exchanges, in three tables.

    - remote services: where to send requests, responses and errors;
    - remote publishers: where the notifications we subscribe to are published;
    - local publishers: where our own services publish notifications.

    Implement this class to take the mapping from elsewhere (a settings store,
    a service registry).
    """

    @abc.abstractmethod
    def register_remote_service(self, service_name: str, exchange_name: str) -> None:
        """Requests, responses and errors for ``service_name`` go to ``exchange_name``."""

    @abc.abstractmethod
    def register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
        """``service_name`` publishes its notifications to ``exchange_name``."""

    @abc.abstractmethod
    def register_local_publisher(self, service_name: str, exchange_name: str) -> None:
        """Our service ``service_name`` publishes its notifications to ``exchange_name``."""

    @abc.abstractmethod
    def get_remote(self, service_name: str) -> str:
        """Exchange of a remote service; raises ``UnableToDiscover`` if unknown."""

    @abc.abstractmethod
    def get_remote_publisher(self, service_name: str) -> str:
        """Notification exchange of a remote publisher; raises ``UnableToDiscover``."""

    @abc.abstractmethod
    def get_local_publisher(self, service_name: str) -> str:
        """Notification exchange of a local service; raises ``UnableToDiscover``."""

    @abc.abstractmethod
    def get_all_exchanges(self) -> dict[str, list[str]]:
        """``{"remote": [...], "remote_publisher": [...], "local_publisher": [...]}``."""


__all__ = ["AbstractDiscovery"]
