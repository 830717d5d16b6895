"""The sync driver's consuming and settling: where a delivery is settled.

pika's callback puts each delivery in an inbox; :meth:`Consuming.run` handles
them one at a time between calls into pika, so a handler may publish on the
same connection. Deliveries are settled through
:class:`~tavrida2.drivers.settling.Settlements` (one per consumer channel):
handled deliveries share ``multiple`` acks (at most ``_ACK_BATCH`` of them,
none waiting longer than ``_ACK_DELAY``), rejects leave before any ack that
would cover them.

After each turn of pika the run loop looks at the consumer channel: one the
broker closed while the connection stayed up (406, 404, a consumer timeout,
an internal error) is noticed within a second; the reason is logged, a new
channel is opened, the topology declared again and the consumers subscribed
again. Deliveries of the closed channel still in the inbox are dropped (the
broker delivers them again).

While a handler runs longer than a fraction of the heartbeat interval, a
helper thread services the connection (heartbeats in and out) under the
connection's lock: pika never runs in two threads at once, and the broker
never sees a silent connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import pika.exceptions as pex

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import DeliveryCallback, Disposition
from tavrida2.drivers.pika_sync.connection import CONNECTION_ERRORS, close_reason
from tavrida2.drivers.pika_sync.publishing import Publishing
from tavrida2.drivers.settling import Settlements
from tavrida2.drivers.shared import delivered, describe

log = logging.getLogger("tavrida2.drivers.pika_sync")

_ACK_BATCH = 32  # at most this many handled deliveries share one ack
_ACK_DELAY = 0.05  # seconds a handled delivery may wait for its (shared) ack

# the settlements of its channel, consumer index, delivery tag, method
# (redelivered, exchange, routing key), properties, body
Inbox = tuple[Settlements, int, int, Any, Any, bytes]


class Consuming(Publishing):
    """Consumers, the run loop, settling and heartbeats (a base of the sync driver)."""

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._consumers: list[tuple[str, DeliveryCallback, int]] = []
        self._inbox: deque[Inbox] = deque()
        self._settlements: Settlements | None = None
        self._resubscribe = False
        self._handler_started = 0.0
        self._pump: threading.Thread | None = None
        self._pump_stop = threading.Event()

    def _attach(self) -> None:
        super()._attach()
        self._open_consumer_channel()

    def _detach(self, error: Exception) -> None:
        self._consume_channel = None
        self._settlements = None
        self._inbox.clear()
        super()._detach(error)

    def _open_consumer_channel(self) -> None:
        self._consume_channel = self._connection.channel()
        self._settlements = Settlements()
        self._inbox.clear()
        for index in range(len(self._consumers)):
            self._subscribe(index)

    # -- consuming -----------------------------------------------------------

    def consume(self, queue: str, callback: DeliveryCallback, prefetch_count: int = 0) -> None:
        self._consumers.append((queue, callback, prefetch_count))
        index = len(self._consumers) - 1
        self._with_connection(lambda: self._subscribe(index))

    def _subscribe(self, index: int) -> None:
        queue, _, prefetch = self._consumers[index]
        settlements = self._settlements
        assert settlements is not None
        inbox = self._inbox

        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            settlements.received(method.delivery_tag)
            inbox.append((settlements, index, method.delivery_tag, method, properties, body))

        channel = self._consume_channel
        if prefetch:
            channel.basic_qos(prefetch_count=prefetch)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.basic_consume(queue, on_message, auto_ack=False)

    def _on_cancelled(self, frame: Any) -> None:
        log.warning("the broker cancelled a consumer (queue deleted?); subscribing again")
        self._resubscribe = True

    def _recover_consumer_channel(self) -> None:
        """Consume again on a new channel if the broker closed the consumer channel (lock held)."""
        channel = self._consume_channel
        closed = channel is not None and not channel.is_open
        if not closed and not self._resubscribe:
            return
        if closed:
            log.warning(
                "the consumer channel was closed (%s %s) while the connection stayed up; "
                "opening a new one, declaring the topology again and consuming again "
                "(the broker delivers its unsettled messages again)",
                *close_reason(channel),
            )
        self._resubscribe = False
        for declaration in self._declarations:
            self._declare(declaration)
        old = self._consume_channel
        self._open_consumer_channel()
        if old is not None and old.is_open:  # cancelled consumers: the old channel is idle
            old.close()

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
            lost: object = None
            self._let_waiting_threads_go_first()
            try:
                with self._lock:
                    if not self._is_open():
                        # Lost while handling (an ack or a publish failed): pika's
                        # ioloop of a closed connection must not be entered again.
                        lost = "closed while handling a delivery"
                    else:
                        self._recover_consumer_channel()
                        if not self._inbox:
                            self._connection.process_data_events(time_limit=1.0)
                            self._check_channels()
            except CONNECTION_ERRORS as exc:
                lost = exc
            if lost is not None:
                if self._stopping.is_set() or self._closed:
                    break
                self._reconnect(lost)  # takes the lock for each attempt only
                continue
            self._handle_inbox()

    def _let_waiting_threads_go_first(self) -> None:
        """Threads queued for the connection (a publish, a task run) take their turn.

        Python's locks are not fair: without this the run loop would take the
        lock back at once, and a thread could wait seconds to publish.
        """
        if not self._queued:
            return
        with self._turns:
            while self._queued and not self._stopping.is_set():
                self._turns.wait(0.05)

    def _handle_inbox(self) -> None:
        """Handle the deliveries that arrived; acknowledge runs of them at once.

        What finished is settled when the inbox is empty, after ``_ACK_BATCH``
        deliveries, or when one waited ``_ACK_DELAY`` seconds: one frame and
        one write instead of one per message, while a redelivery after a
        crash stays bounded to what was handled in that short window.
        """
        oldest = 0.0
        inbox = self._inbox
        settlements = self._settlements
        while inbox and not self._stopping.is_set():
            item = inbox.popleft()
            channel = self._consume_channel
            if item[0] is not self._settlements or channel is None or not channel.is_open:
                continue  # its channel is gone: the broker delivers it again on a new one
            if item[0] is not settlements:  # a new channel since the last delivery
                settlements, oldest = item[0], 0.0
            started = time.monotonic()
            finished = settlements.finished
            if finished and (len(finished) >= _ACK_BATCH or started - oldest > _ACK_DELAY):
                self._flush(settlements)
            disposition = self._handle(item, started)
            if not settlements.finished:
                oldest = started
            settlements.finish(item[2], disposition)
        if settlements is not None and settlements.finished:
            self._flush(settlements)

    def _handle(self, item: Inbox, started: float) -> Disposition:
        _, index, _, method, props, body = item
        message = delivered(body, props, method)
        self._handler_started = started
        try:
            return self._consumers[index][1](message)
        except Exception:
            log.exception("delivery callback failed; message requeued")
            return Disposition.REQUEUE
        finally:
            self._handler_started = 0.0

    def _flush(self, settlements: Settlements) -> None:
        """Send the frames of what finished, on the channel it was delivered on."""
        with self._lock:
            if settlements is not self._settlements or not self._is_open():
                settlements.finished.clear()
                log.info(
                    "deliveries of a closed channel: not settled, the broker delivers them again"
                )
                return
            channel = self._consume_channel
            try:
                for disposition, tag, multiple in settlements.frames():
                    if disposition is Disposition.ACK:
                        channel.basic_ack(tag, multiple=multiple)
                    elif disposition is Disposition.REJECT:
                        channel.basic_reject(tag, requeue=False)
                    else:
                        channel.basic_nack(tag, requeue=True)
            except (*CONNECTION_ERRORS, pex.AMQPChannelError) as exc:
                # pika writes a frame or raises: a closed channel or connection,
                # whose unsettled deliveries the broker delivers again (the run
                # loop opens a new channel)
                log.warning(
                    "could not settle deliveries (%s); the broker delivers them again",
                    describe(exc),
                )

    # -- heartbeats ----------------------------------------------------------

    def send_heartbeat(self) -> None:
        """Service the connection now (heartbeats in and out) from a long handler."""
        with self._lock:
            if self._is_open():
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

    def _stop_threads(self) -> None:
        pump, self._pump = self._pump, None
        self._pump_stop.set()
        if pump is not None and pump is not threading.current_thread():
            pump.join()
        super()._stop_threads()


__all__ = ["Consuming"]
