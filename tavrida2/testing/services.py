"""Running servers for a test, on one broker: what the ``tavrida2_server`` fixture gives.

:class:`RunningServices` starts a :class:`~tavrida2.server.Server` per call
(``running(HelloController)``), each in a thread, on the broker of its URL: a
``memory://`` broker of the test's own, or RabbitMQ (a vhost of the test's
own, see :mod:`tavrida2.testing.vhosts`). Controllers without a discovery of
their own get a shared :class:`~tavrida2.discovery.LocalDiscovery` that knows
every service started so far (``<service>_exchange``) and every publisher
(``<service>_notifications``); ``running.client`` calls and casts with it.
:meth:`RunningServices.stop` stops everything (the fixture calls it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from tavrida2.client import RPCClient
from tavrida2.config import ConnectionConfig
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.discovery.local import LocalDiscovery
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.server import Server
from tavrida2.service import ServiceController
from tavrida2.testing.harness import TEST_CLIENT, exchange_of, notifications_of

#: Seconds a server gets to start, to stop, and the default of :meth:`RunningServices.wait_until`.
WAIT = 20.0


def wait_until(
    predicate: Callable[[], Any], what: str = "the condition", timeout: float = WAIT
) -> Any:
    """Poll ``predicate`` until true and return it; ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class RunningServices:
    """Servers and clients of one test on the broker at ``url`` (see the module docstring).

    Calling it starts a server: ``running(*controllers, queue=, exchange=,
    async_engine=False, in_thread=True, **server_options)`` returns the
    :class:`~tavrida2.server.Server`. ``in_thread=False`` (sync engine,
    ``memory://`` only) starts it without a thread: the test delivers with
    ``running.broker.run_until_idle()``.
    """

    def __init__(self, url: str, **config_options: Any) -> None:
        self.url = url
        self._config_options = config_options
        #: What controllers without a discovery of their own, and the clients, use.
        self.discovery = LocalDiscovery()
        self.servers: list[Server] = []
        self._threads: list[tuple[Server, threading.Thread]] = []
        self._wired: list[type[ServiceController]] = []
        self._clients: list[RPCClient] = []
        self._client: RPCClient | None = None
        self._stopped = False

    def config(self, async_engine: bool = False, **options: Any) -> ConnectionConfig:
        """A config of this broker."""
        return ConnectionConfig.from_url(
            self.url, async_engine=async_engine, **{**self._config_options, **options}
        )

    @property
    def is_memory(self) -> bool:
        return self.url.startswith("memory://")

    @property
    def broker(self) -> MemoryBroker:
        """The in-memory broker (``memory://`` URLs only)."""
        if not self.is_memory:
            raise TypeError(f"{self.url} is no memory:// broker")
        return MemoryBroker.get(self.config().memory_broker)

    def __call__(
        self,
        *controllers: type[ServiceController],
        queue: str | None = None,
        exchange: str | None = None,
        async_engine: bool = False,
        in_thread: bool = True,
        **server_options: Any,
    ) -> Server:
        if self._stopped:
            raise RuntimeError("these services were stopped")
        if not controllers:
            raise TypeError("give the controller classes to run")
        for cls in controllers:
            if not (isinstance(cls, type) and issubclass(cls, ServiceController)):
                raise TypeError(f"{cls!r} is no ServiceController class")
        if not in_thread and (async_engine or not self.is_memory):
            raise ValueError("in_thread=False is for the sync engine on a memory:// broker")
        first = controllers[0].service_name
        exchange = exchange or exchange_of(first)
        self._wire(controllers, exchange)
        srv = Server(
            self.config(async_engine),
            queue or first,
            exchange,
            list(controllers),
            **server_options,
        )
        self.servers.append(srv)
        if in_thread:
            self._start_in_thread(srv)
        else:
            srv.start()
        return srv

    def _wire(self, controllers: Iterable[type[ServiceController]], exchange: str) -> None:
        """Register the services in the shared discovery; give it to those without one."""
        disc = self.discovery
        for cls in controllers:
            name = cls.service_name
            disc.register_remote_service(name, exchange)
            disc.register_local_publisher(name, notifications_of(name))
            disc.register_remote_publisher(name, notifications_of(name))
            for publisher in cls.get_dispatcher().get_publishers():
                disc.register_remote_publisher(
                    publisher.service, notifications_of(publisher.service)
                )
            if cls._discovery is None:
                cls.set_discovery(disc)
                self._wired.append(cls)

    def _start_in_thread(self, srv: Server) -> None:
        thread = threading.Thread(target=srv.run, name=f"tavrida2-test-{srv.queue_name}")
        thread.daemon = True
        thread.start()
        self._threads.append((srv, thread))
        deadline = time.monotonic() + WAIT
        while not srv.started.wait(0.02):
            if not thread.is_alive():
                raise RuntimeError(f"server {srv.queue_name} failed to start (see its log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {srv.queue_name} did not start within {WAIT} s")

    @property
    def client(self) -> RPCClient:
        """A client of the shared discovery, source ``test_client`` (made once)."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def make_client(
        self,
        source: str = TEST_CLIENT,
        discovery: AbstractDiscovery | None = None,
        **options: Any,
    ) -> RPCClient:
        """A new client (closed by :meth:`stop`); ``options``: ``RPCClient`` arguments."""
        cli = RPCClient(
            config=self.config(), discovery=discovery or self.discovery, source=source, **options
        )
        self._clients.append(cli)
        return cli

    def wait_until(
        self, predicate: Callable[[], Any], what: str = "the condition", timeout: float = WAIT
    ) -> Any:
        """Poll ``predicate`` until true and return it; ``AssertionError`` after ``timeout``."""
        return wait_until(predicate, what, timeout)

    def wait_until_idle(self, timeout: float = WAIT) -> None:
        """``memory://``: deliver until no message waits or is being handled.

        Delivers to the servers started with ``in_thread=False`` first.
        """
        broker = self.broker
        if len(self._threads) < len(self.servers):
            broker.run_until_idle()
        if not broker.wait_until_idle(timeout):
            raise AssertionError(f"the memory broker was not idle within {timeout} s")

    def stop(self) -> None:
        """Close the clients, stop the servers and wait for them; forget the wiring."""
        if self._stopped:
            return
        self._stopped = True
        try:
            for cli in self._clients:
                cli.close()
            for srv in self.servers:
                srv.stop()
            threaded = {id(srv) for srv, _ in self._threads}
            for srv in self.servers:
                if id(srv) not in threaded and srv.driver is not None:
                    srv.driver.close()
            alive = []
            for srv, thread in self._threads:
                thread.join(WAIT)
                if thread.is_alive():
                    alive.append(srv.queue_name)
            if alive:
                raise RuntimeError(f"servers did not stop within {WAIT} s: {', '.join(alive)}")
        finally:
            for cls in self._wired:
                if cls._discovery is self.discovery:
                    cls._discovery = None


__all__ = ["RunningServices", "wait_until"]
