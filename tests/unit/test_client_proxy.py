"""The Client and Proxy chapters of the Tavrida 1.0 docs on the memory broker (sync engine)."""

from __future__ import annotations

from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    entry_point,
    exceptions,
    messages,
    server,
    service,
)
from tavrida2.drivers.memory import MemoryBroker

BROKER = "client_proxy"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")

Seen = list[tuple[str, Any]]


def serve(queue: str, exchange: str, services: list[type[Any]]) -> None:
    server.Server(CONF, queue_name=queue, exchange_name=exchange, service_list=services).start()


def drain() -> MemoryBroker:
    broker = MemoryBroker.get(BROKER)
    assert broker.run_until_idle() > 0
    assert broker.is_idle()
    assert broker.unroutable == broker.discarded == []
    return broker


def bind(
    cls: type[Any],
    remote: dict[str, str],
    local_publisher: str | None = None,
    remote_publishers: dict[str, str] | None = None,
) -> None:
    disc = discovery.LocalDiscovery()
    for name, exchange in remote.items():
        disc.register_remote_service(name, exchange)
    if local_publisher:
        disc.register_local_publisher(cls.service_name, local_publisher)
    for name, exchange in (remote_publishers or {}).items():
        disc.register_remote_publisher(name, exchange)
    cls.set_discovery(disc)


def client_discovery(**remote: str) -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service(service_name="test_hello", exchange_name="test_exchange")
    for name, exchange in remote.items():
        disc.register_remote_service(name, exchange)
    return disc


def get(seen: Seen, name: str) -> Any:
    found = [message for handler, message in seen if handler == name]
    assert len(found) == 1, (name, [handler for handler, _ in seen])
    return found[0]


def hello_only(seen: Seen) -> None:
    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            seen.append(("hello", request))

    serve("test_service", "test_exchange", [HelloController])


def hello_and_world(seen: Seen) -> None:
    """Hello calls World from its handler; World answers; both record what they get."""

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            seen.append(("hello", request))
            proxy.test_world.world(param=12345).call()

        @dispatcher.rpc_response_method(service="test_world", method="world")
        def world_resp(self, response, proxy, param):
            seen.append(("world_resp", response))

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, param):
            seen.append(("world", request))
            return {"param": "world response"}

    bind(HelloController, {"test_world": "test_world_exchange"})
    bind(WorldController, {"test_hello": "test_exchange"})
    serve("test_service", "test_exchange", [HelloController])
    serve("test_world_service", "test_world_exchange", [WorldController])


# -- Client ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "service_name", "method"),
    [("source_service", "source_service", None), ("source.method", "source", "method")],
)
def test_client_source_forms(source: str, service_name: str, method: str | None) -> None:
    seen: Seen = []
    hello_only(seen)
    cli = client.RPCClient(config=CONF, discovery=client_discovery(), source=source)
    cli.test_hello.hello(param=123).cast(correlation_id="123-456")
    cli.close()
    drain()

    request = get(seen, "hello")
    assert type(request) is messages.IncomingRequestCast
    assert request.payload == {"param": 123}
    assert request.headers["source"] == source
    assert (request.source.service, request.source.method) == (service_name, method)
    assert request.correlation_id == request.headers["correlation_id"] == "123-456"
    assert request.headers["destination"] == "test_hello.hello"
    assert request.headers["reply_to"] == ""
    assert not request.reply_to


def test_client_with_a_fixed_service() -> None:
    seen: Seen = []
    hello_only(seen)
    with client.RPCClient(
        config=CONF, service="test_hello", discovery=client_discovery(), source="client_app"
    ) as cli:
        cli.hello(param=123).cast()
        cli.hello(param=456).cast()
    drain()

    requests = [message for _, message in seen]
    assert [r.payload for r in requests] == [{"param": 123}, {"param": 456}]
    assert {r.headers["source"] for r in requests} == {"client_app"}
    assert {r.headers["destination"] for r in requests} == {"test_hello.hello"}
    # without correlation_id, each cast starts a chain of its own
    assert requests[0].correlation_id != requests[1].correlation_id
    assert requests[0].request_id != requests[1].request_id
    with pytest.raises(exceptions.UnableToDiscover):
        client.RPCClient(
            config=CONF, service="test_world", discovery=client_discovery(), source="client_app"
        )


