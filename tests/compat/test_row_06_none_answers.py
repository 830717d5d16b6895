"""Row 6: what a request handler returning ``None`` or ``{}`` sends, per kind of caller.

Tavrida 1.0 sent an answer only for a result that is a ``Response``, an
``Error`` or a non-empty dict: ``None`` and ``{}`` sent nothing, and the
calling service's response handler was not called. tavrida2 keeps that for
1.0-style calls (``proxy.<service>.<method>(...).call()`` from a handler,
answered to the caller's service), and answers a caller that waits for its
answer (direct reply-to) with an empty Response instead of leaving it to its
timeout.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tavrida2 import dispatcher, messages, service
from tests.compat.memory_rig import Rig, body_10, headers_10

RESULTS: dict[str, Any] = {"none": None, "empty_dict": {}, "empty_list": []}


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest) -> Any:
    made = Rig(request.param)
    yield made
    made.stop()


def world_service(mode: str) -> type[service.ServiceController]:
    @dispatcher.rpc_service("n_world")
    class World(service.ServiceController):
        @dispatcher.rpc_method(service="n_world", method="world")
        def world(self, request, proxy, param):
            if mode == "empty_response":
                return request.make_response()
            return RESULTS[mode]

    return World


def hello_service(seen: list[Any]) -> type[service.ServiceController]:
    @dispatcher.rpc_service("n_hello")
    class Hello(service.ServiceController):
        @dispatcher.rpc_method(service="n_hello", method="hello")
        def hello(self, request, proxy, param):
            seen.append("hello")
            proxy.n_world.world(param=param).call()  # 1.0's call: the answer goes to world_resp

        @dispatcher.rpc_response_method(service="n_world", method="world")
        def world_resp(self, response, proxy):
            seen.append(("world_resp", response.payload))

        @dispatcher.rpc_error_method(service="n_world", method="world")
        def world_error(self, error, proxy):
            seen.append(("world_error", error.payload))

    return Hello


def serve_both(rig: Rig, mode: str, seen: list[Any]) -> None:
    world, hello = world_service(mode), hello_service(seen)
    rig.serve("n_world_queue", "n_world_exchange", world)
    rig.serve("n_hello_queue", "n_hello_exchange", hello)
    world.set_discovery(rig.discovery)
    hello.set_discovery(rig.discovery)


@pytest.mark.parametrize("mode", ["none", "empty_dict"])
def test_row_06a_a_1_0_style_call_gets_no_answer(rig: Rig, mode: str) -> None:
    seen: list[Any] = []
    serve_both(rig, mode, seen)

    rig.run(lambda cli: cli.n_hello.hello(param=1).cast())

    assert seen == ["hello"]  # world answered nothing: world_resp never ran
    assert rig.broker.unroutable == rig.broker.discarded == []
    assert rig.broker.messages_in("n_hello_queue") == []


def test_row_06a_an_explicit_empty_response_is_sent_as_in_1_0(rig: Rig) -> None:
    seen: list[Any] = []
    serve_both(rig, "empty_response", seen)

    rig.run(lambda cli: cli.n_hello.hello(param=1).cast())

    assert seen == ["hello", ("world_resp", {})]


@pytest.mark.parametrize("mode", ["none", "empty_dict"])
def test_row_06b_kept_a_caller_that_waits_gets_an_empty_response(rig: Rig, mode: str) -> None:
    rig.serve("n_world_queue", "n_world_exchange", world_service(mode))

    answer = rig.run(lambda cli: cli.n_world.world(param=2).call(timeout=5))

    assert type(answer) is messages.IncomingResponse
    assert answer.payload == {}


@pytest.mark.parametrize("mode", ["none", "empty_dict"])
def test_row_06a_a_call_from_a_tavrida_1_0_service_gets_no_answer(rig: Rig, mode: str) -> None:
    """A 1.0 service's request (reply_to header, no AMQP reply_to): as 1.0 answered it."""
    world = world_service(mode)
    rig.serve("n_world_queue", "n_world_exchange", world)
    rig.discovery.register_remote_service("old_caller", "old_caller_exchange")
    world.set_discovery(rig.discovery)
    rig.broker.declare_exchange("old_caller_exchange")
    rig.broker.declare_queue("old_caller_queue")
    rig.broker.bind_queue("old_caller_queue", "old_caller_exchange", "old_caller.#")
    rig.run()

    rig.publish_raw(
        "n_world_exchange",
        "n_world.world",
        headers_10("request", "old_caller.go", "n_world.world", reply_to="old_caller.go"),
        body_10({"param": 3}),
    )
    rig.run()

    assert rig.broker.messages_in("old_caller_queue") == []
    assert rig.broker.unroutable == rig.broker.discarded == []


def test_row_06c_kept_another_empty_result_is_an_error_not_silence(rig: Rig) -> None:
    """1.0 sent nothing for any false result (``[]``, ``0``, ``""``); tavrida2 keeps its
    WrongResponse: a handler returning a list has a bug its caller should hear of."""
    seen: list[Any] = []
    serve_both(rig, "empty_list", seen)

    rig.run(lambda cli: cli.n_hello.hello(param=1).cast())

    [first, (kind, payload)] = seen
    assert first == "hello"
    assert (kind, payload["class"], payload["code"]) == (
        "world_error",
        "tavrida2.exceptions.WrongResponse",
        1009,
    )


def test_row_06c_kept_a_cast_returning_a_wrong_type_is_logged_and_acknowledged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """1.0 dropped a cast handler's result silently; tavrida2 logs a wrong one (no retry)."""
    rig.serve("n_world_queue", "n_world_exchange", world_service("empty_list"))

    with caplog.at_level(logging.ERROR, logger="tavrida2.service"):
        rig.run(lambda cli: cli.n_world.world(param=4).cast())

    [record] = [r for r in caplog.records if "Got incorrect response []" in r.getMessage()]
    assert record.getMessage().startswith("n_world: ")
    assert rig.broker.messages_in("n_world_queue.retry") == []
    assert rig.broker.messages_in("n_world_queue.dlq") == []
