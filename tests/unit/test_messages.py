"""The Messages chapter of the Tavrida 1.0 docs: properties, headers, context, wire body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    entry_point,
    messages,
    server,
    service,
)
from tavrida2.drivers.memory import MemoryBroker

BROKER = "messages"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")
TAVRIDA_HEADERS = {
    "correlation_id",
    "request_id",
    "message_id",
    "message_type",
    "reply_to",
    "source",
    "destination",
}


def serve(queue: str, exchange: str, services: list[type[Any]]) -> None:
    server.Server(CONF, queue_name=queue, exchange_name=exchange, service_list=services).start()


def drain() -> None:
    broker = MemoryBroker.get(BROKER)
    assert broker.run_until_idle() > 0
    assert broker.is_idle()
    assert broker.unroutable == broker.discarded == []


def bind(cls: type[Any], remote: dict[str, str]) -> None:
    disc = discovery.LocalDiscovery()
    for name, exchange in remote.items():
        disc.register_remote_service(name, exchange)
    cls.set_discovery(disc)


def incoming_call(**headers: Any) -> messages.IncomingRequestCall:
    base = {
        "correlation_id": "corr-1",
        "request_id": "req-1",
        "message_id": "msg-1",
        "message_type": "request",
        "reply_to": "test_hello.hello",
        "source": "test_hello.hello",
        "destination": "test_world.world",
        "x-user": "alice",
    }
    base.update(headers)
    return messages.IncomingRequestCall(base, {"param": 12345}, {"param": 12345})


# -- properties and headers of incoming messages ---------------------------------


def test_incoming_request_properties_are_the_documented_headers() -> None:
    seen: list[dict[str, Any]] = []

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, param):
            snapshot = {
                name: getattr(request, name)
                for name in (
                    "correlation_id",
                    "request_id",
                    "message_id",
                    "message_type",
                    "type",
                    "reply_to",
                    "source",
                    "destination",
                )
            }
            snapshot["headers"] = dict(request.headers)
            snapshot["context"] = dict(request.context)
            snapshot["payload"] = dict(request.payload)
            # headers are mutable, the properties are not synchronised with them
            request.headers["correlation_id"] = "changed"
            snapshot["correlation_id_after"] = request.correlation_id
            snapshot["class"] = type(request)
            seen.append(snapshot)
            # explicit: None would send no answer to this 1.0-style call (as in 1.0)
            return request.make_response()

    bind(WorldController, {"test_hello": "test_exchange"})
    serve("test_world_service", "test_world_exchange", [WorldController])
    broker = MemoryBroker.get(BROKER)
    broker.declare_queue("hello_inbox")
    broker.bind_queue("hello_inbox", "test_exchange", "test_hello.#")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("test_world", "test_world_exchange")
    with client.RPCClient(config=CONF, discovery=disc, source="test_hello.hello") as cli:
        cli.test_world.world(param=12345).call(correlation_id="corr-1", wait=False)
    assert broker.run_until_idle() == 1

    [got] = seen
    headers = got["headers"]
    assert got["class"] is messages.IncomingRequestCall
    assert set(headers) == TAVRIDA_HEADERS
    assert got["correlation_id"] == headers["correlation_id"] == "corr-1"
    assert got["correlation_id_after"] == "corr-1"
    assert got["request_id"] == headers["request_id"]
    assert got["message_id"] == headers["message_id"]
    assert got["request_id"] != got["message_id"]
    assert got["message_type"] == got["type"] == headers["message_type"] == "request"
    for name, kind in (("reply_to", entry_point.EntryPoint), ("source", entry_point.Source)):
        assert isinstance(got[name], kind)
        assert (got[name].service, got[name].method) == ("test_hello", "hello")
        assert headers[name] == "test_hello.hello"
    assert isinstance(got["destination"], entry_point.Destination)
    assert (got["destination"].service, got["destination"].method) == ("test_world", "world")
    assert got["payload"] == {"param": 12345}
    assert got["context"] == {"param": 12345}

    # the empty Response went back to reply_to, with the correlation_id property
    # (the handler changed only the header)
    answer = broker.get_message("hello_inbox")
    assert answer is not None
    assert answer.routing_key == "test_hello.hello"
    assert json.loads(answer.body) == {"context": {"param": 12345}, "payload": {}}
    assert answer.headers["correlation_id"] == "corr-1"
    assert answer.headers["request_id"] == got["request_id"]
    assert answer.headers["message_id"] not in ("", got["message_id"])
    assert answer.headers["message_type"] == "response"
    assert answer.headers["source"] == "test_world.world"
    assert answer.headers["destination"] == "test_hello.hello"
    assert answer.headers["reply_to"] == ""


def test_incoming_message_class_follows_message_type_and_reply_to() -> None:
    factory = messages.IncomingMessageFactory()
    assert factory.get_class("request", "test_hello.hello") is messages.IncomingRequestCall
    assert factory.get_class("request", "") is messages.IncomingRequestCast
    assert factory.get_class("response", "") is messages.IncomingResponse
    assert factory.get_class("error", "") is messages.IncomingError
    assert factory.get_class("notification", "") is messages.IncomingNotification


# -- context: updated with the payload at each hop --------------------------------


def test_context_holds_the_parameters_of_every_hop_later_keys_overwrite() -> None:
    seen: dict[str, Any] = {}

    @dispatcher.rpc_service("service_a")
    class ServiceA(service.ServiceController):
        @dispatcher.rpc_method(service="service_a", method="a")
        def a(self, request, proxy, x, shared):
            seen["a"] = (request, dict(request.context))
            proxy.service_b.b(y=2, shared="from_b").call()

        @dispatcher.rpc_response_method(service="service_b", method="b")
        def b_resp(self, response, proxy, b_result):
            seen["b_resp"] = (response, dict(response.context))

    @dispatcher.rpc_service("service_b")
    class ServiceB(service.ServiceController):
        @dispatcher.rpc_method(service="service_b", method="b")
        def b(self, request, proxy, y, shared):
            seen["b"] = (request, dict(request.context))
            proxy.service_c.c(z=3).cast()
            return {"b_result": "ok"}

    @dispatcher.rpc_service("service_c")
    class ServiceC(service.ServiceController):
        @dispatcher.rpc_method(service="service_c", method="c")
        def c(self, request, proxy, z):
            seen["c"] = (request, dict(request.context))

    bind(ServiceA, {"service_b": "exchange_b"})
    bind(ServiceB, {"service_a": "exchange_a", "service_c": "exchange_c"})
    bind(ServiceC, {})
    serve("queue_a", "exchange_a", [ServiceA])
    serve("queue_b", "exchange_b", [ServiceB])
    serve("queue_c", "exchange_c", [ServiceC])
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("service_a", "exchange_a")
    with client.RPCClient(
        config=CONF, discovery=disc, source="client_app", context={"user": "alice"}
    ) as cli:
        cli.service_a.a(x=1, shared="from_a").cast(correlation_id="chain-1")
    drain()

    assert seen["a"][1] == {"user": "alice", "x": 1, "shared": "from_a"}
    assert seen["b"][1] == {"user": "alice", "x": 1, "shared": "from_b", "y": 2}
    assert seen["c"][1] == {"user": "alice", "x": 1, "shared": "from_b", "y": 2, "z": 3}
    assert seen["b_resp"][1] == {
        "user": "alice",
        "x": 1,
        "shared": "from_b",
        "y": 2,
        "b_result": "ok",
    }
    a, b, c, b_resp = (seen[k][0] for k in ("a", "b", "c", "b_resp"))
    assert {m.correlation_id for m in (a, b, c, b_resp)} == {"chain-1"}
    assert len({a.request_id, b.request_id, c.request_id}) == 3
    assert b_resp.request_id == b.request_id
    assert len({m.message_id for m in (a, b, c, b_resp)}) == 4
    assert (type(a), type(b), type(c)) == (
        messages.IncomingRequestCast,
        messages.IncomingRequestCall,
        messages.IncomingRequestCast,
    )
    assert str(c.source) == "service_b.b"
    assert str(b_resp.destination) == "service_a.a"


# -- under the hood: the wire body ----------------------------------------------


def test_amqp_message_body_is_json_with_context_and_payload_as_utf8_bytes() -> None:
    request = messages.Request(
        {"source": "test_hello.hello", "destination": "test_world.world", "x-user": "alice"},
        {"some_key": "some_value", "greeting": "привет"},
        {"parameter": "value"},
    )
    amqp = messages.AMQPMessage.create_from_message(request)
    assert isinstance(amqp.body, bytes)
    assert "привет".encode() in amqp.body
    assert json.loads(amqp.body) == {
        "context": {"some_key": "some_value", "greeting": "привет"},
        "payload": {"parameter": "value"},
    }
    assert amqp.headers == request.headers
    assert amqp.headers["x-user"] == "alice"
    assert amqp.body_deserialize() == json.loads(amqp.body)
    assert messages.AMQPMessage(amqp.body.decode(), {}).body_deserialize() == json.loads(amqp.body)
    amqp.validate()

    incoming = messages.IncomingMessageFactory().create(amqp)
    assert type(incoming) is messages.IncomingRequestCast
    assert incoming.payload == {"parameter": "value"}
    assert incoming.context == {"some_key": "some_value", "greeting": "привет"}
    assert incoming.headers == request.headers
    assert incoming.headers is not request.headers


def test_on_the_wire_a_request_is_headers_and_a_json_body() -> None:
    broker = MemoryBroker.get(BROKER)
    broker.declare_exchange("test_exchange")
    broker.declare_queue("test_service")
    broker.bind_queue("test_service", "test_exchange", "test_hello.#")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("test_hello", "test_exchange")
    with client.RPCClient(
        config=CONF, discovery=disc, source="client_app", headers={"x-user": "alice"}
    ) as cli:
        cli.test_hello.hello(param1="value1", param2="value2").cast(correlation_id="123-456")

    stored = broker.get_message("test_service")
    assert stored is not None
    assert (stored.exchange, stored.routing_key) == ("test_exchange", "test_hello.hello")
    assert stored.properties["content_type"] == "application/json"
    assert json.loads(stored.body.decode("utf-8")) == {
        "context": {},
        "payload": {"param1": "value1", "param2": "value2"},
    }
    assert set(stored.headers) == TAVRIDA_HEADERS | {"x-user"}
    assert stored.headers["x-user"] == "alice"
    assert stored.headers["correlation_id"] == "123-456"
    assert stored.headers["message_type"] == "request"
    assert stored.headers["source"] == "client_app"
    assert stored.headers["destination"] == "test_hello.hello"
    assert stored.headers["reply_to"] == ""
    assert stored.headers["request_id"] != stored.headers["message_id"]


# -- outgoing messages -----------------------------------------------------------


@pytest.mark.parametrize("how", ["create_by_request", "make_response"])
def test_response_to_a_request(how: str) -> None:
    request = incoming_call()
    if how == "create_by_request":
        response = messages.Response.create_by_request(request, {"param": "world response"})
    else:
        response = request.make_response(param="world response")

    assert type(response) is messages.Response
    assert isinstance(response, messages.Outgoing)
    assert response.payload == {"param": "world response"}
    assert response.context == {"param": 12345}
    assert response.correlation_id == response.headers["correlation_id"] == "corr-1"
    assert response.request_id == response.headers["request_id"] == "req-1"
    assert response.message_id == response.headers["message_id"]
    assert response.message_id not in ("", "msg-1")
    assert response.message_type == response.headers["message_type"] == "response"
    assert response.headers["source"] == "test_world.world"
    assert response.headers["destination"] == "test_hello.hello"
    assert response.headers["reply_to"] == ""
    assert response.headers["x-user"] == "alice"
    assert str(response.source) == "test_world.world"
    assert str(response.destination) == "test_hello.hello"
    assert request.headers["message_id"] == "msg-1"  # the request's headers are not touched


def test_answer_without_reply_to_goes_to_the_source() -> None:
    request = incoming_call(reply_to="test_hello.callback", source="test_hello.hello")
    assert request.make_response().headers["destination"] == "test_hello.callback"
    response = messages.Response.create_by_request(
        messages.IncomingRequestCall(
            {**request.headers, "reply_to": "", "source": "test_hello.hello"}, {}, {}
        ),
        {},
    )
    assert response.headers["destination"] == "test_hello.hello"


def test_error_to_a_request_carries_class_message_and_code() -> None:
    request = incoming_call()
    error = messages.Error.create_by_request(request, KeyError("planet"))
    same = request.make_error(KeyError("planet"))

    for made in (error, same):
        assert type(made) is messages.Error
        assert made.payload == {"class": "KeyError", "message": "'planet'", "code": 1000}
        assert made.context == {"param": 12345}
        assert made.message_type == made.headers["message_type"] == "error"
        assert (made.correlation_id, made.request_id) == ("corr-1", "req-1")
        assert made.headers["source"] == "test_world.world"
        assert made.headers["destination"] == "test_hello.hello"
        assert made.headers["reply_to"] == ""
    assert error.message_id != same.message_id


def test_request_sets_a_new_request_id_and_keeps_the_correlation_id() -> None:
    headers = {
        "correlation_id": "corr-1",
        "request_id": "req-1",
        "source": "test_hello.hello",
        "destination": "test_world.world",
        "reply_to": "test_hello.hello",
    }
    first = messages.Request(dict(headers), {}, {"param": 1})
    second = messages.Request(dict(headers), {}, {"param": 2})
    for request in (first, second):
        assert request.correlation_id == request.headers["correlation_id"] == "corr-1"
        assert request.request_id not in ("", "req-1")
        assert request.message_type == "request"
        assert request.headers["reply_to"] == "test_hello.hello"
    assert first.request_id != second.request_id
    assert first.message_id != second.message_id

    fresh = messages.Request({"source": "a", "destination": "b.c"}, None, {})
    assert fresh.correlation_id
    assert fresh.headers["reply_to"] == ""
    assert fresh.context == {}
    transfer = messages.Request.create_transfer({"source": "a", "destination": "b.c"}, {}, k=1)
    assert transfer.payload == {"k": 1}
    assert transfer.correlation_id != fresh.correlation_id


def test_notification_has_no_destination_nor_reply_to() -> None:
    note = messages.Notification(
        {"correlation_id": "corr-1", "source": "test_hello.hello", "destination": "x.y"},
        {},
        {"param": "hello publication"},
    )
    assert note.message_type == note.headers["message_type"] == "notification"
    assert note.headers["destination"] == ""
    assert note.headers["reply_to"] == ""
    assert note.correlation_id == "corr-1"
    assert note.request_id
    assert not note.destination
    assert note.source == entry_point.Source("test_hello", "hello")


def test_message_id_is_kept_if_given_and_made_unique_otherwise() -> None:
    given = messages.IncomingRequestCast({"message_id": "msg-given"}, {}, {})
    assert given.message_id == "msg-given"
    ids = {messages.IncomingRequestCast({}, {}, {}).message_id for _ in range(50)}
    assert len(ids) == 50
    assert "" not in ids
