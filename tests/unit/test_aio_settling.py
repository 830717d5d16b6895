"""The async driver's consuming and settle paths, without a broker.

A fake aiormq channel (``tests.unit.aio_fakes``) stands in for the consumer
channel: ``basic_ack`` / ``basic_reject`` / ``basic_nack(..., wait=False)`` put
their frame in a bounded write queue (as aiormq's connection does) that a slow
writer task drains, recording the frames in the order they would reach the
socket; deliveries are aiormq ``DeliveredMessage`` objects handed to the
driver's consumer callback, each in a task of its own (as aiormq does). The
recorded frames are applied to the broker model of ``tests.unit.settle_model``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from types import SimpleNamespace
from typing import Any

import aiormq.exceptions as aex
import pytest

from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.aio.consuming import close_reason
from tavrida2.drivers.base import Disposition
from tavrida2.drivers.settling import Settlements
from tavrida2.messages import AMQPMessage
from tests.unit.aio_fakes import (
    FakeAioChannel,
    FakePublisher,
    make_driver,
    require_one_asyncio,
    wait_for,
)
from tests.unit.settle_model import (
    ACK,
    REJECT,
    REQUEUE,
    BrokerModel,
    Frame,
    ProtocolError,
    check_covered,
)

# -- random interleavings ------------------------------------------------------


async def settle_randomly(seed: int) -> tuple[BrokerModel, dict[int, Disposition]]:
    """64 deliveries in flight, handlers finishing in random order with random outcomes."""
    rng = random.Random(seed)
    channel = FakeAioChannel(rng=rng)
    driver = make_driver(channel)
    broker = BrokerModel()
    outcome: dict[int, Disposition] = {}
    plan: dict[int, tuple[Disposition | None, int]] = {}
    errors: list[AssertionError] = []

    def on_written(frame: Frame) -> None:
        try:
            check_covered(frame, broker.apply(frame), outcome)
        except AssertionError as exc:
            errors.append(exc)

    channel.on_written = on_written

    async def callback(message: AMQPMessage) -> Disposition:
        tag = message.headers["tag"]
        assert message.routing_key == f"rk.{tag}" and message.exchange == "ex"
        disposition, yields = plan[tag]
        for _ in range(yields):
            await asyncio.sleep(0)
        if disposition is None:
            outcome[tag] = REQUEUE  # a failing handler's delivery is requeued
            raise RuntimeError("the handler failed")
        outcome[tag] = disposition
        return disposition

    await driver._subscribe(("queue", callback, 64))
    assert channel.qos == [64]
    total = 64 + rng.randint(0, 64)
    weights = [ACK] * 6 + [REJECT] * 2 + [REQUEUE] * 2
    while broker.last_tag < total:
        room = min(64 - len(broker.outstanding), total - broker.last_tag)  # the prefetch window
        for _ in range(rng.randint(0, room)):
            tag = broker.deliver()
            failing = rng.random() < 0.03
            plan[tag] = (None if failing else rng.choice(weights), rng.randint(0, 12))
            channel.deliver(tag)
        for _ in range(rng.randint(1, 6)):
            await asyncio.sleep(0)
    await asyncio.gather(*channel.deliveries)
    await channel.drained()
    await channel.stop()
    assert not errors, f"seed {seed}: {errors[0]}"
    return broker, outcome


def test_random_interleavings_settle_every_delivery_once(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.CRITICAL, "tavrida2.drivers.aio")  # the failing handlers
    frames = deliveries = multiple = 0
    for seed in range(200):
        broker, outcome = asyncio.run(settle_randomly(seed))
        assert not broker.outstanding, f"seed {seed}: never settled {sorted(broker.outstanding)}"
        settled = {tag: disposition for tag, (disposition, _) in broker.settled.items()}
        assert settled == outcome, f"seed {seed}"
        frames += len(broker.frames)
        deliveries += broker.last_tag
        multiple += sum(1 for frame in broker.frames if frame[2])
    # acks of handlers finishing in the same turn share frames
    assert multiple > 200
    assert frames < deliveries


async def settle_with_faults(seed: int) -> int:
    """Deliveries flow while the broker closes the consumer channel at random moments
    (its unsettled deliveries go back to the queue); the watchdog opens new ones.
    Returns how many consumer channels were used."""
    rng = random.Random(seed)
    driver = make_driver(None)
    reopening = Reopening(driver)
    models: list[BrokerModel] = []
    outcomes: list[dict[int, Disposition]] = []
    errors: list[AssertionError] = []

    def opened(channel: FakeAioChannel) -> None:
        index = len(models)
        models.append(BrokerModel())
        outcomes.append({})

        def on_written(frame: Frame) -> None:
            try:
                check_covered(frame, models[index].apply(frame), outcomes[index])
            except AssertionError as exc:
                errors.append(exc)

        channel.on_written = on_written

    async def callback(message: AMQPMessage) -> Disposition:
        for _ in range(rng.randint(0, 8)):
            await asyncio.sleep(0)
        disposition = rng.choice([ACK, ACK, ACK, REJECT, REQUEUE])
        outcomes[message.headers["ch"]][message.headers["tag"]] = disposition
        return disposition

    await driver._open_consumer_channel()
    await driver.consume("queue", callback, 16)
    handled_target, delivered, turns = 150, 0, 0
    while delivered < handled_target:
        turns += 1
        assert turns < 20_000, f"seed {seed}: the deliveries stopped flowing"
        channel = driver._consume
        if channel is not None and not channel.is_closed and channel.consumers:
            if len(models) < len(reopening.channels):
                opened(channel)
            index = reopening.channels.index(channel)
            model = models[index]
            for _ in range(rng.randint(0, 16 - len(model.outstanding))):
                channel.deliver(model.deliver(), {"ch": index})
                delivered += 1
            if rng.random() < 0.04:
                close = SimpleNamespace(reply_code=406, reply_text="PRECONDITION_FAILED")
                channel.closing.set_exception(aex.ChannelPreconditionFailed(close))
                model.outstanding.clear()  # requeued by the broker
        for _ in range(rng.randint(1, 5)):
            await asyncio.sleep(0)
    for channel in reopening.channels:
        await asyncio.gather(*channel.deliveries)
        await channel.drained()
    assert not errors, f"seed {seed}: {errors[0]}"
    last = reopening.channels[-1]
    if not last.is_closed and len(models) == len(reopening.channels):
        model = models[-1]
        assert not model.outstanding, f"seed {seed}: never settled {sorted(model.outstanding)}"
    for channel in reopening.channels:
        await channel.stop()
    await driver.close()
    return len(reopening.channels)


def test_random_channel_closes_never_break_the_settle_stream(caplog: pytest.LogCaptureFixture):
    require_one_asyncio()
    caplog.set_level(logging.CRITICAL, "tavrida2.drivers.aio")
    channels = sum(asyncio.run(settle_with_faults(seed)) for seed in range(40))
    assert channels > 80  # the broker did close channels


def test_a_delivery_reaches_the_callback_as_an_amqp_message():
    async def scenario() -> AMQPMessage:
        channel = FakeAioChannel()
        driver = make_driver(channel)
        seen: list[AMQPMessage] = []

        async def callback(message: AMQPMessage) -> Disposition:
            seen.append(message)
            return ACK

        await driver._subscribe(("queue", callback, 0))
        assert channel.qos == []  # no prefetch asked: no basic.qos
        await channel.deliver(7, {"message_id": "m-7"})
        await channel.drained()
        await channel.stop()
        assert channel.written == [(ACK, 7, False)]
        return seen[0]

    message = asyncio.run(scenario())
    assert message.headers == {"tag": 7, "message_id": "m-7"}
    assert (message.body, message.exchange, message.routing_key) == (b"{}", "ex", "rk.7")
    assert message.redelivered is False


# -- settling that cannot be written ------------------------------------------


def test_a_settle_that_cannot_be_written_closes_the_consumer_channel(
    caplog: pytest.LogCaptureFixture,
):
    """Two rejects fill the write queue that never drains; the ack after them cannot be
    written within socket_timeout: the channel is closed (its unsettled deliveries
    come again), not the ack dropped while the channel lives on."""
    require_one_asyncio()

    async def scenario() -> None:
        channel = FakeAioChannel(drains=False)
        driver = make_driver(channel, socket_timeout=0.2)
        release = asyncio.Event()
        plan = {1: REJECT, 2: REJECT, 3: ACK}

        async def callback(message: AMQPMessage) -> Disposition:
            await release.wait()
            return plan[message.headers["tag"]]

        await driver._subscribe(("queue", callback, 0))
        for tag in plan:
            channel.deliver(tag)
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        release.set()
        await asyncio.wait_for(asyncio.gather(*channel.deliveries), 3)
        elapsed = loop.time() - started
        assert 0.15 < elapsed < 2.0, elapsed
        assert channel.write_queue.qsize() == 2  # the rejects; the ack never got in
        assert channel.close_calls == 1 and channel.is_closed
        assert driver._settlements is None  # later settles of this channel send nothing
        assert "settling deliveries failed" in driver._closed_because
        assert driver._wake.is_set()  # the watchdog opens a new channel
        assert driver._connection.close_calls == 0

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "closing the consumer channel so that the broker delivers them again" in caplog.text


def test_a_consumer_channel_that_cannot_even_be_closed_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
):
    require_one_asyncio()

    async def scenario() -> None:
        channel = FakeAioChannel(queue_size=1, drains=False, close_hangs=True)
        driver = make_driver(channel, socket_timeout=0.1)

        async def callback(message: AMQPMessage) -> Disposition:
            return REQUEUE

        await driver._subscribe(("queue", callback, 0))
        channel.deliver(1)
        channel.deliver(2)
        await asyncio.wait_for(asyncio.gather(*channel.deliveries), 3)
        assert channel.close_calls == 1
        assert driver._connection.close_calls == 1
        assert driver._settlements is None

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "closing the consumer channel failed; closing the connection" in caplog.text


def test_a_settle_for_a_delivery_of_an_older_channel_sends_nothing(
    caplog: pytest.LogCaptureFixture,
):
    async def scenario() -> None:
        channel = FakeAioChannel()
        driver = make_driver(channel)
        release = asyncio.Event()

        async def callback(message: AMQPMessage) -> Disposition:
            await release.wait()
            return ACK if message.headers["tag"] == 1 else REJECT

        await driver._subscribe(("queue", callback, 0))
        channel.deliver(1)
        channel.deliver(2)
        await asyncio.sleep(0)
        newer = Settlements()  # the channel was replaced while the handlers ran
        driver._settlements = newer
        release.set()
        await asyncio.gather(*channel.deliveries)
        await channel.drained()
        await channel.stop()
        assert channel.written == []
        assert not newer.pending() and not newer.unsettled

    with caplog.at_level(logging.INFO, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "belongs to a closed channel: not settled" in caplog.text


# -- stopping --------------------------------------------------------------------


@pytest.mark.parametrize("swallows_cancel", [False, True])
def test_stop_consuming_gives_up_on_a_handler_that_never_finishes(
    swallows_cancel: bool, caplog: pytest.LogCaptureFixture
):
    """stop_consuming(timeout) returns after about timeout, cancels the handler and
    sends no frame for its delivery (even if the handler returns a disposition when
    cancelled); the deliveries that finished are settled."""
    require_one_asyncio()

    async def scenario() -> None:
        channel = FakeAioChannel()
        driver = make_driver(channel)
        cancelled: list[int] = []

        async def callback(message: AMQPMessage) -> Disposition:
            tag = message.headers["tag"]
            if tag != 1:
                return ACK
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(tag)
                if not swallows_cancel:
                    raise
            return ACK

        await driver._subscribe(("queue", callback, 0))
        (consumer_tag,) = channel.consumers
        for tag in (1, 2, 3):
            channel.deliver(tag)
        await wait_for(lambda: len(channel.written) == 2)
        assert channel.written == [(ACK, 2, False), (ACK, 3, False)]  # 1 holds no ack back
        loop = asyncio.get_running_loop()
        started = loop.time()
        await driver.stop_consuming(0.3)
        elapsed = loop.time() - started
        assert 0.25 < elapsed < 1.5, elapsed
        assert cancelled == [1]
        assert channel.cancelled == [consumer_tag]
        assert driver._settlements is None
        await asyncio.gather(*channel.deliveries, return_exceptions=True)
        await channel.drained()
        await channel.stop()
        assert channel.written == [(ACK, 2, False), (ACK, 3, False)]
        assert all(task.done() for task in channel.deliveries)
        assert not driver._in_flight

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "still being handled after stop_timeout=0.3 s" in caplog.text


def test_stop_consuming_waits_for_handlers_that_finish_in_time():
    async def scenario() -> None:
        channel = FakeAioChannel()
        driver = make_driver(channel)

        async def callback(message: AMQPMessage) -> Disposition:
            await asyncio.sleep(0.05)
            return REJECT

        await driver._subscribe(("queue", callback, 0))
        channel.deliver(1)
        await asyncio.sleep(0)
        await driver.stop_consuming(2.0)
        assert channel.deliveries[0].done()
        await channel.drained()
        await channel.stop()
        assert channel.written == [(REJECT, 1, False)]
        assert driver._settlements is not None  # nothing was left behind

    asyncio.run(scenario())


def test_stop_consuming_without_a_connection_does_not_wait():
    async def scenario() -> None:
        channel = FakeAioChannel()
        driver = make_driver(channel)

        async def callback(message: AMQPMessage) -> Disposition:
            await asyncio.Event().wait()
            return ACK

        await driver._subscribe(("queue", callback, 0))
        channel.deliver(1)
        await asyncio.sleep(0)
        driver._connection.is_closed = True  # lost: these deliveries come again anyway
        loop = asyncio.get_running_loop()
        started = loop.time()
        await driver.stop_consuming(30)
        assert loop.time() - started < 1.0
        assert channel.cancelled == []  # no basic.cancel on a dead connection
        assert channel.deliveries[0].cancelled()
        await channel.stop()
        assert channel.written == []

    asyncio.run(scenario())


# -- the watchdog: a closed channel, a cancelled consumer --------------------------


class Reopening:
    """Patches the driver's ``_channel``: each call opens a new fake consumer channel."""

    def __init__(self, driver: AioDriver, failures: int = 0) -> None:
        self.channels: list[FakeAioChannel] = []
        #: how the next channels are made (the fake's keyword arguments)
        self.kinds: list[dict[str, Any]] = []
        self.roles: list[tuple[str, bool]] = []
        self.failures = failures
        driver._channel = self  # type: ignore[method-assign]

    async def __call__(self, role: str, confirms: bool) -> FakeAioChannel:
        self.roles.append((role, confirms))
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the broker refused the channel")
        channel = FakeAioChannel(**(self.kinds.pop(0) if self.kinds else {}))
        self.channels.append(channel)
        return channel


