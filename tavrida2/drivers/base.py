"""The driver interface: what the pipeline needs from an AMQP transport.

Two parallel interfaces, one per engine: :class:`SyncDriver` (blocking calls,
``run()`` loops over deliveries) and :class:`AsyncDriver` (coroutines; deliveries
are handled as tasks). Every driver acknowledges a delivery only after its
callback returned, as the callback's :class:`Disposition` says, and publishes
with confirmation: ``publish`` returns once the broker has the message, or
raises (``UnroutableMessage`` for a mandatory message no queue takes,
``ExchangeNotFound``, ``ConnectionClosed``, ...).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from typing import Any

from tavrida2.messages import AMQPMessage


class Disposition(enum.Enum):
    """What the driver does with a delivery once its callback returned."""

    ACK = "ack"
    #: Never handleable: reject without requeue (dead-lettered if the queue has a DLX).
    REJECT = "reject"
    #: Try again later: back to the queue.
    REQUEUE = "requeue"


DeliveryCallback = Callable[[AMQPMessage], Disposition]
AsyncDeliveryCallback = Callable[[AMQPMessage], Awaitable[Disposition]]


class SyncDriver(abc.ABC):
    """Blocking driver (one connection, reused for every message)."""

    is_async = False

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None: ...

    @abc.abstractmethod
    def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str: ...

    @abc.abstractmethod
    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...

    @abc.abstractmethod
    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait for the broker's confirmation."""

    @abc.abstractmethod
    def consume(self, queue: str, callback: DeliveryCallback, prefetch_count: int = 0) -> None:
        """Subscribe ``callback`` to ``queue``; deliveries flow while :meth:`run` runs."""

    @abc.abstractmethod
    def run(self) -> None:
        """Deliver messages to the consumers until :meth:`stop` is called."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Make :meth:`run` return after the delivery in progress (thread-safe)."""

    def send_heartbeat(self) -> None:  # noqa: B027  -- optional; memory has no heartbeats
        """Service the connection during a long handler (heartbeats)."""


class AsyncDriver(abc.ABC):
    """asyncio driver (one connection, reused for every message)."""

    is_async = True

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None: ...

    @abc.abstractmethod
    async def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str: ...

    @abc.abstractmethod
    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...

    @abc.abstractmethod
    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait for the broker's confirmation."""

    @abc.abstractmethod
    async def consume(
        self, queue: str, callback: AsyncDeliveryCallback, prefetch_count: int = 0
    ) -> None:
        """Subscribe ``callback``; each delivery is handled in a task of its own."""

    @abc.abstractmethod
    async def stop_consuming(self) -> None:
        """Stop taking deliveries and wait for the ones in progress to be settled."""


__all__ = [
    "AsyncDeliveryCallback",
    "AsyncDriver",
    "DeliveryCallback",
    "Disposition",
    "SyncDriver",
]