def test_correlation_id_and_headers_of_the_client_travel_along_the_chain() -> None:
    seen: Seen = []
    hello_and_world(seen)
    headers = {"x-user": "alice", "x-tenant": "t-1"}
    with client.RPCClient(
        config=CONF, discovery=client_discovery(), source="client_app", headers=headers
    ) as cli:
        cli.test_hello.hello(param=123).cast(correlation_id="123-456")
    drain()

    hello, world, resp = get(seen, "hello"), get(seen, "world"), get(seen, "world_resp")
    for message in (hello, world, resp):
        assert message.correlation_id == "123-456"
        assert message.headers["x-user"] == "alice"
        assert message.headers["x-tenant"] == "t-1"
    assert hello.headers["source"] == "client_app"
    assert world.headers["source"] == "test_hello.hello"
    assert resp.request_id == world.request_id != hello.request_id
    assert headers == {"x-user": "alice", "x-tenant": "t-1"}


def test_client_correlation_id_and_context_parameters() -> None:
    seen: Seen = []
    hello_only(seen)
    with client.RPCClient(
        config=CONF,
        discovery=client_discovery(),
        source="client_app",
        context={"user": "alice"},
        correlation_id="client-chain",
    ) as cli:
        cli.test_hello.hello(param=1).cast()
        cli.test_hello.hello(param=2).cast(correlation_id="per-call")
    drain()

    first, second = (message for _, message in seen)
    assert first.correlation_id == "client-chain"
    assert second.correlation_id == "per-call"
    assert first.context == {"user": "alice", "param": 1}
    assert second.context == {"user": "alice", "param": 2}


@pytest.mark.parametrize("source", ["test_hello", "test_hello.hello"])
def test_client_call_answer_goes_to_the_source_services_response_handler(source: str) -> None:
    seen: Seen = []
    hello_and_world(seen)
    with client.RPCClient(
        config=CONF,
        discovery=client_discovery(test_world="test_world_exchange"),
        source=source,
    ) as cli:
        # wait=False: Tavrida 1.0's call, answered to the source service
        cli.test_world.world(param=1).call(correlation_id="script-call", wait=False)
    drain()

    assert [name for name, _ in seen] == ["world", "world_resp"]
    world, resp = get(seen, "world"), get(seen, "world_resp")
    assert type(world) is messages.IncomingRequestCall
    assert world.headers["source"] == world.headers["reply_to"] == source
    assert type(resp) is messages.IncomingResponse
    assert resp.payload == {"param": "world response"}
    assert resp.headers["source"] == "test_world.world"
    assert resp.headers["destination"] == source
    assert resp.request_id == world.request_id
    assert resp.correlation_id == world.correlation_id == "script-call"


# -- Proxy -----------------------------------------------------------------------


def local_and_remote(seen: Seen, body: Any) -> None:
    """``local_service.rpc_method`` runs ``body(request, proxy)``; remote_service records."""

    @dispatcher.rpc_service("local_service")
    class LocalServiceController(service.ServiceController):
        @dispatcher.rpc_method(service="local_service", method="rpc_method")
        def rpc_method(self, request, proxy, param):
            seen.append(("rpc_method", request))
            body(request, proxy)

        @dispatcher.rpc_response_method(service="remote_service", method="method")
        def method_resp(self, response, proxy, **payload):
            seen.append(("method_resp", response))

    @dispatcher.rpc_service("audit_service")
    class AuditController(service.ServiceController):
        @dispatcher.rpc_response_method(service="remote_service", method="method")
        def collect(self, response, proxy, **payload):
            seen.append(("collect", response))

    @dispatcher.rpc_service("remote_service")
    class RemoteServiceController(service.ServiceController):
        @dispatcher.rpc_method(service="remote_service", method="method")
        def method(self, request, proxy, value):
            seen.append(("method", request))
            return {"echo": value}

        @dispatcher.subscription_method(service="local_service", method="rpc_method")
        def local_notification(self, notification, proxy, value):
            seen.append(("notification", notification))

    bind(
        LocalServiceController,
        {"remote_service": "remote_service_exchange"},
        local_publisher="local_notifications",
    )
    bind(
        RemoteServiceController,
        {"local_service": "local_exchange", "audit_service": "local_exchange"},
        remote_publishers={"local_service": "local_notifications"},
    )
    serve("local_queue", "local_exchange", [LocalServiceController, AuditController])
    serve("remote_queue", "remote_service_exchange", [RemoteServiceController])
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("local_service", "local_exchange")
    with client.RPCClient(config=CONF, discovery=disc, source="client_app") as cli:
        cli.local_service.rpc_method(param="p").cast(correlation_id="chain")
    drain()


