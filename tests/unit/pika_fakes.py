"""Fakes of pika's BlockingConnection and BlockingChannel, for tests without a broker.

The channel records each settle frame in the order it was written (and
refuses them once closed, as pika does); ``process_data_events`` runs a
script (:class:`FakeBroker`) that hands deliveries to the consumer callbacks
within the prefetch window, confirms publishes and closes channels. Frames
are applied to the broker model of ``tests.unit.settle_model``.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pika
import pika.exceptions as pex
import pytest

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import Disposition
from tavrida2.drivers.pika_sync import PikaDriver
from tavrida2.messages import AMQPMessage
from tests.unit.settle_model import ACK, REJECT, REQUEUE, BrokerModel, Frame, check_covered


class FakeImpl:
    """The asynchronous channel under a BlockingChannel (the pipeline uses it)."""

    def __init__(self, channel: FakePikaChannel) -> None:
        self.channel = channel

    def add_on_return_callback(self, callback: Any) -> None:
        self.channel.on_return = callback

    def confirm_delivery(self, ack_nack_callback: Any, callback: Any = None) -> None:
        self.channel.on_confirm = ack_nack_callback
        if callback is not None:
            callback(SimpleNamespace(method=pika.spec.Confirm.SelectOk()))


class FakePikaChannel:
    """A pika BlockingChannel as the driver uses it."""

    def __init__(self, connection: FakePikaConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.is_open = True
        self._closing_reason: Exception | None = None
        self._impl = FakeImpl(self)
        self.frames: list[Frame] = []
        self.on_frame: Callable[[Frame], None] | None = None
        self.consumers: dict[str, tuple[str, Any]] = {}
        self.qos: list[int] = []
        self.cancel_callbacks: list[Any] = []
        self.declared: list[tuple[str, str]] = []
        self.published: list[SimpleNamespace] = []
        self.answered = 0  # publishes the broker has dealt with
        self.confirm_mode = False
        self.on_confirm: Any = None
        self.on_return: Any = None
        self.close_calls = 0
        self._consumer_tags = itertools.count(1)

    @property
    def is_closed(self) -> bool:
        return not self.is_open

    # -- settling (pika writes the frame, or raises) --------------------------

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self._write((ACK, delivery_tag, multiple))

    def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        assert requeue is False, "REJECT is a reject without requeue"
        self._write((REJECT, delivery_tag, False))

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True):
        assert requeue is True and multiple is False, "REQUEUE is a single nack with requeue"
        self._write((REQUEUE, delivery_tag, False))

    def _write(self, frame: Frame) -> None:
        if not self.is_open:
            raise pex.ChannelWrongStateError("Channel is closed.")
        self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(frame)

    # -- consuming -------------------------------------------------------------

    def basic_qos(self, prefetch_count: int = 0, **kwargs: Any) -> None:
        self.qos.append(prefetch_count)

    def add_on_cancel_callback(self, callback: Any) -> None:
        self.cancel_callbacks.append(callback)

    def basic_consume(
        self, queue: str, on_message_callback: Any, auto_ack: bool = False, **kwargs: Any
    ) -> str:
        if not self.is_open:
            raise pex.ChannelWrongStateError("Channel is closed.")
        tag = f"ctag-{self.number}.{next(self._consumer_tags)}"
        self.consumers[tag] = (queue, on_message_callback)
        return tag

    def deliver(
        self, tag: int, headers: dict[str, Any], redelivered: bool = False, consumer: int = 0
    ) -> None:
        """pika dispatching one delivery to the consumer's callback."""
        consumer_tag = list(self.consumers)[consumer]
        queue, callback = self.consumers[consumer_tag]
        method = pika.spec.Basic.Deliver(consumer_tag, tag, redelivered, "ex", queue)
        props = pika.BasicProperties(headers={"tag": tag, **headers})
        callback(self, method, props, b"{}")

    def close_by_broker(self, code: int, text: str) -> None:
        self._closed()
        self._closing_reason = pex.ChannelClosedByBroker(code, text)

    def close(self) -> None:
        self.close_calls += 1
        self._closed()

    def _closed(self) -> None:
        self.is_open = False
        if self.connection.broker is not None:
            self.connection.broker.channel_closed(self)

    # -- declaring and publishing ---------------------------------------------

    def confirm_delivery(self) -> None:
        self.confirm_mode = True

    def exchange_declare(self, name: str, **kwargs: Any) -> None:
        self.declared.append(("exchange", name))

    def queue_declare(self, name: str, **kwargs: Any) -> None:
        self.declared.append(("queue", name))

    def queue_bind(self, queue: str, exchange: str, **kwargs: Any) -> None:
        self.declared.append(("binding", f"{queue}<-{exchange}"))

    def basic_publish(
        self, exchange: str, routing_key: str, body: Any, properties: Any = None, mandatory=False
    ) -> None:
        if not self.is_open:
            raise pex.ChannelWrongStateError("Channel is closed.")
        if self.connection.publish_error is not None:
            error, self.connection.publish_error = self.connection.publish_error, None
            raise error
        self.published.append(
            SimpleNamespace(
                exchange=exchange,
                routing_key=routing_key,
                body=body,
                properties=properties,
                mandatory=mandatory,
            )
        )

    def add_on_return_callback(self, callback: Any) -> None:
        self.on_return = callback


