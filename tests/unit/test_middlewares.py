"""The Middlewares chapter of the Tavrida 1.0 docs on the memory broker (sync engine).

Hello calls ``test_world.world``; World has the middlewares under test, added in
its ``__init__`` as the docs show; Hello's response and error handlers record
what reached the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    messages,
    middleware,
    server,
    service,
)
from tavrida2.drivers.memory import MemoryBroker

BROKER = "middlewares"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")


class Recorder(middleware.Middleware):
    """Records what it got and hands on what ``result`` makes of it (the message by default)."""

    def __init__(self, name: str, calls: list[tuple[str, Any]], result: Any = None) -> None:
        self.name = name
        self.calls = calls
        self.result = result

    def process(self, message):
        self.calls.append((self.name, message))
        return message if self.result is None else self.result(message)


def run(
    incoming: Sequence[middleware.Middleware] = (),
    outgoing: Sequence[middleware.Middleware] = (),
    how: str = "call",
    world_raises: bool = False,
    seen: list[tuple[str, Any]] | None = None,
    async_engine: bool = False,
) -> list[tuple[str, Any]]:
    """Client -> Hello -> ``test_world.world(param=12345).<how>()``; what handlers got.

    The sync engine is driven in the test's thread; the async one runs in threads.
    """
    seen = [] if seen is None else seen

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy):
            seen.append(("hello", request))
            getattr(proxy.test_world.world(param=12345), how)()

        @dispatcher.rpc_method(service="test_hello", method="note")
        def note(self, request, proxy, text):
            seen.append(("note", request))

        @dispatcher.rpc_response_method(service="test_world", method="world")
        def world_resp(self, response, proxy, **payload):
            seen.append(("world_resp", response))

        @dispatcher.rpc_error_method(service="test_world", method="world")
        def world_error(self, error, proxy):
            seen.append(("world_error", error))

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            for item in incoming:
                self.add_incoming_middleware(item)
            for item in outgoing:
                self.add_outgoing_middleware(item)

        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, param):
            seen.append(("world", request))
            proxy.test_hello.note(text="sent by world").cast()
            proxy.publish(event="world handled")
            if world_raises:
                raise LookupError("no such planet")
            return {"param": "world response"}

    hello_disc = discovery.LocalDiscovery()
    hello_disc.register_remote_service("test_world", "test_world_exchange")
    HelloController.set_discovery(hello_disc)
    world_disc = discovery.LocalDiscovery()
    world_disc.register_remote_service("test_hello", "test_exchange")
    world_disc.register_local_publisher("test_world", "test_world_notifications")
    WorldController.set_discovery(world_disc)
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=async_engine)
    servers = [
        server.Server(conf, queue_name=queue, exchange_name=exchange, service_list=[cls])
        for queue, exchange, cls in (
            ("test_service", "test_exchange", HelloController),
            ("test_world_service", "test_world_exchange", WorldController),
        )
    ]
    threads = []
    if async_engine:
        threads = server.run_servers(servers)
    else:
        for srv in servers:
            srv.start()

    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("test_hello", "test_exchange")
    with client.RPCClient(config=CONF, discovery=client_disc, source="client_app") as cli:
        cli.test_hello.hello().cast()
    broker = MemoryBroker.get(BROKER)
    if async_engine:
        assert broker.wait_until_idle(timeout=10)
        for srv, thread in zip(servers, threads, strict=True):
            srv.stop()
            thread.join(timeout=5)
    else:
        broker.run_until_idle()
    assert broker.is_idle()
    assert broker.discarded == []
    return seen


def names(seen: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in seen]


def get(seen: list[tuple[str, Any]], name: str) -> Any:
    [message] = [m for n, m in seen if n == name]
    return message


def check_answer(seen: list[tuple[str, Any]], name: str, cls: type[Any]) -> Any:
    answer = get(seen, name)
    hello = get(seen, "hello")
    assert type(answer) is cls
    assert answer.correlation_id == hello.correlation_id
    assert answer.request_id != hello.request_id
    assert answer.headers["source"] == "test_world.world"
    assert answer.headers["destination"] == "test_hello.hello"
    return answer


# -- incoming middlewares --------------------------------------------------------


def test_incoming_middlewares_run_in_the_order_added_before_the_handler() -> None:
    calls: list[tuple[str, Any]] = []

    def bump(message: Any) -> Any:
        payload = {**message.payload, "param": message.payload["param"] + 1}
        return messages.IncomingRequestCall(dict(message.headers), message.context, payload)

    first = Recorder("first", calls, bump)
    second = Recorder("second", calls)
    seen = run(incoming=[first, second], seen=calls)

    assert names(seen) == ["hello", "first", "second", "world", "note", "world_resp"]
    got_by_first, got_by_second = get(seen, "first"), get(seen, "second")
    assert type(got_by_first) is messages.IncomingRequestCall
    assert got_by_first.payload == {"param": 12345}
    assert got_by_second is not got_by_first
    assert got_by_second.payload == {"param": 12346}
    world = get(seen, "world")
    assert world is got_by_second
    assert world.context == {"param": 12346}
    answer = check_answer(seen, "world_resp", messages.IncomingResponse)
    assert answer.payload == {"param": "world response"}
    assert answer.request_id == world.request_id


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_message_replaced_by_incoming_middleware_is_what_the_handlers_proxy_passes_on(
    async_engine: bool,
) -> None:
    def authenticate(message: Any) -> Any:
        headers = {**message.headers, "x-auth-user": "alice"}
        context = {**message.context, "user": "alice"}
        return messages.IncomingRequestCall(headers, context, message.payload)

    seen = run(incoming=[Recorder("auth", [], authenticate)], async_engine=async_engine)

    world, note = get(seen, "world"), get(seen, "note")
    assert world.context == {"user": "alice", "param": 12345}
    assert world.headers["x-auth-user"] == "alice"
    # World's proxy cast test_hello.note: the context and headers of the message
    # its handler got travel on, as for any hop
    assert note.context == {"user": "alice", "param": 12345, "text": "sent by world"}
    assert note.headers["x-auth-user"] == "alice"
    assert note.correlation_id == world.correlation_id
    answer = check_answer(seen, "world_resp", messages.IncomingResponse)
    assert answer.headers["x-auth-user"] == "alice"


def test_incoming_middleware_returning_a_response_answers_the_caller_at_once() -> None:
    calls: list[tuple[str, Any]] = []
    cached = Recorder("cached", calls, lambda m: m.make_response(param="from the cache"))
    after = Recorder("after", calls)
    seen = run(incoming=[cached, after])

    assert names(calls) == ["cached"]
    assert names(seen) == ["hello", "world_resp"]
    answer = check_answer(seen, "world_resp", messages.IncomingResponse)
    assert answer.payload == {"param": "from the cache"}
    assert answer.request_id == calls[0][1].request_id


def test_incoming_middleware_returning_an_error_answers_the_caller_at_once() -> None:
    calls: list[tuple[str, Any]] = []
    deny = Recorder(
        "deny", calls, lambda m: messages.Error.create_by_request(m, PermissionError("denied"))
    )
    seen = run(incoming=[deny])

    assert names(seen) == ["hello", "world_error"]
    answer = check_answer(seen, "world_error", messages.IncomingError)
    assert answer.payload == {"class": "PermissionError", "message": "denied", "code": 1000}


def test_exception_in_incoming_middleware_becomes_an_error_for_the_caller() -> None:
    calls: list[tuple[str, Any]] = []

    def explode(message: Any) -> Any:
        raise ValueError("middleware exploded")

    seen = run(incoming=[Recorder("explode", calls, explode)])

    assert names(calls) == ["explode"]
    assert names(seen) == ["hello", "world_error"]
    answer = check_answer(seen, "world_error", messages.IncomingError)
    assert answer.payload == {"class": "ValueError", "message": "middleware exploded", "code": 1000}
    assert answer.request_id == calls[0][1].request_id


def test_incoming_middleware_returning_another_type_becomes_an_error() -> None:
    seen = run(incoming=[Recorder("wrong", [], lambda m: {"not": "a message"})])

    assert names(seen) == ["hello", "world_error"]
    answer = check_answer(seen, "world_error", messages.IncomingError)
    assert answer.payload["class"] == "tavrida2.exceptions.IncorrectMessage"
    assert answer.payload["code"] == 1031
    assert "{'not': 'a message'}" in answer.payload["message"]


def test_short_circuit_of_a_cast_sends_nothing() -> None:
    calls: list[tuple[str, Any]] = []
    cached = Recorder("cached", calls, lambda m: messages.Response.create_by_request(m, {}))
    seen = run(incoming=[cached], how="cast")

    assert type(calls[0][1]) is messages.IncomingRequestCast
    assert names(seen) == ["hello"]
    assert MemoryBroker.get(BROKER).unroutable == []


# -- outgoing middlewares --------------------------------------------------------


def test_outgoing_middlewares_modify_the_response_in_the_order_added() -> None:
    calls: list[tuple[str, Any]] = []

    def sign(message: Any) -> Any:
        message.payload["signed"] = "by world"
        return message

    def countersign(message: Any) -> Any:
        assert message.payload["signed"] == "by world"
        payload = {**message.payload, "countersigned": True}
        return messages.Response(dict(message.headers), message.context, payload)

    seen = run(
        outgoing=[Recorder("sign", calls, sign), Recorder("countersign", calls, countersign)],
    )

    assert names(calls) == ["sign", "countersign"]
    assert type(calls[0][1]) is messages.Response
    answer = check_answer(seen, "world_resp", messages.IncomingResponse)
    assert answer.payload == {
        "param": "world response",
        "signed": "by world",
        "countersigned": True,
    }
    assert answer.request_id == get(seen, "world").request_id


def test_outgoing_middlewares_get_the_error_of_a_failed_handler() -> None:
    calls: list[tuple[str, Any]] = []
    seen = run(outgoing=[Recorder("out", calls)], world_raises=True)

    [(_, message)] = calls
    assert type(message) is messages.Error
    answer = check_answer(seen, "world_error", messages.IncomingError)
    assert answer.payload == {"class": "LookupError", "message": "no such planet", "code": 1000}
    assert answer.message_id == message.message_id


def test_outgoing_middleware_returning_another_type_becomes_an_error() -> None:
    seen = run(outgoing=[Recorder("wrong", [], lambda m: m.payload)])

    answer = check_answer(seen, "world_error", messages.IncomingError)
    assert answer.payload["class"] == "tavrida2.exceptions.IncorrectOutgoingMessage"
    assert answer.payload["code"] == 1031


def test_outgoing_middlewares_are_not_run_for_proxy_calls_and_publications() -> None:
    calls: list[tuple[str, Any]] = []
    seen = run(outgoing=[Recorder("out", calls)])

    # World's handler cast test_hello.note and published a notification through
    # its proxy: neither went through the outgoing middleware, its answer did
    assert names(seen) == ["hello", "world", "note", "world_resp"]
    assert [type(m) for _, m in calls] == [messages.Response]
    note = get(seen, "note")
    assert type(note) is messages.IncomingRequestCast
    assert note.payload == {"text": "sent by world"}
    assert calls[0][1].message_id == get(seen, "world_resp").message_id
    [published] = MemoryBroker.get(BROKER).unroutable  # nobody subscribes to World
    assert published.exchange == "test_world_notifications"
    assert published.headers["message_type"] == "notification"
