"""Workarounds of the libraries under the async driver, each with its reason.

- pamqp <= 3.3.0 cannot encode header integers from -128 to -1;
- aiormq leaves the socket of a lost connection open;
- aiormq writes on a channel the broker already closed (see ``ChannelGate``);
- aiormq drops a Basic.Return on a channel without confirms (see ``watch_returns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import aio_pika
import aiormq
from pamqp import encode as pamqp_encode


def patch_pamqp_small_negative_integers() -> None:
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


patch_pamqp_small_negative_integers()


class TrackedTransport(aiormq.TransportFactory):
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


class Connection(aio_pika.Connection):
    """An aio-pika connection whose transport the driver can close (see ``TrackedTransport``)."""

    def __init__(self, url: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        secure = self.url.scheme == "amqps"
        inner = (
            aiormq.connection.TLSTransportFactory()
            if secure
            else aiormq.connection.TCPTransportFactory()
        )
        self.tracked = TrackedTransport(inner)
        self.kwargs["transport_factory"] = self.tracked


class ChannelGone(Exception):
    """A frame was not written: the broker had closed its channel (see ``ChannelGate``)."""


class ChannelGate:
    """The write queue of one aiormq channel, refusing frames once the broker closed it.

    aiormq writes what tasks queued on a channel's lock (publishes, acks) even
    after the broker's Channel.Close arrived; RabbitMQ answers a frame on a
    closed channel by closing the whole connection (504 CHANNEL_ERROR). The
    connection's reader unregisters a channel as soon as its Close arrives:
    from then on the gate raises :class:`ChannelGone` instead of queueing
    (the frame never reaches the broker, so the caller may try again on a new
    channel). ``put_nowait`` is how aiormq answers Close-Ok: always let through.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._queue = channel.write_queue
        self._channels = channel.connection.channels
        self._number = channel.number

    def is_open(self) -> bool:
        return self._channels.get(self._number) is self._channel

    async def put(self, item: Any) -> None:
        if self._channels.get(self._number) is not self._channel:
            # aiormq made a confirmation future for a publish that now never
            # leaves; the channel's end fails it, and nobody would look at it
            for confirmation in getattr(self._channel, "confirmations", {}).values():
                if confirmation is not None:
                    confirmation.add_done_callback(_retrieved)
            raise ChannelGone(f"channel {self._number} was closed by the broker")
        await self._queue.put(item)

    def put_nowait(self, item: Any) -> None:
        self._queue.put_nowait(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def gate(channel: Any) -> Any:
    """Put a :class:`ChannelGate` in front of an aiormq channel's writes; the channel."""
    channel.write_queue = ChannelGate(channel)
    return channel


def watch_returns(channel: Any, on_return: Any) -> None:
    """Call ``on_return(frame, properties)`` for each message the broker returns on ``channel``.

    aiormq matches a ``Basic.Return`` to its publish through the publisher
    confirmation it keeps for it (``Channel._on_return_frame``); on a channel
    without confirms there is none, so it logs the message and drops it. The
    channel's reader takes every frame by ``self._get_frame()``, looked up
    anew for each frame: the wrapper set here takes a Return and its header
    and body frames out of that stream, reports it, and hands the reader the
    frame after it (aiormq never sees the Return). Install it before the
    channel's next frame (the reader's call already waiting gets that one
    unwrapped), i.e. before the channel's first publish.
    """
    get_frame = getattr(channel, "_get_frame", None)
    if get_frame is None:  # not an aiormq channel (tests' fakes)
        return

    async def _get_frame() -> Any:
        frame = await get_frame()
        while isinstance(frame, aiormq.spec.Basic.Return):
            header = await get_frame()
            left = header.body_size
            while left > 0:
                left -= len((await get_frame()).value)
            on_return(frame, header.properties)
            frame = await get_frame()
        return frame

    channel._get_frame = _get_frame


async def discard(connection: Any, timeout: float = 3.0) -> None:
    """Close a connection that is being thrown away: bounded, and its socket whatever happens.

    A graceful close waits for the broker's Close-Ok, which a dead or stalled
    network never brings.
    """
    try:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await connection.close()
    finally:
        tracked = getattr(connection, "tracked", None)
        if tracked is not None:
            tracked.close()


__all__ = [
    "ChannelGate",
    "ChannelGone",
    "Connection",
    "TrackedTransport",
    "discard",
    "gate",
    "patch_pamqp_small_negative_integers",
    "watch_returns",
]