class FakePikaConnection:
    """A pika BlockingConnection: ``process_data_events`` runs the broker's script."""

    def __init__(self, broker: FakeBroker | None = None) -> None:
        self.is_open = True
        self._impl = SimpleNamespace()
        self.broker = broker
        self.channels: list[FakePikaChannel] = []
        self.process_calls: list[tuple[float, str]] = []
        self.threadsafe_callbacks: list[Any] = []
        self._callbacks_due: deque[Any] = deque()
        self.close_calls = 0
        #: what the next basic_publish raises (the connection breaking under it)
        self.publish_error: Exception | None = None

    def channel(self) -> FakePikaChannel:
        if not self.is_open:
            raise pex.ConnectionWrongStateError("Connection is closed.")
        channel = FakePikaChannel(self, len(self.channels) + 1)
        self.channels.append(channel)
        return channel

    def process_data_events(self, time_limit: float = 0) -> None:
        if not self.is_open:
            raise pex.StreamLostError("the connection is gone")
        self.process_calls.append((time_limit, threading.current_thread().name))
        if self.broker is not None:
            self.broker.turn(self, time_limit)
        while self._callbacks_due:  # as pika: at the end of the turn, in this thread
            self._callbacks_due.popleft()()

    def add_callback_threadsafe(self, callback: Any) -> None:
        self.threadsafe_callbacks.append(callback)
        self._callbacks_due.append(callback)

    def call_later(self, delay: float, callback: Any) -> None:
        callback()

    def close(self) -> None:
        self.close_calls += 1
        self.lost()

    def lost(self) -> None:
        self.is_open = False
        for channel in self.channels:
            if channel.is_open:
                channel._closed()


