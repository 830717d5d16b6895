"""An in-process broker with RabbitMQ's routing (the memory drivers' broker).

:class:`MemoryBroker` keeps exchanges (topic, direct, fanout; the default
exchange ``""`` routes by queue name), queues, bindings, consumers with
prefetch and manual acknowledgement, requeue on reject or consumer loss, and
dead-lettering through the ``x-dead-letter-exchange`` queue argument, and, for
queues declared with ``x-queue-type: quorum``, RabbitMQ's delivery count
(``x-delivery-count``) and ``x-delivery-limit``. Messages
are stored as they would travel: bytes bodies and copied header tables, never
the sender's Python objects. Brokers are named (``memory://name``) and live in
the process until :meth:`MemoryBroker.reset_all`.

Several servers and clients in one process talk through one broker, each
server in a thread (``MemoryDriver.run``) or an event loop
(``AsyncMemoryDriver``, see :mod:`.drivers`); single-threaded tests can call
:meth:`MemoryBroker.run_until_idle` to deliver everything to sync consumers.
Direct reply-to works as on RabbitMQ: a driver that consumes replies gets a
queue ``amq.rabbitmq.reply-to.<id>`` of its own, written into the ``reply_to``
property of the requests it publishes; a sync driver waiting for an answer
delivers to the other sync drivers that no thread runs.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tavrida2 import exceptions
from tavrida2.drivers.base import (
    Disposition,
)
from tavrida2.drivers.routing import matches
from tavrida2.messages import DELIVERY_COUNT_HEADER, AMQPMessage

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
    #: times it was returned to a quorum queue
    delivery_count: int = 0

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
    #: (destination exchange, routing key): exchange-to-exchange bindings
    exchange_bindings: list[tuple[str, str]] = field(default_factory=list)
    #: where what no binding takes goes (the ``alternate-exchange`` argument)
    alternate: str | None = None


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
    auto_delete: bool = False
    messages: deque[StoredMessage] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    unacked: dict[int, tuple[_Consumer, StoredMessage]] = field(default_factory=dict)

    @property
    def quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"


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
        self._leases: dict[str, object] = {}
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
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        """Declare an exchange; ``alternate`` gets the messages none of its bindings takes."""
        if name.startswith("amq."):
            raise exceptions.DriverError(reason=f"exchange name {name!r} is reserved (amq.)")
        matches(exchange_type, "", "")  # rejects unsupported types
        with self._lock:
            known = self._exchanges.get(name)
            if known is None:
                self._exchanges[name] = _Exchange(name, exchange_type, durable, alternate=alternate)
            elif (known.type, known.durable, known.alternate) != (
                exchange_type,
                durable,
                alternate,
            ):
                raise exceptions.PreconditionFailed(
                    what="exchange",
                    name=name,
                    reason=f"type {known.type}, durable {known.durable}, "
                    f"alternate-exchange {known.alternate}",
                )

    def declare_queue(
        self,
        name: str = "",
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str:
        """Declare a queue; an ``auto_delete`` one goes when its last consumer does."""
        arguments = dict(arguments or {})
        with self._lock:
            if not name:
                name = f"amq.gen-{next(self._consumer_tags)}"
            known = self._queues.get(name)
            if arguments.get("x-queue-type") == "quorum" and (auto_delete or not durable):
                raise exceptions.PreconditionFailed(
                    what="queue", name=name, reason="a quorum queue is durable, not auto-delete"
                )
            if known is None:
                self._queues[name] = _Queue(name, durable, arguments, auto_delete)
            elif (known.durable, known.arguments, known.auto_delete) != (
                durable,
                arguments,
                auto_delete,
            ):
                raise exceptions.PreconditionFailed(
                    what="queue",
                    name=name,
                    reason=f"durable {known.durable}, arguments {known.arguments}, "
                    f"auto_delete {known.auto_delete}",
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

    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        """Route what ``source`` takes with ``routing_key`` on to ``destination``."""
        with self._lock:
            target = self._exchange(source)
            self._exchange(destination)
            if not source or not destination:
                raise exceptions.DriverError(reason="cannot bind the default exchange")
            if (destination, routing_key) not in target.exchange_bindings:
                target.exchange_bindings.append((destination, routing_key))

    def claim(self, name: str, owner: object) -> bool:
        """Whether ``owner`` (a connection) holds the lease ``name``, claiming it if free."""
        with self._lock:
            return self._leases.setdefault(name, owner) is owner

    def release_leases(self, owner: object) -> None:
        """The connection ``owner`` closed: its leases are free."""
        with self._lock:
            for name in [n for n, o in self._leases.items() if o is owner]:
                del self._leases[name]

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
        """Names of the queues a message to ``exchange`` with ``routing_key`` reaches.

        As RabbitMQ: through exchange-to-exchange bindings too, each queue
        once; what an exchange routes nowhere goes to its alternate exchange.
        """
        with self._lock:
            self._exchange(exchange)
            if not exchange:
                return [routing_key] if routing_key in self._queues else []
            found: list[str] = []
            self._route_into(exchange, routing_key, found, set())
            return found

    def _route_into(
        self, exchange: str, routing_key: str, found: list[str], seen: set[str]
    ) -> None:
        target = self._exchanges.get(exchange)
        if target is None or exchange in seen:
            return
        seen.add(exchange)
        before = len(found)
        for queue, key in target.bindings:
            if queue not in found and matches(target.type, key, routing_key):
                found.append(queue)
        for destination, key in target.exchange_bindings:
            if matches(target.type, key, routing_key):
                self._route_into(destination, routing_key, found, seen)
        if len(found) == before and target.alternate is not None:
            self._route_into(target.alternate, routing_key, found, seen)

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
                    self._return(queue, message)
            self._changed.notify_all()
            gone = queue.auto_delete and not queue.consumers
        if gone:
            self.delete_queue(queue.name)

    def next_delivery(self, consumer: _Consumer) -> Delivery | None:
        """The next message for ``consumer``, if it has one and room under its prefetch."""
        with self._lock:
            queue = consumer.queue
            if not consumer.active or not queue.messages:
                return None
            if consumer.prefetch and consumer.unacked >= consumer.prefetch:
                return None
            message = queue.messages.popleft()
            if queue.quorum:
                message.headers[DELIVERY_COUNT_HEADER] = message.delivery_count
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
                self._return(queue, message)
            elif disposition is Disposition.REJECT:
                self._dead_letter(queue, message, "rejected")
            self._changed.notify_all()
            self._wake(queue)

    def _return(self, queue: _Queue, message: StoredMessage) -> None:
        """Back to its queue; a quorum queue counts it and keeps to its delivery limit."""
        message.redelivered = True
        if queue.quorum:
            message.delivery_count += 1
            limit = queue.arguments.get("x-delivery-limit")
            if isinstance(limit, int) and message.delivery_count > limit:
                message.headers.pop(DELIVERY_COUNT_HEADER, None)
                self._dead_letter(queue, message, "delivery_limit")
                return
        self._enqueue(queue, message, front=True)

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

    def run_until_idle(self, max_deliveries: int = 100_000, skip: object | None = None) -> int:
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
                # sync drivers deliver on request; async ones deliver by themselves
                deliver = getattr(owner, "deliver_pending", None)
                if deliver is not None and owner is not skip and not getattr(owner, "busy", False):
                    count = deliver()
                    delivered += count
                    progressed = progressed or count > 0
            if not progressed:
                break
        return delivered


__all__ = ["Delivery", "MemoryBroker", "StoredMessage"]
