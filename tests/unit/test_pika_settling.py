"""The sync driver's consuming and settle paths, without a broker.

A fake pika ``BlockingConnection`` and ``BlockingChannel`` stand in for pika:
the channel records each settle frame in the order it was written (and
refuses them once closed, as pika does), ``process_data_events`` runs a script
(:class:`FakeBroker`) that hands deliveries to the consumer callbacks within
the prefetch window, confirms publishes and closes channels. The driver's own
``run()`` loop is driven; the recorded frames are applied to the broker model
of ``tests.unit.settle_model``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from types import SimpleNamespace
from typing import Any

import pika
import pika.exceptions as pex
import pytest

from tavrida2 import exceptions
from tavrida2.drivers.base import Disposition
from tavrida2.drivers.pika_sync import PikaDriver
from tavrida2.drivers.pika_sync import consuming as consuming_module
from tavrida2.messages import AMQPMessage
from tests.unit.pika_fakes import (
    FakeBroker,
    FakePikaChannel,
    FakePikaConnection,
    handled_by,
    make_driver,
)
from tests.unit.settle_model import ACK, REJECT, REQUEUE

# -- random interleavings ------------------------------------------------------


def run_randomly(seed: int, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeBroker, int]:
    rng = random.Random(seed)
    monkeypatch.setattr(consuming_module, "_ACK_BATCH", rng.choice([1, 2, 5, 32]))
    monkeypatch.setattr(consuming_module, "_ACK_DELAY", 3600.0)  # no timing in the streams
    driver, broker = make_driver()
    broker.rng = rng
    broker.supply = 10**6
    broker.per_turn = lambda: rng.randint(0, 12)
    target = rng.randint(30, 150)
    handled: list[int] = []
    weights = [ACK] * 6 + [REJECT] * 2 + [REQUEUE] * 2 + [None]

    def callback(message: AMQPMessage) -> Disposition:
        channel = driver._consume_channel
        tag = message.headers["tag"]
        handled.append(tag)
        if len(handled) == target:
            driver.stop()
        if rng.random() < 0.2:
            driver.send_heartbeat()  # a long handler: more deliveries arrive meanwhile
        disposition = rng.choice(weights)
        broker.outcome[channel][tag] = disposition or REQUEUE
        if disposition is None:
            raise RuntimeError("the handler failed")
        return disposition

    driver.consume("queue", callback, rng.choice([0, 1, 3, 8, 64]))
    driver.run()
    assert not broker.stalled, f"seed {seed}: the deliveries stopped flowing"
    assert not broker.errors, f"seed {seed}: {broker.errors[0]}"
    assert len(handled) == target
    (channel,) = broker.models
    model = broker.models[channel]
    outcome = broker.outcome[channel]
    assert set(handled) == set(outcome)
    settled = {tag: disposition for tag, (disposition, _) in model.settled.items()}
    assert settled == outcome, f"seed {seed}"
    # what was delivered and not handled (still in the inbox at stop) is not settled
    assert set(model.outstanding) == set(range(1, model.last_tag + 1)) - set(handled)
    return broker, sum(1 for frame in model.frames if frame[2])


def test_random_interleavings_settle_every_delivery_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.CRITICAL, "tavrida2.drivers.pika_sync")  # the failing handlers
    multiple = 0
    for seed in range(150):
        with monkeypatch.context() as patch:
            _, count = run_randomly(seed, patch)
        multiple += count
    assert multiple > 150  # handled deliveries share acks


def run_with_faults(seed: int, monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    """As run_randomly, while the broker closes the consumer channel, cancels the
    consumer or loses the connection at random turns (some while a handler runs)."""
    rng = random.Random(seed)
    monkeypatch.setattr(consuming_module, "_ACK_BATCH", rng.choice([1, 3, 32]))
    monkeypatch.setattr(consuming_module, "_ACK_DELAY", 3600.0)
    driver, broker = make_driver(monkeypatch, retry_delay=0.001)
    broker.supply = 10**6
    broker.per_turn = lambda: rng.randint(0, 6)
    target = rng.randint(40, 120)
    handled: list[tuple[FakePikaChannel, int]] = []

    def close_consumer(connection: FakePikaConnection) -> None:
        channel = driver._consume_channel
        if channel is not None and channel.is_open:
            channel.close_by_broker(406, "PRECONDITION_FAILED - delivery acknowledgement timed out")

    def cancel_consumer(connection: FakePikaConnection) -> None:
        channel = driver._consume_channel
        if channel is not None and channel.is_open:
            channel.consumers.clear()
            for on_cancel in channel.cancel_callbacks[:1]:
                on_cancel(SimpleNamespace(method=pika.spec.Basic.Cancel("ctag")))

    def lose_connection(connection: FakePikaConnection) -> None:
        connection.lost()
        raise pex.StreamLostError("Transport indicated EOF")

    faults = [close_consumer, cancel_consumer, lose_connection]

    violations: list[str] = []  # (an assertion in the callback would count as its failure)

    def callback(message: AMQPMessage) -> Disposition:
        channel = driver._consume_channel
        tag = message.headers["tag"]
        if channel is None or not channel.is_open:
            violations.append(f"delivery {tag} of a closed channel handled")
        handled.append((channel, tag))
        if len(handled) == target:
            driver.stop()
        if rng.random() < 0.08:
            broker.script.append(rng.choice(faults))
        chance = rng.random()  # the fault may strike while the handler runs:
        if chance < 0.15:
            with contextlib.suppress(pex.AMQPError):
                driver.send_heartbeat()
        elif chance < 0.3:  # a publish reconnects if the connection is gone
            with contextlib.suppress(exceptions.DriverError):
                driver.publish("ex", "reply", AMQPMessage(b"{}", {"message_id": f"r{tag}"}))
        disposition = rng.choice([ACK, ACK, ACK, REJECT, REQUEUE])
        broker.outcome[channel][tag] = disposition
        return disposition

    driver.consume("queue", callback, rng.choice([1, 4, 16]))
    driver.run()
    assert not violations, f"seed {seed}: {violations}"
    assert not broker.stalled, f"seed {seed}: the deliveries stopped flowing"
    assert not broker.errors, f"seed {seed}: {broker.errors[0]}"
    assert len(handled) == target
    for channel, model in broker.models.items():
        for tag, (disposition, _) in model.settled.items():
            assert (channel, tag) in handled, f"seed {seed}: {tag} settled, never handled"
            assert broker.outcome[channel][tag] is disposition
    return broker


def test_faults_never_break_the_settle_stream(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.CRITICAL, "tavrida2.drivers.pika_sync")
    channels = 0
    for seed in range(60):
        with monkeypatch.context() as patch:
            broker = run_with_faults(seed, patch)
        channels += len(broker.models)
    assert channels > 90  # the faults did replace channels


# -- batching -------------------------------------------------------------------


def test_a_run_of_handled_deliveries_is_acked_in_batches(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(consuming_module, "_ACK_DELAY", 3600.0)
    driver, broker = make_driver()
    broker.supply = 40
    handled: list[tuple[int, int]] = []
    ack = handled_by(broker, handled)

    def callback(message: AMQPMessage) -> Disposition:
        disposition = ack(message)
        if len(handled) == 40:
            driver.stop()
        return disposition

    driver.consume("queue", callback)
    driver.run()
    (channel,) = broker.models
    assert channel.frames == [(ACK, 32, True), (ACK, 40, True)]  # _ACK_BATCH is 32
    assert not broker.models[channel].outstanding
    assert not broker.errors


def test_rejects_leave_before_the_ack_that_would_cover_them(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(consuming_module, "_ACK_DELAY", 3600.0)
    driver, broker = make_driver()
    broker.supply = 6
    plan = {1: ACK, 2: REJECT, 3: ACK, 4: REQUEUE, 5: ACK, 6: ACK}

    def callback(message: AMQPMessage) -> Disposition:
        tag = message.headers["tag"]
        broker.outcome[driver._consume_channel][tag] = plan[tag]
        if tag == 6:
            driver.stop()
        return plan[tag]

    driver.consume("queue", callback)
    driver.run()
    (channel,) = broker.models
    assert channel.frames[:3] == [(REJECT, 2, False), (REQUEUE, 4, False), (ACK, 6, True)]
    assert not broker.errors
    assert list(broker.queue) == [(4, True)]  # the requeued message is back in the queue


def test_a_handled_delivery_waits_at_most_the_ack_delay(monkeypatch: pytest.MonkeyPatch):
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(consuming_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    driver, broker = make_driver()
    broker.supply = 3

    def callback(message: AMQPMessage) -> Disposition:
        tag = message.headers["tag"]
        broker.outcome[driver._consume_channel][tag] = ACK
        if tag == 1:
            clock.now += 0.06  # longer than _ACK_DELAY (0.05 s)
        if tag == 3:
            driver.stop()
        return ACK

    driver.consume("queue", callback)
    driver.run()
    (channel,) = broker.models
    # 1 waited too long: it is acked before 2 is handled; 2 and 3 share an ack
    assert channel.frames == [(ACK, 1, False), (ACK, 3, True)]
    assert not broker.errors


def test_a_failing_handler_requeues_its_delivery(caplog: pytest.LogCaptureFixture):
    driver, broker = make_driver()
    broker.supply = 1

    def callback(message: AMQPMessage) -> Disposition:
        broker.outcome[driver._consume_channel][message.headers["tag"]] = REQUEUE
        driver.stop()
        raise ValueError("bad message")

    driver.consume("queue", callback, 1)
    with caplog.at_level(logging.ERROR, "tavrida2.drivers.pika_sync"):
        driver.run()
    (channel,) = broker.models
    assert channel.frames == [(REQUEUE, 1, False)]
    assert "delivery callback failed; message requeued" in caplog.text


def test_a_delivery_reaches_the_callback_as_an_amqp_message():
    driver, broker = make_driver()
    broker.supply = 1
    seen: list[AMQPMessage] = []

    def callback(message: AMQPMessage) -> Disposition:
        seen.append(message)
        broker.outcome[driver._consume_channel][1] = ACK
        driver.stop()
        return ACK

    driver.consume("the.queue", callback, 5)
    driver.run()
    (message,) = seen
    assert message.headers == {"tag": 1, "message": 1}
    assert (message.exchange, message.routing_key) == ("ex", "the.queue")
    assert message.redelivered is False
    (channel,) = broker.models
    assert channel.qos == [5]
    assert channel.frames == [(ACK, 1, False)]


# -- a consumer channel the broker closed or a consumer it cancelled ------------

DECLARED = [("exchange", "ex"), ("queue", "queue"), ("binding", "queue<-ex")]


def declare(driver: PikaDriver) -> None:
    driver.declare_exchange("ex")
    driver.declare_queue("queue")
    driver.bind_queue("queue", "ex", "#")


def test_the_run_loop_reopens_a_consumer_channel_the_broker_closed(
    caplog: pytest.LogCaptureFixture,
):
    driver, broker = make_driver()
    declare(driver)
    connection = driver._connection
    publisher, first = connection.channels
    broker.supply = 5
    broker.per_turn = lambda: 2
    handled: list[tuple[int, int]] = []
    ack = handled_by(broker, handled)

    def callback(message: AMQPMessage) -> Disposition:
        disposition = ack(message)
        if len(handled) == 2:
            # the broker gives up on the channel between two turns of pika
            broker.script.append(
                lambda _: first.close_by_broker(406, "PRECONDITION_FAILED - ack timed out")
            )
        if len(handled) == 4:
            driver.stop()
        return disposition

    driver.consume("queue", callback, 2)
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.run()
    assert len(connection.channels) == 3  # a new consumer channel
    second = connection.channels[2]
    assert driver._consume_channel is second
    assert list(c[0] for c in second.consumers.values()) == ["queue"]
    assert second.qos == [2]
    assert second.cancel_callbacks
    assert publisher.declared == DECLARED * 2  # the topology declared again
    assert handled == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert first.frames == [(ACK, 2, True)]
    assert second.frames == [(ACK, 2, True)]
    assert not broker.errors
    assert "the consumer channel was closed" in caplog.text
    assert "PRECONDITION_FAILED - ack timed out" in caplog.text


def test_the_inbox_of_a_channel_the_broker_closed_is_not_handled(
    caplog: pytest.LogCaptureFixture,
):
    """Deliveries 1-3 arrive together; while 1 is handled (its handler services the
    connection) the broker closes the consumer channel. 2 and 3 are deliveries of a
    closed channel still in the inbox: they cannot be acked any more and the broker
    delivers them again, so handling them now handles them twice (consuming's module
    docstring: "Deliveries of the closed channel still in the inbox are dropped")."""
    driver, broker = make_driver()
    connection = driver._connection
    first = connection.channels[1]
    broker.supply = 3
    handled: list[tuple[int, int]] = []
    ack = handled_by(broker, handled)

    def callback(message: AMQPMessage) -> Disposition:
        disposition = ack(message)
        if handled == [(2, 1)]:
            broker.script.append(lambda _: first.close_by_broker(406, "PRECONDITION_FAILED"))
            driver.send_heartbeat()  # a long handler; the Channel.Close arrives meanwhile
        if len(connection.channels) > 2:
            driver.stop()  # a delivery of the new channel: enough
        return disposition

    driver.consume("queue", callback, 3)
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.run()
    assert not first.is_open
    assert not broker.errors
    assert len(connection.channels) == 3, "the closed consumer channel was not replaced"
    assert handled == [(2, 1), (3, 1)], (
        f"handled {handled}: deliveries 2 and 3 of the closed channel were handled "
        "although the broker delivers them again"
    )


def test_a_reconnect_inside_a_handler_does_not_lose_the_new_channels_deliveries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """A handler publishes; the connection turns out lost, and the publish reconnects
    (``_with_connection``): a new consumer channel subscribes, and while the publish
    waits for its confirmation the new channel's first deliveries land in the inbox.
    They must be handled (and settled): dropped, they stay unacknowledged on a live
    channel, and with prefetch 2 nothing is ever delivered again."""
    driver, broker = make_driver(monkeypatch)
    old = driver._connection
    broker.supply = 4
    handled: list[tuple[int, int]] = []
    ack = handled_by(broker, handled)

    def callback(message: AMQPMessage) -> Disposition:
        disposition = ack(message)
        if len(handled) == 1:
            old.lost()  # the socket died while this delivery was handled
            driver.publish("ex", "reply", AMQPMessage(b"{}", {"message_id": "m-1"}))
        if len(handled) == 3:
            driver.stop()
        return disposition

    driver.consume("queue", callback, 2)
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.run()
    new = driver._connection
    assert new is not old and len(driver.connections) == 2  # type: ignore[attr-defined]
    consumer = new.channels[1]
    assert [c[0] for c in consumer.consumers.values()] == ["queue"]
    assert any(channel.published for channel in new.channels)  # the publish went out
    model = broker.models[consumer]
    assert not broker.errors
    assert not broker.stalled, (
        f"deliveries {sorted(model.outstanding)} of the new channel were received and "
        f"dropped unhandled: never settled, the prefetch window stays full (handled {handled})"
    )
    assert handled[1:] == [(consumer.number, 1), (consumer.number, 2)]
    assert model.frames == [(ACK, 2, True)]


def test_a_cancelled_consumer_is_subscribed_again_on_a_new_channel(
    caplog: pytest.LogCaptureFixture,
):
    driver, broker = make_driver()
    declare(driver)
    connection = driver._connection
    publisher, first = connection.channels
    broker.supply = 3
    broker.per_turn = lambda: 1
    handled: list[tuple[int, int]] = []
    ack = handled_by(broker, handled)

    def cancel(_: Any) -> None:
        for callback in first.cancel_callbacks:
            callback(SimpleNamespace(method=pika.spec.Basic.Cancel("ctag-2.1")))
        first.consumers.clear()

    def callback(message: AMQPMessage) -> Disposition:
        disposition = ack(message)
        if len(handled) == 1:
            broker.script.append(cancel)  # the queue was deleted
        if len(handled) == 3:
            driver.stop()
        return disposition

    driver.consume("queue", callback)
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.run()
    second = connection.channels[2]
    assert first.close_calls == 1  # the idle old channel is closed
    assert [c[0] for c in second.consumers.values()] == ["queue"]
    assert publisher.declared == DECLARED * 2
    assert handled == [(2, 1), (3, 1), (3, 2)]
    assert first.frames == [(ACK, 1, False)]
    assert not broker.errors
    assert "the broker cancelled a consumer" in caplog.text


def test_a_lost_connection_is_reconnected_and_consumed_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    driver, broker = make_driver(monkeypatch, retry_delay=0.01)
    declare(driver)
    old = driver._connection
    broker.supply = 4
    broker.per_turn = lambda: 2
    handled: list[tuple[int, int]] = []
    ack = handled_by(broker, handled)

    def lose(connection: FakePikaConnection) -> None:
        connection.lost()
        raise pex.StreamLostError("Transport indicated EOF")

    def callback(message: AMQPMessage) -> Disposition:
        disposition = ack(message)
        if len(handled) == 2:
            broker.script.append(lose)
        if len(handled) == 4:
            driver.stop()
        return disposition

    driver.consume("queue", callback, 2)
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.run()
    new = driver._connection
    assert new is not old
    publisher, consumer = new.channels[:2]
    assert publisher.declared == DECLARED
    assert [c[0] for c in consumer.consumers.values()] == ["queue"]
    assert consumer.frames == [(ACK, 2, True)]
    assert handled[2:] == [(consumer.number, 1), (consumer.number, 2)]
    assert not broker.errors
    assert "reconnected to" in caplog.text


def test_a_settle_on_a_closed_channel_is_given_up(caplog: pytest.LogCaptureFixture):
    """Acks that cannot be written (pika raises on a closed channel) are logged and
    dropped: the broker delivers those messages again."""
    driver, broker = make_driver()
    first = driver._connection.channels[1]
    broker.supply = 1

    def callback(message: AMQPMessage) -> Disposition:
        first.is_open = False  # closed, the run loop has not noticed yet
        driver.stop()
        return ACK

    driver.consume("queue", callback)
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.run()
    assert first.frames == []
    assert "could not settle deliveries" in caplog.text


# -- heartbeats during a long handler ----------------------------------------------


def test_a_long_handler_does_not_starve_the_heartbeats():
    driver, broker = make_driver(heartbeat=0.8)  # serviced every 0.2 s
    broker.supply = 1

    def serviced_by_the_helper() -> bool:
        return any(name == "tavrida2-heartbeat" for _, name in connection.process_calls)

    def callback(message: AMQPMessage) -> Disposition:
        broker.outcome[driver._consume_channel][message.headers["tag"]] = ACK
        deadline = time.monotonic() + 5.0
        while not serviced_by_the_helper() and time.monotonic() < deadline:
            time.sleep(0.02)  # a long handler, never servicing the connection itself
        driver.stop()
        return ACK

    driver.consume("queue", callback)
    connection = driver._connection
    driver.run()
    assert serviced_by_the_helper(), connection.process_calls
    assert all(limit == 0 for limit, name in connection.process_calls if name != "MainThread")
    driver.close()
    assert driver._pump is None
    assert connection.close_calls == 1
    (channel,) = broker.models
    assert channel.frames == [(ACK, 1, False)]