class FakeBroker:
    """The broker behind the fake connections: a queue of messages and a script.

    Each turn of pika (``process_data_events``) first runs the next step of
    ``script`` (if any), then confirms what was published and hands the
    consumer channel up to ``per_turn`` messages within its prefetch window.
    Frames are applied to a :class:`BrokerModel` per channel; a requeued
    message goes back to the queue.
    """

    def __init__(self, driver: PikaDriver, rng: random.Random | None = None) -> None:
        self.driver = driver
        self.rng = rng or random.Random(0)
        self.models: dict[FakePikaChannel, BrokerModel] = {}
        self.queue: deque[tuple[int, bool]] = deque()  # (message id, redelivered)
        self.message_ids = itertools.count(1)
        self.per_turn: Callable[[], int] = lambda: 1 << 30
        self.supply = 0  # fresh messages still to publish to the queue
        self.script: deque[Callable[[FakePikaConnection], None]] = deque()
        self.idle_turns = 0
        self.stalled = False
        self.errors: list[AssertionError] = []
        #: for each delivery tag of a channel, how the handler finished it
        self.outcome: dict[FakePikaChannel, dict[int, Disposition]] = {}
        self.message_of: dict[tuple[FakePikaChannel, int], int] = {}
        #: what the broker does with publishes: exchanges it does not know (the
        #: channel is closed with 404), routing keys no queue takes (returned if
        #: mandatory), routing keys it nacks, whether it confirms at all, and
        #: whether requests of waiting callers get an answer
        self.missing_exchanges: set[str] = set()
        self.unroutable: set[str] = set()
        self.nacked: set[str] = set()
        self.confirms = True
        self.answers = True
        #: what the next connection attempts raise
        self.connection_failures: deque[Exception] = deque()

    def model(self, channel: FakePikaChannel) -> BrokerModel:
        if channel not in self.models:
            self.models[channel] = BrokerModel()
            self.outcome[channel] = {}
            channel.on_frame = lambda frame: self.on_frame(channel, frame)
        return self.models[channel]

    def on_frame(self, channel: FakePikaChannel, frame: Frame) -> None:
        try:
            covered = self.models[channel].apply(frame)
            check_covered(frame, covered, self.outcome[channel])
        except AssertionError as exc:
            self.errors.append(exc)
            return
        if frame[0] is REQUEUE:
            self.queue.append((self.message_of[channel, frame[1]], True))

    def channel_closed(self, channel: FakePikaChannel) -> None:
        """The broker requeues what a closed channel left unsettled."""
        model = self.models.get(channel)
        if model is None:
            return
        for tag in list(model.outstanding):
            self.queue.append((self.message_of[channel, tag], True))
            del model.outstanding[tag]

    def consumer_channel(self) -> FakePikaChannel | None:
        channel = self.driver._consume_channel
        return channel if channel is not None and channel.is_open else None

    def turn(self, connection: FakePikaConnection, time_limit: float) -> None:
        if self.script:
            self.script.popleft()(connection)
        for channel in list(connection.channels):
            self.answer(channel)
        delivered = self.deliver(self.per_turn())
        if delivered or self.script:
            self.idle_turns = 0
            return
        self.idle_turns += 1
        if self.idle_turns > 50:  # nothing moves any more: give up, the test reports it
            self.stalled = True
            self.driver.stop()

    def answer(self, channel: FakePikaChannel) -> None:
        """Deal with what was published on ``channel`` since the last turn."""
        while channel.is_open and channel.answered < len(channel.published):
            publish = channel.published[channel.answered]
            channel.answered += 1
            if publish.exchange in self.missing_exchanges:
                channel.close_by_broker(
                    404, f"NOT_FOUND - no exchange '{publish.exchange}' in vhost '/'"
                )
                return
            routed = publish.routing_key not in self.unroutable
            if not routed and publish.mandatory and channel.on_return is not None:
                method = pika.spec.Basic.Return(
                    312, "NO_ROUTE", publish.exchange, publish.routing_key
                )
                channel.on_return(channel, method, publish.properties, publish.body)
            if channel.on_confirm is not None and self.confirms:
                kind = (
                    pika.spec.Basic.Nack
                    if publish.routing_key in self.nacked
                    else pika.spec.Basic.Ack
                )
                method = kind(delivery_tag=channel.answered, multiple=False)
                channel.on_confirm(SimpleNamespace(method=method))
            replies = [c for q, c in channel.consumers.values() if q == "amq.rabbitmq.reply-to"]
            props = publish.properties
            if routed and replies and self.answers and props.reply_to is not None:
                answer = pika.BasicProperties(
                    headers={"answer": True}, correlation_id=props.correlation_id
                )
                method = pika.spec.Basic.Deliver("reply", 1, False, "", props.reply_to)
                replies[0](channel, method, answer, b"answer")

    def deliver(self, limit: int) -> int:
        channel = self.consumer_channel()
        if channel is None or not channel.consumers:
            return 0
        model = self.model(channel)
        prefetch = max(channel.qos, default=0) or 1 << 30
        count = 0
        while count < limit and len(model.outstanding) < prefetch:
            if not self.queue and self.supply:
                self.supply -= 1
                self.queue.append((next(self.message_ids), False))
            if not self.queue:
                break
            message, redelivered = self.queue.popleft()
            tag = model.deliver()
            self.message_of[channel, tag] = message
            channel.deliver(tag, {"message": message}, redelivered)
            count += 1
        return count


def make_driver(
    monkeypatch: pytest.MonkeyPatch | None = None,
    heartbeat: float = 0,
    attach: bool = True,
    **config: Any,
) -> tuple[PikaDriver, FakeBroker]:
    """A driver and its broker; with ``attach``, on a fake connection set up as ``_open``
    does. With ``monkeypatch``, (re)connecting opens new fake connections (or raises
    the broker's ``connection_failures``)."""
    driver = PikaDriver(ConnectionConfig(heartbeat_interval=heartbeat, **config))
    broker = FakeBroker(driver)
    connections: list[FakePikaConnection] = []

    def blocking_connection(params: Any) -> FakePikaConnection:
        if broker.connection_failures:
            raise broker.connection_failures.popleft()
        connection = FakePikaConnection(broker)
        connections.append(connection)
        return connection

    if monkeypatch is not None:
        monkeypatch.setattr(pika, "BlockingConnection", blocking_connection)
    driver.connections = connections  # type: ignore[attr-defined]
    if attach:
        connection = FakePikaConnection(broker)
        connections.append(connection)
        with driver._lock:
            driver._connection = connection
            driver._attach()
    return driver, broker


def handled_by(broker: FakeBroker, record: list[tuple[int, int]]) -> Callable[..., Disposition]:
    """A callback that records (consumer channel number, tag) and acks."""

    def callback(message: AMQPMessage) -> Disposition:
        channel = broker.driver._consume_channel
        tag = message.headers["tag"]
        record.append((channel.number, tag))
        broker.outcome[channel][tag] = ACK
        return ACK

    return callback
