"""De-duplication by ``message_id`` (``middleware.DeduplicationMiddleware``).

The first part drives the middleware on messages built by hand, with a clock of
the test's own; the second runs it on a ``ledger`` server of the memory broker
(both engines), into which the tests publish wire messages as a broker that
redelivers would: the same headers and body twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tavrida2 import config, discovery, dispatcher, exceptions, messages, middleware, server
from tavrida2 import service as service_module
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.messages import ATTEMPT_HEADER, new_id
from tests.unit.bad_input_support import body_of, call_headers

BROKER = "dedup"
LEDGER_QUEUE, LEDGER_EXCHANGE = "ledger_queue", "ledger_exchange"
CALLER_QUEUE, CALLER_EXCHANGE = "caller_queue", "caller_exchange"
SHOP_EVENTS = "shop_events"
REPLY_TO = "caller.on_answer"
LOGGER = "tavrida2.middleware.dedup"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cast(message_id: str | None = None, attempt: int | None = None) -> messages.Message:
    headers = call_headers("ledger.charge", reply_to="", message_id=message_id or new_id())
    if attempt is not None:
        headers[ATTEMPT_HEADER] = attempt
    return messages.IncomingRequestCast(headers, {}, {"amount": 1})


def call(message_id: str | None = None) -> messages.Message:
    headers = call_headers("ledger.charge", message_id=message_id or new_id())
    return messages.IncomingRequestCall(headers, {}, {"amount": 1})


def notification(message_id: str | None = None) -> messages.Message:
    headers = call_headers("", source="shop.sold", reply_to="", message_id=message_id or new_id())
    return messages.IncomingNotification(headers, {}, {"item": "book"})


def passes(dedup: middleware.DeduplicationMiddleware, message: messages.Message) -> bool:
    """True if ``message`` was let through unchanged; False if it was stopped as a duplicate."""
    result = dedup.process(message)
    if result is message:
        return True
    assert isinstance(result, messages.Error)
    assert result.payload["code"] == 1048
    assert result.payload["class"] == "tavrida2.middleware.dedup.DuplicateMessage"
    return False


# -- on messages -------------------------------------------------------------------------


@pytest.mark.parametrize("make", [cast, call, notification], ids=["cast", "call", "notification"])
def test_a_second_copy_of_an_id_is_stopped_and_logged_at_info(
    make: Callable[[str], messages.Message], caplog: pytest.LogCaptureFixture
) -> None:
    dedup = middleware.DeduplicationMiddleware()
    first, second = make("m-1"), make("m-1")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert passes(dedup, first)
        assert not passes(dedup, second)

    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    assert "message_id=m-1" in record.getMessage()
    assert "m-1" in dedup and len(dedup) == 1


def test_the_answer_to_a_duplicate_call_goes_to_its_caller() -> None:
    dedup = middleware.DeduplicationMiddleware()
    assert passes(dedup, call("m-1"))
    duplicate = call("m-1")

    answer = dedup.process(duplicate)

    assert isinstance(answer, messages.Error)
    assert answer.request_id == duplicate.request_id
    assert answer.headers["destination"] == REPLY_TO
    assert "m-1" in answer.payload["message"] and "not run again" in answer.payload["message"]
    assert isinstance(answer.exception, middleware.DuplicateMessage)
    assert exceptions.error_code(answer.exception) == 1048


def test_different_ids_all_pass() -> None:
    dedup = middleware.DeduplicationMiddleware()

    assert all(passes(dedup, cast()) for _ in range(100))
    assert len(dedup) == 100


def test_capacity_forgets_the_oldest_id_first() -> None:
    dedup = middleware.DeduplicationMiddleware(capacity=3)
    for message_id in ("a", "b", "c", "d"):
        assert passes(dedup, cast(message_id))

    assert len(dedup) == 3
    assert "a" not in dedup
    assert [m in dedup for m in ("b", "c", "d")] == [True, True, True]
    # a duplicate does not make its id younger: "b" is still the oldest
    assert not passes(dedup, cast("b"))
    assert passes(dedup, cast("a"))  # forgotten: it runs again, and "b" goes
    assert "b" not in dedup
    assert not passes(dedup, cast("c"))


def test_ttl_forgets_ids_after_that_many_seconds() -> None:
    clock = Clock()
    dedup = middleware.DeduplicationMiddleware(ttl=60, clock=clock)
    assert passes(dedup, cast("a"))
    clock.now += 30
    assert passes(dedup, cast("b"))

    clock.now += 29.9
    assert not passes(dedup, cast("a"))
    clock.now += 0.1  # "a" is 60 s old
    assert "a" not in dedup and "b" in dedup
    assert passes(dedup, cast("a"))
    clock.now += 30
    assert not passes(dedup, cast("a"))
    assert "b" not in dedup
    assert len(dedup) == 1


def test_a_retry_with_a_higher_attempt_passes_the_same_attempt_does_not() -> None:
    dedup = middleware.DeduplicationMiddleware()

    assert passes(dedup, cast("m", attempt=None))  # no header: attempt 1
    assert not passes(dedup, cast("m", attempt=1))
    assert passes(dedup, cast("m", attempt=2))  # the server retries a failed handler
    assert not passes(dedup, cast("m", attempt=2))  # that retry redelivered
    assert not passes(dedup, cast("m", attempt=1))  # an older copy
    assert passes(dedup, cast("m", attempt=3))


@pytest.mark.parametrize("bad", ["2", True, 0, -3, 1.5, None])
def test_an_attempt_header_that_is_no_positive_integer_counts_as_attempt_1(bad: Any) -> None:
    dedup = middleware.DeduplicationMiddleware()
    assert passes(dedup, cast("m", attempt=2))
    message = cast("m")
    message.headers[ATTEMPT_HEADER] = bad

    assert not passes(dedup, message)


def test_after_handled_no_attempt_passes_after_failed_a_cast_runs_again() -> None:
    dedup = middleware.DeduplicationMiddleware()
    first = cast("ok")
    assert passes(dedup, first)
    dedup.handled(first)
    # a retry caused by another controller of the same delivery: this one is done
    assert not passes(dedup, cast("ok", attempt=2))

    failing = cast("ko")
    assert passes(dedup, failing)
    dedup.failed(failing, RuntimeError("down"))
    assert "ko" not in dedup
    assert passes(dedup, cast("ko"))  # e.g. a dead letter replayed into this process


def test_a_failed_call_stays_seen_its_caller_got_the_error() -> None:
    dedup = middleware.DeduplicationMiddleware()
    request = call("c")
    assert passes(dedup, request)

    dedup.failed(request, RuntimeError("down"))

    assert not passes(dedup, call("c"))


def test_forget_and_clear() -> None:
    dedup = middleware.DeduplicationMiddleware()
    for message_id in ("a", "b"):
        assert passes(dedup, cast(message_id))

    assert dedup.forget("a") is True
    assert dedup.forget("a") is False
    assert passes(dedup, cast("a"))
    dedup.clear()
    assert len(dedup) == 0
    assert passes(dedup, cast("b"))


def test_with_calls_false_calls_pass_and_are_not_remembered() -> None:
    dedup = middleware.DeduplicationMiddleware(calls=False)

    assert passes(dedup, call("c")) and passes(dedup, call("c"))
    assert "c" not in dedup
    assert passes(dedup, cast("k")) and not passes(dedup, cast("k"))


@pytest.mark.parametrize(
    "arguments",
    [{"capacity": 0}, {"capacity": 2.5}, {"capacity": True}, {"ttl": 0}, {"ttl": -1}, {"ttl": "1"}],
)
def test_wrong_arguments_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(arguments))):
        middleware.DeduplicationMiddleware(**arguments)


def test_it_is_a_middleware_with_a_readable_repr() -> None:
    dedup = middleware.DeduplicationMiddleware(capacity=5, ttl=2)

    assert isinstance(dedup, middleware.Middleware)
    assert repr(dedup) == ("DeduplicationMiddleware(capacity=5, ttl=2.0, calls=True, remembered=0)")


def test_threads_let_each_id_through_exactly_once() -> None:
    dedup = middleware.DeduplicationMiddleware(capacity=100_000)
    ids = [f"id-{n}" for n in range(2000)]
    passed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        mine = list(ids)
        random.Random(seed).shuffle(mine)
        start.wait()
        for message_id in mine:
            message = cast(message_id)
            if dedup.process(message) is message:
                with lock:
                    passed.append(message_id)
                dedup.handled(message)
            else:
                dedup.forget(f"unknown-{message_id}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)

    assert sorted(passed) == sorted(ids)
    assert len(dedup) == len(ids)


def test_threads_keep_the_capacity_bound() -> None:
    dedup = middleware.DeduplicationMiddleware(capacity=50)

    def worker() -> None:
        for _ in range(2000):
            dedup.process(cast())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(dedup) == 50


# -- on a running server -----------------------------------------------------------------


class Ledger:
    """A ``ledger`` server (one engine) whose controller has ``dedup``, and a ``caller``.

    ``ledger.charge`` records ``(message_id, attempt)`` and raises while
    ``failures`` is not empty; ``on_sold`` records notifications of ``shop.sold``;
    the caller records the answers to calls.
    """

    def __init__(self, async_engine: bool, dedup: middleware.DeduplicationMiddleware) -> None:
        self.async_engine = async_engine
        self.dedup = dedup
        self.broker = MemoryBroker.get(BROKER)
        self.charged: list[tuple[str, int]] = []
        self.sold: list[str] = []
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[str] = []
        self._threads: list[threading.Thread] = []
        charged, sold, answers, failures = self.charged, self.sold, self.answers, self.failures

        @dispatcher.rpc_service("ledger")
        class LedgerController(service_module.ServiceController):
            def __init__(self, postprocessor):
                super().__init__(postprocessor)
                self.add_incoming_middleware(dedup)

            @dispatcher.rpc_method(method="charge")
            def charge(self, request, proxy, amount):
                charged.append((request.message_id, request.headers.get(ATTEMPT_HEADER, 1)))
                if failures:
                    raise RuntimeError(failures.pop())
                return {"charged": amount}

            @dispatcher.subscription_method(service="shop", method="sold")
            def on_sold(self, message, proxy, item):
                sold.append(message.message_id)

        @dispatcher.rpc_service("caller")
        class Caller(service_module.ServiceController):
            @dispatcher.rpc_response_method(service="ledger", method="charge")
            def on_response(self, response, proxy, **payload):
                answers.append(("response", payload))

            @dispatcher.rpc_error_method(service="ledger", method="charge")
            def on_error(self, error, proxy):
                answers.append(("error", dict(error.payload)))

        disc = discovery.LocalDiscovery()
        disc.register_remote_service("caller", CALLER_EXCHANGE)
        disc.register_remote_service("ledger", LEDGER_EXCHANGE)
        disc.register_remote_publisher("shop", SHOP_EVENTS)
        LedgerController.set_discovery(disc)
        Caller.set_discovery(disc)
        conf = config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=async_engine)
        policy = DeadLetterPolicy.for_queue(LEDGER_QUEUE, max_attempts=3, retry_delay=0.01)
        self.servers = [
            server.Server(
                conf, LEDGER_QUEUE, LEDGER_EXCHANGE, [LedgerController], dead_letters=policy
            ),
            server.Server(conf, CALLER_QUEUE, CALLER_EXCHANGE, [Caller]),
        ]

    def start(self) -> None:
        if self.async_engine:
            self._threads = server.run_servers(self.servers)
        else:
            for srv in self.servers:
                srv.start()

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()
            if not self.async_engine and srv.driver is not None:
                srv.driver.close()
        for thread in self._threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "a server did not stop"

    def publish(self, headers: dict[str, Any], payload: dict[str, Any]) -> None:
        """Publish a wire message (the same ``headers`` twice: a duplicate)."""
        if headers["message_type"] == "notification":
            exchange, key = SHOP_EVENTS, "shop.sold"
        else:
            exchange, key = LEDGER_EXCHANGE, headers["destination"]
        self.broker.publish(exchange, key, body_of(payload), dict(headers), None, True)

    def settle(self, until: Callable[[], bool] = lambda: True, timeout: float = 5.0) -> None:
        """Deliver until nothing is left to deliver and ``until()`` holds (retries come later)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.async_engine:
                assert self.broker.wait_until_idle(timeout=timeout)
            else:
                self.broker.run_until_idle()
            if until() and self.broker.is_idle() and self._retries() == 0:
                return
            assert time.monotonic() < deadline, "timed out settling"
            time.sleep(0.005)

    def _retries(self) -> int:
        return self.broker.message_count(f"{LEDGER_QUEUE}.retry")

    def assert_nothing_left(self) -> None:
        """Every delivery was acknowledged: no queue holds anything, nothing dead-lettered."""
        for queue in (LEDGER_QUEUE, CALLER_QUEUE, f"{LEDGER_QUEUE}.dlq"):
            assert self.broker.message_count(queue) == 0, queue
        assert self.broker.discarded == []


