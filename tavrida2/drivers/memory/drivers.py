"""The memory drivers: a sync and an asyncio driver on a :class:`MemoryBroker`.

Both share :class:`_MemoryConnection` (config, broker, direct reply-to queue,
publishing); they differ in how deliveries reach the callbacks: a thread
(:meth:`MemoryDriver.run`) or tasks of an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import (
    DIRECT_REPLY_TO,
    AsyncDeliveryCallback,
    AsyncDriver,
    DeliveryCallback,
    Disposition,
    ReplyCallback,
    ReplyFailureCallback,
    SyncDriver,
)
from tavrida2.drivers.memory.broker import Delivery, MemoryBroker, _Consumer
from tavrida2.messages import AMQPMessage

log = logging.getLogger("tavrida2.drivers.memory")


class _MemoryConnection:
    """What both memory drivers share: config, broker, connection state."""

    def __init__(self, config: ConnectionConfig | None = None) -> None:
        self.config = config or ConnectionConfig.from_url("memory://")
        self.broker = MemoryBroker.get(self.config.memory_broker)
        self.connected = False
        self.reply_queue: str | None = None
        self._on_reply: ReplyCallback | None = None
        self._on_reply_failure: ReplyFailureCallback | None = None

    def _declare_reply_queue(
        self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback
    ) -> str:
        broker = self._require_connection()
        if self.reply_queue is None:
            name = f"{DIRECT_REPLY_TO}.{uuid.uuid4().hex}"
            broker.declare_queue(name, durable=False)
            self.reply_queue = name
        self._on_reply, self._on_reply_failure = on_reply, on_failure
        return self.reply_queue

    def _deliver_reply(self, message: AMQPMessage) -> Disposition:
        if self._on_reply is not None:
            self._on_reply(message)
        return Disposition.ACK

    def _delete_reply_queue(self) -> None:
        """Closing: the answers of waiting callers can no longer arrive; tell them."""
        name, self.reply_queue = self.reply_queue, None
        if name is not None:
            self.broker.delete_queue(name)
            if self._on_reply_failure is not None:
                self._on_reply_failure(
                    None, exceptions.ConnectionClosed(reason="the driver closed")
                )

    def _require_connection(self) -> MemoryBroker:
        if not self.connected:
            raise exceptions.ConnectionClosed(reason="the driver is not connected")
        return self.broker

    def _publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool
    ) -> None:
        body = message.body.encode("utf-8") if isinstance(message.body, str) else message.body
        properties = {
            "content_type": "application/json",
            "delivery_mode": 1 if message.correlation_id or not self.config.persistent else 2,
        }
        if message.reply_to == DIRECT_REPLY_TO:
            if self.reply_queue is None:
                raise RuntimeError("a request for a waiting caller needs consume_replies() first")
            properties["reply_to"] = self.reply_queue
        elif message.reply_to:
            properties["reply_to"] = message.reply_to
        if message.correlation_id:
            properties["correlation_id"] = message.correlation_id
        if message.expiration:
            properties["expiration"] = message.expiration
        self._require_connection().publish(
            exchange, routing_key, body, message.headers, properties, mandatory
        )


class MemoryDriver(_MemoryConnection, SyncDriver):
    """Sync driver on a :class:`MemoryBroker` (``memory://`` URLs)."""

    def __init__(self, config: ConnectionConfig | None = None) -> None:
        super().__init__(config)
        self._consumers: list[tuple[_Consumer, DeliveryCallback]] = []
        self._callbacks: dict[int, DeliveryCallback] = {}
        self._stopping = threading.Event()
        self._reply_consumer: _Consumer | None = None
        #: A thread runs this driver, or it is delivering: nobody else may deliver for it.
        self.busy = False

    def connect(self) -> None:
        self.connected = True
        self._stopping.clear()

    def close(self) -> None:
        self.stop()
        for consumer, _ in self._consumers:
            self.broker.cancel_consumer(consumer)
        self._consumers.clear()
        if self._reply_consumer is not None:
            self.broker.cancel_consumer(self._reply_consumer)
            self._reply_consumer = None
        self._delete_reply_queue()
        self.broker.release_leases(self)
        self.connected = False

    def claim(self, name: str) -> bool:
        return self._require_connection().claim(name, self)

    def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        self._require_connection().declare_exchange(name, exchange_type, durable, alternate)

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str:
        return self._require_connection().declare_queue(name, durable, arguments, auto_delete)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._require_connection().bind_queue(queue, exchange, routing_key)

    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        self._require_connection().bind_exchange(destination, source, routing_key)

    def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._require_connection().unbind_queue(queue, exchange, routing_key)

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        self._publish(exchange, routing_key, message, mandatory)

    def consume(self, queue: str, callback: DeliveryCallback, prefetch_count: int = 0) -> None:
        consumer = self._require_connection().add_consumer(queue, self, prefetch_count)
        self._consumers.append((consumer, callback))
        self._callbacks[id(consumer)] = callback

    def _handle(self, delivery: Delivery) -> None:
        callback = self._callbacks[id(delivery.consumer)]
        try:
            disposition = callback(delivery.message.to_amqp())
        except Exception:
            log.exception("delivery callback failed; message requeued")
            disposition = Disposition.REQUEUE
        self.broker.settle(delivery, disposition)

    def deliver_pending(self) -> int:
        """Deliver what is waiting for this driver's consumers now (no blocking)."""
        count = 0
        self.busy = True
        try:
            for consumer, _ in list(self._consumers):
                while (delivery := self.broker.next_delivery(consumer)) is not None:
                    self._handle(delivery)
                    count += 1
        finally:
            self.busy = False
        return count

    def run(self) -> None:
        self._require_connection()
        consumers = [c for c, _ in self._consumers]
        self.busy = True
        try:
            while not self._stopping.is_set():
                delivery = self.broker.wait_for_delivery(consumers, self._stopping.is_set)
                if delivery is not None:
                    self._handle(delivery)
        finally:
            self.busy = False

    def consume_replies(self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback) -> None:
        queue = self._declare_reply_queue(on_reply, on_failure)
        if self._reply_consumer is None:
            self._reply_consumer = self.broker.add_consumer(queue, self)
            self._callbacks[id(self._reply_consumer)] = self._deliver_reply

    def wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Deliver answers (and, for them, requests to sync drivers no thread runs)."""
        consumer = self._reply_consumer
        if consumer is None:
            return
        deadline = time.monotonic() + timeout
        while not done():
            delivery = self.broker.next_delivery(consumer)
            if delivery is not None:
                self._handle(delivery)
                continue
            if self.broker.run_until_idle(skip=self):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            delivery = self.broker.wait_for_delivery([consumer], done, min(remaining, 0.05))
            if delivery is not None:
                self._handle(delivery)

    def stop(self) -> None:
        self._stopping.set()
        with self.broker._changed:
            self.broker._changed.notify_all()


class AsyncMemoryDriver(_MemoryConnection, AsyncDriver):
    """asyncio driver on a :class:`MemoryBroker`; each delivery runs in a task."""

    def __init__(self, config: ConnectionConfig | None = None) -> None:
        super().__init__(config)
        self._consumers: list[_Consumer] = []
        self._loops: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        await self.stop_consuming()
        self._delete_reply_queue()
        self.broker.release_leases(self)
        self.connected = False

    async def claim(self, name: str) -> bool:
        return self._require_connection().claim(name, self)

    async def consume_replies(
        self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback
    ) -> None:
        if self.reply_queue is not None:
            self._on_reply, self._on_reply_failure = on_reply, on_failure
            return
        queue = self._declare_reply_queue(on_reply, on_failure)

        async def deliver(message: AMQPMessage) -> Disposition:
            return self._deliver_reply(message)

        await self.consume(queue, deliver)

    async def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        self._require_connection().declare_exchange(name, exchange_type, durable, alternate)

    async def declare_queue(
        self,
        name: str,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str:
        return self._require_connection().declare_queue(name, durable, arguments, auto_delete)

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._require_connection().bind_queue(queue, exchange, routing_key)

    async def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        self._require_connection().bind_exchange(destination, source, routing_key)

    async def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._require_connection().unbind_queue(queue, exchange, routing_key)

    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        self._publish(exchange, routing_key, message, mandatory)

    async def consume(
        self, queue: str, callback: AsyncDeliveryCallback, prefetch_count: int = 0
    ) -> None:
        loop = asyncio.get_running_loop()
        wakeup = asyncio.Event()

        def notify() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wakeup.set)

        consumer = self._require_connection().add_consumer(queue, self, prefetch_count, notify)
        self._consumers.append(consumer)
        self._loops.append(loop.create_task(self._consume(consumer, callback, wakeup)))

    async def _consume(
        self, consumer: _Consumer, callback: AsyncDeliveryCallback, wakeup: asyncio.Event
    ) -> None:
        while consumer.active:
            delivery = self.broker.next_delivery(consumer)
            if delivery is None:
                wakeup.clear()
                delivery = self.broker.next_delivery(consumer)
                if delivery is None:
                    await wakeup.wait()
                    continue
            task = asyncio.get_running_loop().create_task(self._handle(delivery, callback))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _handle(self, delivery: Delivery, callback: AsyncDeliveryCallback) -> None:
        try:
            disposition = await callback(delivery.message.to_amqp())
        except Exception:
            log.exception("delivery callback failed; message requeued")
            disposition = Disposition.REQUEUE
        self.broker.settle(delivery, disposition)

    async def stop_consuming(self, timeout: float | None = None) -> None:
        for consumer in self._consumers:
            consumer.active = False
            if consumer.notify is not None:
                consumer.notify()
        for task in self._loops:
            task.cancel()
        if self._loops:
            await asyncio.gather(*self._loops, return_exceptions=True)
        if self._in_flight:
            _, unfinished = await asyncio.wait(set(self._in_flight), timeout=timeout)
            if unfinished:
                log.warning(
                    "%s deliveries still being handled after stop_timeout=%s s: left "
                    "unacknowledged (delivered again)",
                    len(unfinished),
                    timeout,
                )
                for task in unfinished:
                    task.cancel()
                await asyncio.wait(unfinished, timeout=1.0)
        for consumer in self._consumers:
            self.broker.cancel_consumer(consumer)
        self._consumers.clear()
        self._loops.clear()


__all__ = ["AsyncMemoryDriver", "MemoryDriver"]
