"""The async driver's direct reply-to: requests of waiting callers and their answers.

Once :meth:`Replies.consume_replies` was called, a call channel (confirms on)
takes the requests whose caller waits, and their answers come back to it by
RabbitMQ direct reply-to. When that channel is lost every waiting caller is
told at once; a new one is opened with the next connection.
"""

from __future__ import annotations

from typing import Any

from tavrida2 import exceptions
from tavrida2.drivers.aio.publishing import Publishing
from tavrida2.drivers.base import DIRECT_REPLY_TO, ReplyCallback, ReplyFailureCallback
from tavrida2.messages import AMQPMessage


class Replies(Publishing):
    """The call channel of waiting callers (a base of the async driver)."""

    _on_reply: ReplyCallback | None = None
    _on_reply_failure: ReplyFailureCallback | None = None

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
        channel = await self._channel("call", confirms=True)
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

    async def _reopen_after(self, channel: Any, reason: str) -> None:
        if channel is not None and channel is self._call:
            self._lose_call_channel(reason)
            await self._open_call_channel()
            return
        await super()._reopen_after(channel, reason)


__all__ = ["Replies"]
