"""Bounded waits and leaks (issue 12), without a broker.

- ``publish_timeout`` has one meaning: a positive number of seconds (0 refused);
- the sync engine's default prefetch is what it can use (16), the async one's 64;
- ``stop_timeout``: an async server whose handler never returns stops within it,
  the delivery left unacknowledged and delivered again;
- ``Server.run`` closes its driver when starting fails;
- abandoned ``call_async()`` handles do not pile up in ``SyncCalls``;
- a call from an executor thread is bounded even if the loop never answers;
- the sync driver does not hold its connection's lock between reconnect attempts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tavrida2 import config, dispatcher, exceptions, server, service
from tavrida2.calls import AsyncCalls, PendingCall, SyncCalls
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.messages import AMQPMessage
from tavrida2.testing.services import wait_until

BROKER = "bounded"


def memory(async_engine: bool, **overrides: Any) -> config.ConnectionConfig:
    return config.ConnectionConfig.from_url(
        f"memory://{BROKER}", async_engine=async_engine, **overrides
    )


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, -1, float("inf"), True, "10"])
def test_publish_timeout_must_be_a_positive_number_of_seconds(value: Any) -> None:
    with pytest.raises(exceptions.ConfigError, match="publish_timeout"):
        config.ConnectionConfig(publish_timeout=value)


def test_publish_timeout_of_zero_is_refused_in_urls_too() -> None:
    with pytest.raises(exceptions.ConfigError, match="publish_timeout"):
        config.ConnectionConfig.from_url("amqp://localhost/?publish_timeout=0")


def test_the_default_prefetch_is_what_each_engine_can_use() -> None:
    assert config.ConnectionConfig().prefetch_count == config.DEFAULT_SYNC_PREFETCH == 16
    assert config.ConnectionConfig(async_engine=True).prefetch_count == 64
    assert config.ConnectionConfig.from_url("amqp://h/?async_engine=true").prefetch_count == 64
    assert config.ConnectionConfig(prefetch_count=3).prefetch_count == 3
    assert config.ConnectionConfig(prefetch_count=0, async_engine=True).prefetch_count == 0


@pytest.mark.parametrize("value", [0, -1, float("inf"), True, "5"])
def test_stop_timeout_must_be_a_positive_number_of_seconds(value: Any) -> None:
    with pytest.raises(exceptions.ConfigError, match="stop_timeout"):
        server.Server(memory(True), "q", "ex", _controller("bounded_cfg"), stop_timeout=value)


# -- stopping ------------------------------------------------------------------------


def _controller(name: str, handler: Any = None) -> type[service.ServiceController]:
    @dispatcher.rpc_service(name)
    class Controller(service.ServiceController):
        @dispatcher.rpc_method(service=name, method="work")
        async def work(self, request: Any, proxy: Any) -> None:
            if handler is not None:
                await handler()

    return Controller


def test_an_async_server_whose_handler_hangs_stops_within_stop_timeout(caplog) -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    controller = _controller("bounded_hang", hang)
    srv = server.Server(memory(True), "hang_q", "hang_ex", controller, stop_timeout=0.3)
    broker = MemoryBroker.get(BROKER)

    async def scenario() -> float:
        task = asyncio.ensure_future(srv.serve())
        while not srv.started.is_set():
            await asyncio.sleep(0.01)
        cast = _cast("bounded_hang.work")
        broker.publish("hang_ex", "bounded_hang.work", cast.body, cast.headers)
        await asyncio.wait_for(started.wait(), 5)
        stopping = time.monotonic()
        srv.stop()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - stopping

    took = asyncio.run(scenario())
    assert 0.3 <= took < 5, took
    assert "still being handled after stop_timeout=0.3 s" in caplog.text
    # not acknowledged: back in the queue, marked redelivered
    (message,) = broker.messages_in("hang_q")
    assert message.redelivered


def _cast(destination: str) -> AMQPMessage:
    headers = {
        "correlation_id": "c1",
        "request_id": "r1",
        "message_id": "m1",
        "message_type": "request",
        "reply_to": "",
        "source": "test.client",
        "destination": destination,
    }
    return AMQPMessage(b'{"context": {}, "payload": {}}', headers)


def test_run_closes_the_driver_when_starting_fails(monkeypatch) -> None:
    closed: list[bool] = []

    @dispatcher.rpc_service("bounded_start")
    class Controller(service.ServiceController):
        @dispatcher.rpc_method(service="bounded_start", method="work")
        def work(self, request: Any, proxy: Any) -> None:
            pass

    srv = server.Server(memory(False), "start_q", "start_ex", Controller)
    from tavrida2.drivers.memory import drivers as memory_module

    def failing_declare(self: Any, *args: Any, **kwargs: Any) -> None:
        raise exceptions.PreconditionFailed(what="queue", name="start_q", reason="test")

    original_close = memory_module.MemoryDriver.close

    def close(self: Any) -> None:
        closed.append(True)
        original_close(self)

    monkeypatch.setattr(memory_module.MemoryDriver, "declare_queue", failing_declare)
    monkeypatch.setattr(memory_module.MemoryDriver, "close", close)
    with pytest.raises(exceptions.PreconditionFailed):
        srv.run()
    assert closed == [True]


# -- calls ---------------------------------------------------------------------------


class _SilentDriver:
    """Takes requests and never answers (a SyncDriver as SyncCalls uses it)."""

    def consume_replies(self, on_reply: Any, on_failure: Any) -> None:
        pass

    def publish(self, *args: Any) -> None:
        pass

    def wait(self, done: Any, timeout: float) -> None:
        time.sleep(max(0.0, min(timeout, 0.01)))


def test_abandoned_call_handles_are_swept_once_past_their_deadline() -> None:
    calls = SyncCalls(_SilentDriver())  # type: ignore[arg-type]
    abandoned: list[PendingCall] = []
    for index in range(64):
        message = AMQPMessage(b"{}", {}, correlation_id=f"old{index}")
        abandoned.append(calls.start("ex", "svc.method", message, 0.01))
    time.sleep(0.05)
    for index in range(200):
        message = AMQPMessage(b"{}", {}, correlation_id=f"new{index}")
        calls.start("ex", "svc.method", message, 60)
    pending = calls._pending
    assert not any(key.startswith("old") for key in pending)
    assert len(pending) <= 200
    # an abandoned handle asked later tells what happened
    with pytest.raises(exceptions.CallTimeout):
        abandoned[0].result()


class _StuckAsyncDriver:
    """Its publish never returns (a loop that stopped serving the call)."""

    async def consume_replies(self, on_reply: Any, on_failure: Any) -> None:
        pass

    async def publish(self, *args: Any) -> None:
        await asyncio.Event().wait()


def test_a_call_from_an_executor_thread_is_bounded_when_the_loop_never_ends_it(
    monkeypatch,
) -> None:
    import tavrida2.calls as calls_module

    monkeypatch.setattr(calls_module, "_LOOP_GRACE", 0.2)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    calls = AsyncCalls(_StuckAsyncDriver(), loop)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        with pytest.raises(exceptions.CallTimeout):
            message = AMQPMessage(b"{}", {}, correlation_id="c1")
            calls.request("ex", "svc.method", message, 0.1)
        assert time.monotonic() - started < 5
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


# -- the sync driver's lock ------------------------------------------------------------


def test_reconnecting_does_not_hold_the_lock_between_attempts(monkeypatch) -> None:
    from tavrida2.drivers.pika_sync import PikaDriver

    driver = PikaDriver(
        config.ConnectionConfig(retry_delay=0.05, reconnect_attempts=4, connection_attempts=1)
    )
    attempts: list[float] = []
    lock_free: list[bool] = []

    def failing_open() -> None:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("test: broker down")

    real_wait = driver._stopping.wait

    def try_lock() -> None:
        free = driver._lock.acquire(timeout=1)
        lock_free.append(free)
        if free:
            driver._lock.release()

    def sleep(seconds: float) -> bool:
        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        return real_wait(seconds)

    monkeypatch.setattr(driver, "_open", failing_open)
    monkeypatch.setattr(driver._stopping, "wait", sleep)
    with pytest.raises(exceptions.ConnectionFailed):
        driver._reconnect("test")
    assert len(attempts) == 4
    assert lock_free == [True, True, True]


def _sync_controller(name: str, gate: threading.Event, entered: threading.Event) -> Any:
    @dispatcher.rpc_service(name)
    class Controller(service.ServiceController):
        @dispatcher.rpc_method(service=name, method="work")
        def work(self, request: Any, proxy: Any) -> None:
            entered.set()
            gate.wait(10)

    return Controller


def test_a_sync_server_only_started_arms_no_stop_timer(caplog) -> None:
    # start() without run(): the caller pumps the driver (tests on the memory broker);
    # there is no handler of the server's own to abandon, and nothing to report later
    never = threading.Event()
    controller = _sync_controller("bounded_started", never, threading.Event())
    srv = server.Server(memory(False), "started_q", "started_ex", [controller], stop_timeout=0.1)
    srv.start()
    srv.stop()
    assert srv.driver is not None
    srv.driver.close()
    time.sleep(0.3)
    assert srv._stop_timer is None
    assert "still running" not in caplog.text


def test_a_sync_server_run_reports_a_handler_still_running_after_stop_timeout(caplog) -> None:
    gate, entered = threading.Event(), threading.Event()
    controller = _sync_controller("bounded_run", gate, entered)
    srv = server.Server(memory(False), "run_q", "run_ex", [controller], stop_timeout=0.2)
    broker = MemoryBroker.get(BROKER)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        assert srv.started.wait(5)
        cast = _cast("bounded_run.work")
        broker.publish("run_ex", "bounded_run.work", cast.body, cast.headers)
        assert entered.wait(5)
        srv.stop()
        wait_until(
            lambda: "still running 0.2 s after the stop" in caplog.text, "the report", timeout=5
        )
    finally:
        gate.set()
        thread.join(10)
    assert not thread.is_alive()
