"""Discovery from a ``.ds`` file (INI): one section per service.

::

    [service1]
    exchange=service1_exchange
    notifications=service1_notifications

    [service2]
    exchange=service2_exchange

:class:`DSFile` reads it both ways: Tavrida 1.0's (``dsf["service1"]``,
``for name in dsf``, ``"service1" in dsf``, ``dsf.services`` the list of
names, :class:`DSFileEntry` with ``service_exchange`` ...) and tavrida2's
(``dsf.get("service1")``, ``dsf.entries``, :class:`DSEntry` with ``exchange``).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from dataclasses import dataclass

from tavrida2 import exceptions
from tavrida2.discovery.local import LocalDiscovery

_KNOWN_KEYS = frozenset(("exchange", "notifications"))


@dataclass(frozen=True)
class DSEntry:
    """One service of a .ds file: its exchange and, if it publishes, its notifications exchange."""

    service: str
    exchange: str
    notifications: str | None

    # Tavrida 1.0's names (DSFileEntry)
    @property
    def service_name(self) -> str:
        return self.service

    @property
    def service_exchange(self) -> str:
        return self.exchange

    @property
    def notifications_exchange(self) -> str | None:
        return self.notifications


class DSFileEntry(DSEntry):
    """Tavrida 1.0's name and constructor for a :class:`DSEntry`; :class:`DSFile` makes these."""

    def __init__(
        self,
        service_name: str,
        service_exchange: str,
        notifications_exchange: str | None = None,
    ) -> None:
        super().__init__(service_name, service_exchange, notifications_exchange)


class ServiceNames(list[str]):
    """The names of a .ds file's services, in file order (Tavrida 1.0's ``DSFile.services``).

    tavrida2 first gave ``services`` as a dict of entries; its reading methods
    (``get``, ``keys``, ``values``, ``items``) still answer here.
    """

    def __init__(self, entries: dict[str, DSFileEntry]) -> None:
        super().__init__(entries)
        self._entries = entries

    def get(self, service_name: str) -> DSFileEntry | None:
        return self._entries.get(service_name)

    def keys(self) -> KeysView[str]:
        return self._entries.keys()

    def values(self) -> ValuesView[DSFileEntry]:
        return self._entries.values()

    def items(self) -> ItemsView[str, DSFileEntry]:
        return self._entries.items()


class DSFile:
    """A parsed ``.ds`` file: service name -> :class:`DSFileEntry`.

    ``dsf[name]`` and ``dsf.get(name)`` give a service's entry (an unknown name
    raises ``ServiceNotInDSFile``, which is a ``KeyError``, a ``ConfigError``
    and 1.0's ``ServiceIsNotRegister``); iterating gives the names; a file that
    cannot be read or parsed raises ``DSFileError`` (a ``ConfigError`` and a
    ``configparser.Error``).

    Example::

        dsf = DSFile("services.ds")
        dsf["service1"].service_exchange    # "service1_exchange"
        list(dsf) == dsf.services           # ["service1", "service2"]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(self.path, encoding="utf-8") as stream:
                parser.read_file(stream)
        except OSError as exc:
            raise exceptions.DSFileError(
                reason=f"cannot read discovery file {self.path}: {exc.strerror or exc}"
            ) from None
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise exceptions.DSFileError(
                reason=f"discovery file {self.path} is not a valid INI file: {exc}"
            ) from None
        #: Service name -> entry, in file order.
        self.entries: dict[str, DSFileEntry] = {}
        for section in parser.sections():
            values = {key: _unquote(value) for key, value in parser.items(section)}
            unknown = values.keys() - _KNOWN_KEYS
            if unknown:
                raise exceptions.DSFileError(
                    reason=f"{self.path}, section [{section}]: unknown key(s) "
                    f"{', '.join(sorted(unknown))}; expected 'exchange' and optional "
                    "'notifications'"
                )
            if not values.get("exchange"):
                raise exceptions.DSFileError(
                    reason=f"{self.path}, section [{section}]: key 'exchange' is missing; "
                    "expected the name of the service's exchange"
                )
            self.entries[section] = DSFileEntry(
                section, values["exchange"], values.get("notifications") or None
            )
        #: The service names, in file order.
        self.services = ServiceNames(self.entries)

    def get(self, service_name: str) -> DSFileEntry:
        """The entry of ``service_name``; raises ``ServiceNotInDSFile`` if the file has none."""
        try:
            return self.entries[service_name]
        except KeyError:
            raise exceptions.ServiceNotInDSFile(
                service=service_name,
                reason=f"{self.path}: no section [{service_name}] for service {service_name!r}",
            ) from None

    __getitem__ = get

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __contains__(self, service_name: object) -> bool:
        return service_name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"DSFile({self.path!r}, services={list(self.entries)!r})"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


class FileBasedDiscoveryService(LocalDiscovery):
    """Discovery read from a ``.ds`` file for the local service ``service_name``.

    Every service of the file becomes a remote service, ``service_name`` too
    (Tavrida 1.0 left it out, so a service could not call itself); the
    notification exchange of ``service_name`` (if any) its local publisher;
    each service in ``subscriptions`` a remote publisher.

    A ``service_name`` or subscription the file does not list raises
    ``ServiceNotInDSFile``/``SubscriptionNotInDSFile`` (1.0's
    ``ServiceIsNotRegister``, and a ``ConfigError``); a subscription to a
    service without ``notifications`` raises ``CantRegisterRemotePublisher``.

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
        for publisher in subscriptions or ():
            if publisher not in self.ds_file:
                raise exceptions.SubscriptionNotInDSFile(
                    service=publisher,
                    reason=f"{self.ds_file.path}: no section [{publisher}] for the "
                    f"subscription of {service_name!r}",
                )
        own = self.ds_file.get(service_name)
        self.service_exchange = own.exchange
        # its own service too (1.0 left it out): a handler may call its own service
        # through the broker, and a script may use a service's discovery to call it
        for entry in self.ds_file.entries.values():
            self.register_remote_service(entry.service, entry.exchange)
        if own.notifications:
            self.register_local_publisher(service_name, own.notifications)
        for publisher in subscriptions or ():
            found = self.ds_file.get(publisher)
            if not found.notifications:
                raise exceptions.CantRegisterRemotePublisher(service=publisher)
            self.register_remote_publisher(publisher, found.notifications)


__all__ = ["DSEntry", "DSFile", "DSFileEntry", "FileBasedDiscoveryService", "ServiceNames"]
