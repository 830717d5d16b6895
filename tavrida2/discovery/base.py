"""The discovery interface: service name -> exchange name."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Self

# (public method, Tavrida 1.0's protected hook it calls): a subclass implements either
_REGISTRATIONS = (
    ("register_remote_service", "_register_remote"),
    ("register_remote_publisher", "_register_remote_publisher"),
    ("register_local_publisher", "_register_local_publisher"),
)


class AbstractDiscovery(abc.ABC):
    """Maps service names to exchanges, in three tables.

    - remote services: where to send requests, responses and errors;
    - remote publishers: where the notifications we subscribe to are published;
    - local publishers: where our own services publish notifications.

    Implement this class to take the mapping from elsewhere (a settings store,
    a service registry): the ``get_*`` methods and ``get_all_exchanges``, and
    for each table either the public ``register_*`` method (tavrida2's way) or
    the protected hook the public one calls (Tavrida 1.0's way):
    ``_register_remote``, ``_register_remote_publisher``,
    ``_register_local_publisher``. A class implementing neither for a table
    cannot be created (``TypeError`` naming what to implement).
    """

    _missing_registrations: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._missing_registrations = tuple(
            f"{public}() or {hook}()"
            for public, hook in _REGISTRATIONS
            if getattr(cls, public) is getattr(AbstractDiscovery, public)
            and getattr(cls, hook) is getattr(AbstractDiscovery, hook)
        )

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        abstract = sorted(f"{name}()" for name in cls.__abstractmethods__)
        missing = [*cls._missing_registrations, *abstract]
        if missing:
            raise TypeError(
                f"Can't instantiate discovery class {cls.__name__}: it must implement "
                + ", ".join(missing)
            )
        return super().__new__(cls)

    def register_remote_service(self, service_name: str, exchange_name: str) -> None:
        """Requests, responses and errors for ``service_name`` go to ``exchange_name``."""
        self._register_remote(service_name, exchange_name)

    def register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
        """``service_name`` publishes its notifications to ``exchange_name``."""
        self._register_remote_publisher(service_name, exchange_name)

    def register_local_publisher(self, service_name: str, exchange_name: str) -> None:
        """Our service ``service_name`` publishes its notifications to ``exchange_name``."""
        self._register_local_publisher(service_name, exchange_name)

    def _register_remote(self, service_name: str, exchange_name: str) -> None:
        """Tavrida 1.0's hook behind ``register_remote_service``."""
        self._no_hook("register_remote_service", "_register_remote")

    def _register_remote_publisher(self, service_name: str, exchange_name: str) -> None:
        """Tavrida 1.0's hook behind ``register_remote_publisher``."""
        self._no_hook("register_remote_publisher", "_register_remote_publisher")

    def _register_local_publisher(self, service_name: str, exchange_name: str) -> None:
        """Tavrida 1.0's hook behind ``register_local_publisher``."""
        self._no_hook("register_local_publisher", "_register_local_publisher")

    def _no_hook(self, public: str, hook: str) -> None:
        # reached only through super() or a direct call: a class implements one of the two
        raise NotImplementedError(
            f"{type(self).__name__} implements {public}() itself, not the hook {hook}()"
        )

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
