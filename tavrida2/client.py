"""RPCClient: calls from scripts, outside any service.

One connection for the client's lifetime, opened on first use; close it with
:meth:`RPCClient.close` or a ``with`` block.
"""

from __future__ import annotations

import threading
from typing import Any

from tavrida2 import entry_point, exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.drivers import create_sync_driver
from tavrida2.drivers.base import SyncDriver
from tavrida2.messages import AMQPMessage, new_id
from tavrida2.postprocessor import PostProcessor
from tavrida2.proxies import RPCMethodProxy, RPCProxy, RPCServiceProxy


class _ClientPublisher:
    """The postprocessor's publisher for a client: connects on first use."""

    __slots__ = ("_client",)

    def __init__(self, client: RPCClient) -> None:
        self._client = client

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        self._client._publish(exchange, routing_key, message, mandatory)


class RPCClient:
    """Sends requests to remote services from a script.

    ``cli.<service>.<method>(**payload).cast()`` sends a request nobody answers;
    ``.call()`` sends one whose answer goes to the client's ``source`` service
    (as in Tavrida 1.0: give a ``source`` served by one of your services to
    handle it there). With ``service=...`` the service is fixed:
    ``cli.<method>(**payload)``.

    Example::

        disc = discovery.LocalDiscovery()
        disc.register_remote_service("test_hello", "test_exchange")
        with client.RPCClient(config=conf, discovery=disc, source="client_app") as cli:
            cli.test_hello.hello(param=123).cast()
    """

    def __init__(
        self,
        config: ConnectionConfig,
        discovery: AbstractDiscovery,
        source: str | entry_point.EntryPoint = "",
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        service: str | None = None,
        correlation_id: str = "",
    ) -> None:
        if not source:
            raise ValueError("RPCClient needs source= (the name the requests come from)")
        self._source = entry_point.parse(str(source), entry_point.Source)
        self._config = config
        self._discovery = discovery
        self._context = context
        self._headers = headers
        self._service = service
        self._correlation_id = correlation_id
        self._driver: SyncDriver | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._postprocessor = PostProcessor(_ClientPublisher(self), discovery)
        if service is not None:
            discovery.get_remote(service)

    def _publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        with self._lock:
            if self._closed:
                raise exceptions.ConnectionClosed(reason="the client is closed")
            if self._driver is None:
                driver = create_sync_driver(self._config)
                driver.connect()
                self._driver = driver
            self._driver.publish(exchange, routing_key, message, mandatory)

    def _proxy(self) -> RPCProxy:
        return RPCProxy(
            self._postprocessor,
            self._source,
            self._context,
            self._correlation_id or new_id(),
            self._headers,
        )

    def __getattr__(self, item: str) -> RPCServiceProxy | RPCMethodProxy:
        if item.startswith("_"):
            raise AttributeError(item)
        return self[item]

    def __getitem__(self, item: str) -> RPCServiceProxy | RPCMethodProxy:
        """``cli["name"]`` is ``cli.name``, for names that clash with the client's own."""
        if self._service is not None:
            return getattr(self._proxy()[self._service], item)  # type: ignore[no-any-return]
        return self._proxy()[item]

    def close(self) -> None:
        """Close the connection; later calls raise ``ConnectionClosed``."""
        with self._lock:
            self._closed = True
            driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()

    def __enter__(self) -> RPCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RPCClient"]
