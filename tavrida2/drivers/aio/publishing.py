"""The async driver's confirmed publishing and the topology it declares.

A publisher channel in confirm mode takes every publish but the messages of
waiting callers (see :mod:`.replies`); it also declares the topology, which
the driver remembers and declares again on each new connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import aiormq.exceptions as aex
from pamqp.commands import Basic

from tavrida2 import exceptions
from tavrida2.drivers.aio.compat import within
from tavrida2.drivers.aio.connection import CONNECTION_ERRORS, AioConnection, channel_error
from tavrida2.drivers.base import DIRECT_REPLY_TO
from tavrida2.drivers.shared import Declaration, declare_on, is_direct_reply, properties
from tavrida2.messages import AMQPMessage

_Props = aiormq.spec.Basic.Properties


class Publishing(AioConnection):
    """Confirmed publishes and declarations (a base of the async driver)."""

    _publish: Any = None  # aiormq channel, confirms on
    _consume: Any = None  # the consumer channel (direct replies go out on it)
    _call: Any = None  # the call channel of waiting callers (see .replies)

    async def _attach(self) -> None:
        await super()._attach()
        self._publish = await self._channel("publish", confirms=True)
        for declaration in self._declarations:
            await self._declare(declaration)

    def _detach(self, reason: str) -> None:
        self._publish = None
        super()._detach(reason)

    # -- topology ------------------------------------------------------------

    async def _declare(self, declaration: Declaration) -> None:
        try:
            await declare_on(self._publish, declaration)
        except aex.ChannelClosed as exc:
            self._publish = await self._channel("publish", confirms=True)
            raise channel_error(exc, declaration[1][0]) from None

    async def _remember(self, declaration: Declaration) -> None:
        await self._ensure_connected()
        await self._declare(declaration)
        self._declarations.remember(declaration)

    async def declare_exchange(
        self, name: str, exchange_type: str = "topic", durable: bool = True
    ) -> None:
        await self._remember(("exchange", (name, exchange_type, durable)))

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

    # -- publishing ----------------------------------------------------------

    async def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish and wait, at most ``publish_timeout``, for the broker's confirmation.

        Answers to waiting callers go out unconfirmed on the consumer channel
        (the caller's getting it is the confirmation), and their requests on
        the call channel, confirmed.
        """
        if self._publish is None or self._reconnecting is not None:
            await self._ensure_connected()
        body = message.body.encode("utf-8") if isinstance(message.body, str) else message.body
        props = _Props(**properties(message, self._delivery_mode))
        channel = self._publish
        if message.reply_to == DIRECT_REPLY_TO:
            channel = self._call
            if channel is None:
                raise RuntimeError("a request for a waiting caller needs consume_replies() first")
        elif is_direct_reply(exchange, routing_key):
            replies = self._consume
            if replies is not None and not replies.is_closed:
                await replies.basic_publish(
                    body, exchange="", routing_key=routing_key, properties=props, wait=False
                )
                return
            # the consumer channel is being opened again: a reply may leave on any
            # channel, so it takes the publisher channel (confirmed, not mandatory)
            mandatory = False
        try:
            # One timer for the whole publish: aiormq's own ``timeout`` runs three
            # asyncio.wait_for per message, a third of a caller's CPU.
            async with within(self.config.publish_timeout):
                confirmation = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=props,
                    mandatory=mandatory,
                )
        except aex.PublishError:
            raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key) from None
        except aex.DeliveryError:
            raise exceptions.PublishNacked(exchange=exchange, routing_key=routing_key) from None
        except aex.ChannelClosed as exc:
            error = channel_error(exc, exchange)
            await self._reopen_after(channel, str(error))
            raise error from None
        except asyncio.TimeoutError:
            raise exceptions.PublishTimeout(
                exchange=exchange, timeout=self.config.publish_timeout
            ) from None
        except CONNECTION_ERRORS as exc:  # the connection died while the publish was on its way
            raise exceptions.ConnectionClosed(
                reason=f"the connection to {self._target} was lost ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(confirmation, Basic.Ack):
            raise exceptions.UnroutableMessage(exchange=exchange, routing_key=routing_key)

    async def _reopen_after(self, channel: Any, reason: str) -> None:
        """Open again the channel (publisher or call) that the broker closed."""
        if channel is self._publish:
            self._publish = await self._channel("publish", confirms=True)


__all__ = ["Publishing"]
