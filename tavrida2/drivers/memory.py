"""An in-process broker with RabbitMQ's routing, and drivers for both engines.

:class:`MemoryBroker` keeps exchanges (topic, direct, fanout; the default
exchange ``""`` routes by queue name), queues, bindings, consumers with
prefetch and manual acknowledgement, requeue on reject or consumer loss, and
dead-lettering through the ``x-dead-letter-exchange`` queue argument. Messages
are stored as they would travel: bytes bodies and copied header tables, never
the sender's Python objects. Brokers are named (``memory://name``) and live in
the process until :meth:`MemoryBroker.reset_all`.

Several servers and clients in one process talk through one broker, each
server in a thread (:meth:`MemoryDriver.run`) or an event loop
(:class:`AsyncMemoryDriver`); single-threaded tests can call
:meth:`MemoryBroker.run_until_idle` to deliver everything to sync consumers.
Direct reply-to works as on RabbitMQ: a driver that consumes replies gets a
queue ``amq.rabbitmq.reply-to.<id>`` of its own, written into the ``reply_to``
property of the requests it publishes; a sync driver waiting for an answer
delivers to the other sync drivers that no thread runs.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import decimal
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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
from tavrida2.drivers.routing import matches
from tavrida2.messages import AMQPMessage

log = logging.getLogger(__name__)

_TABLE_SCALARS = (str, int, float, bool, bytes, decimal.Decimal, datetime.datetime, type(None))


def _check_table(value: Any, where: str) -> None:
    """Refuse header values that an AMQP field table cannot carry."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: header keys must be str, got {key!r}")
            _check_table(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_table(item, f"{where}[{index}]")
    elif not isinstance(value, _TABLE_SCALARS):
        raise TypeError(f"{where}: {type(value).__name__} cannot travel in AMQP headers")


@dataclass
class StoredMessage:
    """A message in a queue: body bytes, header table, properties, where it came from."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    redelivered: bool = False
    #: monotonic time after which the message expires (per-message TTL), if any
    expires_at: float | None = None

    def to_amqp(self) -> AMQPMessage:
        props = self.properties
        return AMQPMessage(
            self.body,
            copy.deepcopy(self.headers),
            reply_to=props.get("reply_to"),
            correlation_id=props.get("correlation_id"),
            expiration=props.get("expiration"),
            redelivered=self.redelivered,
            exchange=self.exchange,
            routing_key=self.routing_key,
        )


@dataclass
class _Exchange:
    name: str
    type: str
    durable: bool
    bindings: list[tuple[str, str]] = field(default_factory=list)  # (queue, routing key)


@dataclass
class _Consumer:
    tag: str
    queue: _Queue
    prefetch: int
    owner: object
    notify: Callable[[], None] | None = None
    unacked: int = 0
    active: bool = True


@dataclass
class _Queue:
    name: str
    durable: bool
    arguments: dict[str, Any]
    messages: deque[StoredMessage] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    unacked: dict[int, tuple[_Consumer, StoredMessage]] = field(default_factory=dict)


@dataclass
class Delivery:
    """A message handed to a consumer, to be settled with :meth:`MemoryBroker.settle`."""

    tag: int
    consumer: _Consumer
    message: StoredMessage


class MemoryBroker:
    """An in-process AMQP-like broker (see the module docstring)."""

    _brokers: dict[str, MemoryBroker] = {}
    _registry_lock = threading.Lock()

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._exchanges: dict[str, _Exchange] = {"": _Exchange("", "direct", True)}
        self._queues: dict[str, _Queue] = {}
        self._tags = itertools.count(1)
        self._consumer_tags = itertools.count(1)
        #: Messages published without ``mandatory`` that no queue took.
        self.unroutable: list[StoredMessage] = []
        #: Messages rejected from a queue without a dead-letter exchange.
        self.discarded: list[StoredMessage] = []

    @classmethod
    def get(cls, name: str = "default") -> MemoryBroker:
        with cls._registry_lock:
            broker = cls._brokers.get(name)
            if broker is None:
                broker = cls._brokers[name] = cls(name)
            return broker

    @classmethod
    def reset_all(cls) -> None:
        """Forget every broker (for tests)."""
        with cls._registry_lock:
            cls._brokers.clear()

    # -- topology ------------------------------------------------------------

    def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None:
        if name.startswith("amq."):
            raise exceptions.DriverError(reason=f"exchange name {name!r} is reserved (amq.)")
        matches(exchange_type, "", "")  # rejects unsupported types
        with self._lock:
            known = self._exchanges.get(name)
            if known is None:
                self._exchanges[name] = _Exchange(name, exchange_type, durable)
            elif (known.type, known.durable) != (exchange_type, durable):
                raise exceptions.PreconditionFailed(
                    what="exchange",
                    name=name,
                    reason=f"type {known.type}, durable {known.durable}",
                )

    def declare_queue(
        self, name: str = "", durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str:
        arguments = dict(arguments or {})
        with self._lock:
            if not name:
                name = f"amq.gen-{next(self._consumer_tags)}"
            known = self._queues.get(name)
            if known is None:
                self._queues[name] = _Queue(name, durable, arguments)
            elif (known.durable, known.arguments) != (durable, arguments):
                raise exceptions.PreconditionFailed(
                    what="queue",
                    name=name,
                    reason=f"durable {known.durable}, arguments {known.arguments}",
                )
            return name

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with self._lock:
            target = self._exchange(exchange)
            self._queue(queue)
            if not exchange:
                raise exceptions.DriverError(reason="cannot bind to the default exchange")
            if (queue, routing_key) not in target.bindings:
                target.bindings.append((queue, routing_key))

    def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with self._lock:
            bindings = self._exchange(exchange).bindings
            if (queue, routing_key) in bindings:
                bindings.remove((queue, routing_key))

    def delete_queue(self, name: str) -> None:
        """Delete a queue: its consumers are cancelled, its messages dropped."""
        with self._lock:
            queue = self._queues.pop(name, None)
            if queue is None:
                return
            for consumer in queue.consumers:
                consumer.active = False
            for exchange in self._exchanges.values():
                exchange.bindings[:] = [b for b in exchange.bindings if b[0] != name]
            self._changed.notify_all()
        self._wake(queue)

    def delete_exchange(self, name: str) -> None:
        with self._lock:
            self._exchanges.pop(name, None)

    def _exchange(self, name: str) -> _Exchange:
        try:
            return self._exchanges[name]
        except KeyError:
            raise exceptions.ExchangeNotFound(exchange=name) from None

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise exceptions.QueueNotFound(queue=name) from None

    # -- inspection (tests, demo) ---------------------------------------------

    def queue_names(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    def exchange_type(self, name: str) -> str:
        with self._lock:
            return self._exchange(name).type

    def bindings(self, exchange: str) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._exchange(exchange).bindings)

    def message_count(self, queue: str) -> int:
        with self._lock:
            return len(self._queue(queue).messages)

    def consumer_count(self, queue: str) -> int:
        with self._lock:
            return sum(1 for c in self._queue(queue).consumers if c.active)

    def get_message(self, queue: str) -> StoredMessage | None:
        """Take the next message of ``queue`` without a consumer (basic.get, auto-ack)."""
        with self._lock:
            messages = self._queue(queue).messages
            return messages.popleft() if messages else None

    def is_idle(self) -> bool:
        """No message waits in a consumed queue, none is being handled, none waits to expire."""
        with self._lock:
            self._expire_due()
            return all(
                not q.unacked
                and (not q.messages or not any(c.active for c in q.consumers))
                and not any(m.expires_at is not None for m in q.messages)
                for q in self._queues.values()
            )

    def messages_in(self, queue: str) -> list[StoredMessage]:
        """The messages waiting in ``queue`` (left there; for tests and tools)."""
        with self._lock:
            return list(self._queue(queue).messages)

    def _expire_due(self) -> None:
        """Expire the messages at the head of each queue whose TTL passed (as RabbitMQ does).

        Called with the lock held; an expired message is dead-lettered through the
        queue's ``x-dead-letter-exchange`` (dropped without one).
        """
        now = time.monotonic()
        for queue in list(self._queues.values()):
            while queue.messages:
                head = queue.messages[0]
                if head.expires_at is None or head.expires_at > now:
                    break
                queue.messages.popleft()
                head.expires_at = None
                self._dead_letter(queue, head, "expired")

    def _expire_later(self, seconds: float) -> None:
        def expire() -> None:
            with self._lock:
                self._expire_due()
                self._changed.notify_all()

        timer = threading.Timer(seconds + 0.001, expire)
        timer.daemon = True
        timer.start()

    def wait_until_idle(self, timeout: float = 10.0) -> bool:
        """Block until :meth:`is_idle` (True) or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.is_idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    # -- publishing ----------------------------------------------------------

    def route(self, exchange: str, routing_key: str) -> list[str]:
        """Names of the queues a message to ``exchange`` with ``routing_key`` reaches."""
        with self._lock:
            target = self._exchange(exchange)
            if not exchange:
                return [routing_key] if routing_key in self._queues else []
            found: list[str] = []
            for queue, key in target.bindings:
                if queue not in found and matches(target.type, key, routing_key):
                    found.append(queue)
            return found

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        mandatory: bool = False,
    ) -> None:
        """Route a message; ``mandatory`` makes an unroutable one an error."""
        if not isinstance(body, bytes | bytearray):
            raise TypeError(f"message body must be bytes, got {type(body).__name__}")
        _check_table(headers or {}, "headers")
        stored = StoredMessage(
            bytes(body), copy.deepcopy(headers or {}), dict(properties or {}), exchange, routing_key
        )
        with self._lock:
            queues = self.route(exchange, routing_key)
            if not queues:
                if mandatory:
                    raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key)
                self.unroutable.append(stored)
                return
            for index, name in enumerate(queues):
                copy_ = stored if index == 0 else copy.deepcopy(stored)
                self._enqueue(self._queues[name], copy_)

    def _enqueue(self, queue: _Queue, message: StoredMessage, front: bool = False) -> None:
        expiration = message.properties.get("expiration")
        if expiration and not front and queue.arguments.get("x-dead-letter-exchange") is not None:
            # only queues that dead-letter need the TTL: the retry queue of a server
            seconds = int(expiration) / 1000
            message.expires_at = time.monotonic() + seconds
            self._expire_later(seconds)
        if front:
            queue.messages.appendleft(message)
        else:
            queue.messages.append(message)
        self._changed.notify_all()
        self._wake(queue)

    @staticmethod
    def _wake(queue: _Queue) -> None:
        for consumer in queue.consumers:
            if consumer.notify is not None:
                consumer.notify()

    # -- consuming -----------------------------------------------------------

    def add_consumer(
        self,
        queue: str,
        owner: object,
        prefetch: int = 0,
        notify: Callable[[], None] | None = None,
    ) -> _Consumer:
        with self._lock:
            target = self._queue(queue)
            consumer = _Consumer(
                f"ctag-{next(self._consumer_tags)}", target, prefetch, owner, notify
            )
            target.consumers.append(consumer)
            return consumer

    def cancel_consumer(self, consumer: _Consumer) -> None:
        """Stop deliveries to ``consumer``; its unacknowledged messages go back to the queue."""
        with self._lock:
            consumer.active = False
            queue = consumer.queue
            if consumer in queue.consumers:
                queue.consumers.remove(consumer)
            for tag, (owner, message) in sorted(queue.unacked.items(), reverse=True):
                if owner is consumer:
                    del queue.unacked[tag]
                    message.redelivered = True
                    self._enqueue(queue, message, front=True)
            self._changed.notify_all()

    def next_delivery(self, consumer: _Consumer) -> Delivery | None:
        """The next message for ``consumer``, if it has one and room under its prefetch."""
        with self._lock:
            queue = consumer.queue
            if not consumer.active or not queue.messages:
                return None
            if consumer.prefetch and consumer.unacked >= consumer.prefetch:
                return None
            message = queue.messages.popleft()
            tag = next(self._tags)
            queue.unacked[tag] = (consumer, message)
            consumer.unacked += 1
            return Delivery(tag, consumer, message)

    def wait_for_delivery(
        self, consumers: list[_Consumer], stopped: Callable[[], bool], timeout: float = 0.5
    ) -> Delivery | None:
        """Block until one of ``consumers`` has a delivery, ``stopped()`` or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not stopped():
                for consumer in consumers:
                    delivery = self.next_delivery(consumer)
                    if delivery is not None:
                        consumers.append(consumers.pop(consumers.index(consumer)))  # round robin
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return None

    def settle(self, delivery: Delivery, disposition: Disposition) -> None:
        """Acknowledge, reject (dead-letter) or requeue a delivery."""
        with self._lock:
            consumer = delivery.consumer
            queue = consumer.queue
            if queue.unacked.pop(delivery.tag, None) is None:
                return  # consumer cancelled meanwhile: the message was requeued
            consumer.unacked -= 1
            message = delivery.message
            if disposition is Disposition.REQUEUE:
                message.redelivered = True
                self._enqueue(queue, message, front=True)
            elif disposition is Disposition.REJECT:
                self._dead_letter(queue, message, "rejected")
            self._changed.notify_all()
            self._wake(queue)

    def _dead_letter(self, queue: _Queue, message: StoredMessage, reason: str) -> None:
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange is None or exchange not in self._exchanges:
            self.discarded.append(message)
            return
        routing_key = queue.arguments.get("x-dead-letter-routing-key", message.routing_key)
        headers = message.headers
        deaths = [d for d in headers.get("x-death", []) if isinstance(d, dict)]
        for death in deaths:
            if death.get("queue") == queue.name and death.get("reason") == reason:
                death["count"] = int(death.get("count", 0)) + 1
                break
        else:
            deaths.insert(
                0,
                {
                    "count": 1,
                    "reason": reason,
                    "queue": queue.name,
                    "exchange": message.exchange,
                    "routing-keys": [message.routing_key],
                },
            )
        headers["x-death"] = deaths
        # as RabbitMQ: a dead letter loses its expiration, so it does not expire again
        properties = {k: v for k, v in message.properties.items() if k != "expiration"}
        self.publish(exchange, routing_key, message.body, headers, properties)

    def run_until_idle(
        self, max_deliveries: int = 100_000, skip: MemoryDriver | None = None
    ) -> int:
        """Deliver to every sync consumer until nothing is left; returns the count delivered.

        Drivers that a thread runs (:meth:`MemoryDriver.run`), that are
        delivering already, and ``skip`` are left to themselves.
        """
        delivered = 0
        while delivered < max_deliveries:
            progressed = False
            with self._lock:
                drivers = {c.owner for q in self._queues.values() for c in q.consumers}
            for owner in drivers:
                if isinstance(owner, MemoryDriver) and owner is not skip and not owner.busy:
                    count = owner.deliver_pending()
                    delivered += count
                    progressed = progressed or count > 0
            if not progressed:
                break
        return delivered


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
        self.connected = False

    def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None:
        self._require_connection().declare_exchange(name, exchange_type, durable)

    def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str:
        return self._require_connection().declare_queue(name, durable, arguments)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._require_connection().bind_queue(queue, exchange, routing_key)

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
        self.connected = False

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
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None:
        self._require_connection().declare_exchange(name, exchange_type, durable)

    async def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str:
        return self._require_connection().declare_queue(name, durable, arguments)

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._require_connection().bind_queue(queue, exchange, routing_key)

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


__all__ = ["AsyncMemoryDriver", "Delivery", "MemoryBroker", "MemoryDriver", "StoredMessage"]
