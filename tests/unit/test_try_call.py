"""``try_call``: ``(ok, (code, result))`` instead of an answer or an exception (memory broker).

Each test runs on both engines with the calls tests' ``Bus`` (sync client and
sync servers, async client and async servers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tavrida2 import client, config, dispatcher, exceptions, messages, service
from tests.unit.test_calls import (
    CALC_EXCHANGE,
    CALC_QUEUE,
    FRONT_EXCHANGE,
    FRONT_QUEUE,
    SOURCE,
    Bus,
    calc_discovery,
    calc_service,
)


@pytest.fixture(params=["sync", "async"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    rig = Bus(request.param)
    yield rig
    rig.stop()


@pytest.fixture
def calc(bus: Bus) -> Bus:
    seen: list[messages.Message] = []
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))
    return bus


def test_an_answer_is_ok_with_code_0_and_the_payload(calc: Bus) -> None:
    outcome = calc.run(lambda cli: cli.calc.add(a=2, b=3).try_call(timeout=5))
    assert outcome == (True, (0, {"sum": 5}))


def test_the_client_entry_point_takes_service_dot_method_and_a_payload(calc: Bus) -> None:
    outcome = calc.run(lambda cli: cli.try_call("calc.add", {"a": 1, "b": 1}, timeout=5))
    assert outcome == (True, (0, {"sum": 2}))


def test_an_error_answer_is_ok_with_its_code_and_payload(calc: Bus) -> None:
    ok, (code, result) = calc.run(
        lambda cli: cli.calc.fail(kind="builtin", text="no").try_call(timeout=5)
    )
    assert ok is True
    assert code == exceptions.UNKNOWN_ERROR
    assert result == {"class": "ValueError", "message": "no", "code": code}


def test_wrong_parameters_come_back_with_their_code(calc: Bus) -> None:
    ok, (code, result) = calc.run(lambda cli: cli.try_call("calc.add", {"a": 1}, timeout=5))
    assert (ok, code) == (True, exceptions.WrongParameters().code)
    assert result["code"] == 1041 and "b" in result["message"]


def test_no_answer_in_time_is_not_ok_with_the_timeout_code(bus: Bus) -> None:
    bus.declare_unconsumed_calc_queue()
    ok, (code, result) = bus.run(lambda cli: cli.calc.add(a=1, b=2).try_call(timeout=0.2))
    assert (ok, code) == (False, 1058)
    assert result["class"] == "tavrida2.exceptions.CallTimeout" and result["code"] == 1058
    bus.broker.delete_queue(CALC_QUEUE)


def test_a_request_nobody_takes_is_not_ok_and_unroutable(bus: Bus) -> None:
    bus.broker.declare_exchange(CALC_EXCHANGE)
    ok, (code, result) = bus.run(lambda cli: cli.calc.add(a=1, b=2).try_call(timeout=1))
    assert (ok, code, result["class"]) == (False, 1042, "tavrida2.exceptions.UnroutableMessage")


def test_a_closed_client_is_a_connection_failure_not_an_exception() -> None:
    conf = config.ConnectionConfig.from_url("memory://try_call_closed")
    cli = client.RPCClient(conf, calc_discovery(), source=SOURCE)
    method = cli.calc.add
    cli.close()
    ok, (code, result) = method(a=1, b=2).try_call(timeout=1)
    assert (ok, code, result["class"]) == (False, 1052, "tavrida2.exceptions.ConnectionClosed")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda cli: cli.calc.add(a=1, b=2).try_call(timeout=0), ValueError),
        (lambda cli: cli.calc.add(a=1, b=2).try_call(timeout="5"), TypeError),
        (lambda cli: cli.try_call("calc.add", [1, 2]), TypeError),
        (lambda cli: cli.try_call("nowhere.add", {}), exceptions.UnableToDiscover),
        (lambda cli: cli.try_call("calc", {}), exceptions.WrongEntryPointFormat),
    ],
)
def test_programmer_errors_still_raise(calc: Bus, call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        calc.run(call)


def test_a_handler_may_try_call_too(bus: Bus) -> None:
    seen: list[messages.Message] = []
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))
    disc = calc_discovery()

    if bus.is_async:

        @dispatcher.rpc_service("front")
        class Front(service.ServiceController):
            @dispatcher.rpc_method(method="ask")
            async def ask(self, request, proxy):
                good = await proxy.calc.add(a=1, b=2).try_call(timeout=5)
                bad = await proxy.calc.fail(kind="builtin", text="x").try_call(timeout=5)
                return {"good": list(good), "bad_code": bad[1][0]}

    else:

        @dispatcher.rpc_service("front")
        class Front(service.ServiceController):  # type: ignore[no-redef]
            @dispatcher.rpc_method(method="ask")
            def ask(self, request, proxy):
                good = proxy.calc.add(a=1, b=2).try_call(timeout=5)
                bad = proxy.calc.fail(kind="builtin", text="x").try_call(timeout=5)
                return {"good": list(good), "bad_code": bad[1][0]}

    Front.set_discovery(disc)
    bus.serve(FRONT_QUEUE, FRONT_EXCHANGE, Front)
    answer = bus.run(lambda cli: cli.front.ask().call(timeout=10))
    assert answer.payload == {"good": [True, [0, {"sum": 3}]], "bad_code": 1000}
