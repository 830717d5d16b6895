"""The async driver's connection, publishing and direct replies, without a broker.

aio-pika's ``Connection`` is replaced by a fake network (``tests.unit.aio_fakes``):
each connection attempt makes a fake aio-pika connection whose channels are
fake aiormq channels, so ``connect()``, reconnecting and every publish path
run for real down to the channel calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
import aiormq.exceptions as aex
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.aio import connection as connection_module
from tavrida2.drivers.aio.compat import discard
from tavrida2.drivers.aio.connection import channel_error
from tavrida2.drivers.base import DIRECT_REPLY_TO, Disposition
from tavrida2.messages import AMQPMessage
from tests.unit.aio_fakes import FakeAioChannel, FakeNetwork, require_one_asyncio, wait_for
from tests.unit.settle_model import ACK


def close_frame(code: int, text: str) -> Any:
    return spec.Channel.Close(reply_code=code, reply_text=text)


def message(**kwargs: Any) -> AMQPMessage:
    return AMQPMessage(b'{"x": 1}', {"message_id": "m-1"}, **kwargs)


def scenario(
    monkeypatch: pytest.MonkeyPatch,
    body: Callable[[AioDriver, FakeNetwork], Awaitable[Any]],
    **config: Any,
) -> Any:
    """Run ``body`` with a driver whose connections are made by a fake network."""
    network = FakeNetwork()
    monkeypatch.setattr(connection_module, "OwnedConnection", network)
    settings = {"retry_delay": 0.01, "publish_timeout": 0.5, "socket_timeout": 0.5, **config}

    async def main() -> Any:
        driver = AioDriver(ConnectionConfig(async_engine=True, **settings))
        try:
            return await body(driver, network)
        finally:
            await driver.close()
            await network.stop()

    return asyncio.run(main())


def roles(network: FakeNetwork, index: int = -1) -> list[bool]:
    """Whether each channel of a connection was opened with publisher confirms."""
    return [confirms for confirms, _ in network.connections[index].channels]


# -- connecting ------------------------------------------------------------------


def test_connect_opens_the_publisher_and_consumer_channels(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        (connection,) = network.connections
        assert roles(network) == [True, False]  # publisher (confirms), consumer
        assert driver._publish is connection.channels[0][1]
        assert driver._consume is connection.channels[1][1]
        assert driver._on_connection_closed in connection.close_callbacks
        await driver.declare_exchange("ex")
        assert await driver.declare_queue("queue", arguments={"x-max-length": 1}) == "queue"
        await driver.bind_queue("queue", "ex", "#")
        assert driver._publish.declared == [
            ("exchange", "ex"),
            ("queue", "queue"),
            ("binding", "queue<-ex"),
        ]
        await driver.close()
        assert connection.close_calls == 1
        assert driver._connection is None and driver._publish is None
        assert not connection.close_callbacks
        with pytest.raises(exceptions.ConnectionClosed, match="the driver is closed"):
            await driver.publish("ex", "rk", message())

    scenario(monkeypatch, body)


def test_connect_retries_then_reports_the_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        network.failures.extend([ConnectionRefusedError("refused")] * 3)
        with pytest.raises(exceptions.ConnectionFailed, match="refused"):
            await driver.connect()
        assert len(network.connections) == 3

    with caplog.at_level(logging.WARNING, "tavrida2.drivers"):
        scenario(monkeypatch, body, connection_attempts=3)
    assert caplog.text.count("cannot connect to") == 2


def test_a_refused_virtual_host_is_not_retried(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        # as compat.patch_aiormq_refused_open makes aiormq raise it
        network.failures.append(aex.ConnectionClosed(530, "NOT_ALLOWED - vhost 'x' not found"))
        with pytest.raises(exceptions.ConnectionFailed, match="credentials or virtual host"):
            await driver.connect()
        assert len(network.connections) == 1

    scenario(monkeypatch, body, connection_attempts=3)


def test_a_protocol_error_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        network.failures.append(aex.InvalidFrameError("something else"))
        with pytest.raises(aex.InvalidFrameError):
            await driver.connect()

    scenario(monkeypatch, body)


def test_a_lost_connection_is_reconnected_with_everything_on_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        await driver.declare_queue("queue")
        handled: list[int] = []

        async def callback(delivered: AMQPMessage) -> Disposition:
            handled.append(delivered.headers["tag"])
            return ACK

        await driver.consume("queue", callback, 4)
        answers: list[AMQPMessage] = []
        failures: list[tuple[Any, Exception]] = []
        await driver.consume_replies(answers.append, lambda c, e: failures.append((c, e)))
        first = network.connections[0]
        assert roles(network) == [True, False, False]  # + the call channel (no confirms)
        first.lose(ConnectionResetError("reset"))
        # waiting callers are told at once: their answers cannot come any more
        assert failures and isinstance(failures[0][1], exceptions.ConnectionClosed)
        assert failures[0][0] is None
        await wait_for(lambda: driver._is_up() and len(network.connections) == 2)
        second = network.connections[1]
        assert roles(network) == [True, False, False]
        publisher, consumer, call = (channel for _, channel in second.channels)
        assert publisher.declared == [("queue", "queue")]
        assert consumer.subscribed == ["queue"] and consumer.qos == [4]
        assert call.subscribed == [DIRECT_REPLY_TO] and call.no_ack == [True]
        consumer.deliver(1)
        await wait_for(lambda: consumer.written == [(ACK, 1, False)])
        assert handled == [1]

    with caplog.at_level(logging.WARNING, "tavrida2.drivers.aio"):
        scenario(monkeypatch, body)
    assert "reconnecting" in caplog.text and "reconnected to" in caplog.text


def test_close_ends_a_reconnect_whose_attempt_lost_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        network.deaf_to_cancel = True
        network.connections[0].lose(ConnectionResetError("reset"))
        await wait_for(lambda: len(network.connections) >= 3)  # reconnecting, refused
        await asyncio.wait_for(driver.close(), 2.0)
        attempts = len(network.connections)
        await asyncio.sleep(0.3)
        assert len(network.connections) == attempts, "still reconnecting after close()"
        assert driver._reconnecting is None

    scenario(monkeypatch, body, reconnect_attempts=-1)


def test_giving_up_reconnecting_is_reported(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        network.failures.extend([ConnectionRefusedError("refused")] * 4)
        network.connections[0].lose(ConnectionResetError("reset"))
        failure = await asyncio.wait_for(driver.wait_gave_up(), 3)
        assert isinstance(failure, exceptions.ConnectionFailed)
        assert "refused" in str(failure)
        with pytest.raises(exceptions.ConnectionFailed, match="reconnecting failed"):
            await driver.publish("ex", "rk", message())  # tries again: refused twice

    scenario(monkeypatch, body, reconnect_attempts=2)


def test_a_publish_waits_at_most_publish_timeout_for_a_connection(
    monkeypatch: pytest.MonkeyPatch,
):
    require_one_asyncio()

    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        network.failures.extend([ConnectionRefusedError("refused")] * 1000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(exceptions.ConnectionFailed, match=r"publish_timeout=0\.3"):
            await driver.publish("ex", "rk", message())
        assert loop.time() - started < 2.0

    scenario(monkeypatch, body, publish_timeout=0.3, retry_delay=0.05)


def test_opening_the_call_channel_is_bounded(monkeypatch: pytest.MonkeyPatch):
    require_one_asyncio()

    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        network.channel_hangs = True
        with pytest.raises(exceptions.ConnectionFailed, match="did not open a channel"):
            await driver.consume_replies(lambda m: None, lambda c, e: None)

    scenario(monkeypatch, body, publish_timeout=0.2)


# -- publishing ------------------------------------------------------------------


def test_a_publish_is_confirmed_with_the_message_properties(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> Any:
        await driver.connect()
        await driver.publish("ex", "rk", message(expiration="1000"))
        await driver.publish("ex", "rk", AMQPMessage("text", {}, correlation_id="c-1"), False)
        return driver._publish.published

    first, second = scenario(monkeypatch, body)
    assert (first.exchange, first.routing_key, first.mandatory) == ("ex", "rk", True)
    assert first.body == b'{"x": 1}'
    props = first.properties
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    assert props.message_id == "m-1" and props.expiration == "1000"
    assert second.body == b"text" and second.mandatory is False
    assert second.properties.delivery_mode == 1  # a waiting caller's: transient
    assert second.properties.message_id is None


def returned() -> DeliveredMessage:
    return DeliveredMessage(
        delivery=spec.Basic.Return(312, "NO_ROUTE", "ex", "rk"),
        header=ContentHeader(0, 0, spec.Basic.Properties()),
        body=b"",
        channel=None,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("result", "error", "text"),
    [
        (lambda: aex.PublishError(returned(), None), exceptions.UnroutableMessage, "rk"),
        (lambda: aex.DeliveryError(None, None), exceptions.PublishNacked, "refused"),
        (lambda: spec.Basic.Nack(1), exceptions.UnroutableMessage, "rk"),
        (lambda: "hang", exceptions.PublishTimeout, "0.2"),
        (lambda: ConnectionResetError("reset"), exceptions.ConnectionClosed, "reset"),
    ],
    ids=["returned", "nacked", "not-acked", "unconfirmed", "connection-lost"],
)
def test_what_a_publish_can_raise(
    monkeypatch: pytest.MonkeyPatch, result: Callable[[], Any], error: type, text: str
):
    if error is exceptions.PublishTimeout:
        require_one_asyncio()

    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        driver._publish.publish_results.append(result())
        with pytest.raises(error, match=text):
            await driver.publish("ex", "rk", message())

    scenario(monkeypatch, body, publish_timeout=0.2)


def test_a_publish_to_a_missing_exchange_reopens_the_publisher_channel(
    monkeypatch: pytest.MonkeyPatch,
):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        first = driver._publish
        first.publish_results.append(
            aex.ChannelNotFoundEntity(close_frame(404, "NOT_FOUND - no exchange 'nope'"))
        )
        with pytest.raises(exceptions.ExchangeNotFound, match="nope"):
            await driver.publish("nope", "rk", message())
        assert driver._publish is not first
        # publisher, consumer, the probe that checked 'nope' first (it passed: the fake
        # probe knows every exchange), then the new publisher
        assert roles(network) == [True, False, False, True]
        await driver.publish("ex", "rk", message())
        assert len(driver._publish.published) == 1

    scenario(monkeypatch, body)


def test_a_refused_declaration_reopens_the_publisher_channel(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        first = driver._publish
        first.declare_errors.append(
            aex.ChannelPreconditionFailed(close_frame(406, "PRECONDITION_FAILED - durable"))
        )
        with pytest.raises(exceptions.PreconditionFailed, match="durable"):
            await driver.declare_queue("queue", durable=False)
        assert driver._publish is not first
        await driver.declare_queue("queue")
        assert driver._publish.declared == [("queue", "queue")]
        assert [(kind, args[0]) for kind, args in driver._declarations] == [("queue", "queue")]

    scenario(monkeypatch, body)


def test_an_answer_to_a_waiting_caller_goes_out_unconfirmed_on_the_consumer_channel(
    monkeypatch: pytest.MonkeyPatch,
):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        answer = AMQPMessage(b"{}", {}, correlation_id="c-1")
        await driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAA", answer)
        (sent,) = driver._consume.published
        assert sent.wait is False and sent.routing_key.startswith(DIRECT_REPLY_TO)
        assert driver._publish.published == []

    scenario(monkeypatch, body)


def test_an_answer_while_the_consumer_channel_is_closed_is_sent_or_a_driver_error(
    monkeypatch: pytest.MonkeyPatch,
):
    """The broker closed the consumer channel (say a 406) and the watchdog has not
    opened a new one yet: an answer to a waiting caller can leave on another channel
    (the sync driver sends it on its declarations channel), or at least fail with a
    tavrida2 ``DriverError`` as ``publish`` promises, not with aiormq's own
    ``ChannelInvalidStateError``."""

    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        consumer = driver._consume
        consumer.closing.set_exception(
            aex.ChannelPreconditionFailed(close_frame(406, "PRECONDITION_FAILED - unknown tag"))
        )
        answer = AMQPMessage(b"{}", {}, correlation_id="c-1")
        try:
            await driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAA", answer)
        except exceptions.DriverError:
            return
        sent = [p for _, c in network.connections[0].channels for p in c.published]
        assert len(sent) == 1 and sent[0].routing_key == f"{DIRECT_REPLY_TO}.g2dkAAA"

    scenario(monkeypatch, body)


def test_requests_of_waiting_callers_and_their_answers(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> None:
        await driver.connect()
        request = AMQPMessage(b"{}", {}, reply_to=DIRECT_REPLY_TO, correlation_id="c-1")
        with pytest.raises(RuntimeError, match="consume_replies"):
            await driver.publish("ex", "rk", request)
        answers: list[AMQPMessage] = []
        failures: list[tuple[Any, Exception]] = []
        await driver.consume_replies(answers.append, lambda c, e: failures.append((c, e)))
        call = driver._call
        assert call.subscribed == [DIRECT_REPLY_TO]
        await driver.publish("ex", "rk", request)
        assert len(call.published) == 1 and driver._publish.published == []
        (on_answer,) = call.consumers.values()
        await on_answer(
            DeliveredMessage(
                delivery=spec.Basic.Deliver("c", 1, False, "", DIRECT_REPLY_TO),
                header=ContentHeader(
                    0, 0, spec.Basic.Properties(headers={"a": 1}, correlation_id="c-1")
                ),
                body=b"answer",
                channel=None,  # type: ignore[arg-type]
            )
        )
        (answer,) = answers
        assert (answer.body, answer.headers, answer.correlation_id) == (
            b"answer",
            {"a": 1},
            "c-1",
        )
        # the broker closes the call channel (a request to a missing exchange)
        call.publish_results.append(
            aex.ChannelNotFoundEntity(close_frame(404, "NOT_FOUND - no exchange 'nope'"))
        )
        with pytest.raises(exceptions.ExchangeNotFound):
            await driver.publish("nope", "rk", request)
        assert driver._call is not call and driver._call.subscribed == [DIRECT_REPLY_TO]
        (failure,) = failures  # every waiting caller is told
        assert failure[0] is None and isinstance(failure[1], exceptions.ConnectionClosed)

    scenario(monkeypatch, body)


def test_channel_errors_name_the_entity():
    not_found = channel_error(aex.ChannelNotFoundEntity("no frame"), "queue")
    assert isinstance(not_found, exceptions.ExchangeNotFound)
    refused = channel_error(aex.ChannelPreconditionFailed("no frame"), "queue")
    assert isinstance(refused, exceptions.PreconditionFailed)
    other = channel_error(aex.ChannelClosed(close_frame(530, "NOT_ALLOWED")), "queue")
    assert "530" in str(other)


def test_the_fake_channel_refuses_frames_once_closed():
    async def body() -> None:
        channel = FakeAioChannel()
        await channel.close()
        with pytest.raises(aex.ChannelInvalidStateError):
            await channel.basic_ack(1, wait=False)
        await channel.stop()

    asyncio.run(body())


# -- the workarounds of compat -----------------------------------------------------


class HandshakeWire:
    """The socket of aiormq's handshake: what was written, and the broker's next frame."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    async def drain(self) -> None:
        pass

    async def get_frame(self) -> tuple[int, int, Any]:
        return 0, 0, self.answer


