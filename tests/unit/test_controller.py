"""The Controller chapter of the Tavrida 1.0 docs on the memory broker (sync engine).

What a request handler returns (dict, Response, Error, None, an exception)
and what the caller's response/error handler then receives (nothing for None
or ``{}``, as in 1.0); controllers made
on server start; class-level discovery; one Dispatcher per controller class.
"""

from __future__ import annotations

from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    exceptions,
    messages,
    router,
    server,
    service,
)
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.postprocessor import PostProcessor

BROKER = "controller"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")


class PlanetError(Exception):
    """A plain exception: its Error has the unknown-error code 1000."""


class NoSuchPlanet(exceptions.TavridaError):
    _msg_template = "no planet %(planet)s"
    _service_error_code = 4242


def serve(queue: str, exchange: str, services: list[type[Any]]) -> server.Server:
    srv = server.Server(CONF, queue_name=queue, exchange_name=exchange, service_list=services)
    srv.start()
    return srv


def drain() -> MemoryBroker:
    broker = MemoryBroker.get(BROKER)
    broker.run_until_idle()
    assert broker.is_idle()
    return broker


def cast_hello(**payload: Any) -> None:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("test_hello", "test_exchange")
    with client.RPCClient(config=CONF, discovery=disc, source="client_app") as cli:
        cli.test_hello.hello(**payload).cast()


def hello_and_world(seen: list[tuple[str, Any]]) -> None:
    """Hello calls ``test_world.world(mode=...)``; World answers according to ``mode``."""

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, mode):
            seen.append(("hello", request))
            proxy.test_world.world(mode=mode).call()

        @dispatcher.rpc_response_method(service="test_world", method="world")
        def world_resp(self, response, proxy, **payload):
            seen.append(("world_resp", response))

        @dispatcher.rpc_error_method(service="test_world", method="world")
        def world_error(self, error, proxy):
            seen.append(("world_error", error))

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, mode):
            seen.append(("world", request))
            if mode == "dict":
                return {"answer": 42}
            if mode == "response":
                return messages.Response.create_by_request(request, {"answer": "explicit"})
            if mode == "make_response":
                return request.make_response(answer="made")
            if mode == "error":
                return messages.Error.create_by_request(request, PlanetError("explicit error"))
            if mode == "raise":
                raise PlanetError("plain failure")
            if mode == "raise_coded":
                raise NoSuchPlanet(planet="Vulcan")
            if mode == "wrong_type":
                return "not a dict"
            if mode == "empty_response":
                return request.make_response()
            if mode == "empty_dict":
                return {}
            return None

    hello_disc = discovery.LocalDiscovery()
    hello_disc.register_remote_service("test_world", "test_world_exchange")
    HelloController.set_discovery(hello_disc)
    world_disc = discovery.LocalDiscovery()
    world_disc.register_remote_service("test_hello", "test_exchange")
    WorldController.set_discovery(world_disc)
    serve("test_service", "test_exchange", [HelloController])
    serve("test_world_service", "test_world_exchange", [WorldController])


ANSWERS = [
    ("dict", "world_resp", messages.IncomingResponse, {"answer": 42}),
    ("response", "world_resp", messages.IncomingResponse, {"answer": "explicit"}),
    ("make_response", "world_resp", messages.IncomingResponse, {"answer": "made"}),
    ("empty_response", "world_resp", messages.IncomingResponse, {}),
    (
        "error",
        "world_error",
        messages.IncomingError,
        {"class": f"{__name__}.PlanetError", "message": "explicit error", "code": 1000},
    ),
    (
        "raise",
        "world_error",
        messages.IncomingError,
        {"class": f"{__name__}.PlanetError", "message": "plain failure", "code": 1000},
    ),
    (
        "raise_coded",
        "world_error",
        messages.IncomingError,
        {"class": f"{__name__}.NoSuchPlanet", "message": "no planet Vulcan", "code": 4242},
    ),
    (
        "wrong_type",
        "world_error",
        messages.IncomingError,
        {
            "class": "tavrida2.exceptions.WrongResponse",
            "message": str(exceptions.WrongResponse(response=repr("not a dict"))),
            "code": 1009,
        },
    ),
]


