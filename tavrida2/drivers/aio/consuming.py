"""The async driver's consuming and settling: where a delivery is settled.

A consumer channel (prefetch, manual acks) runs each delivery in a task of its
own (aiormq starts one), so up to ``prefetch_count`` handlers run at once.
Deliveries are settled through :class:`~tavrida2.drivers.settling.Settlements`
(one per consumer channel): acks of handlers that finish in the same turn of
the loop leave together, one flush at a time, rejects before any ``multiple``
ack that would cover them.

A watchdog notices, within a second, a consumer channel that the broker
closed while the connection stayed up (406, 404, a consumer timeout, an
internal error) and a consumer it cancelled (queue deleted): it logs why,
opens a channel, declares the topology again and consumes again. A settle
that cannot be written in ``socket_timeout`` closes the channel (the broker
then delivers its unsettled messages again) rather than dropping the ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiormq.exceptions as aex

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio.compat import ChannelGone, discard
from tavrida2.drivers.aio.connection import CONNECTION_ERRORS, channel_error
from tavrida2.drivers.aio.publishing import Publishing
from tavrida2.drivers.base import AsyncDeliveryCallback, Disposition
from tavrida2.drivers.settling import Settlements
from tavrida2.drivers.shared import delivered

log = logging.getLogger("tavrida2.drivers.aio")

#: A consumer: queue, callback, prefetch count.
Consumer = tuple[str, AsyncDeliveryCallback, int]


def close_reason(closing: asyncio.Future[Any]) -> str:
    """Why an aiormq channel closed, from its ``closing`` future."""
    if closing.cancelled():
        return "cancelled"
    exc = closing.exception()
    if exc is None:
        return "closed"
    frame = exc.args[0] if exc.args else None
    code = getattr(frame, "reply_code", None)
    if code is not None:
        return f"{code} {getattr(frame, 'reply_text', '')}"
    return f"{type(exc).__name__}: {exc}"


async def send_frame(channel: Any, disposition: Disposition, tag: int, multiple: bool) -> None:
    """Write one settle frame (not waiting for the socket to drain).

    aiormq 7 refuses a settle on a channel whose Close came in with
    ``ChannelInvalidStateError``, which is also what it raises for a lost
    connection: here it is the channel's (a lost connection is noticed by the
    driver on its own), so the deliveries are left to the broker to deliver
    again, and the connection is kept.
    """
    try:
        if disposition is Disposition.ACK:
            await channel.basic_ack(tag, multiple=multiple, wait=False)
        elif disposition is Disposition.REJECT:
            await channel.basic_reject(tag, requeue=False, wait=False)
        else:
            await channel.basic_nack(tag, requeue=True, wait=False)
    except aex.ChannelInvalidStateError as exc:
        raise ChannelGone(str(exc)) from None


class Consuming(Publishing):
    """Consumers, settling and their watchdog (a base of the async driver)."""

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._consumers: list[Consumer] = []
        self._consumer_tags: dict[str, Consumer] = {}
        self._settlements: Settlements | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopped_consuming = False
        self._watchdog: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed_because = ""

    async def _attach(self) -> None:
        await super()._attach()
        await self._open_consumer_channel()

    def _detach(self, reason: str) -> None:
        self._consume = None
        self._settlements = None
        super()._detach(reason)

    async def _open_consumer_channel(self) -> None:
        channel = await self._channel("consume", confirms=False)
        self._consume = channel
        self._settlements = Settlements()
        self._consumer_tags = {}
        channel.closing.add_done_callback(lambda closing: self._on_channel_closed(channel, closing))
        if not self._stopped_consuming:
            for consumer in self._consumers:
                await self._subscribe(consumer)

    def _on_channel_closed(self, channel: Any, closing: asyncio.Future[Any]) -> None:
        if channel is self._consume and not self._closing:
            # a reason the driver gave when it closed the channel itself is kept
            self._closed_because = self._closed_because or close_reason(closing)
            self._wake.set()

    # -- consuming -----------------------------------------------------------

    async def consume(
        self, queue: str, callback: AsyncDeliveryCallback, prefetch_count: int = 0
    ) -> None:
        await self._ensure_connected()
        consumer = (queue, callback, prefetch_count)
        self._consumers.append(consumer)
        self._stopped_consuming = False
        await self._subscribe(consumer)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _subscribe(self, consumer: Consumer) -> None:
        queue, callback, prefetch = consumer
        channel, settlements = self._consume, self._settlements
        assert settlements is not None
        if prefetch:
            await channel.basic_qos(prefetch_count=prefetch)
        in_flight = self._in_flight
        settle = self._settle

        async def on_message(message: Any) -> None:
            task = asyncio.current_task()
            if task is not None:
                in_flight.add(task)
            tag = message.delivery.delivery_tag
            settlements.received(tag)
            try:
                try:
                    disposition = await callback(
                        delivered(message.body, message.header.properties, message.delivery)
                    )
                except Exception:
                    log.exception("delivery callback failed; message requeued")
                    disposition = Disposition.REQUEUE
                await settle(settlements, tag, disposition)
            finally:
                if task is not None:
                    in_flight.discard(task)

        try:
            ok = await channel.basic_consume(queue, on_message, no_ack=False)
        except aex.ChannelClosed as exc:
            raise channel_error(exc, queue) from None
        self._consumer_tags[ok.consumer_tag] = consumer

    # -- the watchdog ----------------------------------------------------------

    async def _watch(self) -> None:
        """Recover a consumer channel the broker closed, or consumers it cancelled."""
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            self._wake.clear()
            if self._closing or self._stopped_consuming or not self._is_up():
                continue  # reconnecting sets everything up again
            try:
                await self._recover()
            except (exceptions.DriverError, aex.ChannelClosed, *CONNECTION_ERRORS) as exc:
                log.warning("consuming again failed: %s; will retry", exc)

    async def _recover(self) -> None:
        channel = self._consume
        if channel is None or channel.is_closed:
            log.warning(
                "the consumer channel was closed (%s) while the connection stayed up; "
                "opening a new one, declaring the topology again and consuming again "
                "(the broker delivers its unsettled messages again)",
                self._closed_because or "?",
            )
            for declaration in self._declarations:
                await self._declare(declaration)
            await self._open_consumer_channel()
            self._closed_because = ""
            return
        lost = [tag for tag in self._consumer_tags if tag not in channel.consumers]
        if not lost:
            return
        log.warning(
            "the broker cancelled %s consumer(s) (queue deleted?); declaring the "
            "topology again and subscribing again",
            len(lost),
        )
        for declaration in self._declarations:
            await self._declare(declaration)
        for tag in lost:
            await self._subscribe(self._consumer_tags.pop(tag))

    # -- settling --------------------------------------------------------------

    async def _settle(self, settlements: Settlements, tag: int, disposition: Disposition) -> None:
        if settlements is not self._settlements:
            log.info(
                "delivery %s belongs to a closed channel: not settled, the broker "
                "delivers it again",
                tag,
            )
            return
        settlements.finish(tag, disposition)
        if settlements.flushing:
            return  # the flush in progress sends it
        settlements.flushing = True
        channel = self._consume
        try:
            if len(settlements.unsettled) > len(settlements.finished):
                await asyncio.sleep(0)  # let handlers finishing in this turn join
            # bounded: once the connection is stalled, aiormq's full write queue never drains
            async with asyncio.timeout(self.config.socket_timeout or 3.0):
                while settlements.finished and settlements is self._settlements:
                    for frame in settlements.frames():
                        await send_frame(channel, *frame)
        except ChannelGone:
            # the broker closed the channel: what it had not settled, it delivers again
            if settlements is self._settlements:
                self._settlements = None
            log.info("deliveries of a channel the broker closed: not settled, delivered again")
        except (*CONNECTION_ERRORS, aex.ChannelClosed) as exc:
            await self._settling_failed(settlements, channel, exc)
        finally:
            settlements.flushing = False

    async def _settling_failed(
        self, settlements: Settlements, channel: Any, exc: BaseException
    ) -> None:
        """Frames of ``settlements`` may be lost: make the broker deliver them all again."""
        if settlements is not self._settlements or not self._is_up():
            log.info("settling failed on a closed channel (%s); the broker delivers again", exc)
            return
        reason = f"settling deliveries failed ({type(exc).__name__}: {exc})"
        log.warning(
            "%s; closing the consumer channel so that the broker delivers them again", reason
        )
        self._settlements = None
        self._closed_because = reason
        try:
            async with asyncio.timeout(self.config.socket_timeout or 3.0):
                await channel.close()
        except BaseException:
            # the channel cannot even be closed: the connection is stalled
            log.warning("closing the consumer channel failed; closing the connection")
            connection = self._connection
            if connection is not None:
                await discard(connection, self.config.socket_timeout or 3.0)
            return
        self._wake.set()

    async def stop_consuming(self, timeout: float | None = None) -> None:
        """Cancel the consumers; wait (at most ``timeout``) for the deliveries being handled.

        Deliveries still being handled then are cancelled and left
        unacknowledged: the broker delivers them again once the connection
        closes.
        """
        self._stopped_consuming = True
        channel = self._consume
        if channel is not None and self._is_up() and not channel.is_closed:
            for tag in list(self._consumer_tags):
                # bounded: on a connection that died unnoticed no CancelOk ever comes
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.config.socket_timeout or 3.0):
                        await channel.basic_cancel(tag)
        if not self._in_flight:
            return
        if not self._is_up():
            # the connection of these deliveries is gone: they cannot be
            # acknowledged any more and the broker delivers them again
            timeout = 0
        _, unfinished = await asyncio.wait(set(self._in_flight), timeout=timeout)
        if not unfinished:
            return
        if timeout:
            log.warning(
                "%s deliveries still being handled after stop_timeout=%s s: left "
                "unacknowledged (the broker delivers them again)",
                len(unfinished),
                timeout,
            )
        self._settlements = None
        for task in unfinished:
            task.cancel()
        await asyncio.wait(unfinished, timeout=1.0)

    async def _stop_tasks(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(BaseException):
                await watchdog
        await super()._stop_tasks()


__all__ = ["Consuming"]