async def consuming_driver(
    failures: int = 0,
    socket_timeout: float = 3.0,
    first: dict[str, Any] | None = None,
    disposition: Disposition = ACK,
) -> tuple[AioDriver, Reopening, FakePublisher, list[int]]:
    """A driver consuming "queue" through ``consume()`` (its watchdog running); its
    first consumer channel is made with ``first`` (the fake's keyword arguments)."""
    driver = make_driver(None, socket_timeout)
    reopening = Reopening(driver)
    reopening.kinds.append(first or {})
    publisher = FakePublisher()
    driver._publish = publisher
    await driver.declare_exchange("ex")
    await driver.declare_queue("queue")
    await driver.bind_queue("queue", "ex", "#")
    await driver._open_consumer_channel()
    handled: list[int] = []

    async def callback(message: AMQPMessage) -> Disposition:
        handled.append(message.headers["tag"])
        return disposition

    await driver.consume("queue", callback, 8)
    reopening.failures = failures
    assert driver._watchdog is not None
    return driver, reopening, publisher, handled


DECLARED = [("exchange", "ex"), ("queue", "queue"), ("binding", "queue<-ex")]


def test_the_watchdog_reopens_a_consumer_channel_the_broker_closed(
    caplog: pytest.LogCaptureFixture,
):
    async def scenario() -> None:
        driver, reopening, publisher, handled = await consuming_driver()
        (first,) = reopening.channels
        assert first.subscribed == ["queue"] and first.qos == [8]
        assert publisher.declared == DECLARED
        first.deliver(1)
        await wait_for(lambda: first.written == [(ACK, 1, False)])
        # the broker closes the channel (a consumer timeout)
        close = SimpleNamespace(reply_code=406, reply_text="PRECONDITION_FAILED - timed out")
        first.closing.set_exception(aex.ChannelPreconditionFailed(close))
        await wait_for(lambda: len(reopening.channels) == 2)
        second = reopening.channels[1]
        assert reopening.roles[-1] == ("consume", False)
        assert second.subscribed == ["queue"] and second.qos == [8]
        assert driver._consume is second
        assert publisher.declared == DECLARED * 2  # the topology declared again
        # deliveries of the new channel are settled on it
        second.deliver(1)
        await wait_for(lambda: second.written == [(ACK, 1, False)])
        assert handled == [1, 1]
        for channel in reopening.channels:
            await channel.stop()
        await driver.close()
        assert driver._watchdog is None and driver._connection is None

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "the consumer channel was closed (406 PRECONDITION_FAILED" in caplog.text
    assert "PRECONDITION_FAILED - timed out) while the connection stayed up" in caplog.text


