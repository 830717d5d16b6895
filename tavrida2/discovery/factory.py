"""Chooses the discovery implementation from a path."""

from __future__ import annotations

import os

from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.discovery.dsfile import FileBasedDiscoveryService
from tavrida2.discovery.local import LocalDiscovery


class DiscoveryFactory:
    """Creates discovery objects: from a ``.ds`` file if a path is given, else local."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path else None

    def get_discovery_service(
        self, service_name: str | None = None, subscriptions: list[str] | None = None
    ) -> AbstractDiscovery:
        if self.path:
            if not service_name:
                raise ValueError("a .ds file discovery needs the local service name")
            return self.get_file_ds(service_name, subscriptions)
        return self.get_local_ds()

    def get_file_ds(
        self, service_name: str, subscriptions: list[str] | None = None
    ) -> FileBasedDiscoveryService:
        if not self.path:
            raise ValueError("no .ds file path given")
        return FileBasedDiscoveryService(self.path, service_name, subscriptions)

    def get_local_ds(self) -> LocalDiscovery:
        return LocalDiscovery()


__all__ = ["DiscoveryFactory"]
