"""Several broker addresses in one :class:`~tavrida2.config.ConnectionConfig`.

``hosts=["rabbit1", "rabbit2:5673", "[::1]:5672"]`` (an entry without a port
takes the config's ``port``), or a list of URLs (``from_url([...])``, or one
string of URLs separated by commas) that agree on everything but host and
port. How the drivers use them: :mod:`tavrida2.drivers.failover`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tavrida2 import exceptions

if TYPE_CHECKING:
    pass

# a comma that starts the next URL (a comma inside a URL, say in a password, stays)
_URL_SEPARATOR = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::(\d+))?$")


def _bad(entry: Any, why: str) -> exceptions.ConfigError:
    return exceptions.ConfigError(reason=f"hosts entry {entry!r}: {why}")


def _port(entry: Any, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad(entry, "the port must be an integer from 1 to 65535")
    return int(text)


def parse_host(entry: str | tuple[str, int], default_port: int) -> tuple[str, int]:
    """``(host, port)`` of ``"host"``, ``"host:port"``, ``"[v6]:port"`` or ``(host, port)``."""
    if isinstance(entry, tuple) and len(entry) == 2:
        host, port = entry
        if not isinstance(host, str) or not host:
            raise _bad(entry, "expected a host name")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _bad(entry, "the port must be an integer from 1 to 65535")
        return host, port
    if not isinstance(entry, str):
        raise _bad(entry, 'expected "host", "host:port" or (host, port)')
    text = entry.strip()
    if "/" in text or "@" in text:
        raise _bad(entry, 'expected "host" or "host:port" (a URL goes to from_url)')
    bracketed = _BRACKETED.match(text)
    if bracketed:
        host, port_text = bracketed.groups()
        return host, _port(entry, port_text) if port_text else default_port
    if text.count(":") == 1:
        host, port_text = text.split(":")
        if not host:
            raise _bad(entry, "expected a host name before the port")
        return host, _port(entry, port_text)
    if not text:
        raise _bad(entry, "expected a host name")
    return text, default_port  # a host name, or an IPv6 address without a port


def parse_hosts(
    hosts: Sequence[str | tuple[str, int]] | str, default_port: int
) -> list[tuple[str, int]]:
    """Every address of ``hosts`` (a list, or one string separated by commas), in order."""
    entries: list[Any] = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    if not entries or (isinstance(hosts, str) and not hosts.strip()):
        raise exceptions.ConfigError(reason="hosts: expected at least one broker address")
    addresses: list[tuple[str, int]] = []
    for entry in entries:
        address = parse_host(entry, default_port)
        if address not in addresses:
            addresses.append(address)
    return addresses


def split_urls(url: str | Sequence[str]) -> list[str]:
    """The URLs of a list, or of one string of URLs separated by commas."""
    if isinstance(url, str):
        return _URL_SEPARATOR.split(url.strip()) if url.strip() else [url]
    urls = list(url)
    if not urls or not all(isinstance(item, str) for item in urls):
        raise exceptions.ConfigError(reason=f"{url!r}: expected a URL or a list of URLs")
    return urls


def left_out(url: str, name: str) -> bool:
    """Whether ``url`` leaves out its credentials or virtual host (``name``)."""
    rest = url.split("://", 1)[-1]
    if name == "credentials":
        return "@" not in rest.split("/", 1)[0]
    path = rest.split("?", 1)[0].partition("/")[2]
    return not path


def netloc(address: tuple[str, int]) -> str:
    """``host:port`` (an IPv6 address in brackets)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["left_out", "netloc", "parse_host", "parse_hosts", "split_urls"]
