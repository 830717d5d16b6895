"""Fakes of what the async driver uses of aio-pika and aiormq, for tests without a broker.

:class:`FakeAioChannel` is an aiormq channel: settle frames go into a bounded
write queue (as aiormq's connection has) that a slow writer task drains,
recording the frames in the order they would reach the socket; deliveries are
aiormq ``DeliveredMessage`` objects handed to the consumer callback, each in a
task of its own (as aiormq does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiormq.exceptions as aex
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.aio.compat import gate
from tavrida2.drivers.settling import Settlements
from tests.unit.settle_model import ACK, REJECT, REQUEUE, Frame


class FakePublisher:
    """The publisher channel, as far as declarations go (``declare_on``)."""

    def __init__(self) -> None:
        self.declared: list[tuple[str, str]] = []
        #: exceptions the next declarations raise (the broker closing the channel)
        self.declare_errors: deque[BaseException] = deque()

    async def exchange_declare(self, name: str, **kwargs: Any) -> None:
        self._declare(("exchange", name))

    async def queue_declare(self, name: str, **kwargs: Any) -> None:
        self._declare(("queue", name))

    async def queue_bind(self, queue: str, exchange: str, **kwargs: Any) -> None:
        self._declare(("binding", f"{queue}<-{exchange}"))

    def _declare(self, declaration: tuple[str, str]) -> None:
        if self.declare_errors:
            raise self.declare_errors.popleft()
        self.declared.append(declaration)


class _Registry:
    """``connection.channels`` of a fake channel: it lists the channel until it closes."""

    def __init__(self, channel: FakeAioChannel) -> None:
        self._channel = channel

    def get(self, number: int, default: Any = None) -> Any:
        return default if self._channel.closing.done() else self._channel


class FakeAioChannel(FakePublisher):
    """An aiormq channel as the driver uses it: a bounded write queue and a slow writer."""

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        queue_size: int = 2,
        drains: bool = True,
        close_hangs: bool = False,
    ) -> None:
        super().__init__()
        loop = asyncio.get_running_loop()
        self.closing: asyncio.Future[Any] = loop.create_future()
        self.consumers: dict[str, Any] = {}
        self.write_queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=queue_size)
        self.written: list[Frame] = []
        self.discarded: list[Frame] = []
        self.on_written: Callable[[Frame], None] | None = None
        self.qos: list[int] = []
        self.subscribed: list[str] = []
        self.cancelled: list[str] = []
        self.close_calls = 0
        self.deliveries: list[asyncio.Task[Any]] = []
        self.no_ack: list[bool] = []
        self.published: list[SimpleNamespace] = []
        #: what the next publishes get: a confirmation, an exception to raise, or "hang"
        self.publish_results: deque[Any] = deque()
        self._rng = rng or random.Random(0)
        self._close_hangs = close_hangs
        self._consumer_tags = itertools.count(1)
        self._writer = loop.create_task(self._write()) if drains else None
        # as aiormq's connection does, it stops listing a channel the broker closed;
        # the driver's gate (compat.ChannelGate) looks there, as for a real channel
        self.number = 1
        self.connection = SimpleNamespace(channels=_Registry(self))
        gate(self)

    @property
    def is_closed(self) -> bool:
        return self.closing.done()

    # -- settle frames: into the write queue, not waiting for the socket ---------

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        assert wait is False, "the driver must not wait for each ack to drain"
        await self._put((ACK, delivery_tag, multiple))

    async def basic_reject(
        self, delivery_tag: int, *, requeue: bool = True, wait: bool = True
    ) -> None:
        assert wait is False
        assert requeue is False, "REJECT is a reject without requeue"
        await self._put((REJECT, delivery_tag, False))

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        assert wait is False
        assert requeue is True and multiple is False, "REQUEUE is a single nack with requeue"
        await self._put((REQUEUE, delivery_tag, False))

    async def _put(self, frame: Frame) -> None:
        if self.is_closed:
            raise aex.ChannelInvalidStateError("the channel is closed")
        await self.write_queue.put(frame)

    async def _write(self) -> None:
        while True:
            frame = await self.write_queue.get()
            for _ in range(self._rng.randint(0, 3)):  # the socket takes its time
                await asyncio.sleep(0)
            if self.is_closed:  # the broker closed the channel: it discards the frame
                self.discarded.append(frame)
            else:
                self.written.append(frame)
                if self.on_written is not None:
                    self.on_written(frame)
            self.write_queue.task_done()

    async def drained(self) -> None:
        await asyncio.wait_for(self.write_queue.join(), 5)

    # -- consuming -------------------------------------------------------------

    async def basic_qos(self, prefetch_count: int | None = None, **kwargs: Any) -> None:
        self.qos.append(prefetch_count or 0)

    async def basic_consume(
        self, queue: str, consumer_callback: Any, no_ack: bool = False, **kwargs: Any
    ) -> Any:
        self.no_ack.append(no_ack)
        if self.is_closed:
            raise aex.ChannelInvalidStateError("the channel is closed")
        tag = f"ctag-{next(self._consumer_tags)}"
        self.consumers[tag] = consumer_callback
        self.subscribed.append(queue)
        return SimpleNamespace(consumer_tag=tag)

    async def basic_publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Any = None,
        mandatory: bool = False,
        wait: bool = True,
        **kwargs: Any,
    ) -> Any:
        if self.is_closed:
            raise aex.ChannelInvalidStateError("the channel is closed")
        self.published.append(
            SimpleNamespace(
                body=body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=mandatory,
                wait=wait,
            )
        )
        result = self.publish_results.popleft() if self.publish_results else None
        if result == "hang":
            await asyncio.Event().wait()
        if isinstance(result, BaseException):
            raise result
        return result if result is not None else spec.Basic.Ack(len(self.published))

    async def basic_cancel(self, consumer_tag: str, **kwargs: Any) -> None:
        self.cancelled.append(consumer_tag)
        self.consumers.pop(consumer_tag, None)

    async def close(self) -> None:
        self.close_calls += 1
        if self._close_hangs:
            await asyncio.Event().wait()
        if not self.closing.done():
            self.closing.set_result(None)

    def deliver(
        self, tag: int, headers: dict[str, Any] | None = None, consumer_tag: str | None = None
    ) -> asyncio.Task[Any]:
        """Hand one delivery to the consumer, in a task of its own (as aiormq does)."""
        consumer_tag = consumer_tag or next(iter(self.consumers))
        message = DeliveredMessage(
            delivery=spec.Basic.Deliver(consumer_tag, tag, False, "ex", f"rk.{tag}"),
            header=ContentHeader(
                0, 0, spec.Basic.Properties(headers={"tag": tag, **(headers or {})})
            ),
            body=b"{}",
            channel=None,  # type: ignore[arg-type]
        )
        task = asyncio.get_running_loop().create_task(self.consumers[consumer_tag](message))
        self.deliveries.append(task)
        return task

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)


class FakeAioConnection:
    """What the driver looks at of its aio-pika connection."""

    def __init__(self) -> None:
        self.is_closed = False
        self.close_callbacks: set[Any] = set()
        self.close_calls = 0

    async def close(self) -> None:
        self.close_calls += 1
        self.is_closed = True


class FakeWrapper:
    """An aio-pika channel: the driver takes the aiormq channel under it."""

    def __init__(self, channel: FakeAioChannel) -> None:
        self.channel = channel

    async def get_underlay_channel(self) -> FakeAioChannel:
        return self.channel


class FakeAioPikaConnection:
    """An aio-pika ``Connection``, opened by the network."""

    def __init__(self, network: FakeNetwork, url: Any, **kwargs: Any) -> None:
        self.network = network
        self.url = url
        self.kwargs = kwargs
        self.is_closed = False
        self.close_callbacks: set[Any] = set()
        self.close_calls = 0
        self.channels: list[tuple[bool, FakeAioChannel]] = []

    async def connect(self, timeout: float | None = None) -> None:
        if self.network.deaf_to_cancel:
            # as asyncio.wait_for can in Python 3.11 (aiormq's connect uses it): a
            # cancellation that comes as the attempt ends is lost, the attempt fails
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.3)
            raise ConnectionRefusedError("refused")
        failure = self.network.failures.popleft() if self.network.failures else None
        if failure is not None:
            raise failure

    async def channel(
        self, publisher_confirms: bool = True, on_return_raises: bool = False
    ) -> FakeWrapper:
        if self.network.channel_hangs:
            await asyncio.Event().wait()
        channel = FakeAioChannel()
        self.channels.append((publisher_confirms, channel))
        return FakeWrapper(channel)

    async def close(self) -> None:
        self.close_calls += 1
        self.is_closed = True

    def lose(self, exc: BaseException) -> None:
        """The connection breaks: aio-pika calls its close callbacks."""
        self.is_closed = True
        for callback in list(self.close_callbacks):
            callback(self, exc)

    async def stop(self) -> None:
        for _, channel in self.channels:
            await channel.stop()


class FakeNetwork:
    """Stands in for aio-pika's ``Connection``: each connection attempt makes a fake one.

    ``failures`` are what the next attempts raise (``None`` for one that succeeds).
    """

    def __init__(self) -> None:
        self.connections: list[FakeAioPikaConnection] = []
        self.failures: deque[BaseException | None] = deque()
        self.channel_hangs = False
        #: Every attempt refused, and deaf to a cancellation while it lasts.
        self.deaf_to_cancel = False

    def __call__(self, url: Any, **kwargs: Any) -> FakeAioPikaConnection:
        connection = FakeAioPikaConnection(self, url, **kwargs)
        self.connections.append(connection)
        return connection

    async def stop(self) -> None:
        for connection in self.connections:
            await connection.stop()


def make_driver(channel: FakeAioChannel | None, socket_timeout: float = 3.0) -> AioDriver:
    driver = AioDriver(ConnectionConfig(socket_timeout=socket_timeout, async_engine=True))
    driver._connection = FakeAioConnection()
    driver._consume = channel
    driver._settlements = Settlements()
    return driver


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def require_one_asyncio() -> None:
    """Fail, saying why, where asyncio was imported twice in this process.

    coverage.py does that when it measures a dotted source package
    (``--cov=tavrida2.drivers``): it imports the parent package to find it, then
    removes every module imported meanwhile, asyncio included; asyncio imported
    again has new exception classes, but its C tasks still raise the first
    ``CancelledError``. ``asyncio.timeout`` then lets a timeout out as that
    ``CancelledError``, and no ``except asyncio.CancelledError`` catches it:
    the driver's bounded waits cannot work, whatever the driver does.
    """

    async def raised_when_cancelled() -> type[BaseException]:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
        except BaseException as exc:
            return type(exc)
        raise AssertionError("not cancelled")

    raised = asyncio.run(raised_when_cancelled())
    if raised is not asyncio.CancelledError:
        pytest.fail(
            "asyncio was imported twice in this process (a cancelled task raises another "
            "CancelledError class than asyncio.CancelledError), so asyncio.timeout() cannot "
            "work; coverage.py does this for --cov=tavrida2.drivers: measure with "
            "--cov=tavrida2/drivers or --cov=tavrida2 instead",
            pytrace=False,
        )
