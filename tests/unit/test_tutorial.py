"""The Tutorial chapter of the Tavrida 1.0 docs, run on the memory broker with both engines.

Each scenario is the docs' code (Python 3, ``tavrida2`` for ``tavrida``); the
handlers record what they received and the tests check it value by value. The
servers are those of the ``tavrida2_server`` fixture (tavrida2's pytest plugin);
the last tests call Hello's handlers one at a time with ``ControllerHarness``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from tavrida2 import client, discovery, dispatcher, messages, service
from tavrida2.drivers.memory import AsyncMemoryDriver, MemoryDriver
from tavrida2.testing import ControllerHarness, RunningServices

TAVRIDA_HEADERS = {
    "correlation_id",
    "request_id",
    "message_id",
    "message_type",
    "reply_to",
    "source",
    "destination",
}
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


class PlanetError(Exception):
    """What World raises in the error scenario."""


@dataclasses.dataclass
class Seen:
    """What one handler call received (copied when it was called)."""

    handler: str
    message: messages.Message
    kwargs: dict[str, Any]
    payload: dict[str, Any]
    context: dict[str, Any]
    headers: dict[str, Any]


def record(log: list[Seen], handler: str, message: messages.Message, **kwargs: Any) -> None:
    log.append(
        Seen(
            handler,
            message,
            kwargs,
            dict(message.payload),
            dict(message.context),
            dict(message.headers),
        )
    )


def only(log: list[Seen], handler: str) -> Seen:
    found = [seen for seen in log if seen.handler == handler]
    assert len(found) == 1, f"{handler} called {len(found)} times: {[s.handler for s in log]}"
    return found[0]


class Bus:
    """Servers of the plugin's ``tavrida2_server`` (a memory broker of the test's own).

    ``sync``: sync engine without threads, driven by ``run_until_idle`` in the
    test's thread; ``async``: every server on the async engine, in threads;
    ``docs``: as in the docs' code, Hello (``test_hello``) on the async engine,
    the others on the sync engine, each in a thread.
    """

    def __init__(self, running: RunningServices, engine: str) -> None:
        self.running = running
        self.engine = engine

    def serve(self, queue: str, exchange: str, services: list[type[Any]]) -> None:
        is_hello = services[0].service_name == "test_hello"
        async_engine = self.engine == "async" or (self.engine == "docs" and is_hello)
        srv = self.running(
            *services,
            queue=queue,
            exchange=exchange,
            async_engine=async_engine,
            in_thread=self.engine != "sync",
        )
        assert type(srv.driver) is (AsyncMemoryDriver if async_engine else MemoryDriver)

    def client(self, disc: discovery.AbstractDiscovery, **kwargs: Any) -> client.RPCClient:
        return self.running.make_client(discovery=disc, **kwargs)

    def drain(self) -> None:
        broker = self.running.broker
        if self.engine == "sync":
            assert broker.run_until_idle() > 0
            assert broker.is_idle()
        else:
            assert broker.wait_until_idle(timeout=10)
        assert broker.unroutable == []
        assert broker.discarded == []


@pytest.fixture(params=["sync", "async", "docs"])
def bus(request: pytest.FixtureRequest, tavrida2_server: RunningServices) -> Bus:
    return Bus(tavrida2_server, request.param)


def client_discovery() -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service(service_name="test_hello", exchange_name="test_exchange")
    return disc


def assert_ids(*seen: Seen) -> None:
    for item in seen:
        for name in ("correlation_id", "request_id", "message_id"):
            assert HEX_ID.match(item.headers[name]), (item.handler, name, item.headers[name])
            assert getattr(item.message, name) == item.headers[name]
    message_ids = [item.headers["message_id"] for item in seen]
    assert len(set(message_ids)) == len(message_ids)


# -- Request Handling: Hello alone, a client casts -------------------------------


def test_request_handling_hello_gets_the_clients_cast(bus: Bus) -> None:
    seen: list[Seen] = []

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            record(seen, "hello", request, param=param)

    bus.serve("test_service", "test_exchange", [HelloController])
    with bus.client(client_discovery(), service="test_hello", source="client_app") as cli:
        cli.hello(param=123).cast()
    bus.drain()

    hello = only(seen, "hello")
    assert type(hello.message) is messages.IncomingRequestCast
    assert hello.kwargs == {"param": 123}
    assert hello.payload == {"param": 123}
    assert hello.context == {"param": 123}
    assert set(hello.headers) == TAVRIDA_HEADERS
    assert hello.headers["message_type"] == "request"
    assert hello.headers["source"] == "client_app"
    assert hello.headers["destination"] == "test_hello.hello"
    assert hello.headers["reply_to"] == ""
    assert str(hello.message.source) == "client_app"
    assert hello.message.destination.service == "test_hello"
    assert hello.message.destination.method == "hello"
    assert not hello.message.reply_to
    assert_ids(hello)


# -- Two services: Request, Response, Error --------------------------------------


def hello_world_services(seen: list[Seen], world_fails: bool) -> tuple[type[Any], type[Any]]:
    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            record(seen, "hello", request, param=param)
            proxy.test_world.world(param=12345).call()

        @dispatcher.rpc_response_method(service="test_world", method="world")
        def world_resp(self, response, proxy, param):
            record(seen, "world_resp", response, param=param)

        @dispatcher.rpc_error_method(service="test_world", method="world")
        def world_error(self, error, proxy):
            record(seen, "world_error", error)

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, param):
            record(seen, "world", request, param=param)
            if world_fails:
                raise PlanetError("no such planet")
            return {"param": "world response"}

    hello_disc = discovery.LocalDiscovery()
    hello_disc.register_remote_service("test_world", "test_world_exchange")
    HelloController.set_discovery(hello_disc)
    world_disc = discovery.LocalDiscovery()
    world_disc.register_remote_service("test_hello", "test_exchange")
    WorldController.set_discovery(world_disc)
    return HelloController, WorldController


def run_hello_world(bus: Bus, world_fails: bool) -> list[Seen]:
    seen: list[Seen] = []
    hello_cls, world_cls = hello_world_services(seen, world_fails)
    bus.serve("test_service", "test_exchange", [hello_cls])
    bus.serve("test_world_service", "test_world_exchange", [world_cls])
    with bus.client(client_discovery(), service="test_hello", source="client_app") as cli:
        cli.hello(param=123).cast()
    bus.drain()
    return seen


def check_request_to_world(hello: Seen, world: Seen) -> None:
    assert type(hello.message) is messages.IncomingRequestCast
    assert hello.kwargs == {"param": 123}
    assert hello.headers["source"] == "client_app"
    assert type(world.message) is messages.IncomingRequestCall
    assert world.kwargs == {"param": 12345}
    assert world.payload == {"param": 12345}
    # the context was {"param": 123} at Hello; World's payload overwrites the key
    assert world.context == {"param": 12345}
    assert set(world.headers) == TAVRIDA_HEADERS
    assert world.headers["message_type"] == "request"
    assert world.headers["source"] == "test_hello.hello"
    assert world.headers["destination"] == "test_world.world"
    assert world.headers["reply_to"] == "test_hello.hello"
    assert world.headers["correlation_id"] == hello.headers["correlation_id"]
    assert world.headers["request_id"] != hello.headers["request_id"]


def test_hello_calls_world_and_handles_its_response(bus: Bus) -> None:
    seen = run_hello_world(bus, world_fails=False)

    hello, world, resp = only(seen, "hello"), only(seen, "world"), only(seen, "world_resp")
    assert [s.handler for s in seen] == ["hello", "world", "world_resp"]
    check_request_to_world(hello, world)
    assert type(resp.message) is messages.IncomingResponse
    assert resp.kwargs == {"param": "world response"}
    assert resp.payload == {"param": "world response"}
    assert resp.context == {"param": "world response"}
    assert set(resp.headers) == TAVRIDA_HEADERS
    assert resp.headers["message_type"] == "response"
    assert resp.headers["source"] == "test_world.world"
    assert resp.headers["destination"] == "test_hello.hello"
    assert resp.headers["reply_to"] == ""
    assert resp.message.source == world.message.destination
    assert resp.message.destination == world.message.reply_to
    assert resp.headers["correlation_id"] == hello.headers["correlation_id"]
    assert resp.headers["request_id"] == world.headers["request_id"]
    assert_ids(hello, world, resp)


def test_hello_calls_world_and_handles_its_error(bus: Bus) -> None:
    seen = run_hello_world(bus, world_fails=True)

    hello, world, error = only(seen, "hello"), only(seen, "world"), only(seen, "world_error")
    assert [s.handler for s in seen] == ["hello", "world", "world_error"]
    check_request_to_world(hello, world)
    assert type(error.message) is messages.IncomingError
    assert error.kwargs == {}
    expected_payload = {
        "class": f"{__name__}.PlanetError",
        "message": "no such planet",
        "code": 1000,
    }
    assert error.payload == expected_payload
    # the error carries the request's context; the handler's hop adds its payload
    assert error.context == {"param": 12345, **expected_payload}
    assert set(error.headers) == TAVRIDA_HEADERS
    assert error.headers["message_type"] == "error"
    assert error.headers["source"] == "test_world.world"
    assert error.headers["destination"] == "test_hello.hello"
    assert error.headers["reply_to"] == ""
    assert error.headers["correlation_id"] == hello.headers["correlation_id"]
    assert error.headers["request_id"] == world.headers["request_id"]
    assert_ids(hello, world, error)
    remote = error.message.to_exception()
    assert (remote.remote_class, remote.remote_message, remote.code) == (
        f"{__name__}.PlanetError",
        "no such planet",
        1000,
    )


def test_each_request_response_pair_has_its_own_request_id(bus: Bus) -> None:
    seen: list[Seen] = []
    hello_cls, world_cls = hello_world_services(seen, world_fails=False)
    bus.serve("test_service", "test_exchange", [hello_cls])
    bus.serve("test_world_service", "test_world_exchange", [world_cls])
    with bus.client(client_discovery(), service="test_hello", source="client_app") as cli:
        cli.hello(param=1).cast(correlation_id="first")
        cli.hello(param=2).cast(correlation_id="second")
    bus.drain()

    worlds = [s for s in seen if s.handler == "world"]
    resps = [s for s in seen if s.handler == "world_resp"]
    assert len(worlds) == len(resps) == 2
    pairs = {w.headers["correlation_id"]: w.headers["request_id"] for w in worlds}
    assert set(pairs) == {"first", "second"}
    assert pairs["first"] != pairs["second"]
    for resp in resps:
        assert resp.headers["request_id"] == pairs[resp.headers["correlation_id"]]


# -- Publication and Subscription ------------------------------------------------


def publisher_service(seen: list[Seen]) -> type[Any]:
    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            record(seen, "hello", request, param=param)
            proxy.publish(param="hello publication")

    disc = discovery.LocalDiscovery()
    disc.register_local_publisher("test_hello", "test_notification_exchange")
    HelloController.set_discovery(disc)
    return HelloController


def check_notification(hello: Seen, note: Seen) -> None:
    assert type(note.message) is messages.IncomingNotification
    assert note.kwargs == {"param": "hello publication"}
    assert note.payload == {"param": "hello publication"}
    # the publisher's context ({"param": 123} after its hop), updated with the payload
    assert note.context == {"param": "hello publication"}
    assert set(note.headers) == TAVRIDA_HEADERS
    assert note.headers["message_type"] == "notification"
    assert note.headers["source"] == "test_hello.hello"
    assert note.headers["destination"] == ""
    assert note.headers["reply_to"] == ""
    assert note.message.source.service == "test_hello"
    assert note.message.source.method == "hello"
    assert not note.message.destination
    assert note.headers["correlation_id"] == hello.headers["correlation_id"]
    assert note.headers["request_id"] != hello.headers["request_id"]
    assert_ids(hello, note)


def test_world_subscribes_to_hellos_notifications(bus: Bus) -> None:
    seen: list[Seen] = []

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.subscription_method(service="test_hello", method="hello")
        def hello_subscription(self, notification, proxy, param):
            record(seen, "hello_subscription", notification, param=param)

    disc = discovery.LocalDiscovery()
    disc.register_remote_publisher("test_hello", "test_notification_exchange")
    WorldController.set_discovery(disc)

    bus.serve("test_service", "test_exchange", [publisher_service(seen)])
    bus.serve("test_world_service", "test_world_exchange", [WorldController])
    with bus.client(client_discovery(), service="test_hello", source="client_app") as cli:
        cli.hello(param=123).cast()
    bus.drain()

    assert [s.handler for s in seen] == ["hello", "hello_subscription"]
    check_notification(only(seen, "hello"), only(seen, "hello_subscription"))


def test_two_subscriber_controllers_in_one_server_get_the_same_notification(bus: Bus) -> None:
    seen: list[Seen] = []

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.subscription_method(service="test_hello", method="hello")
        def hello_subscription(self, notification, proxy, param):
            record(seen, "world_subscription", notification, param=param)

    @dispatcher.rpc_service("test_audit")
    class AuditController(service.ServiceController):
        @dispatcher.subscription_method(service="test_hello", method="hello")
        def audit(self, notification, proxy, param):
            notification.context["audited"] = True  # must not leak to the other subscriber
            record(seen, "audit_subscription", notification, param=param)

    for cls in (WorldController, AuditController):
        disc = discovery.LocalDiscovery()
        disc.register_remote_publisher("test_hello", "test_notification_exchange")
        cls.set_discovery(disc)

    bus.serve("test_service", "test_exchange", [publisher_service(seen)])
    bus.serve("test_world_service", "test_world_exchange", [WorldController, AuditController])
    with bus.client(client_discovery(), service="test_hello", source="client_app") as cli:
        cli.hello(param=123).cast()
    bus.drain()

    hello, world = only(seen, "hello"), only(seen, "world_subscription")
    audit = only(seen, "audit_subscription")
    assert len(seen) == 3
    check_notification(hello, world)
    assert world.message is not audit.message
    assert audit.kwargs == world.kwargs
    assert audit.payload == world.payload
    assert audit.headers == world.headers  # one notification: same message_id
    assert audit.context == {**world.context, "audited": True}
    assert "audited" not in world.message.context


# -- One handler at a time, without a broker: ControllerHarness --------------------------


def test_hello_alone_calls_world_on_behalf_of_the_clients_cast() -> None:
    seen: list[Seen] = []
    hello_cls, _ = hello_world_services(seen, world_fails=False)
    outcome = ControllerHarness(hello_cls).cast(
        "test_hello.hello", {"param": 123}, source="client_app"
    )

    hello = only(seen, "hello")
    assert type(hello.message) is messages.IncomingRequestCast
    assert hello.kwargs == {"param": 123}
    assert outcome.answer is None  # nobody waits for a cast
    world = outcome.sent.assert_called("test_world.world", param=12345)
    assert (world.exchange, world.routing_key) == ("test_world_exchange", "test_world.world")
    assert world.source == "test_hello.hello"
    assert world.headers["reply_to"] == "test_hello.hello"
    assert world.headers["correlation_id"] == hello.headers["correlation_id"]
    assert world.context == {"param": 123}
    assert len(outcome.sent) == 1


def test_hello_alone_handles_worlds_response_and_error() -> None:
    seen: list[Seen] = []
    hello_cls, _ = hello_world_services(seen, world_fails=False)
    harness = ControllerHarness(hello_cls)
    harness.response(
        "test_world.world", {"param": "world response"}, destination="test_hello.hello"
    )
    harness.error("test_world.world", PlanetError("no such planet"), destination="test_hello.hello")

    resp, error = only(seen, "world_resp"), only(seen, "world_error")
    assert type(resp.message) is messages.IncomingResponse
    assert resp.kwargs == {"param": "world response"}
    assert resp.headers["source"] == "test_world.world"
    assert type(error.message) is messages.IncomingError
    assert error.payload == {
        "class": f"{__name__}.PlanetError",
        "message": "no such planet",
        "code": 1000,
    }
    harness.sent.assert_nothing_sent()


@pytest.mark.parametrize("world_fails", [False, True])
def test_world_alone_answers_or_fails(world_fails: bool) -> None:
    seen: list[Seen] = []
    _, world_cls = hello_world_services(seen, world_fails=world_fails)
    outcome = ControllerHarness(world_cls).call(
        "test_world.world", {"param": 12345}, source="test_hello.hello"
    )

    assert only(seen, "world").kwargs == {"param": 12345}
    assert outcome.answer is not None
    if world_fails:
        assert isinstance(outcome.error, PlanetError)
        assert outcome.answer.headers["message_type"] == "error"
    else:
        assert outcome.payload == {"param": "world response"}
        assert outcome.answer.headers["message_type"] == "response"
    assert outcome.answer.headers["destination"] == "test_hello.hello"
    assert outcome.sent.answers == [outcome.answer]
