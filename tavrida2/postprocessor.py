"""Outgoing messages: find exchange and routing key, hand the wire form to a publisher."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Protocol

from tavrida2 import entry_point, exceptions
from tavrida2.confirmations import track
from tavrida2.controller import AbstractController
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.messages import (
    BROADCAST_HEADER,
    AMQPMessage,
    Message,
    MessageType,
    Request,
    broadcast_exchange,
)
from tavrida2.steps import LogOutgoingAMQPMessageMiddleware, amqp_logging_enabled


class Publisher(Protocol):
    """What the postprocessor sends through: a driver, or an engine's outbox."""

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> Any: ...


def resolve(message: Message, discovery: AbstractDiscovery) -> tuple[str, str, bool]:
    """``(exchange, routing_key, mandatory)`` for an outgoing message.

    Requests go to the destination service's exchange with the destination as
    routing key; answers to the exchange of the service they answer (the
    request's ``reply_to``, else its source), or straight to a waiting caller's
    direct reply-to queue; notifications to the source service's notification
    exchange with the source as routing key, and may reach nobody.
    """
    kind = message.message_type
    if kind == MessageType.NOTIFICATION:
        source = message.source
        return discovery.get_local_publisher(source.service), source.to_routing_key(), False
    if kind != MessageType.REQUEST and message.amqp_reply_to:
        # RabbitMQ delivers a mandatory publish to a direct reply-to queue and
        # also returns it as NO_ROUTE: publish those without mandatory.
        return "", message.amqp_reply_to, False
    destination = entry_point.parse(message.headers.get("destination") or "")
    if not destination:
        raise exceptions.FieldMustFullyDefined(field="destination")
    if BROADCAST_HEADER in message.headers:
        return broadcast_exchange(destination.service), destination.to_routing_key(), True
    return discovery.get_remote(destination.service), destination.to_routing_key(), True


class Tracer(Protocol):
    """What sees every message a process sends and receives (:mod:`tavrida2.tracing`)."""

    def received(self, message: Message) -> None: ...

    def sent(self, message: Message, exchange: str, routing_key: str) -> None: ...


class Calls(Protocol):
    """What sends requests whose caller waits: :mod:`tavrida2.calls`."""

    def request(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> Any: ...

    def start(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> Any: ...


class PostProcessor(AbstractController):
    """Sends outgoing messages of one controller (or script) through ``driver``.

    ``calls`` (if given) sends the requests whose caller waits for the answer.
    """

    def __init__(
        self,
        driver: Publisher,
        discovery: AbstractDiscovery,
        calls: Calls | None = None,
    ) -> None:
        self._driver = driver
        self._discovery = discovery
        self.calls = calls
        #: Told of every message sent (set by the server or client that owns it).
        self.tracer: Tracer | None = None
        # an async engine's outbox publishes in the caller's task with ``send``
        self._send = getattr(driver, "send", None)
        #: The last step, as in Tavrida 1.0: each message sent, logged at DEBUG on
        #: ``tavrida.steps`` (only where that logger was enabled when this was made).
        self._log_step = LogOutgoingAMQPMessageMiddleware() if amqp_logging_enabled() else None

    @property
    def driver(self) -> Publisher:
        return self._driver

    @property
    def discovery_service(self) -> AbstractDiscovery:
        return self._discovery

    def set_discovery(self, discovery: AbstractDiscovery) -> None:
        self._discovery = discovery

    def _wire(self, message_obj: Message) -> tuple[str, str, bool, AMQPMessage]:
        """Where ``message_obj`` goes and its wire form (the tracer is told here)."""
        exchange, routing_key, mandatory = resolve(message_obj, self._discovery)
        amqp_message = AMQPMessage.create_from_message(message_obj)
        if self._log_step is not None:
            self._log_step.process(amqp_message)
        if self.tracer is not None:
            self.tracer.sent(message_obj, exchange, routing_key)
        return exchange, routing_key, mandatory, amqp_message

    def process(self, message_obj: Message) -> Any:
        """Serialise and publish ``message_obj``; returns what the publisher returns.

        Serialisation and discovery errors are raised here, before anything is
        sent, so the code that sends sees them.
        """
        exchange, routing_key, mandatory, amqp_message = self._wire(message_obj)
        return self._driver.publish(exchange, routing_key, amqp_message, mandatory)

    def process_async(self, message_obj: Message) -> Any:
        """Publish without waiting for the confirmation: a handle to wait on later.

        A sync publisher's ``PendingPublish`` (``result()`` waits), or an
        asyncio future of an async publisher's publish. A handler's delivery
        is settled only once the handle's publish was confirmed
        (:mod:`tavrida2.confirmations`).
        """
        exchange, routing_key, mandatory, amqp_message = self._wire(message_obj)
        publish_async = getattr(self._driver, "publish_async", None)
        if publish_async is not None:
            return track(publish_async(exchange, routing_key, amqp_message, mandatory))
        result = self._driver.publish(exchange, routing_key, amqp_message, mandatory)
        return track(asyncio.ensure_future(result)) if inspect.isawaitable(result) else result

    async def send(self, message_obj: Message) -> None:
        """:meth:`process` for an async publisher: awaited here, in the caller's task."""
        exchange, routing_key, mandatory, amqp_message = self._wire(message_obj)
        if self._send is not None:
            await self._send(exchange, routing_key, amqp_message, mandatory)
            return
        result = self._driver.publish(exchange, routing_key, amqp_message, mandatory)
        if inspect.isawaitable(result):
            await result

    def _waiting(self, request: Request) -> tuple[Calls, str, str, AMQPMessage]:
        if self.calls is None:
            raise RuntimeError("this sender cannot wait for answers")
        exchange, routing_key, _, amqp_message = self._wire(request)
        return self.calls, exchange, routing_key, amqp_message

    def call(self, request: Request, timeout: float) -> Any:
        """Send a waiting request (see :mod:`tavrida2.calls`); its answer, or an awaitable of it."""
        calls, exchange, routing_key, amqp_message = self._waiting(request)
        return calls.request(exchange, routing_key, amqp_message, timeout)

    def start_call(self, request: Request, timeout: float) -> Any:
        """Send a waiting request; a handle to wait on later (``result()`` or ``await``)."""
        calls, exchange, routing_key, amqp_message = self._waiting(request)
        return calls.start(exchange, routing_key, amqp_message, timeout)


__all__ = ["Calls", "PostProcessor", "Publisher", "Tracer", "resolve"]
