"""Harness of the driver contract suite: one async test body for sync and async drivers.

Every contract test is an ``async def`` body run by :meth:`Env.run` on a fresh
event loop. :meth:`Env.driver` gives a :class:`DriverHandle` whose coroutines
wrap the driver under test:

- an :class:`~tavrida2.drivers.base.AsyncDriver` is awaited directly;
- a :class:`~tavrida2.drivers.base.SyncDriver` runs in a thread of its own
  (one per driver: a pika ``BlockingConnection`` is only ever touched by that
  thread, except ``stop()``, which the interface makes thread-safe);
  :meth:`DriverHandle.consume` subscribes and then runs ``driver.run()`` there,
  and the test's async callbacks are run on the test's loop.

A driver that consumes is used for nothing else until it is closed (``run()``
holds its thread): tests publish and declare through another driver.

:data:`KINDS` lists the drivers: the memory ones, and the RabbitMQ ones
(``pika``, ``aio``) marked ``rabbitmq``, whose ``cleanup`` deletes what a test
declared. A new driver joins the suite with one more :class:`DriverKind`.

Every test names its exchanges and queues with :meth:`Env.exchange` and
:meth:`Env.queue` (uuid4-based), so ``cleanup`` can delete them afterwards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import AsyncDriver, Disposition, SyncDriver
from tavrida2.drivers.memory import AsyncMemoryDriver, MemoryDriver
from tavrida2.messages import AMQPMessage

TEST_TIMEOUT = 30.0
WAIT_TIMEOUT = 5.0
CALLBACK_TIMEOUT = 10.0
MARKER = "x-contract-marker"

AsyncCallback = Callable[[AMQPMessage], Awaitable[Disposition]]


@dataclass(frozen=True)
class DriverKind:
    """One driver implementation the suite runs on."""

    id: str
    is_async: bool
    factory: Callable[[], SyncDriver | AsyncDriver]
    #: Deletes what a test declared (exchange names, queue names); None: nothing to do.
    cleanup: Callable[[list[str], list[str]], None] | None = None
    marks: tuple[Any, ...] = ()


def _memory_config() -> ConnectionConfig:
    # conftest resets every memory broker around each test
    return ConnectionConfig.from_url("memory://contract")


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _rabbitmq_config() -> ConnectionConfig:
    return ConnectionConfig.from_url(RABBITMQ_URL, retry_delay=0.2)


def delete_on_rabbitmq(exchanges: list[str], queues: list[str]) -> None:
    """Delete what a test declared on the real broker (missing names are fine)."""
    import pika

    params = _rabbitmq_config().to_pika_params()
    connection = pika.BlockingConnection(params)
    try:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                channel = connection.channel()
                try:
                    if kind == "queue":
                        channel.queue_delete(name)
                    else:
                        channel.exchange_delete(name)
                finally:
                    if channel.is_open:
                        channel.close()
    finally:
        connection.close()


def _pika_driver() -> SyncDriver:
    from tavrida2.drivers.pika_sync import PikaDriver

    return PikaDriver(_rabbitmq_config())


def _aio_driver() -> AsyncDriver:
    from tavrida2.drivers.aio import AioDriver

    return AioDriver(_rabbitmq_config())


KINDS: list[DriverKind] = [
    DriverKind("memory-sync", False, lambda: MemoryDriver(_memory_config())),
    DriverKind("memory-async", True, lambda: AsyncMemoryDriver(_memory_config())),
    DriverKind("pika", False, _pika_driver, delete_on_rabbitmq, (pytest.mark.rabbitmq,)),
    DriverKind("aio", True, _aio_driver, delete_on_rabbitmq, (pytest.mark.rabbitmq,)),
]


class DriverHandle:
    """The driver under test, with the same coroutine API whatever its kind."""

    def __init__(self, driver: SyncDriver | AsyncDriver) -> None:
        self.driver = driver
        self.is_async = isinstance(driver, AsyncDriver)
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "contract-driver")
        self._running: asyncio.Future[None] | None = None
        self._closed = False

    async def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self.driver, name)
        if self.is_async:
            return await method(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(method, *args))

    async def connect(self) -> None:
        await self._call("connect")

    async def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        await self._call("declare_exchange", name, exchange_type, durable, alternate)

    async def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str:
        result: str = await self._call("declare_queue", name, durable, arguments)
        return result

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._call("bind_queue", queue, exchange, routing_key)

    async def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        await self._call("bind_exchange", destination, source, routing_key)

    async def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._call("unbind_queue", queue, exchange, routing_key)

    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        await self._call("publish", exchange, routing_key, message, mandatory)

    async def consume(self, callbacks: dict[str, AsyncCallback], prefetch_count: int = 0) -> None:
        """Subscribe each ``queue: callback``; deliveries flow until :meth:`close`."""
        if self.is_async:
            for queue, callback in callbacks.items():
                await self._call("consume", queue, callback, prefetch_count)
            return
        assert self._running is None, "a sync driver consumes once, then runs"
        loop = asyncio.get_running_loop()

        def in_loop(callback: AsyncCallback) -> Callable[[AMQPMessage], Disposition]:
            def on_delivery(message: AMQPMessage) -> Disposition:
                future = asyncio.run_coroutine_threadsafe(callback(message), loop)
                return future.result(CALLBACK_TIMEOUT)

            return on_delivery

        for queue, callback in callbacks.items():
            await self._call("consume", queue, in_loop(callback), prefetch_count)
        assert isinstance(self.driver, SyncDriver)
        self._running = loop.run_in_executor(self._thread, self.driver.run)

    async def close(self) -> None:
        """Stop consuming and close the driver (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._running is not None:
            assert isinstance(self.driver, SyncDriver)
            self.driver.stop()
            await asyncio.wait_for(self._running, CALLBACK_TIMEOUT)
        await self._call("close")

    def dispose(self) -> None:
        self._thread.shutdown(wait=False)


class Inbox:
    """Records deliveries per queue; answers with a disposition chosen per message."""

    def __init__(self) -> None:
        self.got: dict[str, list[AMQPMessage]] = defaultdict(list)
        self.markers: set[str] = set()

    def callback(
        self, queue: str, decide: Callable[[AMQPMessage], Disposition] | None = None
    ) -> AsyncCallback:
        async def on_delivery(message: AMQPMessage) -> Disposition:
            if message.headers.get(MARKER) == queue:
                self.markers.add(queue)
                return Disposition.ACK
            self.got[queue].append(message)
            return decide(message) if decide is not None else Disposition.ACK

        return on_delivery

    def callbacks(self, queues: Iterable[str]) -> dict[str, AsyncCallback]:
        return {queue: self.callback(queue) for queue in queues}

    def bodies(self, queue: str) -> list[bytes]:
        return [bytes(m.body) for m in self.got[queue]]  # type: ignore[arg-type]

    async def wait_for_markers(self, queues: Iterable[str]) -> None:
        wanted = set(queues)
        await wait_until(lambda: wanted <= self.markers, f"markers of {sorted(wanted)}")


async def publish_markers(publisher: DriverHandle, queues: Iterable[str]) -> None:
    """Send a marker to each queue through the default exchange.

    A queue is FIFO: once its marker arrived, everything published to it before
    has arrived too, so a test can assert that *nothing else* came, without sleeping.
    """
    for queue in queues:
        await publisher.publish("", queue, AMQPMessage(b"", {MARKER: queue}))


async def wait_until(
    predicate: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


@dataclass
class Env:
    """One contract test on one driver kind: names, drivers, the event loop."""

    kind: DriverKind
    exchanges: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    _handles: list[DriverHandle] = field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return self.kind.is_async

    @staticmethod
    def _name(label: str) -> str:
        # AMQP names allow letters, digits, "-", "_", ".", ":" only
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in label)
        return f"tavrida2-contract-{safe}-{uuid.uuid4().hex}"

    def exchange(self, label: str = "x") -> str:
        name = self._name(label)
        self.exchanges.append(name)
        return name

    def queue(self, label: str = "q") -> str:
        name = self._name(label)
        self.queues.append(name)
        return name

    async def driver(self, connect: bool = True) -> DriverHandle:
        handle = DriverHandle(self.kind.factory())
        self._handles.append(handle)
        if connect:
            await handle.connect()
        return handle

    def run(self, body: Callable[[], Awaitable[None]]) -> None:
        asyncio.run(self._main(body))

    async def _main(self, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(body(), TEST_TIMEOUT)
        finally:
            try:
                for handle in reversed(self._handles):
                    await asyncio.wait_for(handle.close(), CALLBACK_TIMEOUT)
            finally:
                for handle in self._handles:
                    handle.dispose()
            if self.kind.cleanup is not None:
                self.kind.cleanup(self.exchanges, self.queues)


def msg(body: bytes = b"{}", **headers: Any) -> AMQPMessage:
    return AMQPMessage(body, dict(headers))


async def exchange_with_queues(
    env: Env, driver: DriverHandle, bindings: dict[str, list[str]]
) -> tuple[str, dict[str, str]]:
    """A transient topic exchange and a queue per label, bound with its keys.

    Returns the exchange name and ``{label: queue name}``.
    """
    exchange = env.exchange()
    await driver.declare_exchange(exchange, "topic", durable=False)
    names = {}
    for label, keys in bindings.items():
        queue = await driver.declare_queue(env.queue(label), durable=False)
        for key in keys:
            await driver.bind_queue(queue, exchange, key)
        names[label] = queue
    return exchange, names
