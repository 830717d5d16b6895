"""Workarounds of the libraries under the async driver, each with its reason.

- aiormq loses the broker's refusal of Connection.Open (see ``patch_aiormq_refused_open``);
- aiormq writes on a channel the broker already closed (see ``ChannelGate``);
- aiormq drops a Basic.Return on a channel without confirms (see ``watch_returns``);
- aio-pika's connection finalizer makes a coroutine nobody awaits (see ``OwnedConnection``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import aiormq
import aiormq.exceptions as aex


class _KeptFrame:
    """aiormq's frame receiver during the handshake, keeping the last frame read."""

    def __init__(self, receiver: Any) -> None:
        self._receiver = receiver
        self.last: Any = None

    async def get_frame(self) -> Any:
        received = await self._receiver.get_frame()
        self.last = received[2]
        return received


class OwnedConnection(aio_pika.Connection):
    """An aio-pika connection whose owner, the driver, always closes it itself.

    aio-pika's ``__del__`` calls ``asyncio.ensure_future(self.close())`` on a
    connection that is not closed: one whose connect failed, or whose close
    ran out of time. The garbage collector runs finalizers in whatever thread
    it happens to run in; outside the loop's thread ``ensure_future`` raises
    (swallowed there) and leaves the ``close()`` coroutine never awaited, a
    RuntimeWarning at some later, unrelated point. The driver closes every
    connection it opened (``discard``), so there is nothing for the finalizer
    to do.
    """

    def __del__(self) -> None:
        pass


def patch_aiormq_refused_open() -> None:
    """Raise a refused Connection.Open as aiormq's ``ConnectionClosed(code, text)``.

    aiormq 7 checks a handshake reply against the request's valid responses
    before it looks for a Connection.Close, so the broker's refusal (530
    NOT_ALLOWED: an unknown virtual host, one the user may not use, a
    connection limit) becomes ``InvalidFrameError("Expected one of
    ['Connection.OpenOk'], got <Connection.Close object at ...>")``: reply
    code and text are lost (aiormq 6 kept the frame in the error).
    """
    rpc = aiormq.Connection._rpc

    async def _rpc(request: Any, writer: Any, frame_receiver: Any, *args: Any, **kw: Any) -> Any:
        kept: Any = _KeptFrame(frame_receiver)
        try:
            return await rpc(request, writer, kept, *args, **kw)
        except aex.InvalidFrameError as exc:
            close = kept.last
            if isinstance(close, aiormq.spec.Connection.Close):
                raise aex.ConnectionClosed(close.reply_code, close.reply_text) from exc
            raise

    aiormq.Connection._rpc = staticmethod(_rpc)  # type: ignore[method-assign]


patch_aiormq_refused_open()


class ChannelGone(Exception):
    """A frame was not written: the broker had closed its channel (see ``ChannelGate``)."""


class ChannelGate:
    """The write queue of one aiormq channel, refusing frames once the broker closed it.

    aiormq writes a publish that got the channel's lock after the broker's
    Channel.Close arrived: its lock checks ``is_closed``, which turns true only
    once the channel's close task ran, a few turns of the loop after the
    reader queued the Close-Ok (acks and RPCs check the reader's close event,
    publishes do not). RabbitMQ answers a frame on a closed channel by closing
    the whole connection (504 CHANNEL_ERROR). The connection's reader
    unregisters a channel as soon as its Close arrives: from then on the gate
    raises :class:`ChannelGone` instead of queueing (the frame never reaches
    the broker, so the caller may try again on a new channel; aiormq gives the
    publish's sequence number back). ``put_nowait`` is how aiormq answers
    Close-Ok: always let through.
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
            raise ChannelGone(f"channel {self._number} was closed by the broker")
        await self._queue.put(item)

    def put_nowait(self, item: Any) -> None:
        self._queue.put_nowait(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


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
    """Close a connection that is being thrown away, within ``timeout``.

    A graceful close waits for the broker's Close-Ok, which a dead or stalled
    network never brings; aiormq closes the socket itself when its writer ends.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await connection.close()


__all__ = [
    "ChannelGate",
    "ChannelGone",
    "OwnedConnection",
    "discard",
    "gate",
    "patch_aiormq_refused_open",
    "watch_returns",
]
