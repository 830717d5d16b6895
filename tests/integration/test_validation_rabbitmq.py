"""Payload validation on the real RabbitMQ, both engines; and no password in DEBUG logs.

A ``users`` server (sync or async engine) whose ``users.register`` has a JSON
Schema: a valid call is answered, an invalid one gets a ``RemoteError`` with
code 1044 naming the field and never reaches the handler; an invalid cast is
rejected, not requeued. Then whole connection cycles (pika and aio-pika,
server and client) logged at DEBUG with a broker user of the test's own, and
with a wrong password: the password never shows in the logs or the errors.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from tavrida2 import client, config, discovery, dispatcher, exceptions, server, service
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    queue_info,
    rabbitmqctl,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

SECRET = f"s3cr3t-{uuid.uuid4().hex[:12]}"
USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "user"],
    "properties": {
        "name": {"type": "string"},
        "user": {
            "type": "object",
            "required": ["age"],
            "properties": {"age": {"type": "integer", "minimum": 0}},
        },
    },
}


@dispatcher.rpc_service("users")
class Users(service.ServiceController):
    rec: ClassVar[Recorder] = Recorder()

    @dispatcher.rpc_method(service="users", method="register", schema=USER_SCHEMA)
    def register(self, request, proxy, name, user):
        self.rec.add("register", name)
        return {"registered": name}


class Setup:
    """A users server on one engine and clients for it."""

    def __init__(self, names: Names, servers: Servers) -> None:
        self.names = names
        self.servers = servers
        self.exchange = names.exchange("users")
        self.queue = names.queue("users")
        self.disc = discovery.LocalDiscovery()
        self.disc.register_remote_service("users", self.exchange)

    def start(self, engine: bool, conf: config.ConnectionConfig | None = None) -> None:
        Users.set_discovery(self.disc)
        conf = conf or amqp_config(engine, self.names.connection("users"))
        self.servers.start(server.Server(conf, self.queue, self.exchange, [Users]))

    def client(self, conf: config.ConnectionConfig | None = None) -> client.RPCClient:
        conf = conf or amqp_config(False, self.names.connection("client"))
        return client.RPCClient(conf, self.disc, source="script")

    def async_client(self, conf: config.ConnectionConfig | None = None) -> client.AsyncRPCClient:
        conf = conf or amqp_config(True, self.names.connection("client"))
        return client.AsyncRPCClient(conf, self.disc, source="script")


@pytest.fixture
def setup(names: Names, servers: Servers) -> Iterator[Setup]:
    Users.rec = Recorder()
    yield Setup(names, servers)


def assert_names_the_age(error: exceptions.RemoteError) -> None:
    assert error.code == 1044
    assert error.remote_class == "tavrida2.exceptions.ValidationError"
    assert error.remote_message == (
        "Invalid payload for users.register: payload.user.age: -1 is less than the minimum of 0"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_valid_call_is_answered_an_invalid_one_gets_an_error_naming_the_field(
    engine: bool, setup: Setup
) -> None:
    setup.start(engine)

    with setup.client() as cli:
        answer = cli.users.register(name="ann", user={"age": 30}).call(timeout=10)
        with pytest.raises(exceptions.RemoteError) as raised:
            cli.users.register(name="bob", user={"age": -1}).call(timeout=10)

    async def from_async_client() -> tuple[Any, exceptions.RemoteError]:
        async with setup.async_client() as cli:
            good = await cli.users.register(name="cid", user={"age": 1}).call(timeout=10)
            with pytest.raises(exceptions.RemoteError) as bad:
                await cli.users.register(name="dan", user={"age": -1}).call(timeout=10)
            return good, bad.value

    async_answer, async_error = asyncio.run(from_async_client())

    assert answer.payload == {"registered": "ann"}
    assert async_answer.payload == {"registered": "cid"}
    assert_names_the_age(raised.value)
    assert_names_the_age(async_error)
    assert Users.rec.of("register") == ["ann", "cid"]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_invalid_cast_is_rejected_not_requeued(engine: bool, setup: Setup) -> None:
    setup.start(engine)

    with setup.client() as cli:
        cli.users.register(name="bob", user={"age": -1}).cast()
        cli.users.register(name="ann", user={"age": 30}).cast()
        Users.rec.wait_for("register")

    def settled() -> bool:
        info = queue_info(setup.queue)
        return info is not None and info["messages_ready"] + info["messages_unacknowledged"] == 0

    wait_until(settled, f"{setup.queue} to be empty")
    assert Users.rec.of("register") == ["ann"]


# -- never a password in the logs ---------------------------------------------------------


@pytest.fixture
def broker_user() -> Iterator[str]:
    """A broker user of the test's own, with password SECRET, allowed on vhost /."""
    name = f"t2it-user-{uuid.uuid4().hex}"
    rabbitmqctl("add_user", name, SECRET)
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_user", name)


def secret_config(engine: bool, user: str, password: str = SECRET) -> config.ConnectionConfig:
    return config.ConnectionConfig.from_url(
        f"amqp://{user}:{password}@127.0.0.1:5672/%2F",
        async_engine=engine,
        retry_delay=0.1,
        connection_attempts=1,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_connection_cycle_logged_at_debug_never_shows_the_password(
    engine: bool, setup: Setup, broker_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # tavrida2, pika, aio-pika, aiormq
    conf = secret_config(engine, broker_user)
    setup.start(engine, conf)

    with setup.client(secret_config(False, broker_user)) as cli:
        cli.users.register(name="ann", user={"age": 30}).call(timeout=10)

    async def from_async_client() -> None:
        async with setup.async_client(secret_config(True, broker_user)) as cli:
            await cli.users.register(name="bob", user={"age": 1}).call(timeout=10)

    asyncio.run(from_async_client())
    setup.servers.stop_all()

    assert Users.rec.of("register") == ["ann", "bob"]
    assert len(caplog.records) > 20  # the drivers' libraries did log at DEBUG
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.getMessage()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_refused_password_never_shows_in_the_error_or_the_logs(
    engine: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("users", "t2it-nowhere")
    wrong = secret_config(engine, "guest")

    with pytest.raises(exceptions.ConnectionFailed) as raised:
        if engine:

            async def connect() -> None:
                async with client.AsyncRPCClient(wrong, disc, source="script") as cli:
                    await cli.users.register(name="ann", user={}).cast()

            asyncio.run(connect())
        else:
            with client.RPCClient(wrong, disc, source="script") as cli:
                cli.users.register(name="ann", user={}).cast()

    assert "refused the credentials" in str(raised.value)
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)
    assert SECRET not in caplog.text
