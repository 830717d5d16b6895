"""The async driver's confirmed publishing and the topology it declares.

A publisher channel in confirm mode takes every publish but the messages of
waiting callers (see :mod:`.replies`: their requests go out unconfirmed on the
call channel, their answers unconfirmed on the consumer channel); it also
declares the topology, which the driver remembers and declares again on each
new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiormq.exceptions as aex
from pamqp.commands import Basic

from tavrida2 import exceptions
from tavrida2.drivers.aio.compat import ChannelGone
from tavrida2.drivers.aio.connection import CONNECTION_ERRORS, AioConnection, channel_error
from tavrida2.drivers.base import DIRECT_REPLY_TO
from tavrida2.drivers.shared import Declaration, declare_on, is_direct_reply, properties
from tavrida2.drivers.wire import PamqpProperties
from tavrida2.messages import AMQPMessage


class Publishing(AioConnection):
    """Confirmed publishes and declarations (a base of the async driver)."""

    _publish: Any = None  # aiormq channel, confirms on
    _consume: Any = None  # the consumer channel (direct replies go out on it)
    _call: Any = None  # the call channel of waiting callers (see .replies)
    _reopening: asyncio.Future[Any] | None = None
    _probe: Any = None  # a channel that passive declarations may close

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        #: Exchanges known to exist on this connection (declared, or checked).
        self._exchanges: set[str] = {""}
        self._checking: dict[str, asyncio.Future[None]] = {}

    async def _attach(self) -> None:
        await super()._attach()
        self._publish = await self._channel("publish", confirms=True)
        for declaration in self._declarations:
            await self._declare(declaration)

    def _detach(self, reason: str) -> None:
        self._publish = self._probe = None
        self._exchanges = {""}
        super()._detach(reason)

    # -- topology ------------------------------------------------------------

    async def _declare(self, declaration: Declaration) -> None:
        try:
            await declare_on(self._publish, declaration)
        except aex.ChannelClosed as exc:
            self._publish = await self._channel("publish", confirms=True)
            raise channel_error(exc, declaration[1][0]) from None
        if declaration[0] == "exchange":
            self._exchanges.add(declaration[1][0])

    async def _check_exchange(self, exchange: str) -> None:
        """Raise ``ExchangeNotFound`` if ``exchange`` does not exist, once per exchange.

        A publish to a missing exchange makes the broker close the channel,
        and with it every publish in flight on it: the first publish to an
        exchange this connection did not declare checks it first (a passive
        declaration on a channel of its own), so such a publish fails alone.
        """
        checking = self._checking.get(exchange)
        if checking is None:
            checking = self._checking[exchange] = asyncio.ensure_future(self._check(exchange))
            checking.add_done_callback(lambda _: self._checking.pop(exchange, None))
        await asyncio.shield(checking)

    async def _check(self, exchange: str) -> None:
        probe = self._probe
        if probe is None or probe.is_closed:
            probe = self._probe = await self._channel("probe", confirms=False)
        try:
            await probe.exchange_declare(exchange, passive=True)
        except aex.ChannelClosed as exc:
            self._probe = None
            raise channel_error(exc, exchange) from None
        self._exchanges.add(exchange)

    async def _remember(self, declaration: Declaration) -> None:
        await self._ensure_connected()
        await self._declare(declaration)
        self._declarations.remember(declaration)

    async def declare_exchange(
        self,
        name: str,
        exchange_type: str = "topic",
        durable: bool = True,
        alternate: str | None = None,
    ) -> None:
        await self._remember(("exchange", (name, exchange_type, durable, alternate)))

    async def declare_queue(
        self,
        name: str,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
        auto_delete: bool = False,
    ) -> str:
        await self._remember(("queue", (name, durable, arguments or None, auto_delete)))
        return name

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._remember(("binding", (queue, exchange, routing_key)))

    async def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        await self._remember(("exchange_binding", (destination, source, routing_key)))

    async def unbind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._remember(("unbinding", (queue, exchange, routing_key)))

    # -- publishing ----------------------------------------------------------

    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait, at most ``publish_timeout``, for the broker's confirmation.

        Answers to waiting callers go out unconfirmed on the consumer channel
        (the caller's getting it is the confirmation), and their requests
        unconfirmed and mandatory on the call channel (the answer confirms the
        request; a returned one fails its caller, see :mod:`.replies`).
        """
        if self._publish is None or self._reconnecting is not None:
            await self._ensure_connected()
        body = message.body.encode("utf-8") if isinstance(message.body, str) else message.body
        props = PamqpProperties(**properties(message, self._delivery_mode))
        channel = self._publish
        for_caller = message.reply_to == DIRECT_REPLY_TO
        if for_caller:
            channel = self._call if self._call is not None else await self._call_channel()
        elif is_direct_reply(exchange, routing_key):
            replies = self._consume
            if replies is not None and replies.write_queue.is_open():
                with contextlib.suppress(ChannelGone):
                    await replies.basic_publish(
                        body, exchange="", routing_key=routing_key, properties=props, wait=False
                    )
                    return
            # the consumer channel is being opened again: a reply may leave on any
            # channel, so it takes the publisher channel (confirmed, not mandatory)
            mandatory = False
        if exchange not in self._exchanges:
            await self._check_exchange(exchange)
        try:
            await self._confirmed(
                channel, body, exchange, routing_key, props, mandatory, not for_caller
            )
        except (ChannelGone, aex.ChannelClosed) as exc:
            await self._publish_again(
                exc, channel, for_caller, body, exchange, routing_key, props, mandatory
            )

    async def _publish_again(
        self,
        exc: BaseException,
        channel: Any,
        for_caller: bool,
        body: bytes,
        exchange: str,
        routing_key: str,
        props: Any,
        mandatory: bool,
    ) -> None:
        """The broker closed the channel under a publish; send it again if it was not the cause.

        A publish of another task (to a missing exchange, say) closed the shared
        channel, before or after this one was written: this one did not reach a
        queue, so it goes again, on a new channel, until ``publish_timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.publish_timeout
        while True:
            error = channel_error(exc, exchange) if isinstance(exc, aex.ChannelClosed) else None
            if isinstance(error, exceptions.ExchangeNotFound):
                # deleted since it was declared or checked: checked again next time
                self._exchanges.discard(error.kwargs.get("exchange", exchange))
            try:
                await self._reopen_after(channel, str(error or exc))
            except CONNECTION_ERRORS as lost:  # the connection went with the channel
                raise exceptions.ConnectionClosed(
                    reason=f"the connection to {self._target} was lost ({lost})"
                ) from None
            if error is not None and not _closed_by_another(error, exchange):
                raise error from None
            if loop.time() >= deadline:
                raise exceptions.PublishTimeout(
                    exchange=exchange, timeout=self.config.publish_timeout
                )
            channel = await self._call_channel() if for_caller else self._publish
            try:
                await self._confirmed(
                    channel, body, exchange, routing_key, props, mandatory, not for_caller
                )
                return
            except (ChannelGone, aex.ChannelClosed) as again:
                exc = again

    async def _confirmed(
        self,
        channel: Any,
        body: bytes,
        exchange: str,
        routing_key: str,
        props: Any,
        mandatory: bool,
        confirm: bool = True,
    ) -> None:
        """One confirmed publish on ``channel``; tavrida2's errors for what went wrong.

        ``confirm=False`` (the call channel, no confirms): only queued for the
        socket; a return is reported by the channel's return watcher.
        """
        try:
            async with asyncio.timeout(self.config.publish_timeout):
                confirmation = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=props,
                    mandatory=mandatory,
                    wait=confirm,
                )
        except aex.PublishError:
            raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key) from None
        except aex.DeliveryError:
            raise exceptions.PublishNacked(exchange=exchange, routing_key=routing_key) from None
        except TimeoutError:
            raise exceptions.PublishTimeout(
                exchange=exchange, timeout=self.config.publish_timeout
            ) from None
        except (ChannelGone, aex.ChannelClosed):
            raise
        except aex.ChannelInvalidStateError as exc:
            if channel.is_closed and self._is_up():
                # the broker closed the channel before this publish took it
                raise ChannelGone(str(exc)) from None
            raise exceptions.ConnectionClosed(
                reason=f"the connection to {self._target} was lost ({exc})"
            ) from None
        except CONNECTION_ERRORS as exc:  # the connection died while the publish was on its way
            raise exceptions.ConnectionClosed(
                reason=f"the connection to {self._target} was lost ({type(exc).__name__}: {exc})"
            ) from None
        if confirm and not isinstance(confirmation, Basic.Ack):
            raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key)

    async def _call_channel(self) -> Any:
        """The call channel of waiting callers (see :mod:`.replies`)."""
        if self._call is None:
            raise RuntimeError("a request for a waiting caller needs consume_replies() first")
        return self._call

    async def _reopen_after(self, channel: Any, reason: str) -> None:
        """Open again the publisher channel that the broker closed (once for all its tasks)."""
        if channel is not self._publish:
            return  # another task opened a new one already
        reopening = self._reopening
        if reopening is None:
            reopening = self._reopening = asyncio.ensure_future(
                self._channel("publish", confirms=True)
            )
            try:
                self._publish = await asyncio.shield(reopening)
            finally:
                self._reopening = None
        else:
            await asyncio.shield(reopening)


def _closed_by_another(error: exceptions.DriverError, exchange: str) -> bool:
    """Whether the broker closed the channel for a publish other than the one to ``exchange``."""
    return isinstance(error, exceptions.ExchangeNotFound) and error.kwargs.get("exchange") not in (
        None,
        exchange,
    )


__all__ = ["Publishing"]
