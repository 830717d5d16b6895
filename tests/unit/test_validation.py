"""Payload validation with JSON Schema (``schema=`` on the handler decorators), memory broker.

``stack`` runs each test on both engines: ``sync`` starts servers on the sync
engine that the waiting ``RPCClient`` delivers to; ``async`` serves them in
tasks (``await srv.serve()``) of the test's event loop, with the
``AsyncRPCClient``. ``users.register`` takes a schema'd payload; a failing one
is answered with a ``ValidationError`` (code 1044) that names the field, and
the handler is never called.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    exceptions,
    middleware,
    server,
    service,
)
from tavrida2.drivers.memory import MemoryBroker

BROKER = "validation"
USERS_QUEUE, USERS_EXCHANGE = "users_queue", "users_exchange"
AUDIT_QUEUE, AUDIT_EXCHANGE = "audit_queue", "audit_exchange"
USERS_NOTIFICATIONS = "users_notifications"
SOURCE = "client_app"
CODE = exceptions.ValidationError._service_error_code
REMOTE_CLASS = "tavrida2.exceptions.ValidationError"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "user"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "user": {
            "type": "object",
            "required": ["age"],
            "properties": {
                "age": {"type": "integer", "minimum": 0},
                "address": {
                    "type": "object",
                    "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                },
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
        "callback": {"type": "string", "pattern": "^https://"},
    },
}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["user_id"],
    "properties": {"user_id": {"type": "integer"}},
}


def users_service(
    seen: list[tuple[str, Any]], incoming: tuple[middleware.Middleware, ...] = ()
) -> type[service.ServiceController]:
    """``users.register`` (schema'd), ``users.plain`` (no schema), ``users.announce`` publishes.

    ``incoming``: middlewares the controller adds in its ``__init__``.
    """

    @dispatcher.rpc_service("users")
    class Users(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            for item in incoming:
                self.add_incoming_middleware(item)

        @dispatcher.rpc_method(method="register", schema=USER_SCHEMA)
        def register(self, request, proxy, name, user, callback=None):
            seen.append(("register", {"name": name, "user": user}))
            return {"registered": name}

        @dispatcher.rpc_method(method="plain")
        def plain(self, request, proxy, **payload):
            seen.append(("plain", payload))
            return {"keys": sorted(payload)}

        @dispatcher.rpc_method(method="announce")
        def announce(self, request, proxy, **payload):
            proxy.publish(**payload)
            return {}

    disc = discovery.LocalDiscovery()
    disc.register_local_publisher("users", USERS_NOTIFICATIONS)
    Users.set_discovery(disc)
    return Users


def audit_service(seen: list[tuple[str, Any]]) -> type[service.ServiceController]:
    """Subscribes to ``users.announce`` notifications with a schema."""

    @dispatcher.rpc_service("audit")
    class Audit(service.ServiceController):
        @dispatcher.subscription_method(service="users", method="announce", schema=EVENT_SCHEMA)
        def on_announce(self, notification, proxy, user_id):
            seen.append(("on_announce", user_id))

    disc = discovery.LocalDiscovery()
    disc.register_remote_publisher("users", USERS_NOTIFICATIONS)
    Audit.set_discovery(disc)
    return Audit


class Stack:
    """Servers on the memory broker and a client, on one engine (see the module docstring)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.broker = MemoryBroker.get(BROKER)
        self.discovery = discovery.LocalDiscovery()
        self.discovery.register_remote_service("users", USERS_EXCHANGE)
        self.specs: list[tuple[str, str, type[service.ServiceController]]] = []
        self.sync_servers: list[server.Server] = []

    @property
    def is_async(self) -> bool:
        return self.engine == "async"

    def config(self) -> config.ConnectionConfig:
        return config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=self.is_async)

    def serve(self, queue: str, exchange: str, controller: type[service.ServiceController]) -> None:
        self.specs.append((queue, exchange, controller))

    def run(self, action: Callable[[Any], Any]) -> Any:
        """Serve, open a client, return what ``action(client)`` gives (awaited if awaitable).

        Everything the action set off is delivered before this returns.
        """
        if self.is_async:
            return asyncio.run(self._run_async(action))
        if not self.sync_servers:
            self.sync_servers = self._servers()
            for srv in self.sync_servers:
                srv.start()
        with client.RPCClient(self.config(), self.discovery, source=SOURCE) as cli:
            result = action(cli)
            self.broker.run_until_idle()
        return result

    def _servers(self) -> list[server.Server]:
        return [server.Server(self.config(), q, ex, [cls]) for q, ex, cls in self.specs]

    async def _run_async(self, action: Callable[[Any], Any]) -> Any:
        servers = self._servers()
        tasks = [asyncio.ensure_future(srv.serve()) for srv in servers]
        try:
            await until(lambda: all(srv.started.is_set() for srv in servers), tasks)
            async with client.AsyncRPCClient(self.config(), self.discovery, source=SOURCE) as cli:
                result = action(cli)
                if inspect.isawaitable(result):
                    result = await result
                await until(self.broker.is_idle, tasks)
            return result
        finally:
            for srv in servers:
                srv.stop()
            await asyncio.gather(*tasks)

    def call(self, method: str, **payload: Any) -> Any:
        """``users.<method>(**payload).call()``: the answer, or the RemoteError raised."""
        return self.run(lambda cli: getattr(cli.users, method)(**payload).call(timeout=5))

    def remote_error(self, method: str, **payload: Any) -> exceptions.RemoteError:
        with pytest.raises(exceptions.RemoteError) as caught:
            self.call(method, **payload)
        return caught.value

    def cast(self, method: str, **payload: Any) -> None:
        self.run(lambda cli: getattr(cli.users, method)(**payload).cast())

    def stop(self) -> None:
        for srv in self.sync_servers:
            srv.stop()
            if srv.driver is not None:
                srv.driver.close()


