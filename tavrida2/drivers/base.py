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
import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.messages import AMQPMessage

log = logging.getLogger(__name__)


class Disposition(enum.Enum):
    """What the driver does with a delivery once its callback returned."""

    ACK = "ack"
    #: Never handleable: reject without requeue (dead-lettered if the queue has a DLX).
    REJECT = "reject"
    #: Try again later: back to the queue.
    REQUEUE = "requeue"


DeliveryCallback = Callable[[AMQPMessage], Disposition]
AsyncDeliveryCallback = Callable[[AMQPMessage], Awaitable[Disposition]]

#: RabbitMQ direct reply-to: the ``reply_to`` property of a request whose
#: caller waits for the answer on the channel it published the request on.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: Called with each answer that reached this driver's direct reply-to consumer.
ReplyCallback = Callable[[AMQPMessage], None]
#: Called when waiting callers cannot get their answer: ``(correlation_id,
#: error)`` for one returned (unroutable) request, ``(None, error)`` for all of
#: them when the channel that receives the answers is gone.
ReplyFailureCallback = Callable[[str | None, Exception], None]


#: Called after a driver restored a lost connection (set by a server with metrics).
ReconnectCallback = Callable[[], None]


def tell_reconnected(callback: ReconnectCallback | None) -> None:
    """Call a driver's ``on_reconnect``; what it raises is logged, never the driver's problem."""
    if callback is None:
        return
    try:
        callback()
    except Exception:
        log.exception("on_reconnect callback %r failed", callback)


class PendingPublish:
    """A publish on its way; :meth:`result` waits for the broker's confirmation.

    Returned by :meth:`SyncDriver.publish_async`: many publishes can wait
    for their confirmations at once. ``result()`` raises what ``publish``
    would have raised (``UnroutableMessage``, ``PublishNacked``,
    ``ConnectionClosed``), or ``PublishTimeout``.
    """

    __slots__ = ("_driver", "confirmed", "error", "exchange", "routing_key")

    def __init__(self, driver: SyncDriver | None, exchange: str, routing_key: str) -> None:
        self._driver = driver
        self.exchange = exchange
        self.routing_key = routing_key
        self.confirmed = driver is None
        self.error: Exception | None = None

    def done(self) -> bool:
        return self.confirmed or self.error is not None

    def result(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout``, default the driver's ``publish_timeout``) for the confirm."""
        driver = self._driver
        seconds = 0.0
        if not self.done() and driver is not None:
            seconds = driver.config.publish_timeout if timeout is None else timeout
            driver.wait(self.done, seconds)
        if self.error is not None:
            raise self.error
        if not self.confirmed:
            raise exceptions.PublishTimeout(exchange=self.exchange, timeout=seconds)


class SyncDriver(abc.ABC):
    """Blocking driver (one connection, reused for every message)."""

    is_async = False
    config: ConnectionConfig
    #: Called (without arguments) each time the driver restored a lost connection.
    on_reconnect: ReconnectCallback | None = None

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        """Declare an exchange; ``alternate`` gets what none of its bindings takes."""

    @abc.abstractmethod
    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str: ...

    @abc.abstractmethod
    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...

    @abc.abstractmethod
    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        """Route what ``source`` takes with ``routing_key`` on to the exchange ``destination``."""

    @abc.abstractmethod
    def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove a binding (none there: nothing happens)."""

    @abc.abstractmethod
    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait for the broker's confirmation."""

    def publish_async(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> PendingPublish:
        """Publish without waiting for the confirmation; wait on the handle later.

        This implementation publishes (and confirms) at once, and keeps what
        went wrong for ``result()``; drivers that can keep publishes in
        flight override it.
        """
        pending = PendingPublish(None, exchange, routing_key)
        try:
            self.publish(exchange, routing_key, message, mandatory)
        except exceptions.DriverError as exc:
            pending.confirmed, pending.error = False, exc
        return pending

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

    @abc.abstractmethod
    def claim(self, name: str) -> bool:
        """Whether this connection holds the lease ``name``, claiming it if it is free.

        A lease is an exclusive queue: the first connection to declare it holds
        it until that connection closes; the broker refuses it to the others.
        """

    @abc.abstractmethod
    def consume_replies(self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback) -> None:
        """Receive the answers to requests published with ``reply_to=DIRECT_REPLY_TO``.

        Such requests are published unconfirmed and mandatory on the channel
        that consumes the answers: the answer confirms them, and a returned
        request is reported to ``on_failure`` at once. Callbacks run in the
        thread that services the connection (:meth:`wait` or :meth:`run`).
        """

    @abc.abstractmethod
    def wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Service the connection until ``done()`` is true or ``timeout`` seconds passed.

        Safe to call from several threads: one services the connection while
        the others wait for it. Raises ``ConnectionClosed`` if the connection
        is lost (after telling ``on_failure``).
        """


class AsyncDriver(abc.ABC):
    """asyncio driver (one connection, reused for every message)."""

    is_async = True
    #: Called (without arguments) each time the driver restored a lost connection.
    on_reconnect: ReconnectCallback | None = None

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        """Declare an exchange; ``alternate`` gets what none of its bindings takes."""

    @abc.abstractmethod
    async def declare_queue(
        self,
        name: str,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str: ...

    @abc.abstractmethod
    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...

    @abc.abstractmethod
    async def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        """Route what ``source`` takes with ``routing_key`` on to the exchange ``destination``."""

    @abc.abstractmethod
    async def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove a binding (none there: nothing happens)."""

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
    async def stop_consuming(self, timeout: float | None = None) -> None:
        """Stop taking deliveries; wait (at most ``timeout`` s) for the ones in progress.

        Those still being handled after ``timeout`` are cancelled and left
        unacknowledged: the broker delivers them again once the connection closes.
        """

    @abc.abstractmethod
    async def claim(self, name: str) -> bool:
        """As :meth:`SyncDriver.claim`."""

    @abc.abstractmethod
    async def consume_replies(
        self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback
    ) -> None:
        """As :meth:`SyncDriver.consume_replies`; callbacks run in the event loop."""

    async def wait_gave_up(self) -> Exception:
        """Return once the connection is lost for good (reconnecting gave up).

        A consuming server waits on this to stop with the error; a driver
        that cannot lose its connection never returns.
        """
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


__all__ = [
    "DIRECT_REPLY_TO",
    "AsyncDeliveryCallback",
    "AsyncDriver",
    "DeliveryCallback",
    "Disposition",
    "PendingPublish",
    "ReconnectCallback",
    "ReplyCallback",
    "ReplyFailureCallback",
    "SyncDriver",
    "tell_reconnected",
]
