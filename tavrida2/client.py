"""Clients: calls and casts from scripts, outside any service.

:class:`RPCClient` (blocking, on pika) and :class:`AsyncRPCClient` (asyncio,
on aio-pika). Each keeps one connection for its lifetime, opened on first use
and closed by ``close()`` or the end of a ``with`` block.
``cli.<service>.<method>(**payload).call(timeout=...)`` waits for the answer
(RabbitMQ direct reply-to, see :mod:`tavrida2.calls`); ``.cast()`` sends a
request nobody answers, confirmed by the broker.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from tavrida2 import entry_point, exceptions
from tavrida2.calls import DEFAULT_CALL_TIMEOUT, AsyncCalls, SyncCalls, check_timeout
from tavrida2.config import ConnectionConfig
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.drivers import create_async_driver, create_sync_driver
from tavrida2.drivers.base import AsyncDriver, PendingPublish, SyncDriver
from tavrida2.messages import AMQPMessage
from tavrida2.otel import load as load_telemetry
from tavrida2.postprocessor import PostProcessor, Tracer
from tavrida2.proxies import RPCProxy, RPCServiceProxy

if TYPE_CHECKING:
    from tavrida2.otel.settings import Telemetry


class _ClientBase:
    """What both clients share: arguments, the proxies, ``cli.<service>``."""

    def __init__(
        self,
        config: ConnectionConfig,
        discovery: AbstractDiscovery,
        source: str | entry_point.EntryPoint = "",
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        service: str | None = None,
        correlation_id: str = "",
        timeout: float = DEFAULT_CALL_TIMEOUT,
        tracer: Tracer | None = None,
        otel: bool | Telemetry = False,
    ) -> None:
        if not isinstance(config, ConnectionConfig):
            raise exceptions.IncorrectAMQPConfig(amqp_url=repr(config))
        if not isinstance(discovery, AbstractDiscovery):
            raise TypeError(f"discovery must be an AbstractDiscovery, got {discovery!r}")
        if not source:
            raise ValueError("a client needs source= (the name its requests come from)")
        self._source = entry_point.parse(str(source), entry_point.Source)
        self._config = config
        self._discovery = discovery
        self._service = service
        self._closed = False
        self._timeout = check_timeout(timeout, DEFAULT_CALL_TIMEOUT)
        self._transport = self._make_transport()
        # the transport publishes, and sends the requests whose caller waits
        self._postprocessor = self._make_postprocessor(discovery, load_telemetry(otel))
        self._postprocessor.tracer = tracer
        self._proxy = RPCProxy(
            self._postprocessor,
            self._source,
            context,
            correlation_id,
            headers,
            wait=True,
            timeout=self._timeout,
        )
        self._services: dict[str, RPCServiceProxy] = {}
        if service is not None:
            discovery.get_remote(service)

    def _make_transport(self) -> Any:
        raise NotImplementedError

    def _make_postprocessor(
        self, discovery: AbstractDiscovery, telemetry: Telemetry | None
    ) -> PostProcessor:
        if telemetry is None:
            return PostProcessor(self._transport, discovery, self._transport)
        from tavrida2.otel.outgoing import TracedPostProcessor

        return TracedPostProcessor(
            self._transport, discovery, self._transport, telemetry=telemetry, config=self._config
        )

    def _closed_error(self) -> exceptions.ConnectionClosed:
        return exceptions.ConnectionClosed(reason=f"the {type(self).__name__} is closed")

    # Any, not the proxy classes: ``cli.svc.method(...)`` must type-check in user code
    def __getattr__(self, item: str) -> Any:
        if item.startswith("_"):
            raise AttributeError(item)
        return self[item]

    def __getitem__(self, item: str) -> Any:
        """``cli["name"]`` is ``cli.name``, for names that clash with the client's own."""
        if self._closed:
            raise self._closed_error()
        if self._service is not None:
            return getattr(self._service_proxy(self._service), item)
        return self._service_proxy(item)

    def _service_proxy(self, name: str) -> RPCServiceProxy:
        proxy = self._services.get(name)
        if proxy is None:
            proxy = self._services[name] = self._proxy[name]
        return proxy

    def try_call(
        self,
        destination: str,
        payload: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call ``"service.method"`` with ``payload``; ``(ok, (code, result))``, never raising
        for an Error answer, a timeout or a lost connection (see :mod:`tavrida2.outcomes`).

        The same as ``cli.<service>.<method>(**payload).try_call(timeout=timeout)``
        (rabibridge's ``try_remote_call``); with ``service=`` fixed, ``destination``
        may be the method alone. On :class:`AsyncRPCClient` it returns an awaitable.
        """
        if not isinstance(destination, str):
            raise TypeError(f"destination must be 'service.method', got {destination!r}")
        if payload is not None and not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        if "." not in destination and self._service is not None:
            destination = f"{self._service}.{destination}"
        target = entry_point.parse(destination)
        if not isinstance(target, entry_point.EntryPoint) or not target.method:
            raise exceptions.WrongEntryPointFormat(value=destination)
        method = getattr(self._service_proxy(target.service), target.method)
        return method(**(payload or {})).try_call(timeout=timeout)

    def add_headers(self, headers: dict[str, Any]) -> None:
        """Add user headers to every request this client sends."""
        self._proxy.add_headers(headers)


class _SyncTransport:
    """The sync client's connection, opened on first use; publisher and waiting calls."""

    __slots__ = ("_calls", "_client", "_driver", "_lock")

    def __init__(self, client: RPCClient) -> None:
        self._client = client
        self._driver: SyncDriver | None = None
        self._calls: SyncCalls | None = None
        self._lock = threading.Lock()

    def driver(self) -> SyncDriver:
        driver = self._driver
        if driver is None:
            with self._lock:
                if self._client._closed:
                    raise self._client._closed_error()
                if self._driver is None:
                    driver = create_sync_driver(self._client._config)
                    driver.connect()
                    self._calls = SyncCalls(driver)
                    self._calls.tracer = self._client._postprocessor.tracer
                    self._driver = driver
                driver = self._driver
        return driver

    def calls(self) -> SyncCalls:
        if self._calls is None:
            self.driver()
        assert self._calls is not None
        return self._calls

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        self.driver().publish(exchange, routing_key, message, mandatory)

    def publish_async(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> PendingPublish:
        return self.driver().publish_async(exchange, routing_key, message, mandatory)

    def request(self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float) -> Any:
        return self.calls().request(exchange, routing_key, message, timeout)

    def start(self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float) -> Any:
        return self.calls().start(exchange, routing_key, message, timeout)

    def close(self) -> None:
        with self._lock:
            driver, self._driver = self._driver, None
            calls, self._calls = self._calls, None
        if calls is not None:
            calls.fail_all(self._client._closed_error())
        if driver is not None:
            driver.close()


class RPCClient(_ClientBase):
    """Calls and casts from a script, blocking (pika; safe to share between threads).

    ``cli.<service>.<method>(**payload).call(timeout=None)`` waits for the
    answer and returns the ``IncomingResponse`` (``.payload`` is what the
    handler returned); an Error answer raises ``RemoteError``, no answer in
    time ``CallTimeout``, a lost connection ``ConnectionClosed`` at once.
    ``.call_async()`` returns a ``PendingCall`` to wait on later (many in
    flight); ``.cast()`` sends a request nobody answers once the broker
    confirmed it, ``.cast_async()`` returns a ``PendingPublish`` whose
    ``result()`` waits for that confirmation (many in flight). ``timeout`` is the
    default wait in seconds. With ``service=...`` the service is fixed:
    ``cli.<method>(**payload)``. ``.call(wait=False)`` keeps Tavrida 1.0's
    meaning: the answer goes to the ``source`` service's response handler.
    ``otel=True`` (or a ``tavrida2.otel.Telemetry``) traces each request with
    OpenTelemetry and carries its context to the services (:mod:`tavrida2.otel`).

    Example::

        disc = discovery.LocalDiscovery()
        disc.register_remote_service("test_hello", "test_exchange")
        with client.RPCClient(config=conf, discovery=disc, source="client_app") as cli:
            answer = cli.test_hello.hello(param=123).call(timeout=5)
            print(answer.payload)
    """

    _transport: _SyncTransport

    def _make_transport(self) -> _SyncTransport:
        return _SyncTransport(self)

    def close(self) -> None:
        """Close the connection; waiting calls end with ``ConnectionClosed``, later ones too."""
        self._closed = True
        self._transport.close()

    def __enter__(self) -> RPCClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AsyncTransport:
    """The async client's connection and waiting calls, opened on first use."""

    __slots__ = ("_calls", "_client", "_driver", "_opening")

    def __init__(self, client: AsyncRPCClient) -> None:
        self._client = client
        self._driver: AsyncDriver | None = None
        self._calls: AsyncCalls | None = None
        self._opening: asyncio.Future[None] | None = None

    async def open(self) -> AsyncDriver:
        if self._driver is not None:
            return self._driver
        if self._client._closed:
            raise self._client._closed_error()
        if self._opening is not None:
            await asyncio.shield(self._opening)
        else:
            loop = asyncio.get_running_loop()
            self._opening = opening = loop.create_future()
            try:
                driver = create_async_driver(self._client._config)
                await driver.connect()
                self._calls = AsyncCalls(driver, loop)
                self._calls.tracer = self._client._postprocessor.tracer
                self._driver = driver
                opening.set_result(None)
            except BaseException as exc:
                opening.set_exception(exc)
                opening.exception()
                raise
            finally:
                self._opening = None
        if self._driver is None:
            raise self._client._closed_error()
        return self._driver

    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        driver = self._driver or await self.open()
        await driver.publish(exchange, routing_key, message, mandatory)

    async def request(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> Any:
        if self._calls is None:
            await self.open()
        assert self._calls is not None
        return await self._calls.call(exchange, routing_key, message, timeout)

    def start(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self.request(exchange, routing_key, message, timeout))

    async def close(self) -> None:
        driver, self._driver = self._driver, None
        calls, self._calls = self._calls, None
        if calls is not None:
            calls.fail_all(self._client._closed_error())
        if driver is not None:
            await driver.close()


class AsyncRPCClient(_ClientBase):
    """Calls and casts from asyncio code (aio-pika); thousands of calls in flight.

    ``await cli.<service>.<method>(**payload).call(timeout=None)`` returns the
    ``IncomingResponse`` (or raises ``RemoteError``, ``CallTimeout``,
    ``ConnectionClosed``); ``await ....cast()`` returns once the broker
    confirmed the request. Answers are matched by correlation id, so many
    calls may run at once (``asyncio.gather``) on the one connection.

    Example::

        async with client.AsyncRPCClient(conf, disc, source="client_app") as cli:
            answer = await cli.test_hello.hello(param=123).call(timeout=5)
    """

    _transport: _AsyncTransport

    def _make_transport(self) -> _AsyncTransport:
        return _AsyncTransport(self)

    async def connect(self) -> None:
        """Open the connection now (else the first call or cast opens it)."""
        await self._transport.open()

    async def close(self) -> None:
        """Close the connection; waiting calls end with ``ConnectionClosed``, later ones too."""
        self._closed = True
        await self._transport.close()

    async def __aenter__(self) -> AsyncRPCClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["AsyncRPCClient", "RPCClient"]