async def until(condition: Callable[[], bool], tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait (at most 5 s) for ``condition``; a server task that ended raises its error."""
    deadline = time.monotonic() + 5
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError("a server stopped on its own")
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


@pytest.fixture(params=["sync", "async"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    running = Stack(request.param)
    yield running
    running.stop()


def good_user(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": "ann", "user": {"age": 30, "address": {"zip": "12345"}}}
    payload.update(overrides)
    return payload


def assert_rejected_payload(error: exceptions.RemoteError, *fragments: str) -> None:
    assert (error.remote_class, error.code) == (REMOTE_CLASS, CODE)
    assert error.remote_message.startswith("Invalid payload for users.register: ")
    for fragment in fragments:
        assert fragment in error.remote_message, error.remote_message


# -- calls -----------------------------------------------------------------------------


def test_a_valid_payload_reaches_the_handler(stack: Stack) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen))

    answer = stack.call("register", **good_user())

    assert answer.payload == {"registered": "ann"}
    assert seen == [("register", {"name": "ann", "user": good_user()["user"]})]
    assert stack.broker.discarded == stack.broker.unroutable == []


def test_an_invalid_value_is_answered_with_an_error_naming_the_field(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen))

    with caplog.at_level(logging.ERROR, logger="tavrida2.service"):
        error = stack.remote_error("register", name="ann", user={"age": -1})

    assert error.remote_message == (
        "Invalid payload for users.register: payload.user.age: -1 is less than the minimum of 0"
    )
    assert_rejected_payload(error)
    assert seen == []
    assert stack.broker.discarded == []  # answered: acked
    [record] = [r for r in caplog.records if r.name == "tavrida2.service"]
    assert "payload.user.age" in record.getMessage()
    assert not record.exc_info  # the caller's mistake: no traceback


def test_a_missing_required_property_is_named(stack: Stack) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen))

    error = stack.remote_error("register", user={"age": 3})

    assert_rejected_payload(error, "payload: 'name' is a required property")
    assert seen == []


def test_a_wrong_type_in_a_nested_object_is_named_by_its_path(stack: Stack) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen))

    error = stack.remote_error("register", **good_user(user={"age": 1, "address": {"zip": 12345}}))
    tags = stack.remote_error("register", **good_user(user={"age": 1, "tags": ["a", 2]}))

    assert_rejected_payload(error, "payload.user.address.zip: 12345 is not of type 'string'")
    assert_rejected_payload(tags, "payload.user.tags[1]: 2 is not of type 'string'")
    assert seen == []


def test_several_errors_are_reported_best_first_and_bounded(stack: Stack) -> None:
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service([]))

    error = stack.remote_error("register", user={"age": "x", "tags": [1, 2, 3, 4]})

    reason = error.remote_message.removeprefix("Invalid payload for users.register: ")
    parts = reason.split("; ")
    assert parts[0] == "payload: 'name' is a required property"
    assert len(parts) == 4
    assert parts[-1] == "and 3 more"


def test_the_schema_is_checked_before_the_handlers_parameters(stack: Stack) -> None:
    """A payload that misses a handler parameter gets the schema's answer, not WrongParameters."""
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service([]))

    error = stack.remote_error("register", name="ann")

    assert_rejected_payload(error, "payload: 'user' is a required property")


