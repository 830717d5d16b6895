"""asyncio driver on aio-pika (``async_engine=True``).

aio-pika gives the connection and channels; the hot path (publish, ack,
consume) talks to their aiormq channel directly, with no per-message aio-pika
objects. A consumer channel (prefetch, manual acks; direct replies to waiting
callers go out on it unconfirmed), a publisher channel with confirms, and
once :meth:`AioDriver.consume_replies` was called a call channel (confirms):
requests whose caller waits go out on it and their answers come back to it by
direct reply-to. Messages to or from a waiting caller (they carry the AMQP
``correlation_id``) are transient; everything else is persistent unless
``ConnectionConfig(persistent=False)``.

Each delivery runs in a task of its own (aiormq starts one), so up to
``prefetch_count`` handlers run at once. The driver remembers its topology and
consumers: when the connection is lost it reconnects with backoff, declares
everything again and subscribes each consumer once; settling a delivery of
the dead channel is skipped (the broker redelivers it).

Two workarounds of the libraries below: the transport of a lost connection is
closed by the driver (aiormq leaves it open), and pamqp is taught to encode
header integers from -128 to -1 (see the two helpers' docstrings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aio_pika
import aiormq
import aiormq.exceptions as aex
import tenacity
from pamqp import encode as pamqp_encode
from pamqp.commands import Basic
from pamqp.exceptions import AMQPInternalError

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import (
    DIRECT_REPLY_TO,
    AsyncDeliveryCallback,
    AsyncDriver,
    Disposition,
    ReplyCallback,
    ReplyFailureCallback,
)
from tavrida2.drivers.errors import from_channel_close, is_auth_error
from tavrida2.messages import AMQPMessage

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (
    aex.AMQPConnectionError,
    aex.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
_DIRECT_REPLY_PREFIX = DIRECT_REPLY_TO
_Props = aiormq.spec.Basic.Properties


def _patch_pamqp_small_negative_integers() -> None:
    """Let pamqp encode header integers from -128 to -1 (it raises ``struct.error``).

    pamqp <= 3.3.0 tags them ``b`` (signed 8-bit) but packs them unsigned
    (gmr/pamqp#45, fixed upstream by #58; aiormq 6 pins pamqp 3.3.0). The
    replacement packs exactly those values signed and leaves every other value,
    and any pamqp that already encodes them, alone.
    """
    original = pamqp_encode.table_integer
    try:
        original(-1)
    except struct.error:
        pass
    else:
        return
    signed_byte = struct.Struct(">b")

    def table_integer(value: int) -> bytes:
        if -128 <= value < 0:
            return b"b" + signed_byte.pack(value)
        return original(value)

    pamqp_encode.table_integer = table_integer


_patch_pamqp_small_negative_integers()


class _TrackedTransport(aiormq.TransportFactory):
    """aiormq's own transport factory, keeping the writer it made.

    aiormq leaves the ``StreamWriter`` of a connection the broker closed (or
    that was lost) unclosed (https://github.com/mosquito/aiormq/issues/231):
    its socket lingers until garbage collection, which warns. The driver
    closes it when it throws the connection away.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writer: asyncio.StreamWriter | None = None

    async def create(
        self, url: Any, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._inner.create(url, **kwargs)
        self.writer = writer
        return reader, writer

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None and not writer.is_closing():
            writer.close()


class _Connection(aio_pika.Connection):
    """An aio-pika connection whose transport the driver can close (see ``_TrackedTransport``)."""

    def __init__(self, url: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        secure = self.url.scheme == "amqps"
        inner = (
            aiormq.connection.TLSTransportFactory()
            if secure
            else aiormq.connection.TCPTransportFactory()
        )
        self.tracked = _TrackedTransport(inner)
        self.kwargs["transport_factory"] = self.tracked


if sys.version_info >= (3, 11):
    _within = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def _within(seconds: float | None) -> AsyncIterator[None]:
        """``asyncio.timeout`` for Python 3.10: cancel the task when time is up."""
        task = asyncio.current_task()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            if task is not None:
                task.cancel()

        timer = None if seconds is None else asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise asyncio.TimeoutError from None
            raise
        finally:
            if timer is not None:
                timer.cancel()


class _Acks:
    """The acknowledgements of one consumer channel, coalesced.

    Handlers finish in any order. Acks that finish in the same turn of the
    event loop are sent together: one ``multiple`` ack for those below the
    oldest delivery still being handled, single acks for the others (so a
    slow handler never holds back the acks, hence the prefetch window, of
    the rest). One flush runs at a time, which keeps a single ack from being
    sent after a ``multiple`` one that already covered it.
    """

    __slots__ = ("acked", "channel", "flushing", "unsettled")

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.unsettled: dict[int, None] = {}  # delivery tags being handled, in order
        self.acked: list[int] = []
        self.flushing = False

    async def ack(self, tag: int) -> None:
        self.acked.append(tag)
        if self.flushing:
            return
        self.flushing = True
        try:
            if len(self.unsettled) > len(self.acked):
                await asyncio.sleep(0)  # let handlers finishing in this turn join
            while self.acked:
                tags, self.acked = self.acked, []
                unsettled = self.unsettled
                for done in tags:
                    unsettled.pop(done, None)
                oldest = next(iter(unsettled), None)
                below = [t for t in tags if oldest is None or t < oldest]
                if below:
                    await self.channel.basic_ack(max(below), multiple=len(below) > 1, wait=False)
                for single in tags:
                    if oldest is not None and single > oldest:
                        await self.channel.basic_ack(single, wait=False)
        finally:
            self.flushing = False

    async def reject(self, tag: int, requeue: bool) -> None:
        self.unsettled.pop(tag, None)
        if requeue:
            await self.channel.basic_nack(tag, requeue=True)
        else:
            await self.channel.basic_reject(tag, requeue=False)


async def _discard(connection: _Connection, timeout: float = 3.0) -> None:
    """Close a connection that is being thrown away: bounded, and its socket whatever happens.

    A graceful close waits for the broker's Close-Ok, which a dead or stalled
    network never brings.
    """
    try:
        with contextlib.suppress(Exception):
            async with _within(timeout):
                await connection.close()
    finally:
        connection.tracked.close()


class AioDriver(AsyncDriver):
    """asyncio RabbitMQ driver (see the module docstring)."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._delivery_mode = 2 if config.persistent else 1
        # aio-pika ignores ``client_properties`` when given a URL string: the
        # connection name travels as aiormq's ``name`` URL parameter.
        query = {"name": config.connection_name or "tavrida2"}
        if config.heartbeat_interval is not None:
            query["heartbeat"] = str(int(config.heartbeat_interval))
        self._url = f"{config.to_url(mask_password=False)}?{urlencode(query)}"
        self._target = config.to_url()
        self._connection: Any = None
        self._consume: Any = None  # aiormq channels
        self._publish: Any = None
        self._wrappers: list[Any] = []  # aio-pika channels, kept alive
        self._declarations: list[tuple[str, tuple[Any, ...]]] = []
        self._consumers: list[tuple[str, AsyncDeliveryCallback, int]] = []
        self._generation = 0
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._gave_up = asyncio.Event()
        self._failure: exceptions.ConnectionFailed | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopped_consuming = False
        self._consumer_tags: dict[str, tuple[str, AsyncDeliveryCallback, int]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._call: Any = None  # aiormq channel of waiting callers
        self._acks: _Acks | None = None
        self._on_reply: ReplyCallback | None = None
        self._on_reply_failure: ReplyFailureCallback | None = None

    # -- connection ----------------------------------------------------------

    async def connect(self) -> None:
        self._closing = False
        await self._retrying(tenacity.stop_after_attempt(max(1, self.config.connection_attempts)))

    async def _retrying(self, stop: Any) -> None:
        delay = self.config.retry_delay
        try:
            async for attempt in tenacity.AsyncRetrying(
                stop=stop,
                wait=tenacity.wait_exponential(multiplier=delay, min=delay, max=max(delay, 10.0)),
                retry=tenacity.retry_if_exception(
                    lambda e: not is_auth_error(e) and isinstance(e, _CONNECTION_ERRORS)
                ),
                reraise=True,
                before_sleep=lambda s: log.warning(
                    "cannot connect to %s (attempt %s): %s; retrying",
                    self._target,
                    s.attempt_number,
                    s.outcome.exception() if s.outcome else "?",
                ),
            ):
                with attempt:
                    await self._open()
        except _CONNECTION_ERRORS as exc:
            reason = str(exc) or type(exc).__name__
            if is_auth_error(exc):
                reason = f"the broker refused the credentials or virtual host ({reason})"
            raise exceptions.ConnectionFailed(target=self._target, reason=reason) from None

    async def _open(self) -> None:
        await self._drop_connection()
        connection = _Connection(aio_pika.connection.make_url(self._url))
        try:
            await connection.connect(timeout=self.config.socket_timeout or None)
        except BaseException as exc:
            # a handshake cut short (the broker stopping, a refused vhost) leaves
            # aiormq's socket open: close it here
            await _discard(connection)
            if not isinstance(exc, AMQPInternalError):
                raise
            # aiormq reports a refused Connection.Open (e.g. an unknown virtual host,
            # 530 NOT_ALLOWED) as an internal error carrying the broker's Close frame
            close = next((a for a in exc.args if isinstance(a, aiormq.spec.Connection.Close)), None)
            if close is None:
                raise
            raise aex.ConnectionClosed(close.reply_code, close.reply_text) from None
        self._connection = connection
        try:
            publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            consume = await connection.channel(publisher_confirms=False)
            self._wrappers = [publish, consume]
            self._publish = await publish.get_underlay_channel()
            self._consume = await consume.get_underlay_channel()
            for kind, args in list(self._declarations):
                await self._declare(kind, args)
            self._generation += 1
            self._consumer_tags = {}
            if not self._stopped_consuming:
                for queue, callback, prefetch in self._consumers:
                    await self._subscribe(queue, callback, prefetch)
            if self._on_reply is not None:
                await self._open_call_channel()
        except BaseException:
            await self._drop_connection()
            raise
        connection.close_callbacks.add(self._on_connection_closed)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._consume = self._publish = None
        self._wrappers = []
        self._lose_call_channel("the connection was lost")
        if connection is not None:
            connection.close_callbacks.discard(self._on_connection_closed)
            if isinstance(connection, _Connection):
                await _discard(connection, self.config.socket_timeout or 3.0)
            else:
                with contextlib.suppress(Exception):
                    await connection.close()

    def _on_connection_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        self._lose_call_channel(f"the connection was lost ({exc})")
        if self._closing or self._reconnecting is not None:
            return
        log.warning("connection to %s lost (%s); reconnecting", self._target, exc)
        self._reconnecting = asyncio.get_event_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            attempts = self.config.reconnect_attempts
            stop = (
                tenacity.stop_never
                if attempts < 0
                else tenacity.stop_after_attempt(max(1, attempts))
            )
            await self._retrying(stop)
            log.warning("reconnected to %s", self._target)
        except exceptions.ConnectionFailed as exc:
            log.error("giving up reconnecting: %s", exc)
            self._failure = exc
            self._gave_up.set()
        finally:
            self._reconnecting = None

    async def wait_gave_up(self) -> exceptions.ConnectionFailed:
        """Return once reconnecting failed ``reconnect_attempts`` times in a row.

        Nothing else would tell a consuming server that its connection is gone
        for good: it waits on this to stop with the error.
        """
        await self._gave_up.wait()
        assert self._failure is not None
        return self._failure

    async def _ensure_connected(self) -> None:
        """Wait (at most ``publish_timeout``) for a usable connection."""
        if self._closing:
            raise exceptions.ConnectionClosed(reason="the driver is closed")
        if (
            self._connection is not None
            and not self._connection.is_closed
            and self._reconnecting is None
        ):
            return
        if self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        try:
            await asyncio.wait_for(asyncio.shield(self._reconnecting), self.config.publish_timeout)
        except asyncio.TimeoutError:
            raise exceptions.ConnectionFailed(
                target=self._target,
                reason=f"not reachable within publish_timeout={self.config.publish_timeout} s",
            ) from None
        if self._connection is None:
            raise exceptions.ConnectionFailed(target=self._target, reason="reconnecting failed")

    async def close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(BaseException):
                await self._watchdog
            self._watchdog = None
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnecting
        await self._drop_connection()

    # -- topology ------------------------------------------------------------

    async def _declare(self, kind: str, args: tuple[Any, ...]) -> None:
        channel = self._publish
        try:
            if kind == "exchange":
                await channel.exchange_declare(args[0], exchange_type=args[1], durable=args[2])
            elif kind == "queue":
                await channel.queue_declare(args[0], durable=args[1], arguments=args[2])
            else:
                await channel.queue_bind(args[0], args[1], routing_key=args[2])
        except aex.ChannelClosed as exc:
            await self._reopen_publish_channel()
            raise _map_channel_error(exc, args[0]) from None

    async def _reopen_publish_channel(self) -> None:
        wrapper = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._wrappers[0] = wrapper
        self._publish = await wrapper.get_underlay_channel()

    async def _remember(self, kind: str, args: tuple[Any, ...]) -> None:
        await self._ensure_connected()
        await self._declare(kind, args)
        if (kind, args) not in self._declarations:
            self._declarations.append((kind, args))

    async def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None:
        await self._remember("exchange", (name, exchange_type, durable))

    async def declare_queue(
        self, name: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> str:
        await self._remember("queue", (name, durable, arguments or None))
        return name

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._remember("binding", (queue, exchange, routing_key))

    # -- publishing ----------------------------------------------------------

    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        if self._publish is None or self._reconnecting is not None:
            await self._ensure_connected()
        body = message.body.encode("utf-8") if isinstance(message.body, str) else message.body
        properties = _Props(
            content_type="application/json",
            delivery_mode=1 if message.correlation_id else self._delivery_mode,
            headers=message.headers,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            expiration=message.expiration,
            # aiormq makes up a random message_id for each message that has none
            message_id=message.headers.get("message_id") or None,
        )
        channel = self._publish
        if message.reply_to == DIRECT_REPLY_TO:
            channel = self._call
            if channel is None:
                raise RuntimeError("a request for a waiting caller needs consume_replies() first")
        elif not exchange and routing_key.startswith(_DIRECT_REPLY_PREFIX):
            await self._consume.basic_publish(
                body, exchange="", routing_key=routing_key, properties=properties, wait=False
            )
            return
        try:
            # One timer for the whole publish: aiormq's own ``timeout`` runs three
            # asyncio.wait_for per message, a third of a caller's CPU.
            async with _within(self.config.publish_timeout or None):
                confirmation = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                )
        except aex.PublishError:
            raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key) from None
        except aex.DeliveryError:
            raise exceptions.PublishNacked(exchange=exchange, routing_key=routing_key) from None
        except aex.ChannelClosed as exc:
            error = _map_channel_error(exc, exchange)
            if channel is self._call:
                self._lose_call_channel(str(error))
                await self._open_call_channel()
            else:
                await self._reopen_publish_channel()
            raise error from None
        except asyncio.TimeoutError:
            raise exceptions.PublishTimeout(
                exchange=exchange, timeout=self.config.publish_timeout
            ) from None
        except _CONNECTION_ERRORS as exc:  # the connection died while the publish was on its way
            raise exceptions.ConnectionClosed(
                reason=f"the connection to {self._target} was lost ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(confirmation, Basic.Ack):
            raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key)

    # -- waiting callers (direct reply-to) -----------------------------------

    async def consume_replies(
        self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback
    ) -> None:
        self._on_reply, self._on_reply_failure = on_reply, on_failure
        await self._ensure_connected()
        if self._call is None:
            timeout = self.config.publish_timeout or None
            try:
                # bounded: on a stalled network the channel would open only when a
                # heartbeat check gave up on the connection
                async with _within(timeout):
                    await self._open_call_channel()
            except asyncio.TimeoutError:
                raise exceptions.ConnectionFailed(
                    target=self._target,
                    reason=f"the broker did not open a channel within {timeout} s",
                ) from None
            except _CONNECTION_ERRORS as exc:
                raise exceptions.ConnectionClosed(reason=f"{type(exc).__name__}: {exc}") from None

    async def _open_call_channel(self) -> None:
        wrapper = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._wrappers.append(wrapper)
        channel = await wrapper.get_underlay_channel()
        on_reply = self._on_reply
        assert on_reply is not None

        async def on_answer(delivered: Any) -> None:
            props = delivered.header.properties
            on_reply(AMQPMessage(delivered.body, props.headers or {}, None, props.correlation_id))

        await channel.basic_consume(DIRECT_REPLY_TO, on_answer, no_ack=True)
        self._call = channel

    def _lose_call_channel(self, reason: str) -> None:
        """The answers of waiting callers can no longer arrive: tell them at once."""
        if self._call is None:
            return
        self._call = None
        if self._on_reply_failure is not None:
            self._on_reply_failure(None, exceptions.ConnectionClosed(reason=reason))

    # -- consuming -----------------------------------------------------------

    async def consume(
        self, queue: str, callback: AsyncDeliveryCallback, prefetch_count: int = 0
    ) -> None:
        await self._ensure_connected()
        self._consumers.append((queue, callback, prefetch_count))
        self._stopped_consuming = False
        await self._subscribe(queue, callback, prefetch_count)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_consumers())

    async def _subscribe(self, queue: str, callback: AsyncDeliveryCallback, prefetch: int) -> None:
        channel = self._consume
        generation = self._generation
        if prefetch:
            await channel.basic_qos(prefetch_count=prefetch)
        in_flight = self._in_flight
        if self._acks is None or self._acks.channel is not channel:
            self._acks = _Acks(channel)
        acks = self._acks

        async def on_message(delivered: Any) -> None:
            task = asyncio.current_task()
            if task is not None:
                in_flight.add(task)
            acks.unsettled[delivered.delivery.delivery_tag] = None
            try:
                props = delivered.header.properties
                delivery = delivered.delivery
                message = AMQPMessage(
                    delivered.body,
                    props.headers or {},
                    props.reply_to,
                    props.correlation_id,
                    props.expiration,
                    delivery.redelivered,
                    delivery.exchange,
                    delivery.routing_key,
                )
                try:
                    disposition = await callback(message)
                except Exception:
                    log.exception("delivery callback failed; message requeued")
                    disposition = Disposition.REQUEUE
                await self._settle(acks, generation, delivered.delivery.delivery_tag, disposition)
            finally:
                if task is not None:
                    in_flight.discard(task)

        try:
            ok = await channel.basic_consume(queue, on_message, no_ack=False)
        except aex.ChannelClosed as exc:
            raise _map_channel_error(exc, queue) from None
        self._consumer_tags[ok.consumer_tag] = (queue, callback, prefetch)

    async def _watch_consumers(self) -> None:
        """Subscribe again any consumer the broker cancelled (its queue was deleted)."""
        while not self._closing:
            await asyncio.sleep(1.0)
            channel = self._consume
            if channel is None or self._reconnecting is not None or self._stopped_consuming:
                continue
            lost = [tag for tag in self._consumer_tags if tag not in channel.consumers]
            if not lost:
                continue
            log.warning(
                "the broker cancelled %s consumer(s) (queue deleted?); declaring the "
                "topology again and subscribing again",
                len(lost),
            )
            try:
                for kind, args in list(self._declarations):
                    await self._declare(kind, args)
                for tag in lost:
                    queue, callback, prefetch = self._consumer_tags.pop(tag)
                    await self._subscribe(queue, callback, prefetch)
            except (exceptions.DriverError, *_CONNECTION_ERRORS) as exc:
                log.warning("subscribing again failed: %s; will retry", exc)

    async def _settle(
        self, acks: _Acks, generation: int, tag: int, disposition: Disposition
    ) -> None:
        if generation != self._generation or acks.channel is not self._consume:
            log.info(
                "delivery %s belongs to a closed channel: not acknowledged, the broker "
                "redelivers it",
                tag,
            )
            return
        try:
            # bounded: once the connection is dead, aiormq's full write queue never drains
            async with _within(self.config.socket_timeout or 3.0):
                if disposition is Disposition.ACK:
                    await acks.ack(tag)
                else:
                    await acks.reject(tag, requeue=disposition is Disposition.REQUEUE)
        except (*_CONNECTION_ERRORS, aex.ChannelClosed) as exc:
            log.warning("could not settle delivery %s (%s); the broker redelivers it", tag, exc)

    async def stop_consuming(self) -> None:
        """Cancel the consumers, then wait for the deliveries being handled to settle."""
        self._stopped_consuming = True
        channel = self._consume
        if channel is not None and self._reconnecting is None and not channel.is_closed:
            for tag in list(self._consumer_tags):
                # bounded: on a connection that died unnoticed no CancelOk ever comes
                with contextlib.suppress(Exception):
                    async with _within(self.config.socket_timeout or 3.0):
                        await channel.basic_cancel(tag)
        if self._in_flight:
            if self._reconnecting is not None or self._connection is None:
                # the connection of these deliveries is gone: they cannot be
                # acknowledged any more and the broker delivers them again
                for task in self._in_flight:
                    task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)


def _map_channel_error(exc: BaseException, name: str) -> exceptions.DriverError:
    frame = exc.args[0] if exc.args else None
    code = getattr(frame, "reply_code", None)
    text = getattr(frame, "reply_text", str(exc))
    if code is None:
        code = (
            404
            if isinstance(exc, aex.ChannelNotFoundEntity)
            else (406 if isinstance(exc, aex.ChannelPreconditionFailed) else 0)
        )
    return from_channel_close(int(code), str(text), name)


__all__ = ["AioDriver"]
