"""Discovery from a ``.ds`` file (INI): one section per service.

::

    [service1]
    exchange=service1_exchange
    notifications=service1_notifications

    [service2]
    exchange=service2_exchange
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass

from tavrida2 import exceptions
from tavrida2.discovery.local import LocalDiscovery

_KNOWN_KEYS = frozenset(("exchange", "notifications"))


@dataclass(frozen=True)
class DSEntry:
    """One service of a .ds file."""

    service: str
    exchange: str
    notifications: str | None


class DSFile:
    """A parsed ``.ds`` file: service name -> :class:`DSEntry`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(self.path, encoding="utf-8") as stream:
                parser.read_file(stream)
        except OSError as exc:
            raise exceptions.ConfigError(
                reason=f"cannot read discovery file {self.path}: {exc.strerror or exc}"
            ) from None
        except configparser.Error as exc:
            raise exceptions.ConfigError(
                reason=f"discovery file {self.path} is not a valid INI file: {exc}"
            ) from None
        self.services: dict[str, DSEntry] = {}
        for section in parser.sections():
            values = {key: _unquote(value) for key, value in parser.items(section)}
            unknown = values.keys() - _KNOWN_KEYS
            if unknown:
                raise exceptions.ConfigError(
                    reason=f"{self.path}, section [{section}]: unknown key(s) "
                    f"{', '.join(sorted(unknown))}; expected 'exchange' and optional "
                    "'notifications'"
                )
            if not values.get("exchange"):
                raise exceptions.ConfigError(
                    reason=f"{self.path}, section [{section}]: key 'exchange' is missing; "
                    "expected the name of the service's exchange"
                )
            self.services[section] = DSEntry(
                section, values["exchange"], values.get("notifications") or None
            )

    def get(self, service_name: str) -> DSEntry:
        try:
            return self.services[service_name]
        except KeyError:
            raise exceptions.ConfigError(
                reason=f"{self.path}: no section [{service_name}] for service {service_name!r}"
            ) from None


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


class FileBasedDiscoveryService(LocalDiscovery):
    """Discovery read from a ``.ds`` file for the local service ``service_name``.

    Every service of the file becomes a remote service; the notification
    exchange of ``service_name`` (if any) its local publisher; each service in
    ``subscriptions`` a remote publisher (it must have ``notifications``).

    Example::

        disc = FileBasedDiscoveryService("services.ds", "service2",
                                         subscriptions=["service1"])
    """

    def __init__(
        self,
        ds_filename: str | os.PathLike[str],
        service_name: str,
        subscriptions: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.ds_file = DSFile(ds_filename)
        self.service_name = service_name
        own = self.ds_file.get(service_name)
        self.service_exchange = own.exchange
        for entry in self.ds_file.services.values():
            self.register_remote_service(entry.service, entry.exchange)
        if own.notifications:
            self.register_local_publisher(service_name, own.notifications)
        for publisher in subscriptions or ():
            found = self.ds_file.services.get(publisher)
            if found is None or not found.notifications:
                raise exceptions.CantRegisterRemotePublisher(service=publisher)
            self.register_remote_publisher(publisher, found.notifications)


__all__ = ["DSEntry", "DSFile", "FileBasedDiscoveryService"]