def test_a_password_in_a_rejected_url_is_masked_in_the_answer(stack: Stack) -> None:
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service([]))

    error = stack.remote_error("register", **good_user(callback="amqp://bob:s3cr3t@rabbit/"))

    assert_rejected_payload(error, "payload.callback: 'amqp://bob:***@rabbit/' does not match")
    assert "s3cr3t" not in error.remote_message


def test_handlers_without_a_schema_take_any_payload(stack: Stack) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen))

    answer = stack.call("plain", user={"age": -1})

    assert answer.payload == {"keys": ["user"]}
    assert seen == [("plain", {"user": {"age": -1}})]


def test_the_payload_is_validated_after_the_incoming_middlewares(stack: Stack) -> None:
    """A middleware may complete (or decrypt) the payload: the schema sees its result."""
    seen: list[tuple[str, Any]] = []

    class AddName(middleware.Middleware):
        def process(self, message):
            message.payload.setdefault("name", "from-middleware")
            return message

    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen, (AddName(),)))

    answer = stack.call("register", user={"age": 1})

    assert answer.payload == {"registered": "from-middleware"}
    assert seen == [("register", {"name": "from-middleware", "user": {"age": 1}})]


def test_an_async_handler_is_not_awaited_for_an_invalid_payload() -> None:
    """``async def`` handlers (async engine): the schema is checked before the coroutine."""
    seen: list[tuple[str, Any]] = []

    @dispatcher.rpc_service("users")
    class AsyncUsers(service.ServiceController):
        @dispatcher.rpc_method(method="register", schema=USER_SCHEMA)
        async def register(self, request, proxy, name, user):
            seen.append(("register", name))
            return {"registered": name}

    async_stack = Stack("async")
    async_stack.serve(USERS_QUEUE, USERS_EXCHANGE, AsyncUsers)

    error = async_stack.remote_error("register", name="", user={"age": 1})
    answer = async_stack.call("register", **good_user())

    assert_rejected_payload(error, "payload.name: '' should be non-empty")
    assert answer.payload == {"registered": "ann"}
    assert seen == [("register", "ann")]


# -- casts and notifications: rejected -------------------------------------------------


def test_an_invalid_cast_is_rejected_and_its_handler_not_called(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service(seen))

    with caplog.at_level(logging.ERROR, logger="tavrida2.engine"):
        stack.cast("register", name="ann", user={"age": -1})
        stack.cast("register", **good_user())

    assert seen == [("register", {"name": "ann", "user": good_user()["user"]})]
    assert stack.broker.discarded == []
    [rejected] = stack.broker.messages_in(f"{USERS_QUEUE}.dlq")  # dead-lettered at once
    assert rejected.headers["destination"] == "users.register"
    assert "payload.user.age" in rejected.headers["x-tavrida2-reason"]
    assert rejected.headers["x-tavrida2-error-code"] == 1044
    assert rejected.to_amqp().body_deserialize()["payload"]["user"] == {"age": -1}
    assert stack.broker.message_count(USERS_QUEUE) == 0  # not requeued
    logged = [r.getMessage() for r in caplog.records if "message rejected" in r.getMessage()]
    assert len(logged) == 1
    assert "payload.user.age: -1 is less than the minimum of 0" in logged[0]


def test_a_notification_failing_the_subscription_schema_is_rejected(stack: Stack) -> None:
    seen: list[tuple[str, Any]] = []
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users_service([]))
    stack.serve(AUDIT_QUEUE, AUDIT_EXCHANGE, audit_service(seen))

    stack.call("announce", user_id="seven")
    stack.call("announce", user_id=7)

    assert seen == [("on_announce", 7)]
    [rejected] = stack.broker.messages_in(f"{AUDIT_QUEUE}.dlq")
    assert rejected.headers["message_type"] == "notification"
    assert rejected.to_amqp().body_deserialize()["payload"] == {"user_id": "seven"}
    assert stack.broker.message_count(AUDIT_QUEUE) == 0


def test_a_response_handler_schema_rejects_a_bad_response(stack: Stack) -> None:
    """``rpc_response_method(schema=...)``: a response that fails it never reaches the handler."""
    seen: list[tuple[str, Any]] = []

    @dispatcher.rpc_service(SOURCE)
    class App(service.ServiceController):
        @dispatcher.rpc_response_method(
            service="users",
            method="plain",
            schema={"type": "object", "properties": {"keys": {"maxItems": 1}}},
        )
        def on_plain(self, response, proxy, keys):
            seen.append(("on_plain", keys))

    stack.discovery.register_remote_service(SOURCE, "app_exchange")
    users = users_service([])
    users.get_discovery().register_remote_service(SOURCE, "app_exchange")
    stack.serve(USERS_QUEUE, USERS_EXCHANGE, users)
    stack.serve("app_queue", "app_exchange", App)

    stack.run(lambda cli: cli.users.plain(a=1).call(wait=False))
    stack.run(lambda cli: cli.users.plain(a=1, b=2).call(wait=False))

    assert seen == [("on_plain", ["a"])]
    [rejected] = stack.broker.messages_in("app_queue.dlq")
    assert rejected.headers["message_type"] == "response"