def test_proxy_call_cast_and_publish_of_the_docs() -> None:
    def body(request, proxy):
        proxy.remote_service.method(value="call-1").call(correlation_id="123=456")
        proxy.remote_service.method(value="call-1").cast()
        proxy.publish(value="notification_value")

    seen: Seen = []
    local_and_remote(seen, body)

    assert sorted(name for name, _ in seen) == [
        "method",
        "method",
        "method_resp",
        "notification",
        "rpc_method",
    ]
    incoming = get(seen, "rpc_method")
    call, cast = (message for name, message in seen if name == "method")
    assert type(call) is messages.IncomingRequestCall
    assert call.correlation_id == "123=456"
    assert call.headers["reply_to"] == call.headers["source"] == "local_service.rpc_method"
    assert call.context == {"param": "p", "value": "call-1"}
    assert type(cast) is messages.IncomingRequestCast
    assert cast.correlation_id == incoming.correlation_id == "chain"
    assert cast.headers["reply_to"] == ""
    assert cast.headers["source"] == "local_service.rpc_method"
    assert call.request_id != cast.request_id
    resp = get(seen, "method_resp")
    assert resp.payload == {"echo": "call-1"}
    assert resp.correlation_id == "123=456"
    assert resp.request_id == call.request_id
    assert resp.headers["destination"] == "local_service.rpc_method"
    note = get(seen, "notification")
    assert type(note) is messages.IncomingNotification
    assert note.payload == {"value": "notification_value"}
    assert note.correlation_id == "chain"
    assert note.headers["source"] == "local_service.rpc_method"
    assert note.context == {"param": "p", "value": "notification_value"}


def test_proxy_call_and_cast_with_correlation_id_context_reply_to_and_source() -> None:
    def body(request, proxy):
        proxy.remote_service.method(value="to-audit").call(
            correlation_id="audit-chain",
            context={"k": "v"},
            reply_to="audit_service.collect",
        )
        proxy.remote_service.method(value="cast").cast(
            correlation_id="cast-chain", context={"only": "this"}, source="local_service.other"
        )
        proxy.publish(correlation_id="pub-chain", value="published")

    seen: Seen = []
    local_and_remote(seen, body)

    assert "method_resp" not in [name for name, _ in seen]
    call, cast = (message for name, message in seen if name == "method")
    assert type(call) is messages.IncomingRequestCall
    assert call.correlation_id == "audit-chain"
    assert call.context == {"k": "v", "value": "to-audit"}
    assert call.headers["source"] == "local_service.rpc_method"
    assert call.headers["reply_to"] == "audit_service.collect"
    assert call.reply_to == entry_point.EntryPoint("audit_service", "collect")
    collected = get(seen, "collect")
    assert type(collected) is messages.IncomingResponse
    assert collected.payload == {"echo": "to-audit"}
    assert collected.headers["destination"] == "audit_service.collect"
    assert collected.correlation_id == "audit-chain"
    assert collected.request_id == call.request_id
    assert type(cast) is messages.IncomingRequestCast
    assert cast.correlation_id == "cast-chain"
    assert cast.context == {"only": "this", "value": "cast"}
    assert cast.headers["source"] == "local_service.other"
    assert get(seen, "notification").correlation_id == "pub-chain"


def test_proxy_add_headers_reach_the_remote_handler() -> None:
    refused: list[Exception] = []

    def body(request, proxy):
        proxy.add_headers({"x-trace": "trace-1"})
        proxy.add_headers({"x-span": "span-1"})
        try:
            proxy.add_headers({"correlation_id": "hijack"})
        except exceptions.ForbiddenHeaders as exc:
            refused.append(exc)
        proxy.remote_service.method(value="with headers").cast()
        proxy.publish(value="with headers")

    seen: Seen = []
    local_and_remote(seen, body)

    incoming = get(seen, "rpc_method")
    assert "x-trace" not in incoming.headers
    for name in ("method", "notification"):
        message = get(seen, name)
        assert message.headers["x-trace"] == "trace-1"
        assert message.headers["x-span"] == "span-1"
        assert message.correlation_id == "chain"
    assert len(refused) == 1
    assert refused[0].code == 1029
