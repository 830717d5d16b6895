"""Shared helpers of the RabbitMQ integration tests (broker at 127.0.0.1:5672, guest/guest).

- :data:`ENGINES`: parametrize a test over the sync (pika) and async (aio-pika) engines;
- :func:`amqp_config`: a ``ConnectionConfig`` for the test broker, with a short retry delay;
- :class:`Names` (fixture ``names``): uuid4-based exchange, queue and connection names,
  whose exchanges and queues are deleted after the test;
- :class:`Servers` (fixture ``servers``): start servers in threads, stop them after the test;
- :class:`Recorder`: what handlers received, thread-safe, with bounded waits;
- ``rabbitmqctl`` helpers: connections by name, closing one, consumers and messages of a queue;
- :class:`BlockingDriver`: the same blocking API over a PikaDriver or an AioDriver;
- fixture ``proxy``: a :class:`~tests.integration.tcp_proxy.TcpProxy` to the broker.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pika
import pytest

from tavrida2 import server
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.base import AsyncDriver, SyncDriver
from tavrida2.drivers.pika_sync import PikaDriver
from tavrida2.messages import AMQPMessage
from tavrida2.testing.services import wait_until
from tests.integration.tcp_proxy import TcpProxy

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
WAIT = 20.0  # the bound of every wait for something to happen on the broker

ENGINES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


def amqp_config(async_engine: bool, connection_name: str | None = None, **overrides: Any):
    """A config for the test broker; ``overrides`` are ConnectionConfig arguments."""
    overrides.setdefault("retry_delay", 0.2)
    return ConnectionConfig.from_url(
        BROKER_URL, async_engine=async_engine, connection_name=connection_name, **overrides
    )


def pika_params() -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=5672,
        credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=5,
        blocked_connection_timeout=10,
    )


# -- names and cleanup -----------------------------------------------------------------


class Names:
    """Unique names for one test; what it declared under them is deleted afterwards."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex
        self.exchanges: list[str] = []
        self.queues: list[str] = []

    def exchange(self, label: str = "x") -> str:
        name = f"t2it-{label}-{uuid.uuid4().hex}"
        self.exchanges.append(name)
        return name

    def queue(self, label: str = "q") -> str:
        name = f"t2it-{label}-{uuid.uuid4().hex}"
        self.queues.append(name)
        return name

    def connection(self, label: str = "conn") -> str:
        return f"t2it-{label}-{uuid.uuid4().hex}"

    def cleanup(self) -> None:
        connection = pika.BlockingConnection(pika_params())
        try:
            channel = connection.channel()
            for queue in self.queues:
                # and what a server declares for its dead letters
                for name in (queue, f"{queue}.dlq", f"{queue}.retry"):
                    channel.queue_delete(name)
                channel.exchange_delete(f"{queue}.dlx")
            for exchange in self.exchanges:
                channel.exchange_delete(exchange)
        finally:
            connection.close()


@pytest.fixture
def names() -> Iterator[Names]:
    made = Names()
    yield made
    made.cleanup()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy to the broker: ``drop()`` takes the network away, ``start()`` gives it back."""
    running = TcpProxy()
    running.start()
    try:
        yield running
    finally:
        running.drop()


@pytest.fixture
def channel() -> Iterator[Any]:
    """A plain pika channel (confirm mode) on a connection of the test's own."""
    connection = pika.BlockingConnection(pika_params())
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        yield ch
    finally:
        if connection.is_open:
            connection.close()


def get_message(channel: Any, queue: str, timeout: float = WAIT) -> tuple[Any, Any, bytes]:
    """The next message of ``queue`` (``basic_get``, acked), waiting at most ``timeout``."""

    def fetch() -> Any:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        return (method, properties, body) if method is not None else None

    return wait_until(fetch, f"a message in {queue}", timeout)  # type: ignore[no-any-return]


# -- servers ---------------------------------------------------------------------------