def test_the_watchdog_retries_when_reopening_fails(caplog: pytest.LogCaptureFixture):
    async def scenario() -> None:
        driver, reopening, _, _ = await consuming_driver(failures=1)
        (first,) = reopening.channels
        first.closing.cancel()
        await wait_for(lambda: reopening.failures == 0)
        assert len(reopening.channels) == 1
        driver._wake.set()  # the next look (at the latest after a second)
        await wait_for(lambda: len(reopening.channels) == 2)
        assert reopening.channels[1].subscribed == ["queue"]
        for channel in reopening.channels:
            await channel.stop()
        await driver.close()

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "consuming again failed: the broker refused the channel; will retry" in caplog.text
    assert caplog.text.count("the consumer channel was closed (cancelled)") == 2


def test_the_watchdog_says_why_settling_closed_the_consumer_channel(
    caplog: pytest.LogCaptureFixture,
):
    """A settle that cannot be written closes the consumer channel, recording why
    ("settling deliveries failed ..."); the watchdog that opens a new channel logs
    that reason. The closing channel's own callback must not replace it with the
    bare "closed"/"cancelled" of a channel the driver closed itself."""
    require_one_asyncio()

    async def scenario() -> None:
        driver, reopening, _, _ = await consuming_driver(
            socket_timeout=0.1, first={"queue_size": 1, "drains": False}, disposition=REQUEUE
        )
        first = reopening.channels[0]
        first.deliver(1)
        first.deliver(2)  # two nacks: the second never gets into the full write queue
        await wait_for(lambda: len(reopening.channels) == 2)
        assert first.close_calls == 1
        assert reopening.channels[1].subscribed == ["queue"]
        for channel in reopening.channels:
            await channel.stop()
        await driver.close()

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    (recovered,) = [r.getMessage() for r in caplog.records if "opening a new one" in r.message]
    assert "settling deliveries failed" in recovered, recovered


