"""Logging middlewares (``middleware.LogIncomingMiddleware``/``LogOutgoingMiddleware``) and masking.

The first part drives the middlewares and ``steps.LoggingMiddleware.mask`` on
messages built by hand; the second runs them on servers of the memory broker
(both engines); the last logs whole client/server cycles at DEBUG, and the
repr/str of configs, and checks that the password never shows.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    exceptions,
    messages,
    middleware,
    server,
    service,
    steps,
)
from tavrida2.drivers.memory import MemoryBroker
from tests.unit.bad_input_support import body_of, call_headers

BROKER = "logging-middlewares"
QUEUE, EXCHANGE = "vault_queue", "vault_exchange"
SOURCE = "client_app"
SECRET = "s3cr3t-Pa55"
LOGGER = "tests.vault.messages"


def request(headers: dict[str, Any] | None = None, **payload: Any) -> messages.Message:
    """An incoming call to ``vault.open`` from ``client_app`` with extra ``headers``."""
    all_headers = call_headers("vault.open", source=SOURCE, reply_to=SOURCE, **(headers or {}))
    return messages.IncomingRequestCall(all_headers, {}, payload)


def lines(caplog: pytest.LogCaptureFixture, logger: str = LOGGER) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


# -- masking ---------------------------------------------------------------------------


def test_the_default_sensitive_headers_are_masked_whatever_their_case() -> None:
    masker = steps.LoggingMiddleware()

    masked = masker.mask(
        {"Authorization": f"Bearer {SECRET}", "PROXY-Authorization": SECRET, "x-trace": "t1"}
    )

    assert masked == {"Authorization": "***", "PROXY-Authorization": "***", "x-trace": "t1"}


def test_configured_headers_are_masked_too_in_headers_and_payload_keys() -> None:
    masker = middleware.LogIncomingMiddleware(sensitive_headers=["X-Api-Key", "password"])

    assert masker.mask({"x-api-key": SECRET, "authorization": SECRET, "x-other": 1}) == {
        "x-api-key": "***",
        "authorization": "***",
        "x-other": 1,
    }
    assert masker.mask_value({"login": {"user": "bob", "Password": SECRET}, "n": [1]}) == {
        "login": {"user": "bob", "Password": "***"},
        "n": [1],
    }


def test_sensitive_headers_must_be_a_list_of_names() -> None:
    with pytest.raises(TypeError, match="not a str"):
        middleware.LogIncomingMiddleware(sensitive_headers="x-api-key")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("amqp://guest:s3cr3t@rabbit:5672/%2F", "amqp://guest:***@rabbit:5672/%2F"),
        ("see amqps://bob:p%40ss@h/v and more", "see amqps://bob:***@h/v and more"),
        ("redis://:s3cr3t@cache:6379/0", "redis://:***@cache:6379/0"),
        ("amqp://bob:raw@pass/word@host/", "amqp://bob:***@host/"),
        (
            '{"url":"postgres://a:b@db/x","mail":"a@b.c"}',
            '{"url":"postgres://a:***@db/x","mail":"a@b.c"}',
        ),
        ("http://user@host/path", "http://user@host/path"),
        ("http://host/path?mail=a@b.c", "http://host/path?mail=a@b.c"),
        ("no url: a:b@c", "no url: a:b@c"),
        ("amqp://guest:***@rabbit/", "amqp://guest:***@rabbit/"),
    ],
)
def test_url_passwords_are_masked(text: str, masked: str) -> None:
    assert steps.mask_url_passwords(text) == masked


def test_url_passwords_are_masked_in_header_and_payload_values_at_any_depth() -> None:
    masker = steps.LoggingMiddleware()
    url = f"amqp://bob:{SECRET}@rabbit/"

    assert masker.mask({"x-upstream": url}) == {"x-upstream": "amqp://bob:***@rabbit/"}
    assert masker.mask_value({"a": [{"b": url}], "c": (url,)}) == {
        "a": [{"b": "amqp://bob:***@rabbit/"}],
        "c": ["amqp://bob:***@rabbit/"],
    }
    assert masker.mask_body(body_of({"dsn": url}, {"authorization": SECRET})) == {
        "context": {"authorization": "***"},
        "payload": {"dsn": "amqp://bob:***@rabbit/"},
    }
    assert masker.mask_body(f"not json {url}".encode()) == "not json amqp://bob:***@rabbit/"


# -- the middlewares on a message --------------------------------------------------------


def test_the_message_is_returned_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    message = request(
        {"authorization": SECRET, "x-dsn": f"amqp://u:{SECRET}@h/"}, dsn=f"amqp://u:{SECRET}@h/"
    )
    headers, payload = copy.deepcopy(message.headers), copy.deepcopy(message.payload)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for step in (
            middleware.LogIncomingMiddleware(LOGGER),
            middleware.LogOutgoingMiddleware(LOGGER),
        ):
            assert step.process(message) is message

    assert message.headers == headers and message.payload == payload
    assert len(lines(caplog)) == 2
    assert SECRET not in caplog.text


def test_one_line_with_type_route_ids_masked_headers_and_payload_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = request({"Authorization": SECRET, "x-trace": "t1"}, name="ann")
    step = middleware.LogIncomingMiddleware(logger=LOGGER)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        step.process(message)

    [record] = lines(caplog)
    assert record.levelno == logging.INFO
    text = record.getMessage()
    assert text.startswith(f"incoming request {SOURCE} -> vault.open ")
    for fragment in (
        f"message_id={message.message_id}",
        f"request_id={message.request_id}",
        f"correlation_id={message.correlation_id}",
        "'Authorization': '***'",
        "'x-trace': 't1'",
        f"'reply_to': '{SOURCE}'",
        "payload={'name': 'ann'}",
    ):
        assert fragment in text, text
    assert "\n" not in text
    assert "'source'" not in text  # shown once, as the route


def test_the_payload_is_left_out_unless_the_logger_is_enabled_for_its_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = request(name="ann")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        middleware.LogIncomingMiddleware(LOGGER).process(message)
        middleware.LogIncomingMiddleware(LOGGER, payload_level=logging.INFO).process(message)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        middleware.LogIncomingMiddleware(LOGGER, payload_level=None).process(message)

    assert ["payload=" in r.getMessage() for r in lines(caplog)] == [False, True, False]


def test_level_and_logger_are_configurable(caplog: pytest.LogCaptureFixture) -> None:
    audit = logging.getLogger("tests.audit")
    message = request(name="ann")

    with caplog.at_level(logging.WARNING):
        middleware.LogOutgoingMiddleware(audit, level=logging.WARNING).process(message)
        middleware.LogOutgoingMiddleware("tests.other", level=logging.ERROR).process(message)
        middleware.LogOutgoingMiddleware("tests.quiet", level=logging.INFO).process(message)

    got = [(r.name, r.levelno) for r in caplog.records if r.name.startswith("tests.")]
    assert got == [("tests.audit", logging.WARNING), ("tests.other", logging.ERROR)]
    assert caplog.records[0].getMessage().startswith("outgoing request ")


def test_a_payload_too_deep_to_mask_is_left_out_and_the_message_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]
    message = request(deep=deep)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert middleware.LogIncomingMiddleware(LOGGER).process(message) is message

    [record] = lines(caplog)
    assert record.getMessage().endswith("payload=<nested too deep to log>")


def test_the_default_logger_is_tavrida2_messages() -> None:
    assert middleware.LogIncomingMiddleware().log is logging.getLogger("tavrida2.messages")
    assert isinstance(middleware.LogIncomingMiddleware(), middleware.Middleware)


# -- on running servers ---------------------------------------------------------------


def vault_service(seen: list[messages.Message], **options: Any) -> type[service.ServiceController]:
    """``vault.open`` echoes its payload; logs in and out with ``options``."""

    @dispatcher.rpc_service("vault")
    class Vault(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            self.add_incoming_middleware(middleware.LogIncomingMiddleware(**options))
            self.add_outgoing_middleware(middleware.LogOutgoingMiddleware(**options))

        @dispatcher.rpc_method(method="open")
        def open(self, request, proxy, **payload):
            seen.append(request)
            return {"echo": payload}

    return Vault


def serve_and_call(
    conf: config.ConnectionConfig,
    controller: type[service.ServiceController],
    action: Callable[[Any], Any],
    headers: dict[str, Any] | None = None,
) -> Any:
    """Serve ``controller`` (on ``conf``'s engine) and run ``action`` on a client of ``conf``."""
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("vault", EXCHANGE)
    broker = MemoryBroker.get(conf.memory_broker)
    srv = server.Server(conf, QUEUE, EXCHANGE, [controller])
    if not conf.async_engine:
        srv.start()
        try:
            with client.RPCClient(conf, disc, source=SOURCE, headers=headers) as cli:
                result = action(cli)
                broker.run_until_idle()
            return result
        finally:
            srv.stop()
            if srv.driver is not None:
                srv.driver.close()

    async def scenario() -> Any:
        task = asyncio.ensure_future(srv.serve())
        try:
            deadline = time.monotonic() + 5
            while not srv.started.is_set():
                assert not task.done() and time.monotonic() < deadline
                await asyncio.sleep(0.005)
            async with client.AsyncRPCClient(conf, disc, source=SOURCE, headers=headers) as cli:
                result = action(cli)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await result
            assert broker.wait_until_idle(timeout=5)
            return result
        finally:
            srv.stop()
            await task

    return asyncio.run(scenario())


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_incoming_and_outgoing_middlewares_log_a_call_on_a_running_server(
    async_engine: bool, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[messages.Message] = []
    vault = vault_service(seen, logger=LOGGER, sensitive_headers=["x-api-key"])
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=async_engine)
    headers = {"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET, "x-trace": "t1"}

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        answer = serve_and_call(
            conf,
            vault,
            lambda cli: cli.vault.open(dsn=f"amqp://bob:{SECRET}@db/", n=1).call(timeout=5),
            headers,
        )

    # the pipeline went on with the message as it came
    assert answer.payload == {"echo": {"dsn": f"amqp://bob:{SECRET}@db/", "n": 1}}
    assert seen[0].headers["Authorization"] == f"Bearer {SECRET}"
    incoming, outgoing = (r.getMessage() for r in lines(caplog))
    assert incoming.startswith(f"incoming request {SOURCE} -> vault.open ")
    assert outgoing.startswith(f"outgoing response vault.open -> {SOURCE} ")
    for text in (incoming, outgoing):
        assert "'Authorization': '***'" in text and "'x-api-key': '***'" in text, text
        assert "'x-trace': 't1'" in text
        assert "amqp://bob:***@db/" in text
        assert SECRET not in text
    assert f"request_id={seen[0].request_id}" in outgoing


def test_an_error_answer_is_logged_by_the_outgoing_middleware(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault = vault_service([], logger=LOGGER)
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")

    # an unknown method is answered before any controller runs: its middlewares see nothing
    with (
        caplog.at_level(logging.DEBUG, logger=LOGGER),
        pytest.raises(exceptions.RemoteError),
    ):
        serve_and_call(conf, vault, lambda cli: cli.vault.nope().call(timeout=5))
    assert lines(caplog) == []

    @dispatcher.rpc_service("vault")
    class Failing(vault):  # type: ignore[valid-type, misc]
        @dispatcher.rpc_method(method="open")
        def open(self, request, proxy, **payload):
            raise ValueError(f"cannot reach amqp://bob:{SECRET}@db/")

    with (
        caplog.at_level(logging.DEBUG, logger=LOGGER),
        pytest.raises(exceptions.RemoteError) as caught,
    ):
        serve_and_call(conf, Failing, lambda cli: cli.vault.open().call(timeout=5))

    # the Error answer travels to other services and their logs: masked as well
    assert caught.value.remote_message == "cannot reach amqp://bob:***@db/"
    [_, outgoing] = (r.getMessage() for r in lines(caplog))
    assert outgoing.startswith(f"outgoing error vault.open -> {SOURCE} ")
    assert "cannot reach amqp://bob:***@db/" in outgoing
    assert all(SECRET not in r.getMessage() for r in lines(caplog))


# -- never a password in the logs --------------------------------------------------------


def secret_config(async_engine: bool = False) -> config.ConnectionConfig:
    return config.ConnectionConfig(
        credentials=config.Credentials("bob", SECRET),
        driver="memory",
        memory_broker=BROKER,
        async_engine=async_engine,
    )


def test_configs_never_show_their_password() -> None:
    conf = config.ConnectionConfig.from_url(f"amqps://bob:{SECRET}@rabbit:5671/prod?heartbeat=5")
    credentials = config.Credentials("bob", SECRET)

    shown = [
        repr(conf),
        str(conf),
        conf.to_url(),
        repr(conf.to_dict()),
        str(conf.to_dict()),
        repr(credentials),
        str(credentials),
        repr(secret_config()),
    ]

    for text in shown:
        assert SECRET not in text, text
    assert conf.to_url() == "amqps://bob:***@rabbit:5671/prod"
    assert SECRET in conf.to_url(mask_password=False)  # only when asked for


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://bob:{SECRET}@rabbit/",
        f"amqp://bob:{SECRET}@rabbit:99999/",
        f"amqp://bob:{SECRET}@rabbit/?heartbeat=often",
        f"amqp://bob:{SECRET}@rabbit/?nope=1",
    ],
)
def test_config_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(exceptions.TavridaError) as caught:
        config.ConnectionConfig.from_url(url)

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_a_full_cycle_logged_at_debug_never_shows_a_password(
    async_engine: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Server and client on a config with a password, everything at DEBUG, secrets in messages."""
    caplog.set_level(logging.DEBUG)  # every logger, before the server is made
    conf = secret_config(async_engine)
    vault = vault_service([])
    headers = {"authorization": SECRET, "x-dsn": f"amqp://u:{SECRET}@h/"}

    def calls(cli: Any) -> Any:
        if async_engine:

            async def both() -> Any:
                await cli.vault.open(dsn=f"amqp://u:{SECRET}@h/").cast()
                return await cli.vault.open(dsn=f"amqp://u:{SECRET}@h/").call(timeout=5)

            return both()
        cli.vault.open(dsn=f"amqp://u:{SECRET}@h/").cast()
        return cli.vault.open(dsn=f"amqp://u:{SECRET}@h/").call(timeout=5)

    answer = serve_and_call(conf, vault, calls, headers)

    assert answer.payload["echo"]["dsn"] == f"amqp://u:{SECRET}@h/"
    logged = [r.getMessage() for r in caplog.records]
    assert any("***" in text for text in logged)  # the AMQP-level DEBUG steps did log
    for text in logged:
        assert SECRET not in text, text
    assert SECRET not in caplog.text  # tracebacks included


def test_a_message_that_cannot_be_handled_is_logged_with_masked_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vault = vault_service([])
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")
    broker = MemoryBroker.get(BROKER)
    bad = call_headers(
        "vault.open", message_type="bogus", authorization=SECRET, dsn=f"amqp://u:{SECRET}@h/"
    )

    def publish(cli: Any) -> None:
        broker.publish(EXCHANGE, "vault.open", body_of({}), bad, None, True)

    with caplog.at_level(logging.ERROR, logger="tavrida2.engine"):
        serve_and_call(conf, vault, publish)

    [record] = [r for r in caplog.records if "cannot handle message" in r.getMessage()]
    assert "'authorization': '***'" in record.getMessage()
    assert "amqp://u:***@h/" in record.getMessage()
    assert SECRET not in caplog.text