class Servers:
    """Servers of one test, each running in a thread; stopped (and joined) after the test."""

    def __init__(self) -> None:
        self.running: list[tuple[server.Server, threading.Thread]] = []

    def start(self, *servers: server.Server) -> None:
        threads = []
        for srv in servers:
            thread = threading.Thread(target=srv.run, name=f"it-{srv.queue_name}", daemon=True)
            thread.start()
            threads.append(thread)
            self.running.append((srv, thread))
        for srv, thread in zip(servers, threads, strict=True):
            wait_until(
                lambda s=srv, t=thread: s.started.is_set() or not t.is_alive(),
                f"server {srv.queue_name} to start",
            )
            assert srv.started.is_set(), f"server {srv.queue_name} failed to start"

    def stop(self, srv: server.Server, timeout: float = WAIT) -> None:
        for known, thread in self.running:
            if known is srv:
                srv.stop()
                thread.join(timeout)
                assert not thread.is_alive(), f"server {srv.queue_name} did not stop"

    def stop_all(self) -> None:
        for srv, _ in self.running:
            srv.stop()
        for srv, thread in self.running:
            thread.join(WAIT)
            assert not thread.is_alive(), f"server {srv.queue_name} did not stop"
        self.running = []


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        running.stop_all()


class Recorder:
    """What handlers received, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, Any]] = []

    def add(self, label: str, value: Any = None) -> None:
        with self._lock:
            self.items.append((label, value))

    def of(self, label: str) -> list[Any]:
        with self._lock:
            return [value for got, value in self.items if got == label]

    def wait_for(self, label: str, count: int = 1, timeout: float = WAIT) -> list[Any]:
        wait_until(lambda: len(self.of(label)) >= count, f"{count} x {label!r}", timeout)
        return self.of(label)


# -- rabbitmqctl -----------------------------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def _ctl_json(*args: str) -> list[dict[str, Any]]:
    return json.loads(rabbitmqctl(*args, "-q", "--formatter", "json") or "[]")  # type: ignore[no-any-return]


def connection_pids(connection_name: str) -> list[str]:
    """Broker pids of the open connections whose client named itself ``connection_name``.

    (The table output, not JSON: ``close_connection`` takes the pid as the table prints it.)
    """
    wanted = f'{{"connection_name","{connection_name}"}}'
    pids = []
    for line in rabbitmqctl("list_connections", "pid", "client_properties", "-q").splitlines():
        pid, _, properties = line.partition("\t")
        if wanted in properties:
            pids.append(pid)
    return pids


def close_connection(pid: str, reason: str = "test") -> None:
    rabbitmqctl("close_connection", pid, reason)


def queue_info(queue: str) -> dict[str, Any] | None:
    """``consumers``, ``messages_ready``, ``messages_unacknowledged`` of ``queue`` (None: none)."""
    rows = _ctl_json(
        "list_queues", "name", "consumers", "messages_ready", "messages_unacknowledged"
    )
    return next((row for row in rows if row["name"] == queue), None)


def consumers(queue: str) -> int | None:
    info = queue_info(queue)
    return None if info is None else int(info["consumers"])


# -- one blocking API over both drivers -------------------------------------------------


class BlockingDriver:
    """Calls a PikaDriver directly, or an AioDriver on an event loop of its own."""

    def __init__(self, driver: SyncDriver | AsyncDriver) -> None:
        self.driver = driver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        if isinstance(driver, AsyncDriver):
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()

    def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self.driver, name)
        if self._loop is None:
            return method(*args)
        future: Future[Any] = asyncio.run_coroutine_threadsafe(method(*args), self._loop)
        return future.result(WAIT)

    def connect(self) -> None:
        self._call("connect")

    def declare_exchange(self, name: str, exchange_type: str = "topic") -> None:
        self._call("declare_exchange", name, exchange_type, True)

    def declare_queue(self, name: str) -> None:
        self._call("declare_queue", name, True, None)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._call("bind_queue", queue, exchange, routing_key)

    def publish(self, exchange: str, routing_key: str, body: bytes = b"{}", **headers: Any) -> None:
        self._call("publish", exchange, routing_key, AMQPMessage(body, dict(headers)), True)

    def close(self) -> None:
        try:
            self._call("close")
        finally:
            if self._loop is not None and self._thread is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(WAIT)
                self._loop.close()


def make_driver(async_engine: bool, config: ConnectionConfig) -> BlockingDriver:
    return BlockingDriver(AioDriver(config) if async_engine else PikaDriver(config))
