"""A RabbitMQ virtual host of a test's own: reachability, creation, deletion.

The broker is the one of an ``amqp://`` URL (default
``amqp://guest:guest@127.0.0.1:5672/``). Vhosts are created and deleted
through an admin:

- ``rabbitmqctl``: ``add_vhost``, ``set_permissions``, ``delete_vhost`` (the
  broker's own machine; needs the right to run ``rabbitmqctl``);
- the management HTTP API at a URL such as ``http://127.0.0.1:15672``, with
  the user and password of the AMQP URL (the ``rabbitmq_management`` plugin,
  and a user tagged ``administrator``);
- ``auto``: the management API at port 15672 of the broker's host if it
  answers, else ``rabbitmqctl`` if it is on the ``PATH``.

The user of the URL gets every permission on the new vhost.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Seconds to wait for the broker's port, an admin command or an HTTP answer.
ADMIN_TIMEOUT = 30.0
_PROBE_TIMEOUT = 3.0


class RabbitMQUnavailable(Exception):
    """The broker or its admin cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Vhost:
    """A vhost made for a test: its ``name`` and the AMQP ``url`` that connects to it."""

    name: str
    url: str

    def __str__(self) -> str:
        return self.url


@dataclasses.dataclass(frozen=True)
class BrokerAddress:
    """The parts of an AMQP URL the admin needs."""

    scheme: str
    host: str
    port: int
    user: str
    password: str
    query: str

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise RabbitMQUnavailable(f"{url!r} is no amqp:// or amqps:// URL")
        try:
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError as exc:
            raise RabbitMQUnavailable(f"bad port in the RabbitMQ URL: {exc}") from None
        return cls(
            parts.scheme,
            parts.hostname or "127.0.0.1",
            port,
            urllib.parse.unquote(parts.username or "guest"),
            urllib.parse.unquote(parts.password or "guest"),
            parts.query,
        )

    def url_of(self, vhost: str) -> str:
        """The AMQP URL of ``vhost`` on this broker, with this URL's user and options."""
        user = urllib.parse.quote(self.user, safe="")
        password = urllib.parse.quote(self.password, safe="")
        path = urllib.parse.quote(vhost, safe="")
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{user}:{password}@{self.host}:{self.port}/{path}{query}"

    def check_reachable(self) -> None:
        """Raise :class:`RabbitMQUnavailable` unless an AMQP broker answers at the address."""
        try:
            with socket.create_connection((self.host, self.port), timeout=_PROBE_TIMEOUT) as sock:
                if self.scheme == "amqp":
                    sock.settimeout(_PROBE_TIMEOUT)
                    sock.sendall(b"AMQP\x00\x00\x09\x01")
                    if not sock.recv(8):
                        raise RabbitMQUnavailable(
                            f"{self.host}:{self.port} closed the connection: no AMQP broker"
                        )
        except OSError as exc:
            raise RabbitMQUnavailable(
                f"RabbitMQ is not reachable at {self.host}:{self.port} ({exc})"
            ) from None


class RabbitmqctlAdmin:
    """Vhosts through the ``rabbitmqctl`` command."""

    def __init__(self, command: str = "rabbitmqctl") -> None:
        self.command = command

    def _run(self, *args: str) -> None:
        try:
            done = subprocess.run(
                [self.command, *args],
                capture_output=True,
                text=True,
                timeout=ADMIN_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RabbitMQUnavailable(f"{self.command} {' '.join(args)}: {exc}") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            raise RabbitMQUnavailable(
                f"{self.command} {' '.join(args)} failed ({done.returncode}): {output}"
            )

    def create(self, vhost: str, user: str) -> None:
        self._run("add_vhost", vhost)
        self._run("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def delete(self, vhost: str) -> None:
        self._run("delete_vhost", vhost)

    def __repr__(self) -> str:
        return self.command


class ManagementAdmin:
    """Vhosts through the management HTTP API at ``base_url`` (``http://host:15672``)."""

    def __init__(self, base_url: str, user: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._auth = f"Basic {token}"

    def _request(self, method: str, path: str, body: object | None = None) -> None:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(f"{self.base_url}/api/{path}", data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT):
                pass
        except urllib.error.HTTPError as exc:
            raise RabbitMQUnavailable(
                f"management API {method} /api/{path}: HTTP {exc.code} {exc.reason}"
            ) from None
        except (OSError, ValueError) as exc:
            raise RabbitMQUnavailable(f"management API at {self.base_url}: {exc}") from None

    def answers(self) -> bool:
        try:
            self._request("GET", "overview")
        except RabbitMQUnavailable:
            return False
        return True

    def create(self, vhost: str, user: str) -> None:
        name = urllib.parse.quote(vhost, safe="")
        self._request("PUT", f"vhosts/{name}", {})
        self._request(
            "PUT",
            f"permissions/{name}/{urllib.parse.quote(user, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )

    def delete(self, vhost: str) -> None:
        self._request("DELETE", f"vhosts/{urllib.parse.quote(vhost, safe='')}")

    def __repr__(self) -> str:
        return f"management API at {self.base_url}"


Admin = RabbitmqctlAdmin | ManagementAdmin


def choose_admin(choice: str, address: BrokerAddress) -> Admin:
    """The admin ``choice`` names: ``auto``, ``rabbitmqctl`` or a management URL."""
    if choice == "rabbitmqctl":
        return RabbitmqctlAdmin()
    if choice.startswith(("http://", "https://")):
        return ManagementAdmin(choice, address.user, address.password)
    if choice != "auto":
        raise RabbitMQUnavailable(
            f"unknown RabbitMQ admin {choice!r}: expected auto, rabbitmqctl or http(s)://host:port"
        )
    management = ManagementAdmin(f"http://{address.host}:15672", address.user, address.password)
    if management.answers():
        return management
    if shutil.which("rabbitmqctl"):
        return RabbitmqctlAdmin()
    raise RabbitMQUnavailable(
        f"no way to create vhosts: the management API does not answer at "
        f"http://{address.host}:15672 and rabbitmqctl is not on the PATH"
    )


class VhostFactory:
    """Makes and deletes the vhosts of tests on the broker at ``url``, through ``admin``."""

    def __init__(self, url: str, admin: str = "auto") -> None:
        self.address = BrokerAddress.parse(url)
        self.address.check_reachable()
        self.admin = choose_admin(admin, self.address)

    def create(self, label: str = "test") -> Vhost:
        name = f"tavrida2-{label}-{uuid.uuid4().hex[:12]}"
        try:
            self.admin.create(name, self.address.user)
        except RabbitMQUnavailable:
            with contextlib.suppress(RabbitMQUnavailable):  # made, but no permissions
                self.admin.delete(name)
            raise
        return Vhost(name, self.address.url_of(name))

    def delete(self, vhost: Vhost) -> None:
        self.admin.delete(vhost.name)


__all__ = [
    "DEFAULT_URL",
    "BrokerAddress",
    "ManagementAdmin",
    "RabbitMQUnavailable",
    "RabbitmqctlAdmin",
    "Vhost",
    "VhostFactory",
    "choose_admin",
]
