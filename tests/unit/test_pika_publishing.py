"""The sync driver's connection, publishing and direct replies, without a broker.

``pika.BlockingConnection`` is replaced by the fakes of ``tests.unit.pika_fakes``:
the fake broker confirms, nacks or returns publishes and answers requests of
waiting callers as the connection is serviced, so ``connect()``, the
confirmation pipeline, waiting in turns and reconnecting run for real down to
the channel calls.
"""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pika.exceptions as pex
import pytest

from tavrida2 import exceptions
from tavrida2.drivers.base import DIRECT_REPLY_TO
from tavrida2.drivers.pika_sync import PikaDriver
from tavrida2.drivers.pika_sync.connection import cut, write_frames_at_once
from tavrida2.messages import AMQPMessage
from tests.unit.pika_fakes import FakeBroker, FakePikaConnection, make_driver


def message(**kwargs: Any) -> AMQPMessage:
    return AMQPMessage(b'{"x": 1}', {"message_id": "m-1"}, **kwargs)


def connected(monkeypatch: pytest.MonkeyPatch, **config: Any) -> tuple[PikaDriver, FakeBroker]:
    settings = {"retry_delay": 0.01, "publish_timeout": 0.5, **config}
    driver, broker = make_driver(monkeypatch, attach=False, **settings)
    driver.connect()
    return driver, broker


def break_connection(connection: FakePikaConnection) -> None:
    """A script step: the connection breaks while pika services it."""
    connection.lost()
    raise pex.StreamLostError("Transport indicated EOF")


# -- connecting ------------------------------------------------------------------


