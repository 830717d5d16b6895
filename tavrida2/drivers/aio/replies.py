"""The async driver's direct reply-to: requests of waiting callers and their answers.

Once :meth:`Replies.consume_replies` was called, a call channel takes the
requests whose caller waits, and their answers come back to it by RabbitMQ
direct reply-to. As on the sync driver the requests go out unconfirmed and
mandatory: the answer confirms a request, and one that no queue takes comes
back as a Basic.Return that fails its caller at once with
``UnroutableMessage`` (``compat.watch_returns``: aiormq itself drops returns
on a channel without confirms). When that channel is lost every waiting
caller is told at once; when the broker closed it (a request to an exchange
deleted since it was checked) a new one is opened at once, else with the next
connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq.exceptions as aex

from tavrida2 import exceptions
from tavrida2.drivers.aio.compat import watch_returns
from tavrida2.drivers.aio.connection import channel_error, log
from tavrida2.drivers.aio.consuming import close_reason
from tavrida2.drivers.aio.publishing import Publishing
from tavrida2.drivers.base import DIRECT_REPLY_TO, ReplyCallback, ReplyFailureCallback
from tavrida2.messages import AMQPMessage


class Replies(Publishing):
    """The call channel of waiting callers (a base of the async driver)."""

    _on_reply: ReplyCallback | None = None
    _on_reply_failure: ReplyFailureCallback | None = None
    #: a call channel being opened again after the broker closed the last one
    _reopening_call: asyncio.Future[None] | None = None

    async def _attach(self) -> None:
        await super()._attach()
        if self._on_reply is not None:
            await self._open_call_channel()

    def _detach(self, reason: str) -> None:
        self._lose_call_channel(reason)
        super()._detach(reason)

    async def consume_replies(
        self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback
    ) -> None:
        self._on_reply, self._on_reply_failure = on_reply, on_failure
        await self._ensure_connected()
        if self._call is None:
            await self._bounded("open a channel", self._open_call_channel())

    async def _open_call_channel(self) -> None:
        channel = await self._channel("call", confirms=False)
        on_reply = self._on_reply
        assert on_reply is not None
        watch_returns(channel, self._on_returned)  # before the channel's next frame

        async def on_answer(delivered: Any) -> None:
            props = delivered.header.properties
            on_reply(AMQPMessage(delivered.body, props.headers or {}, None, props.correlation_id))

        await channel.basic_consume(DIRECT_REPLY_TO, on_answer, no_ack=True)
        self._call = channel
        closing = getattr(channel, "closing", None)
        if closing is not None:
            closing.add_done_callback(lambda _: self._on_call_channel_closed(channel))

    def _on_returned(self, frame: Any, props: Any) -> None:
        """The broker returned a request (no queue took it): fail its caller at once."""
        if self._on_reply_failure is not None and props.correlation_id is not None:
            error = exceptions.UnroutableMessage(
                exchange=frame.exchange, routing_key=frame.routing_key
            )
            self._on_reply_failure(props.correlation_id, error)

    def _on_call_channel_closed(self, channel: Any) -> None:
        """The broker closed the call channel with the connection up: open a new one now.

        Its requests went out unconfirmed, so no publish learns of it; the
        answers of the waiting callers can no longer arrive: they all end with
        ``ConnectionClosed`` (the reason names the broker's error).
        """
        if channel is not self._call or self._closing or not self._is_up():
            return  # replaced already, or the connection's end handles it
        closing = channel.closing
        error = None if closing.cancelled() else closing.exception()
        if isinstance(error, aex.ChannelNotFoundEntity):
            # a request to an exchange deleted since it was checked: checked again
            # (passively) before the next request to it, which then fails alone
            missing = channel_error(error, "")
            self._exchanges.discard(str(missing.kwargs.get("exchange", "")))
        reason = f"the broker closed the call channel ({close_reason(closing)})"
        log.warning("%s; opening a new one", reason)
        self._lose_call_channel(reason)
        reopening = self._reopening_call = asyncio.ensure_future(self._open_call_channel())

        def done(future: asyncio.Future[None]) -> None:
            if self._reopening_call is future:
                self._reopening_call = None
            if not future.cancelled() and future.exception() is not None:
                log.warning("opening the call channel again failed: %s", future.exception())

        reopening.add_done_callback(done)

    async def _call_channel(self) -> Any:
        if self._call is None and self._reopening_call is not None:
            await self._bounded("open a channel", asyncio.shield(self._reopening_call))
        if self._call is None and self._on_reply is not None:
            raise exceptions.ConnectionClosed(
                reason="the channel of waiting callers could not be opened again"
            )
        return await super()._call_channel()

    def _lose_call_channel(self, reason: str) -> None:
        """The answers of waiting callers can no longer arrive: tell them at once."""
        if self._call is None:
            return
        self._call = None
        if self._on_reply_failure is not None:
            self._on_reply_failure(None, exceptions.ConnectionClosed(reason=reason))

    async def _reopen_after(self, channel: Any, reason: str) -> None:
        if channel is not None and channel is self._call:
            self._lose_call_channel(reason)
            await self._open_call_channel()
            return
        await super()._reopen_after(channel, reason)


__all__ = ["Replies"]