@pytest.mark.parametrize(
    ("mode", "handler", "cls", "payload"), ANSWERS, ids=[a[0] for a in ANSWERS]
)
def test_what_a_request_handler_returns_reaches_the_caller(
    mode: str, handler: str, cls: type[Any], payload: dict[str, Any]
) -> None:
    seen: list[tuple[str, Any]] = []
    hello_and_world(seen)
    cast_hello(mode=mode)
    broker = drain()

    assert [name for name, _ in seen] == ["hello", "world", handler]
    world, answer = seen[1][1], seen[2][1]
    assert type(world) is messages.IncomingRequestCall
    assert type(answer) is cls
    assert answer.payload == payload
    assert answer.context == {"mode": mode, **payload}
    assert answer.headers["message_type"] == ("response" if handler == "world_resp" else "error")
    assert answer.headers["source"] == "test_world.world"
    assert answer.headers["destination"] == "test_hello.hello"
    assert answer.headers["reply_to"] == ""
    assert answer.request_id == world.request_id
    assert answer.correlation_id == world.correlation_id == seen[0][1].correlation_id
    assert answer.message_id not in (world.message_id, seen[0][1].message_id)
    assert broker.discarded == []


@pytest.mark.parametrize("mode", ["none", "empty_dict"])
def test_none_or_an_empty_dict_sends_no_answer_to_a_call_for_a_response_handler(
    mode: str,
) -> None:
    """As in Tavrida 1.0: such a call is a continuation that expects no answer."""
    seen: list[tuple[str, Any]] = []
    hello_and_world(seen)
    cast_hello(mode=mode)
    broker = drain()

    assert [name for name, _ in seen] == ["hello", "world"]
    assert type(seen[1][1]) is messages.IncomingRequestCall
    assert broker.discarded == broker.unroutable == []


def test_a_cast_handler_that_raises_sends_nothing_and_the_message_is_rejected() -> None:
    seen: list[tuple[str, Any]] = []

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, mode):
            seen.append(("hello", request))
            raise PlanetError("cast failure")

    serve("test_service", "test_exchange", [HelloController])
    cast_hello(mode="raise")
    broker = MemoryBroker.get(BROKER)
    broker.run_until_idle()

    assert [name for name, _ in seen] == ["hello"]
    assert type(seen[0][1]) is messages.IncomingRequestCast
    assert broker.unroutable == broker.discarded == []
    # retried: it waits in the retry queue for its second attempt, a second from now
    [retry] = broker.messages_in("test_service.retry")
    assert retry.headers["message_id"] == seen[0][1].message_id
    assert retry.headers["x-tavrida2-attempt"] == 2
    assert retry.properties["expiration"] == "1000"


def test_controller_is_instantiated_on_server_start() -> None:
    instances: list[service.ServiceController] = []
    handled_by: list[tuple[service.ServiceController, int]] = []

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            instances.append(self)

        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            handled_by.append((self, param))

    disc = discovery.LocalDiscovery()
    HelloController.set_discovery(disc)
    srv = server.Server(
        CONF,
        queue_name="test_service",
        exchange_name="test_exchange",
        service_list=[HelloController],
    )
    assert instances == []
    assert srv.services == []

    srv.start()
    assert len(instances) == 1
    controller = instances[0]
    assert type(controller) is HelloController
    assert srv.services == [controller]
    assert isinstance(controller.postprocessor, PostProcessor)
    assert controller.postprocessor.discovery_service is disc

    cast_hello(param=1)
    cast_hello(param=2)
    drain()
    assert handled_by == [(controller, 1), (controller, 2)]
    assert len(instances) == 1


def test_get_discovery_without_set_discovery_is_an_empty_local_discovery() -> None:
    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        pass

    disc = HelloController.get_discovery()
    assert type(disc) is discovery.LocalDiscovery
    assert disc.get_all_exchanges() == {"remote": [], "remote_publisher": [], "local_publisher": []}
    assert HelloController.get_discovery() is disc


def test_set_discovery_binds_one_discovery_per_class() -> None:
    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        pass

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        pass

    hello_disc, world_disc = discovery.LocalDiscovery(), discovery.LocalDiscovery()
    hello_disc.register_remote_service("remote_service", "remote_service_exchange")
    HelloController.set_discovery(hello_disc)
    WorldController.set_discovery(world_disc)
    assert HelloController.get_discovery() is hello_disc
    assert WorldController.get_discovery() is world_disc
    assert HelloController.get_discovery().get_remote("remote_service") == "remote_service_exchange"
    with pytest.raises(exceptions.UnableToDiscover):
        WorldController.get_discovery().get_remote("remote_service")
    with pytest.raises(TypeError):
        HelloController.set_discovery({"remote_service": "remote_service_exchange"})  # type: ignore[arg-type]
    assert HelloController.get_discovery() is hello_disc


