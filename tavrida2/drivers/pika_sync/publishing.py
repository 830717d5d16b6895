"""The sync driver's confirmed publishing and the topology it declares.

A publisher channel in confirm mode declares the topology (remembered, and
declared again on each new connection). Publishes go through the pipeline
channel: its confirmations are collected as the connection is serviced, so
many publishes can wait for theirs at once (:meth:`Publishing.publish_async`);
:meth:`Publishing.publish` is one of them plus a wait bounded by
``publish_timeout``. Messages of waiting callers go out unconfirmed (the
answer confirms the request; a reply's arrival is its own confirmation).
"""

from __future__ import annotations

import time
from typing import Any

import pika
import pika.exceptions as pex

from tavrida2 import exceptions
from tavrida2.drivers.base import DIRECT_REPLY_TO, PendingPublish
from tavrida2.drivers.errors import from_channel_close
from tavrida2.drivers.pika_sync.connection import PikaConnection, closed_by_broker, nothing
from tavrida2.drivers.shared import Declaration, declare_on, is_direct_reply, properties
from tavrida2.drivers.wire import PikaProperties
from tavrida2.messages import AMQPMessage


class Publishing(PikaConnection):
    """Confirmed publishes and declarations (a base of the sync driver)."""

    _publish_channel: Any = None  # declarations
    _consume_channel: Any = None  # the consumer channel (direct replies go out on it)
    _pipeline: Any = None  # channel of publish_async, confirmations collected
    _pipeline_tag = 0

    _probe: Any = None  # a channel that passive declarations may close

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._unconfirmed: dict[int, tuple[str | None, PendingPublish]] = {}
        #: Exchanges known to exist on this connection (declared, or checked).
        self._exchanges: set[str] = {""}

    def _attach(self) -> None:
        super()._attach()
        self._publish_channel = self._connection.channel()
        self._publish_channel.confirm_delivery()
        for declaration in self._declarations:
            self._declare(declaration)

    def _detach(self, error: Exception) -> None:
        self._publish_channel = self._probe = None
        self._exchanges = {""}
        if self._pipeline is not None or self._unconfirmed:
            self._fail_pipeline(error)
        super()._detach(error)

    def _check_channels(self) -> None:
        super()._check_channels()
        error = closed_by_broker(self._pipeline, "publish")
        if error is not None:  # a publish to a missing exchange closed it
            if isinstance(error, exceptions.ExchangeNotFound):
                self._exchanges.discard(error.kwargs.get("exchange", ""))
            self._fail_pipeline(error)

    # -- topology ------------------------------------------------------------

    def _declare(self, declaration: Declaration) -> None:
        try:
            declare_on(self._publish_channel, declaration)
        except pex.ChannelClosedByBroker as exc:
            self._publish_channel = self._connection.channel()
            self._publish_channel.confirm_delivery()
            raise from_channel_close(exc.reply_code, exc.reply_text, declaration[1][0]) from None
        if declaration[0] == "exchange":
            self._exchanges.add(declaration[1][0])

    def _check_exchange(self, exchange: str) -> None:
        """Raise ``ExchangeNotFound`` if ``exchange`` does not exist (lock held).

        A publish to a missing exchange makes the broker close the pipeline
        channel, and fail every publish in flight on it: the first publish to
        an exchange this connection did not declare checks it first, with a
        passive declaration on a channel of its own.
        """
        probe = self._probe
        if probe is None or not probe.is_open:
            probe = self._probe = self._connection.channel()
        try:
            probe.exchange_declare(exchange, passive=True)
        except pex.ChannelClosedByBroker as exc:
            self._probe = None
            raise from_channel_close(exc.reply_code, exc.reply_text, exchange) from None
        self._exchanges.add(exchange)

    def _remember(self, declaration: Declaration) -> None:
        self._with_connection(lambda: self._declare(declaration))
        self._declarations.remember(declaration)

    def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        self._remember(("exchange", (name, exchange_type, durable, alternate)))

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str:
        self._remember(("queue", (name, durable, arguments or None, auto_delete)))
        return name

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._remember(("binding", (queue, exchange, routing_key)))

    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        self._remember(("exchange_binding", (destination, source, routing_key)))

    def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._remember(("unbinding", (queue, exchange, routing_key)))

    # -- publishing ----------------------------------------------------------

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait, at most ``publish_timeout``, for the broker's confirmation.

        pika's own confirm mode would wait without a time limit, which on a
        stalled network lasts until a heartbeat check gives up. A confirmation
        that does not come in time raises ``PublishTimeout`` and drops the
        connection (the next use opens a new one): the message may or may not
        have reached the broker.
        """
        pending = self.publish_async(exchange, routing_key, message, mandatory)
        if not pending.done():
            timeout = self.config.publish_timeout
            self.wait(pending.done, timeout)
            if not pending.done():
                with self._lock:
                    self._drop_connection(graceful=False)
                raise exceptions.PublishTimeout(exchange=exchange, timeout=timeout)
        pending.result()

    def publish_async(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> PendingPublish:
        """Publish on the pipeline channel; the confirmation arrives while the
        connection is serviced (:meth:`wait`, or the handle's ``result()``)."""
        if message.reply_to == DIRECT_REPLY_TO or is_direct_reply(exchange, routing_key):
            self._publish_unconfirmed(exchange, routing_key, message, mandatory)
            return PendingPublish(None, exchange, routing_key)
        props = PikaProperties(**properties(message, self._delivery_mode))
        pending = PendingPublish(self, exchange, routing_key)
        message_id = message.headers.get("message_id")

        def send() -> None:
            pending.error = None  # a retry after reconnecting
            if exchange not in self._exchanges:
                try:
                    self._check_exchange(exchange)
                except exceptions.ExchangeNotFound as exc:
                    pending.error = exc  # result() raises it, as for a refused publish
                    return
            if self._pipeline is None or not self._pipeline.is_open:
                self._open_pipeline()
            self._pipeline_tag += 1
            self._unconfirmed[self._pipeline_tag] = (message_id, pending)
            self._pipeline.basic_publish(exchange, routing_key, message.body, props, mandatory)

        self._with_connection(send)
        return pending

    def _publish_unconfirmed(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool
    ) -> None:
        """A request of a waiting caller (its answer confirms it), or an answer to one."""
        props = PikaProperties(**properties(message, self._delivery_mode))
        body = message.body
        if message.reply_to == DIRECT_REPLY_TO:
            self._send_request(exchange, routing_key, body, props, mandatory)
            return
        self._with_connection(lambda: self._send_reply(routing_key, body, props))

    def _send_reply(self, routing_key: str, body: Any, props: Any) -> None:
        """An answer to a waiting caller, on the consumer channel; if the broker
        closes that channel under it, on the declarations channel."""
        channel = self._reply_channel()
        try:
            channel.basic_publish("", routing_key, body, props)
        except (pex.ChannelClosedByBroker, pex.ChannelWrongStateError):
            if channel is self._publish_channel:
                raise
            self._publish_channel.basic_publish("", routing_key, body, props)

    def _reply_channel(self) -> Any:
        """The consumer channel; while the broker has it closed, the declarations
        channel (a reply may leave on any channel)."""
        channel = self._consume_channel
        return channel if channel is not None and channel.is_open else self._publish_channel

    def _send_request(
        self, exchange: str, routing_key: str, body: Any, props: Any, mandatory: bool
    ) -> None:
        raise RuntimeError("a request for a waiting caller needs consume_replies() first")

    def _open_pipeline(self) -> None:
        """A channel whose confirmations are collected, not waited for, one by one.

        pika's BlockingChannel waits for each confirmation in ``basic_publish``;
        this one puts the channel under it in confirm mode itself and settles
        the handles of :meth:`publish_async` from the broker's (multiple) acks.
        """
        self._fail_pipeline(exceptions.ConnectionClosed(reason="the channel was reopened"))
        channel = self._connection.channel()
        selected: list[Any] = []

        def on_select_ok(frame: Any) -> None:
            selected.append(frame)
            self._wake()

        impl = channel._impl
        impl.add_on_return_callback(self._on_pipeline_return)
        impl.confirm_delivery(ack_nack_callback=self._on_pipeline_confirm, callback=on_select_ok)
        deadline = time.monotonic() + self.config.publish_timeout
        while not selected:
            if time.monotonic() > deadline:
                raise exceptions.PublishTimeout(exchange="", timeout=self.config.publish_timeout)
            self._connection.process_data_events(time_limit=1.0)
        self._pipeline, self._pipeline_tag = channel, 0

    def _on_pipeline_confirm(self, frame: Any) -> None:
        self._wake()
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        last, unconfirmed = method.delivery_tag, self._unconfirmed
        tags = [t for t in unconfirmed if t <= last] if method.multiple else [last]
        for tag in tags:
            entry = unconfirmed.pop(tag, None)
            if entry is None:
                continue
            pending = entry[1]
            if pending.error is not None:
                continue  # returned: UnroutableMessage already
            if nacked:
                pending.error = exceptions.PublishNacked(
                    exchange=pending.exchange, routing_key=pending.routing_key
                )
            else:
                pending.confirmed = True

    def _wake(self) -> None:
        """Make ``process_data_events`` return after this callback.

        Called inside pika's I/O loop, which BlockingConnection does not count
        as an event: a timer due at once makes it return. While the driver
        closes the connection (it forgot it already), nothing waits to wake.
        """
        connection = self._connection
        if connection is not None:
            connection.call_later(0, nothing)

    def _on_pipeline_return(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        message_id = (props.headers or {}).get("message_id")
        for known_id, pending in self._unconfirmed.values():
            if known_id == message_id and pending.error is None:
                pending.error = exceptions.UnroutableMessage(
                    exchange=method.exchange, routing_key=method.routing_key
                )
                return

    def _fail_pipeline(self, error: Exception) -> None:
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._pipeline = None
        for _, pending in unconfirmed.values():
            if not pending.done():
                pending.error = error


__all__ = ["Publishing"]
