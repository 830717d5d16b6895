"""The HTTP endpoint Prometheus scrapes: ``http://HOST:PORT/metrics``, in a daemon thread."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from tavrida2 import exceptions
from tavrida2.configfile import DEFAULT_METRICS_HOST

log = logging.getLogger(__name__)

#: Where the endpoint listens unless told otherwise: this host only.
DEFAULT_HOST = DEFAULT_METRICS_HOST


class MetricsPortInUse(exceptions.ConfigError):
    """The metrics endpoint's port is taken by another process (or another endpoint)."""


def check_port(port: object, what: str = "metrics port") -> int:
    """``port`` as a TCP port number (0: any free one); ConfigError otherwise."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise exceptions.ConfigError(reason=f"{what} {port!r}: expected a number from 0 to 65535")
    return port


class MetricsEndpoint:
    """Serves a registry's metrics over HTTP (``/metrics``; any path answers the same).

    :meth:`start` binds the port at once: a port in use raises
    :class:`MetricsPortInUse` before anything else happens. ``port=0`` takes
    any free port (:attr:`port` says which). A context manager.

    Example::

        with MetricsEndpoint(9100, registry=metrics.registry) as endpoint:
            print(endpoint.url)       # http://127.0.0.1:9100/metrics
            srv.run()
    """

    def __init__(
        self,
        port: int,
        host: str = DEFAULT_HOST,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.port = check_port(port)
        if not isinstance(host, str) or not host:
            raise exceptions.ConfigError(reason=f"metrics host {host!r}: expected a host name")
        self.host = host
        self.registry = REGISTRY if registry is None else registry
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsEndpoint:
        """Listen (in a daemon thread); raise :class:`MetricsPortInUse` or ``ConfigError``."""
        if self._server is not None:
            return self
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            raise _bind_error(exc, self.host, self.port) from None
        self.port = int(self._server.server_address[1])
        log.info("metrics at %s", self.url)
        return self

    def close(self) -> None:
        """Stop listening (the port is free again when this returns)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> MetricsEndpoint:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "listening" if self._server is not None else "not listening"
        return f"{type(self).__name__}({self.url}, {state})"


def _bind_error(exc: OSError, host: str, port: int) -> exceptions.ConfigError:
    """The error to tell for a port the endpoint could not listen on."""
    if exc.errno == errno.EADDRINUSE:
        return MetricsPortInUse(
            reason=f"metrics port {port} on {host} is in use (another process listens "
            "there); choose another --metrics-port"
        )
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        reason = f"unknown host ({reason})"
    return exceptions.ConfigError(reason=f"cannot serve metrics on {host}:{port}: {reason}")


def check_ports_free(host: str, ports: list[int]) -> None:
    """Raise :class:`MetricsPortInUse` for the first of ``ports`` something listens on.

    For a supervisor about to give each worker a port: a clear error at start
    rather than workers that keep failing. Each port is bound and released.
    """
    for port in ports:
        if port == 0:
            continue
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family = infos[0][0]
            with socket.create_server((host, port), family=family):
                pass
        except OSError as exc:
            raise _bind_error(exc, host, port) from None


__all__ = ["DEFAULT_HOST", "MetricsEndpoint", "MetricsPortInUse", "check_port", "check_ports_free"]