ENGINES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


@pytest.fixture(params=ENGINES)
def async_engine(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def ledger(async_engine: bool) -> Iterator[Ledger]:
    MemoryBroker.reset_all()
    rig = Ledger(async_engine, middleware.DeduplicationMiddleware(capacity=3))
    rig.start()
    try:
        yield rig
    finally:
        rig.stop()
        MemoryBroker.reset_all()


def cast_headers(message_id: str | None = None) -> dict[str, Any]:
    return call_headers("ledger.charge", reply_to="", message_id=message_id or new_id())


def test_a_duplicate_cast_runs_the_handler_once(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    headers = cast_headers("dup-1")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        ledger.publish(headers, {"amount": 5})
        ledger.settle(lambda: len(ledger.charged) == 1)
        ledger.publish(headers, {"amount": 5})
        ledger.settle()

    assert ledger.charged == [("dup-1", 1)]
    assert any("message_id=dup-1" in r.getMessage() for r in caplog.records if r.name == LOGGER)
    ledger.assert_nothing_left()


def test_two_copies_published_back_to_back_run_once(ledger: Ledger) -> None:
    headers = cast_headers()

    ledger.publish(headers, {"amount": 5})
    ledger.publish(headers, {"amount": 5})
    ledger.settle(lambda: len(ledger.charged) >= 1)

    assert ledger.charged == [(headers["message_id"], 1)]
    ledger.assert_nothing_left()


def test_casts_with_different_ids_all_run(ledger: Ledger) -> None:
    ids = [new_id() for _ in range(3)]

    for message_id in ids:
        ledger.publish(cast_headers(message_id), {"amount": 1})
    ledger.settle(lambda: len(ledger.charged) == 3)

    assert sorted(ledger.charged) == sorted((m, 1) for m in ids)
    ledger.assert_nothing_left()


def test_a_duplicate_notification_runs_its_subscriber_once(ledger: Ledger) -> None:
    headers = call_headers("", source="shop.sold", reply_to="", message_type="notification")

    for _ in range(2):
        ledger.publish(headers, {"item": "book"})
        ledger.settle(lambda: len(ledger.sold) == 1)

    assert ledger.sold == [headers["message_id"]]
    ledger.assert_nothing_left()


def test_a_duplicate_call_is_answered_with_duplicate_message_not_run(ledger: Ledger) -> None:
    headers = call_headers("ledger.charge", reply_to=REPLY_TO)

    ledger.publish(headers, {"amount": 7})
    ledger.settle(lambda: len(ledger.answers) == 1)
    ledger.publish(headers, {"amount": 7})
    ledger.settle(lambda: len(ledger.answers) == 2)

    assert ledger.charged == [(headers["message_id"], 1)]
    (first, response), (second, error) = ledger.answers
    assert (first, response) == ("response", {"charged": 7})
    assert second == "error"
    assert error["code"] == 1048
    assert error["class"] == "tavrida2.middleware.dedup.DuplicateMessage"
    ledger.assert_nothing_left()


def test_an_id_pushed_out_by_capacity_runs_again(ledger: Ledger) -> None:
    # capacity 3: a, b, c, d -> "a" is forgotten
    headers = {m: cast_headers(m) for m in ("a", "b", "c", "d")}
    for message_id in ("a", "b", "c", "d"):
        ledger.publish(headers[message_id], {"amount": 1})
    ledger.settle(lambda: len(ledger.charged) == 4)

    ledger.publish(headers["a"], {"amount": 1})
    ledger.publish(headers["d"], {"amount": 1})
    ledger.settle(lambda: len(ledger.charged) == 5)

    assert [m for m, _ in ledger.charged] == ["a", "b", "c", "d", "a"]
    ledger.assert_nothing_left()


def test_an_id_past_its_ttl_runs_again(async_engine: bool) -> None:
    MemoryBroker.reset_all()
    clock = Clock()
    rig = Ledger(async_engine, middleware.DeduplicationMiddleware(ttl=10, clock=clock))
    rig.start()
    try:
        headers = cast_headers("t")
        rig.publish(headers, {"amount": 1})
        rig.settle(lambda: len(rig.charged) == 1)
        clock.now += 9
        rig.publish(headers, {"amount": 1})
        rig.settle()
        assert len(rig.charged) == 1
        clock.now += 1
        rig.publish(headers, {"amount": 1})
        rig.settle(lambda: len(rig.charged) == 2)

        assert rig.charged == [("t", 1), ("t", 1)]
        rig.assert_nothing_left()
    finally:
        rig.stop()
        MemoryBroker.reset_all()


def test_the_retry_of_a_failed_cast_is_not_taken_for_a_duplicate(ledger: Ledger) -> None:
    ledger.failures.extend(["card service down", "card service down"])
    headers = cast_headers("retried")

    ledger.publish(headers, {"amount": 3})
    ledger.settle(lambda: len(ledger.charged) == 3)

    # attempts 1 and 2 failed, the server retried each; attempt 3 succeeded
    assert ledger.charged == [("retried", 1), ("retried", 2), ("retried", 3)]
    ledger.assert_nothing_left()
    # the broker redelivering the original (its ack lost) is a duplicate now
    ledger.publish(headers, {"amount": 3})
    ledger.settle()
    assert len(ledger.charged) == 3
    ledger.assert_nothing_left()


def test_a_copy_of_a_failed_attempt_runs_again(ledger: Ledger) -> None:
    """The controller tells the middleware that the handler failed: its id is forgotten."""
    ledger.failures.append("card service down")
    headers = cast_headers("failed-once")
    headers[ATTEMPT_HEADER] = 3  # the last attempt: a failure dead-letters it

    ledger.publish(headers, {"amount": 3})
    ledger.settle(lambda: len(ledger.charged) == 1)
    assert ledger.broker.message_count(f"{LEDGER_QUEUE}.dlq") == 1

    # the same attempt again (a replay of the dead letter, a redelivery): it runs
    ledger.publish(headers, {"amount": 3})
    ledger.settle(lambda: len(ledger.charged) == 2)
    assert ledger.charged == [("failed-once", 3), ("failed-once", 3)]
    # handled now: a third copy is a duplicate
    assert not ledger.dedup.forget("no-such-id")
    ledger.publish(headers, {"amount": 3})
    ledger.settle()
    assert len(ledger.charged) == 2
