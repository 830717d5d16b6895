"""Sync driver on pika's BlockingConnection (``async_engine=False``).

One connection, four uses: a consumer channel (prefetch, manual acks; direct
replies to waiting callers go out on it, unconfirmed, as a reply is its own
confirmation), a publisher channel in confirm mode (everything else, mandatory
where the pipeline asks), a call channel once :meth:`PikaDriver.consume_replies`
was called (requests whose caller waits go out on it and their answers come
back to it by direct reply-to), and heartbeats.

Messages to or from a waiting caller (they carry the AMQP ``correlation_id``)
are transient: the caller gives up after its timeout and an answer cannot
outlive the caller's channel. Everything else is persistent unless
``ConnectionConfig(persistent=False)``.

Deliveries are collected by pika's callback into an inbox and handled by
:meth:`PikaDriver.run` between calls into pika, so a handler may publish on
the same connection. While a handler runs longer than a fraction of the
heartbeat interval, a helper thread services the connection (heartbeats in
and out) under the same lock the handler's publishes take: pika never runs
in two threads at once, and the broker never sees a silent connection.

The driver remembers what it declared and what it consumes; after a lost
connection it reconnects with backoff (``reconnect_attempts``, -1 = forever),
declares everything again and subscribes each consumer once. Acks for
deliveries of a dead connection are dropped (the broker redelivers them), and
so are the deliveries of a dead connection not handled yet. :meth:`stop`
interrupts reconnecting; when ``reconnect_attempts`` run out, :meth:`run`
raises ``ConnectionFailed``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as pex
import tenacity
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import (
    DIRECT_REPLY_TO,
    DeliveryCallback,
    Disposition,
    PendingPublish,
    ReplyCallback,
    ReplyFailureCallback,
    SyncDriver,
)
from tavrida2.drivers.errors import from_channel_close, is_auth_error
from tavrida2.messages import AMQPMessage

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (
    pex.AMQPConnectionError,
    AMQPConnectorException,  # e.g. the AMQP handshake timed out (a stalled network)
    pex.ConnectionClosed,
    pex.StreamLostError,
    pex.ChannelWrongStateError,
    pex.ConnectionWrongStateError,
    OSError,
)
_DIRECT_REPLY_PREFIX = DIRECT_REPLY_TO

_ACK_BATCH = 32  # at most this many handled deliveries share one ack
_ACK_DELAY = 0.05  # seconds a handled delivery may wait for its (shared) ack

# generation, consumer index, delivery tag, method (redelivered, exchange, routing key),
# properties, body
Inbox = tuple[int, int, int, Any, Any, bytes]


def _describe(exc: BaseException | None) -> str:
    """``str(exc)``, or its repr where that is empty (pika's AMQPConnectionError)."""
    return (str(exc) or repr(exc)) if exc is not None else "?"


def _write_frames_at_once(impl: Any) -> None:
    """Make a pika connection write each message's frames in one piece.

    pika queues the method, header and body frames of a message as three
    buffers and sends each with a syscall of its own; joined, a message costs
    one. Only this connection is changed (an instance attribute); the bytes
    on the wire and pika's counters are the same.
    """

    def output_marshaled_frames(marshaled_frames: Any) -> None:
        data = marshaled_frames[0] if len(marshaled_frames) == 1 else b"".join(marshaled_frames)
        impl.bytes_sent += len(data)
        impl.frames_sent += len(marshaled_frames)
        impl._adapter_emit_data(data)

    if callable(getattr(impl, "_output_marshaled_frames", None)) and hasattr(
        impl, "_adapter_emit_data"
    ):
        impl._output_marshaled_frames = output_marshaled_frames


def _cut(connection: Any) -> None:
    """Close a pika connection's socket now, without the AMQP closing handshake.

    pika has no public way to abandon a connection whose peer stopped
    answering; its own stream termination (used when a heartbeat check fails)
    is called, then the I/O loop runs once to let the socket close.
    """
    terminate = getattr(getattr(connection, "_impl", None), "_terminate_stream", None)
    if not callable(terminate) or not connection.is_open:
        return
    with contextlib.suppress(Exception):  # it is being thrown away
        terminate(pex.StreamLostError("abandoned: the broker stopped answering"))
        connection.process_data_events(time_limit=0)


def _closed_by_broker(channel: Any, what: str) -> exceptions.DriverError | None:
    """The error of a channel the broker closed (pika keeps why on it); None if it is open."""
    if channel is None or channel.is_open:
        return None
    reason = getattr(channel, "_closing_reason", None)
    code = getattr(reason, "reply_code", 0)
    text = getattr(reason, "reply_text", str(reason))
    return from_channel_close(int(code), str(text), what)


def _nothing() -> None:
    """Wakes a thread blocked in ``process_data_events`` (a thread-safe callback)."""


class PikaDriver(SyncDriver):
    """Blocking RabbitMQ driver (see the module docstring)."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._delivery_mode = 2 if config.persistent else 1
        self._params = config.to_pika_params()
        self._params.connection_attempts = 1
        self._target = config.to_url()
        self._lock = threading.RLock()
        self._connection: Any = None
        self._consume_channel: Any = None
        self._publish_channel: Any = None
        self._declarations: list[tuple[str, tuple[Any, ...]]] = []
        self._consumers: list[tuple[str, DeliveryCallback, int]] = []
        self._inbox: deque[Inbox] = deque()
        self._generation = 0
        self._stopping = threading.Event()
        self._closed = False
        self._handler_started = 0.0
        self._resubscribe = False
        self._pump: threading.Thread | None = None
        self._pump_stop = threading.Event()
        self._call_channel: Any = None
        self._pipeline: Any = None  # channel of publish_async, confirmations collected
        self._pipeline_tag = 0
        self._unconfirmed: dict[int, tuple[str | None, PendingPublish]] = {}
        self._on_reply: ReplyCallback | None = None
        self._on_reply_failure: ReplyFailureCallback | None = None
        # Threads taking turns on the connection (see wait()): a counter of
        # services done, and how many threads queue for the lock to publish.
        self._turns = threading.Condition(threading.Lock())
        self._serviced = 0
        self._queued = 0

    # -- connection ----------------------------------------------------------

    def connect(self) -> None:
        """Connect, trying ``connection_attempts`` times ``retry_delay`` apart."""
        self._closed = False
        attempts = max(1, self.config.connection_attempts)
        self._retrying(tenacity.stop_after_attempt(attempts), self._open)

    def _retrying(
        self, stop: Any, action: Callable[[], None], sleep: Callable[[float], Any] = time.sleep
    ) -> None:
        delay = self.config.retry_delay
        try:
            for attempt in tenacity.Retrying(
                stop=stop,
                sleep=sleep,
                wait=tenacity.wait_exponential(multiplier=delay, min=delay, max=max(delay, 10.0)),
                retry=tenacity.retry_if_exception(
                    lambda e: not is_auth_error(e) and isinstance(e, _CONNECTION_ERRORS)
                ),
                reraise=True,
                before_sleep=lambda state: log.warning(
                    "cannot connect to %s (attempt %s): %s; retrying",
                    self._target,
                    state.attempt_number,
                    _describe(state.outcome.exception()) if state.outcome else "?",
                ),
            ):
                with attempt:
                    action()
        except _CONNECTION_ERRORS as exc:
            reason = _describe(exc)
            if is_auth_error(exc):
                reason = f"the broker refused the credentials or virtual host ({reason})"
            raise exceptions.ConnectionFailed(target=self._target, reason=reason) from None

    def _open(self) -> None:
        with self._lock:
            self._drop_connection()
            connection = pika.BlockingConnection(self._params)
            _write_frames_at_once(connection._impl)
            try:
                self._connection = connection
                self._publish_channel = connection.channel()
                self._publish_channel.confirm_delivery()
                for kind, args in list(self._declarations):
                    self._declare(kind, args)
                self._consume_channel = connection.channel()
                self._generation += 1
                self._inbox.clear()
                for index, (queue, _, prefetch) in enumerate(self._consumers):
                    self._subscribe(index, queue, prefetch)
                if self._on_reply is not None:
                    self._open_call_channel()
            except BaseException:
                self._drop_connection()
                raise

    def _drop_connection(self, graceful: bool = True) -> None:
        """Forget the connection and close it; ``graceful=False`` cuts it at once.

        A graceful close waits for the broker's Close-Ok, which on a stalled
        network never comes: a connection that stopped answering is cut.
        """
        connection, self._connection = self._connection, None
        self._consume_channel = self._publish_channel = None
        if connection is not None and not graceful:
            _cut(connection)
        if self._pipeline is not None or self._unconfirmed:
            self._fail_pipeline(
                exceptions.ConnectionClosed(reason=f"the connection to {self._target} was lost")
            )
        if self._call_channel is not None:
            self._call_channel = None
            self._fail_waiting_callers(
                exceptions.ConnectionClosed(reason=f"the connection to {self._target} was lost")
            )
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):  # it is being thrown away
                connection.close()

    def _reconnect(self, reason: object) -> None:
        """Reconnect with backoff; gives up quietly when :meth:`stop` or :meth:`close` is called."""
        if self._closed:
            return
        attempts = self.config.reconnect_attempts
        limit = (
            tenacity.stop_never if attempts < 0 else tenacity.stop_after_attempt(max(1, attempts))
        )

        def stop(state: tenacity.RetryCallState) -> bool:
            return self._stopping.is_set() or self._closed or bool(limit(state))

        log.warning("connection to %s lost (%s); reconnecting", self._target, reason)
        try:
            # stop() wakes the wait between attempts
            self._retrying(stop, self._open, sleep=self._stopping.wait)
        except exceptions.ConnectionFailed:
            if self._stopping.is_set() or self._closed:
                log.info("stopped while reconnecting to %s", self._target)
                return
            raise
        log.warning("reconnected to %s", self._target)

    def close(self) -> None:
        self._closed = True
        self.stop()
        pump, self._pump = self._pump, None
        self._pump_stop.set()
        if pump is not None and pump is not threading.current_thread():
            pump.join()
        with self._lock:
            self._drop_connection()

    # -- topology ------------------------------------------------------------

    def _declare(self, kind: str, args: tuple[Any, ...]) -> None:
        channel = self._publish_channel
        try:
            if kind == "exchange":
                channel.exchange_declare(args[0], exchange_type=args[1], durable=args[2])
            elif kind == "queue":
                channel.queue_declare(args[0], durable=args[1], arguments=args[2])
            else:
                channel.queue_bind(args[0], args[1], routing_key=args[2])
        except pex.ChannelClosedByBroker as exc:
            self._publish_channel = self._connection.channel()
            self._publish_channel.confirm_delivery()
            raise from_channel_close(exc.reply_code, exc.reply_text, args[0]) from None

    def _remember(self, kind: str, args: tuple[Any, ...]) -> None:
        self._with_connection(lambda: self._declare(kind, args))
        if (kind, args) not in self._declarations:
            self._declarations.append((kind, args))

    def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None:
        self._remember("exchange", (name, exchange_type, durable))

    def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str:
        self._remember("queue", (name, durable, arguments or None))
        return name

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._remember("binding", (queue, exchange, routing_key))

    def _with_connection(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` under the lock, reconnecting once if the connection is gone."""
        if self._closed:
            raise exceptions.ConnectionClosed(reason="the driver is closed")
        queued = self._take_lock()
        try:
            if self._connection is None or not self._connection.is_open:
                self._reconnect_within(self.config.publish_timeout, "not connected")
            try:
                return action()
            except _CONNECTION_ERRORS as exc:
                self._reconnect_within(self.config.publish_timeout, exc)
                return action()
        finally:
            self._lock.release()
            if queued:
                with self._turns:
                    self._queued -= 1
                    self._turns.notify_all()

    def _take_lock(self) -> bool:
        """Take the connection's lock; wake a thread blocked servicing it. True if queued."""
        if self._lock.acquire(blocking=False):
            return False
        with self._turns:
            self._queued += 1
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # closed: the holder wakes up by itself
                connection.add_callback_threadsafe(_nothing)
        self._lock.acquire()
        return True

    def _reconnect_within(self, seconds: float, reason: object) -> None:
        log.warning("connection to %s lost (%s); reconnecting", self._target, reason)
        self._retrying(tenacity.stop_after_delay(seconds), self._open)

    # -- publishing ----------------------------------------------------------

    def _properties(self, message: AMQPMessage) -> Any:
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=1 if message.correlation_id else self._delivery_mode,
            headers=message.headers,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            expiration=message.expiration,
        )

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait, at most ``publish_timeout``, for the broker's confirmation.

        Everything but requests and answers of waiting callers (unconfirmed: the
        answer confirms them) goes through the pipeline channel
        (:meth:`publish_async`): pika's own confirm mode waits
        for the confirmation without a time limit, which on a stalled network
        lasts until a heartbeat check gives up. A confirmation that does not come
        in time raises ``PublishTimeout`` and drops the connection (the next use
        opens a new one): the message may or may not have reached the broker.
        """
        pending = self.publish_async(exchange, routing_key, message, mandatory)
        if not pending.done():
            timeout = self.config.publish_timeout or None
            self.wait(pending.done, timeout if timeout is not None else float("inf"))
            if not pending.done():
                with self._lock:
                    self._drop_connection(graceful=False)
                raise exceptions.PublishTimeout(exchange=exchange, timeout=timeout)
        pending.result()

    def _publish_unconfirmed(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool
    ) -> None:
        """A request of a waiting caller (its answer confirms it), or an answer to one."""
        properties = self._properties(message)
        body = message.body
        if message.reply_to == DIRECT_REPLY_TO:
            self._with_connection(
                lambda: self._publish_request(exchange, routing_key, body, properties, mandatory)
            )
            return
        self._with_connection(
            lambda: self._consume_channel.basic_publish("", routing_key, body, properties)
        )

    def publish_async(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> PendingPublish:
        """Publish on the pipeline channel; the confirmation arrives while the
        connection is serviced (:meth:`wait`, or the handle's ``result()``)."""
        if message.reply_to == DIRECT_REPLY_TO or (
            not exchange and routing_key.startswith(_DIRECT_REPLY_PREFIX)
        ):
            self._publish_unconfirmed(exchange, routing_key, message, mandatory)
            return PendingPublish(None, exchange, routing_key)
        properties = self._properties(message)
        pending = PendingPublish(self, exchange, routing_key)
        message_id = message.headers.get("message_id")

        def send() -> None:
            pending.error = None  # a retry after reconnecting
            if self._pipeline is None or not self._pipeline.is_open:
                self._open_pipeline()
            self._pipeline_tag += 1
            self._unconfirmed[self._pipeline_tag] = (message_id, pending)
            self._pipeline.basic_publish(exchange, routing_key, message.body, properties, mandatory)

        self._with_connection(send)
        return pending

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
            self._connection.call_later(0, _nothing)  # see _on_pipeline_confirm

        impl = channel._impl
        impl.add_on_return_callback(self._on_pipeline_return)
        impl.confirm_delivery(ack_nack_callback=self._on_pipeline_confirm, callback=on_select_ok)
        deadline = time.monotonic() + (self.config.publish_timeout or 10.0)
        while not selected:
            if time.monotonic() > deadline:
                raise exceptions.PublishTimeout(exchange="", timeout=self.config.publish_timeout)
            self._connection.process_data_events(time_limit=1.0)
        self._pipeline, self._pipeline_tag = channel, 0

    def _on_pipeline_confirm(self, frame: Any) -> None:
        # Called inside pika's I/O loop, which BlockingConnection does not count
        # as an event: a timer due at once makes process_data_events return.
        self._connection.call_later(0, _nothing)
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

    def _check_pipeline(self) -> None:
        """If the broker closed the pipeline channel (a missing exchange), fail its publishes."""
        error = _closed_by_broker(self._pipeline, "publish")
        if error is not None:
            self._fail_pipeline(error)

    # -- waiting callers (direct reply-to) -----------------------------------

    def consume_replies(self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback) -> None:
        self._on_reply, self._on_reply_failure = on_reply, on_failure
        self._with_connection(self._open_call_channel)

    def _open_call_channel(self) -> None:
        channel = self._connection.channel()
        channel.add_on_return_callback(self._on_returned)
        channel.basic_consume(DIRECT_REPLY_TO, self._on_answer, auto_ack=True)
        self._call_channel = channel

    def _on_answer(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        assert self._on_reply is not None
        self._on_reply(AMQPMessage(body, props.headers or {}, props.reply_to, props.correlation_id))

    def _on_returned(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if self._on_reply_failure is not None:
            error = exceptions.UnroutableMessage(
                exchange=method.exchange, routing_key=method.routing_key
            )
            self._on_reply_failure(props.correlation_id, error)

    def _fail_waiting_callers(self, error: Exception) -> None:
        if self._on_reply_failure is not None:
            self._on_reply_failure(None, error)

    def _publish_request(
        self, exchange: str, routing_key: str, body: Any, properties: Any, mandatory: bool
    ) -> None:
        if self._call_channel is None:
            raise RuntimeError("a request for a waiting caller needs consume_replies() first")
        self._check_call_channel()
        self._call_channel.basic_publish(exchange, routing_key, body, properties, mandatory)

    def _check_call_channel(self) -> None:
        """If the broker closed the call channel (a request to a missing exchange), say so."""
        error = _closed_by_broker(self._call_channel, "request")
        if error is not None:
            self._open_call_channel()
            self._fail_waiting_callers(error)

    def wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Service the connection until ``done()`` or ``timeout`` (see the base class).

        Threads take turns: the one that gets the lock services the connection
        (answers for every thread are dispatched by it); the others sleep until
        a turn ended. A thread that needs the lock to publish wakes the one
        servicing, which then steps aside.
        """
        deadline = time.monotonic() + timeout
        turns = self._turns
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            seen = self._serviced
            if not self._queued and self._lock.acquire(blocking=False):
                try:
                    if not done():
                        self._service(remaining)
                finally:
                    self._lock.release()
                    with turns:
                        self._serviced += 1
                        turns.notify_all()
                continue
            with turns:
                if self._serviced == seen and not done():
                    turns.wait(min(remaining, 0.05))

    def _service(self, seconds: float) -> None:
        if self._closed:
            raise exceptions.ConnectionClosed(reason="the driver is closed")
        if not self._is_open():
            self._reconnect_within(self.config.publish_timeout, "not connected")
        try:
            self._connection.process_data_events(time_limit=min(seconds, 1.0))
        except _CONNECTION_ERRORS as exc:
            reason = f"the connection to {self._target} was lost ({_describe(exc)})"
            self._drop_connection()
            raise exceptions.ConnectionClosed(reason=reason) from None
        self._check_call_channel()
        self._check_pipeline()

    # -- consuming -----------------------------------------------------------

    def consume(self, queue: str, callback: DeliveryCallback, prefetch_count: int = 0) -> None:
        self._consumers.append((queue, callback, prefetch_count))
        index = len(self._consumers) - 1
        self._with_connection(lambda: self._subscribe(index, queue, prefetch_count))

    def _subscribe(self, index: int, queue: str, prefetch: int) -> None:
        generation = self._generation
        inbox = self._inbox

        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            inbox.append((generation, index, method.delivery_tag, method, properties, body))

        channel = self._consume_channel
        if prefetch:
            channel.basic_qos(prefetch_count=prefetch)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.basic_consume(queue, on_message, auto_ack=False)

    def _on_cancelled(self, frame: Any) -> None:
        log.warning("the broker cancelled a consumer (queue deleted?); subscribing again")
        self._resubscribe = True

    def run(self) -> None:
        self._stopping.clear()
        # Handlers run in this thread: while one runs long, a helper services the
        # connection. heartbeat_interval=None takes the broker's timeout (60 s by
        # default), which a long handler must not starve either; 0 disables them.
        if self.config.heartbeat_interval != 0 and self._pump is None:
            self._pump_stop.clear()
            self._pump = threading.Thread(
                target=self._service_while_handling, name="tavrida2-heartbeat", daemon=True
            )
            self._pump.start()
        while not self._stopping.is_set():
            try:
                with self._lock:
                    if self._resubscribe:
                        self._resubscribe = False
                        self._open()
                    elif not self._is_open():
                        # Lost while handling (an ack or a publish failed): pika's
                        # ioloop of a closed connection must not be entered again.
                        self._reconnect("closed while handling a delivery")
                        continue
                    if not self._inbox:
                        self._connection.process_data_events(time_limit=1.0)
            except _CONNECTION_ERRORS as exc:
                if self._stopping.is_set() or self._closed:
                    break
                self._reconnect(exc)
                continue
            self._handle_inbox()

    def _handle_inbox(self) -> None:
        """Handle the deliveries that arrived, acknowledging runs of them at once.

        Consecutive ACKs are sent as one ``multiple`` ack when the inbox is
        empty, after ``_ACK_BATCH`` of them, when one is older than
        ``_ACK_DELAY`` seconds, or before any other disposition: one frame and
        one write instead of one per message, while a redelivery after a
        crash stays bounded to what was handled in that short window.
        """
        acked_generation, acked_tag, unsent, oldest = 0, 0, 0, 0.0
        while self._inbox and not self._stopping.is_set():
            item = self._inbox.popleft()
            if item[0] != self._generation or not self._is_open():
                # its channel is gone: the broker redelivers it on the new one
                self._inbox.clear()
                break
            started = time.monotonic()
            if unsent and (unsent >= _ACK_BATCH or started - oldest > _ACK_DELAY):
                self._settle(acked_generation, acked_tag, Disposition.ACK, multiple=True)
                unsent = 0
            disposition = self._handle(item, started)
            if disposition is Disposition.ACK:
                if not unsent:
                    oldest = started
                acked_generation, acked_tag, unsent = item[0], item[2], unsent + 1
                continue
            if unsent:
                self._settle(acked_generation, acked_tag, Disposition.ACK, multiple=True)
                unsent = 0
            self._settle(item[0], item[2], disposition)
        if unsent:
            self._settle(acked_generation, acked_tag, Disposition.ACK, multiple=True)

    def _is_open(self) -> bool:
        connection = self._connection
        return connection is not None and bool(connection.is_open)

    def _handle(self, item: Inbox, started: float) -> Disposition:
        _, index, _, method, props, body = item
        message = AMQPMessage(
            body,
            props.headers or {},
            props.reply_to,
            props.correlation_id,
            props.expiration,
            method.redelivered,
            method.exchange,
            method.routing_key,
        )
        self._handler_started = started
        try:
            return self._consumers[index][1](message)
        except Exception:
            log.exception("delivery callback failed; message requeued")
            return Disposition.REQUEUE
        finally:
            self._handler_started = 0.0

    def _settle(
        self, generation: int, tag: int, disposition: Disposition, multiple: bool = False
    ) -> None:
        with self._lock:
            if generation != self._generation or self._consume_channel is None:
                log.info(
                    "delivery %s belongs to a closed channel: not acknowledged, the broker "
                    "redelivers it",
                    tag,
                )
                return
            channel = self._consume_channel
            try:
                if disposition is Disposition.ACK:
                    channel.basic_ack(tag, multiple=multiple)
                elif disposition is Disposition.REJECT:
                    channel.basic_reject(tag, requeue=False)
                else:
                    channel.basic_nack(tag, requeue=True)
            except _CONNECTION_ERRORS as exc:
                log.warning("could not settle delivery %s (%s); the broker redelivers it", tag, exc)

    def stop(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # closed already: nothing to wake
                connection.add_callback_threadsafe(lambda: None)

    # -- heartbeats ----------------------------------------------------------

    def send_heartbeat(self) -> None:
        """Service the connection now (heartbeats in and out) from a long handler."""
        with self._lock:
            if self._connection is not None and self._connection.is_open:
                self._connection.process_data_events(time_limit=0)

    def _heartbeat_period(self) -> float:
        """A quarter of the negotiated heartbeat timeout (pika keeps it in its params)."""
        impl = getattr(self._connection, "_impl", None)
        negotiated = getattr(getattr(impl, "params", None), "heartbeat", None)
        if isinstance(negotiated, int | float) and negotiated > 0:
            seconds = float(negotiated)
        else:
            seconds = float(self.config.heartbeat_interval or 60)
        return max(0.2, seconds / 4)

    def _service_while_handling(self) -> None:
        """While a handler runs longer than the period, service the connection each period."""
        while not self._pump_stop.wait(self._heartbeat_period()):
            started = self._handler_started
            if not started or time.monotonic() - started < self._heartbeat_period():
                continue
            if self._lock.acquire(blocking=False):
                try:
                    if self._is_open():
                        self._connection.process_data_events(time_limit=0)
                except Exception as exc:
                    log.debug("heartbeat service: %s", exc)
                finally:
                    self._lock.release()


__all__ = ["PikaDriver"]