def test_handlers_proxy_discovers_remote_services_with_its_class_discovery() -> None:
    seen: list[tuple[str, Any]] = []

    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            proxy.remote_service.method(value=param).cast()
            try:
                proxy.unknown_service.method(value=param).cast()
            except exceptions.UnableToDiscover as exc:
                seen.append(("unknown_service", exc.code))

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("remote_service", "remote_service_exchange")
    HelloController.set_discovery(disc)
    serve("test_service", "test_exchange", [HelloController])
    broker = MemoryBroker.get(BROKER)
    broker.declare_queue("remote_queue")
    broker.bind_queue("remote_queue", "remote_service_exchange", "remote_service.#")

    cast_hello(param=7)
    drain()
    assert seen == [("unknown_service", 1007)]
    sent = broker.get_message("remote_queue")
    assert sent is not None
    assert sent.exchange == "remote_service_exchange"
    assert sent.routing_key == "remote_service.method"
    assert sent.headers["source"] == "test_hello.hello"
    assert sent.headers["destination"] == "remote_service.method"
    assert broker.get_message("remote_queue") is None


def test_each_controller_class_has_its_own_dispatcher() -> None:
    @dispatcher.rpc_service("test_hello")
    class HelloController(service.ServiceController):
        @dispatcher.rpc_method(service="test_hello", method="hello")
        def handler(self, request, proxy, param):
            return {"parameter": "value"}

        @dispatcher.rpc_response_method(service="remote_service", method="remote_method")
        def world_resp(self, response, proxy, param):
            pass

        @dispatcher.rpc_error_method(service="remote_service", method="remote_method")
        def world_error(self, error, proxy):
            pass

        @dispatcher.subscription_method(service="remote_service", method="remote_method")
        def hello_subscription(self, notification, proxy, param):
            pass

    @dispatcher.rpc_service("test_world")
    class WorldController(service.ServiceController):
        @dispatcher.rpc_method(service="test_world", method="world")
        def world(self, request, proxy, param):
            pass

    hello_disp, world_disp = HelloController.get_dispatcher(), WorldController.get_dispatcher()
    assert isinstance(hello_disp, dispatcher.Dispatcher)
    assert isinstance(world_disp, dispatcher.Dispatcher)
    assert hello_disp is not world_disp
    assert HelloController.get_dispatcher() is hello_disp
    assert hello_disp.handlers == {
        "request": {"test_hello.hello": "handler"},
        "response": {"remote_service.remote_method": "world_resp"},
        "error": {"remote_service.remote_method": "world_error"},
        "notification": {"remote_service.remote_method": "hello_subscription"},
    }
    assert world_disp.handlers == {
        "request": {"test_world.world": "world"},
        "response": {},
        "error": {},
        "notification": {},
    }
    assert hello_disp.subscriptions == {"remote_service.remote_method": "hello_subscription"}
    assert hello_disp.get_handler("test_hello.hello", "request") == "handler"
    assert world_disp.get_handler("test_world.world", "request") == "world"
    with pytest.raises(exceptions.HandlerNotFound):
        world_disp.get_handler("test_hello.hello", "request")
    assert list(hello_disp.get_request_entry_services()) == ["test_hello"]
    assert [str(ep) for ep in hello_disp.get_publishers()] == ["remote_service.remote_method"]
    registry = router.Router()
    assert registry.reverse_lookup(HelloController) == "test_hello"
    assert registry.reverse_lookup(WorldController) == "test_world"


def test_controllers_sharing_a_base_class_still_get_their_own_dispatchers() -> None:
    class PingBase(service.ServiceController):
        @dispatcher.rpc_method(method="ping")
        def ping(self, request, proxy):
            return {"pong": self.service_name}

    @dispatcher.rpc_service("service_a")
    class ControllerA(PingBase):
        pass

    @dispatcher.rpc_service("service_b")
    class ControllerB(PingBase):
        pass

    assert ControllerA.get_dispatcher() is not ControllerB.get_dispatcher()
    assert ControllerA.get_dispatcher().handlers["request"] == {"service_a.ping": "ping"}
    assert ControllerB.get_dispatcher().handlers["request"] == {"service_b.ping": "ping"}


def test_an_error_handler_takes_only_the_error_and_the_proxy() -> None:
    with pytest.raises(exceptions.WrongHandlerSignature):

        @dispatcher.rpc_service("test_hello")
        class HelloController(service.ServiceController):
            @dispatcher.rpc_error_method(service="remote_service", method="remote_method")
            def world_error(self, error, proxy, param):
                pass