def test_the_watchdog_subscribes_again_a_consumer_the_broker_cancelled(
    caplog: pytest.LogCaptureFixture,
):
    async def scenario() -> None:
        driver, reopening, publisher, handled = await consuming_driver()
        (channel,) = reopening.channels
        (old_tag,) = channel.consumers
        del channel.consumers[old_tag]  # the broker cancelled it (the queue was deleted)
        driver._wake.set()
        await wait_for(lambda: len(channel.subscribed) == 2)
        assert channel.subscribed == ["queue", "queue"]
        assert len(reopening.channels) == 1  # the same channel
        assert old_tag not in driver._consumer_tags
        assert list(driver._consumer_tags) == list(channel.consumers)
        assert publisher.declared == DECLARED * 2  # the queue declared again
        channel.deliver(1)
        await wait_for(lambda: channel.written == [(ACK, 1, False)])
        assert handled == [1]
        await channel.stop()
        await driver.close()

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        asyncio.run(scenario())
    assert "the broker cancelled 1 consumer(s)" in caplog.text


def test_the_watchdog_leaves_a_healthy_channel_alone():
    async def scenario() -> None:
        driver, reopening, publisher, _ = await consuming_driver()
        await driver._recover()
        assert len(reopening.channels) == 1
        assert reopening.channels[0].subscribed == ["queue"]
        assert publisher.declared == DECLARED
        await reopening.channels[0].stop()
        await driver.close()

    asyncio.run(scenario())


def test_a_closed_channel_says_why():
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(4)]
        futures[0].cancel()
        futures[1].set_result(None)
        futures[2].set_exception(
            aex.ChannelNotFoundEntity(
                SimpleNamespace(reply_code=404, reply_text="NOT_FOUND - no queue 'q' in vhost '/'")
            )
        )
        futures[3].set_exception(ConnectionResetError("reset by peer"))
        return [close_reason(future) for future in futures]

    cancelled, closed, not_found, reset = asyncio.run(scenario())
    assert (cancelled, closed) == ("cancelled", "closed")
    assert not_found == "404 NOT_FOUND - no queue 'q' in vhost '/'"
    assert reset == "ConnectionResetError: reset by peer"


def test_the_broker_model_catches_an_ack_after_a_reject():
    """The check the frame streams above pass: it fails on what RabbitMQ refuses."""
    broker = BrokerModel()
    for _ in range(3):
        broker.deliver()
    broker.apply((ACK, 3, True))
    with pytest.raises(ProtocolError):
        broker.apply((REJECT, 2, False))