# -- the schema itself: checked when the class is defined --------------------------------


@pytest.mark.parametrize(
    ("schema", "fragments"),
    [
        (
            {"type": "object", "properties": {"age": {"minimum": "zero"}}},
            ["Bad.register (bad.register) is invalid", "schema.properties.age.minimum", "'zero'"],
        ),
        ({"type": "objekt"}, ["schema.type", "'objekt'"]),
        ({"required": "name"}, ["schema.required", "'name' is not of type 'array'"]),
        ({"$schema": "https://example.com/my-draft"}, ["unknown $schema", "my-draft"]),
    ],
)
def test_an_invalid_schema_raises_when_the_class_is_defined(
    schema: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(exceptions.ConfigError) as caught:

        @dispatcher.rpc_service("bad")
        class Bad(service.ServiceController):
            @dispatcher.rpc_method(method="register", schema=schema)
            def register(self, request, proxy, **payload):
                pass

    message = str(caught.value)
    assert message.startswith(f"Configuration error: the schema of handler {__name__}.Bad.register")
    for fragment in fragments:
        assert fragment in message, message


def test_a_schema_that_is_not_a_dict_or_on_an_error_handler_is_refused() -> None:
    with pytest.raises(TypeError, match="schema= must be a dict"):
        dispatcher.rpc_method(method="m", schema=["name"])
    with pytest.raises(TypeError, match="an error handler takes no schema="):
        dispatcher.rpc_error_method(service="s", method="m", schema={"type": "object"})


def test_a_draft_07_schema_is_validated_as_draft_07() -> None:
    """``dependencies`` exists in draft-07 only (2020-12 would ignore it and accept)."""
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "dependencies": {"card": ["billing"]},
        "properties": {"card": {"type": "string"}},
    }

    @dispatcher.rpc_service("shop")
    class Shop(service.ServiceController):
        @dispatcher.rpc_method(method="pay", schema=schema)
        def pay(self, request, proxy, **payload):
            pass

        @dispatcher.rpc_method(method="pay_2020", schema={**schema, "$schema": DRAFT_2020_12})
        def pay_2020(self, request, proxy, **payload):
            pass

    info = Shop.get_dispatcher().get_info_by_name("pay")
    info.validate({"card": "4111", "billing": "here"})
    with pytest.raises(exceptions.ValidationError) as caught:
        info.validate({"card": "4111"})
    assert str(caught.value) == (
        "Invalid payload for shop.pay: payload: 'billing' is a dependency of 'card'"
    )
    assert type(info.validator).__name__ == "Draft7Validator"
    Shop.get_dispatcher().get_info_by_name("pay_2020").validate({"card": "4111"})


def test_a_schema_without_dollar_schema_is_draft_2020_12() -> None:
    @dispatcher.rpc_service("shop")
    class Shop(service.ServiceController):
        @dispatcher.rpc_method(method="pay", schema={"prefixItems": [{"type": "string"}]})
        def pay(self, request, proxy, **payload):
            pass

    info = Shop.get_dispatcher().get_info_by_name("pay")
    assert type(info.validator).__name__ == "Draft202012Validator"
    info.validate({"anything": 1})


def test_the_validator_is_built_once_per_class() -> None:
    seen: list[tuple[str, Any]] = []
    users = users_service(seen)
    info = users.get_dispatcher().get_info_by_name("register")
    validator = info.validator

    assert validator is not None
    assert info.schema == USER_SCHEMA
    assert users.get_dispatcher().get_info_by_name("register").validator is validator
    assert users.get_dispatcher().get_info_by_name("plain").validator is None


def test_a_long_value_is_cut_in_the_message() -> None:
    users = users_service([])
    info = users.get_dispatcher().get_info_by_name("register")

    with pytest.raises(exceptions.ValidationError) as caught:
        info.validate(good_user(name=["x" * 10_000]))

    assert len(str(caught.value)) < 300
    assert "payload.name: ['xxx" in str(caught.value)
    assert str(caught.value).endswith("...")


def test_validation_error_carries_the_entry_point_and_the_reason() -> None:
    error = exceptions.ValidationError(entry_point="users.register", reason="payload: bad")

    assert str(error) == "Invalid payload for users.register: payload: bad"
    assert error.code == 1044
    assert exceptions.is_ackable(error)