def test_connect_opens_the_declarations_and_consumer_channels(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    (connection,) = driver.connections  # type: ignore[attr-defined]
    publisher, consumer = connection.channels
    assert publisher.confirm_mode and not consumer.confirm_mode
    assert driver._consume_channel is consumer
    driver.declare_exchange("ex", "direct")
    assert driver.declare_queue("queue", arguments={"x-max-length": 1}) == "queue"
    driver.bind_queue("queue", "ex", "rk")
    assert publisher.declared == [("exchange", "ex"), ("queue", "queue"), ("binding", "queue<-ex")]
    driver.close()
    assert connection.close_calls == 1 and driver._connection is None
    with pytest.raises(exceptions.ConnectionClosed, match="the driver is closed"):
        driver.publish("ex", "rk", message())


def test_connect_retries_then_reports_the_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    driver, broker = make_driver(monkeypatch, attach=False, retry_delay=0.01)
    broker.connection_failures.extend([pex.AMQPConnectionError("refused")] * 3)
    with (
        caplog.at_level(logging.WARNING, "tavrida2.drivers"),
        pytest.raises(exceptions.ConnectionFailed, match="refused"),
    ):
        driver.connect()
    assert not broker.connection_failures
    assert caplog.text.count("cannot connect to") == 2


def test_run_gives_up_when_reconnecting_fails(monkeypatch: pytest.MonkeyPatch):
    driver, broker = connected(monkeypatch, reconnect_attempts=2)
    (connection,) = driver.connections  # type: ignore[attr-defined]
    broker.connection_failures.extend([pex.AMQPConnectionError("refused")] * 2)
    broker.script.append(break_connection)
    with pytest.raises(exceptions.ConnectionFailed, match="refused"):
        driver.run()
    assert not connection.is_open


def test_stop_interrupts_reconnecting(monkeypatch: pytest.MonkeyPatch):
    driver, broker = connected(monkeypatch, retry_delay=5.0)
    broker.connection_failures.extend([pex.AMQPConnectionError("refused")] * 100)
    broker.script.append(break_connection)
    threading.Timer(0.2, driver.stop).start()
    started = time.monotonic()
    driver.run()  # returns quietly once stopped
    assert time.monotonic() - started < 3.0


# -- publishing ------------------------------------------------------------------


def test_a_publish_is_confirmed_on_the_pipeline(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    driver.publish("ex", "rk", message(expiration="1000"))
    connection = driver._connection
    pipeline = connection.channels[-1]
    assert driver._pipeline is pipeline and pipeline.on_confirm is not None
    (sent,) = pipeline.published
    assert (sent.exchange, sent.routing_key, sent.mandatory) == ("ex", "rk", True)
    assert sent.properties.delivery_mode == 2 and sent.properties.message_id == "m-1"
    assert sent.properties.expiration == "1000"
    pending = [driver.publish_async("ex", f"rk.{n}", message()) for n in range(5)]
    for handle in pending:
        handle.result()
    assert all(handle.confirmed for handle in pending)
    assert len(pipeline.published) == 6 and not driver._unconfirmed


def test_a_returned_publish_is_unroutable_and_a_nacked_one_refused(
    monkeypatch: pytest.MonkeyPatch,
):
    driver, broker = connected(monkeypatch)
    broker.unroutable.add("nowhere")
    broker.nacked.add("refused")
    with pytest.raises(exceptions.UnroutableMessage, match="nowhere"):
        driver.publish("ex", "nowhere", message())
    with pytest.raises(exceptions.PublishNacked):
        driver.publish("ex", "refused", message())
    driver.publish("ex", "nowhere", message(), mandatory=False)  # not returned


def test_a_publish_to_a_missing_exchange_fails_and_the_pipeline_is_opened_again(
    monkeypatch: pytest.MonkeyPatch,
):
    driver, broker = connected(monkeypatch)
    broker.missing_exchanges.add("nope")
    with pytest.raises(exceptions.ExchangeNotFound, match="nope"):
        driver.publish("nope", "rk", message())
    assert driver._pipeline is None
    driver.publish("ex", "rk", message())
    assert driver._pipeline is not None and driver._pipeline.is_open


def test_an_unconfirmed_publish_times_out_and_drops_the_connection(
    monkeypatch: pytest.MonkeyPatch,
):
    driver, broker = connected(monkeypatch, publish_timeout=0.2)
    broker.confirms = False
    first = driver._connection
    with pytest.raises(exceptions.PublishTimeout):
        driver.publish("ex", "rk", message())
    assert driver._connection is None and not first.is_open
    broker.confirms = True
    driver.publish("ex", "rk", message())  # a new connection
    assert driver._connection is not first


def test_a_publish_on_a_connection_that_broke_is_sent_again_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    driver, _broker = connected(monkeypatch)
    driver.publish("ex", "rk", message())
    first = driver._connection
    first.publish_error = pex.StreamLostError("Transport indicated EOF")
    with caplog.at_level(logging.WARNING, "tavrida2.drivers.pika_sync"):
        driver.publish("ex", "rk", message())
    assert driver._connection is not first
    assert len(driver._pipeline.published) == 1
    assert "reconnecting" in caplog.text


def test_publishers_in_other_threads_take_turns(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    errors: list[BaseException] = []

    def publish_some() -> None:
        try:
            for n in range(20):
                driver.publish("ex", f"rk.{n}", message())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert sum(len(c.published) for c in driver._connection.channels) == 80


def test_a_publisher_wakes_the_thread_servicing_the_connection(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    connection = driver._connection
    holding = threading.Event()

    def hold_the_connection() -> None:
        with driver._lock:
            holding.set()
            time.sleep(0.1)

    thread = threading.Thread(target=hold_the_connection)
    thread.start()
    holding.wait(2)
    driver.publish("ex", "rk", message())
    thread.join()
    assert connection.threadsafe_callbacks  # the holder was asked to step aside


# -- waiting callers (direct reply-to) ---------------------------------------------


def test_an_answer_goes_out_unconfirmed_on_the_consumer_channel(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    consumer = driver._consume_channel
    answer = AMQPMessage(b"{}", {}, correlation_id="c-1")
    driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAA", answer)
    (sent,) = consumer.published
    assert sent.properties.delivery_mode == 1 and sent.properties.correlation_id == "c-1"
    consumer.is_open = False  # closed by the broker: any channel will do
    driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAB", answer)
    assert len(driver._publish_channel.published) == 1
    assert driver._pipeline is None  # answers are not confirmed


def test_an_answer_whose_consumer_channel_the_broker_closes_goes_out_on_another(
    monkeypatch: pytest.MonkeyPatch,
):
    driver, _broker = connected(monkeypatch)
    answer = AMQPMessage(b"{}", {}, correlation_id="c-1")
    # the broker closes the consumer channel while the answer is being written
    driver._connection.publish_error = pex.ChannelClosedByBroker(406, "unknown delivery tag 9")
    driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAA", answer)
    (sent,) = driver._publish_channel.published
    assert sent.properties.correlation_id == "c-1" and driver._pipeline is None


def test_requests_of_waiting_callers_and_their_answers(monkeypatch: pytest.MonkeyPatch):
    driver, broker = connected(monkeypatch)
    request = message(reply_to=DIRECT_REPLY_TO, correlation_id="c-1")
    with pytest.raises(RuntimeError, match="consume_replies"):
        driver.publish("ex", "rk", request)
    answers: list[AMQPMessage] = []
    failures: list[tuple[Any, Exception]] = []
    driver.consume_replies(answers.append, lambda c, e: failures.append((c, e)))
    call = driver._call_channel
    assert [queue for queue, _ in call.consumers.values()] == [DIRECT_REPLY_TO]
    driver.publish("ex", "rk", request)
    assert len(call.published) == 1 and driver._pipeline is None
    driver.wait(lambda: bool(answers), 1.0)
    (answer,) = answers
    assert (answer.body, answer.correlation_id, answer.headers) == (
        b"answer",
        "c-1",
        {"answer": True},
    )
    # a returned request is reported to its caller at once
    broker.unroutable.add("nowhere")
    driver.publish("ex", "nowhere", message(reply_to=DIRECT_REPLY_TO, correlation_id="c-2"))
    driver.wait(lambda: bool(failures), 1.0)
    assert failures[0][0] == "c-2"
    assert isinstance(failures[0][1], exceptions.UnroutableMessage)
    # a request to a missing exchange closes the call channel: all callers are told
    broker.missing_exchanges.add("nope")
    driver.publish("nope", "rk", message(reply_to=DIRECT_REPLY_TO, correlation_id="c-3"))
    driver.wait(lambda: len(failures) == 2, 1.0)
    assert failures[1][0] is None
    assert isinstance(failures[1][1], exceptions.ExchangeNotFound)
    assert driver._call_channel is not call and driver._call_channel.is_open
    # the connection is lost: waiting callers are told, the call channel comes back
    broker.script.append(break_connection)
    with pytest.raises(exceptions.ConnectionClosed, match="was lost"):
        driver.wait(lambda: False, 0.5)
    assert isinstance(failures[2][1], exceptions.ConnectionClosed)
    assert driver._call_channel is None
    driver.publish("ex", "rk", message(reply_to=DIRECT_REPLY_TO, correlation_id="c-4"))
    assert driver._call_channel is not None


def test_a_refused_declaration_opens_the_declarations_channel_again(
    monkeypatch: pytest.MonkeyPatch,
):
    driver, _broker = connected(monkeypatch)
    first = driver._publish_channel

    def refuse(name: str, **kwargs: Any) -> None:
        raise pex.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg 'durable'")

    first.queue_declare = refuse  # type: ignore[method-assign]
    with pytest.raises(exceptions.PreconditionFailed, match="durable"):
        driver.declare_queue("queue", durable=False)
    assert driver._publish_channel is not first and driver._publish_channel.confirm_mode
    assert list(driver._declarations) == []


# -- pika's internals the driver reaches into ---------------------------------------


def test_a_message_is_written_in_one_piece():
    sent: list[bytes] = []
    impl = SimpleNamespace(bytes_sent=0, frames_sent=0, _adapter_emit_data=sent.append)
    impl._output_marshaled_frames = lambda frames: None
    write_frames_at_once(impl)
    impl._output_marshaled_frames([b"method", b"header", b"body"])
    impl._output_marshaled_frames([b"heartbeat"])
    assert sent == [b"methodheaderbody", b"heartbeat"]
    assert (impl.bytes_sent, impl.frames_sent) == (25, 4)


def test_an_abandoned_connection_is_cut_without_the_closing_handshake():
    connection = FakePikaConnection()
    terminated: list[Exception] = []
    connection._impl = SimpleNamespace(_terminate_stream=terminated.append)
    cut(connection)
    assert isinstance(terminated[0], pex.StreamLostError)
    assert connection.process_calls and connection.process_calls[0][0] == 0


def test_abandon_shuts_the_socket_down(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    shut: list[int] = []
    sock = SimpleNamespace(shutdown=shut.append)
    driver._connection._impl = SimpleNamespace(_transport=SimpleNamespace(_sock=sock))
    driver.abandon()
    assert shut and driver._stopping.is_set()


def test_the_heartbeat_period_follows_the_negotiated_timeout(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = make_driver(monkeypatch, heartbeat=8)
    assert driver._heartbeat_period() == 2.0
    driver._connection._impl = SimpleNamespace(params=SimpleNamespace(heartbeat=40))
    assert driver._heartbeat_period() == 10.0
    driver.send_heartbeat()
    assert driver._connection.process_calls[-1][0] == 0
