"""RabbitMQ's management HTTP API: queue depths, consumers and message rates.

Blocking ``urllib`` calls with a short timeout (the app runs them in a
thread). Any failure (plugin off, refused, bad credentials) is a
:class:`ManagementUnavailable` whose message names the URL, password masked.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tavrida2.config import ConnectionConfig
from tavrida2.masking import mask_url_passwords

DEFAULT_PORT = 15672
TIMEOUT = 3.0


class ManagementUnavailable(Exception):
    """The management API did not answer as expected; the message says where and why."""


@dataclass(frozen=True)
class QueueStats:
    """One queue as the management API counts it."""

    name: str
    messages: int
    ready: int
    unacknowledged: int
    consumers: int
    publish_rate: float
    deliver_rate: float
    ack_rate: float


def default_url(connection: ConnectionConfig) -> str:
    """``http://user:password@<broker host>:15672/`` for the broker of ``connection``."""
    credentials = connection.credentials
    user = urllib.parse.quote(credentials.username, safe="")
    password = urllib.parse.quote(credentials.password, safe="")
    return f"http://{user}:{password}@{connection.host}:{DEFAULT_PORT}/"


class ManagementAPI:
    """A client of the management API at ``url`` (credentials in it) for ``vhost``."""

    def __init__(self, url: str, vhost: str = "/") -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{mask_url_passwords(url)}: expected http://user:password@host:port/")
        self._auth = base64.b64encode(
            f"{urllib.parse.unquote(parts.username or 'guest')}:"
            f"{urllib.parse.unquote(parts.password or 'guest')}".encode()
        ).decode()
        port = f":{parts.port}" if parts.port else ""
        self._base = f"{parts.scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}/api"
        self._vhost = urllib.parse.quote(vhost, safe="")
        #: The URL as the page shows it (password masked).
        self.shown_url = mask_url_passwords(url)

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self._base}/{path}", headers={"Authorization": f"Basic {self._auth}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise ManagementUnavailable(f"{self.shown_url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementUnavailable(f"{self.shown_url}: {reason}") from None
        except ValueError as exc:
            raise ManagementUnavailable(f"{self.shown_url}: not JSON ({exc})") from None

    def queues(self) -> dict[str, QueueStats]:
        """Every queue of the vhost by name."""
        rows = self._get(f"queues/{self._vhost}")
        return {row["name"]: _queue_stats(row) for row in rows if isinstance(row, dict)}

    def consumers(self) -> list[dict[str, Any]]:
        """The consumers of the vhost: queue, consumer tag, connection name, peer address."""
        found = []
        for row in self._get(f"consumers/{self._vhost}"):
            channel = row.get("channel_details") or {}
            found.append(
                {
                    "queue": (row.get("queue") or {}).get("name", ""),
                    "consumer_tag": row.get("consumer_tag", ""),
                    "connection": channel.get("connection_name", ""),
                    "peer": f"{channel.get('peer_host', '?')}:{channel.get('peer_port', '?')}",
                }
            )
        return found


def _rate(stats: dict[str, Any], key: str) -> float:
    details = stats.get(f"{key}_details") or {}
    return float(details.get("rate", 0.0))


def _queue_stats(row: dict[str, Any]) -> QueueStats:
    stats = row.get("message_stats") or {}
    return QueueStats(
        str(row["name"]),
        int(row.get("messages") or 0),
        int(row.get("messages_ready") or 0),
        int(row.get("messages_unacknowledged") or 0),
        int(row.get("consumers") or 0),
        _rate(stats, "publish"),
        _rate(stats, "deliver_get"),
        _rate(stats, "ack"),
    )


__all__ = ["DEFAULT_PORT", "ManagementAPI", "ManagementUnavailable", "QueueStats", "default_url"]