def test_a_refused_connection_open_keeps_the_brokers_reason():
    refusal = spec.Connection.Close(reply_code=530, reply_text="NOT_ALLOWED - vhost 'x' not found")
    wire = HandshakeWire(refusal)
    with pytest.raises(aex.ConnectionClosed) as caught:
        asyncio.run(aiormq.Connection._rpc(spec.Connection.Open(virtual_host="x"), wire, wire))
    assert caught.value.args[:2] == (530, "NOT_ALLOWED - vhost 'x' not found")
    assert wire.written  # the Open went out


def test_other_unexpected_handshake_frames_stay_protocol_errors():
    wire = HandshakeWire(spec.Connection.Tune())
    with pytest.raises(aex.InvalidFrameError):
        asyncio.run(aiormq.Connection._rpc(spec.Connection.Open(), wire, wire))
    assert asyncio.run(aiormq.Connection._rpc(spec.Connection.Open(), wire, wire, False)) is None


def test_discard_gives_up_on_a_close_that_fails_or_hangs():
    class Failing:
        async def close(self) -> None:
            raise ConnectionResetError("reset")

    class Hanging:
        async def close(self) -> None:
            await asyncio.Event().wait()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        await discard(Failing(), 0.1)
        started = loop.time()
        await discard(Hanging(), 0.1)
        return loop.time() - started

    assert asyncio.run(main()) < 1.0
