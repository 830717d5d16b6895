"""Bad input on the way out: payloads JSON cannot carry, services discovery does not know,
exchanges that do not exist, and mandatory messages no queue takes.

From a script (``RPCClient``) the error is raised where the message is sent,
before anything reaches the broker. From a handler it becomes the caller's
Error on the sync engine; on the async engine, publishes are confirmed in the
background, so a failed one is logged and the delivery still acked.
"""

from __future__ import annotations

import datetime
import decimal

import pytest

from tavrida2 import client, config, exceptions
from tavrida2.discovery import LocalDiscovery
from tests.unit.bad_input_support import (
    CALLER_EXCHANGE,
    CALLER_QUEUE,
    TARGET_EXCHANGE,
    TARGET_QUEUE,
    Rig,
    Target,
    assert_error_answer,
    assert_logged,
)


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest):
    rig = Rig(request.param)
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture
def script_rig():
    """The servers on the sync engine, for calls from a script."""
    rig = Rig("sync")
    rig.start()
    yield rig
    rig.stop()


def script(rig: Rig, **remote: str) -> client.RPCClient:
    discovery = LocalDiscovery()
    for name, exchange in (remote or {"target": TARGET_EXCHANGE}).items():
        discovery.register_remote_service(name, exchange)
    conf = config.ConnectionConfig.from_url(f"memory://{rig.broker_name}")
    return client.RPCClient(config=conf, discovery=discovery, source="script")


def assert_nothing_sent(rig: Rig) -> None:
    rig.settle()
    assert rig.broker.message_count(TARGET_QUEUE) == 0
    assert Target.handled == [] and rig.answers == []
    assert rig.broker.unroutable == [] and rig.dead_letters() == []


# -- payloads JSON cannot carry ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        (datetime.date(2020, 1, 2), "date"),
        (decimal.Decimal("1.5"), "Decimal"),
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
    ],
    ids=["object", "date", "decimal", "set", "bytes"],
)
def test_script_payload_that_json_cannot_carry_names_the_key(script_rig, value, type_name):
    with script(script_rig) as cli, pytest.raises(TypeError) as caught:
        cli.target.echo(value=value, fine=1).cast()
    assert "payload key 'value'" in str(caught.value)
    assert f"type {type_name} " in str(caught.value)
    assert_nothing_sent(script_rig)


def test_script_context_that_json_cannot_carry_names_the_key(script_rig) -> None:
    with script(script_rig) as cli, pytest.raises(TypeError, match="context key 'user'"):
        cli.target.echo(value=1).call(context={"user": object()})
    assert_nothing_sent(script_rig)


def test_handler_calling_a_proxy_with_a_payload_json_cannot_carry(rig: Rig, caplog) -> None:
    rig.call({"service_name": "caller"}, destination="target.forward")
    (answer,) = rig.answers
    assert_error_answer(answer, "target.forward", TypeError, 1000, "payload key 'when'", "datetime")
    assert_logged(caplog, "target.forward failed", "TypeError", "payload key 'when'")
    assert rig.dead_letters() == []  # nothing half-sent reached the caller
    rig.assert_still_serves()


# -- services discovery does not know -----------------------------------------------------


def test_script_calling_an_unknown_service_fails_before_sending(script_rig) -> None:
    with script(script_rig) as cli:
        with pytest.raises(exceptions.UnableToDiscover, match="ghost") as caught:
            cli.ghost.echo(value=1).call()
        assert caught.value.code == 1007
        assert isinstance(caught.value, exceptions.AckableException)
        with pytest.raises(exceptions.UnableToDiscover, match="ghost"):
            cli["ghost"]
    with pytest.raises(exceptions.UnableToDiscover, match="ghost"):
        client.RPCClient(
            config=config.ConnectionConfig.from_url(f"memory://{script_rig.broker_name}"),
            discovery=LocalDiscovery(),
            source="script",
            service="ghost",
        )
    assert_nothing_sent(script_rig)


def test_handler_calling_an_unknown_service_answers_unable_to_discover(rig: Rig, caplog) -> None:
    rig.call({"service_name": "ghost"}, destination="target.relay")
    (answer,) = rig.answers
    assert_error_answer(answer, "target.relay", exceptions.UnableToDiscover, 1007, "ghost")
    assert_logged(caplog, "target.relay failed", "UnableToDiscover")
    assert rig.dead_letters() == [] and rig.broker.unroutable == []
    rig.assert_still_serves()


# -- exchanges that do not exist -------------------------------------------------------


def test_script_publishing_to_a_missing_exchange(script_rig) -> None:
    with script(script_rig, target="no_such_exchange") as cli:
        with pytest.raises(exceptions.ExchangeNotFound, match="no_such_exchange") as caught:
            cli.target.echo(value=1).cast()
        assert caught.value.code == 1053
        assert isinstance(caught.value, exceptions.DriverError)
        assert_nothing_sent(script_rig)
        # the same client goes on once discovery names an exchange that exists
        cli._discovery.register_remote_service("target", TARGET_EXCHANGE)
        cli.target.echo(value="after").cast()
    script_rig.settle()
    assert Target.handled == [("echo", {"value": "after"})]


def test_answer_to_an_exchange_that_vanished_is_logged(rig: Rig, caplog) -> None:
    rig.broker.delete_exchange(CALLER_EXCHANGE)
    rig.call({"value": 1})
    assert_logged(caplog, "Exchange 'caller_exchange' does not exist")
    assert Target.handled == [("echo", {"value": 1})]
    assert rig.answers == [] and rig.dead_letters() == []  # handled: acked
    assert rig.broker.message_count(TARGET_QUEUE) == 0
    rig.broker.declare_exchange(CALLER_EXCHANGE)
    rig.broker.bind_queue(CALLER_QUEUE, CALLER_EXCHANGE, "caller.#")
    rig.assert_still_serves()


# -- mandatory messages no queue takes ----------------------------------------------------


def test_script_message_that_no_queue_takes(script_rig) -> None:
    with script(script_rig, nobody=TARGET_EXCHANGE) as cli:
        with pytest.raises(exceptions.UnroutableMessage, match=r"nobody\.echo") as caught:
            cli.nobody.echo(value=1).cast()
        assert caught.value.code == 1042
        assert isinstance(caught.value, exceptions.DriverError)
    assert_nothing_sent(script_rig)


def test_handler_message_that_no_queue_takes(rig: Rig, caplog) -> None:
    """Both engines: the handler's send was not confirmed, so the handler failed
    and the caller gets the Error (on the sync engine the cast raises in the
    handler; on the async engine it is published after the handler returned
    and the controller waits for it before answering)."""
    target_discovery = Target.get_discovery()
    target_discovery.register_remote_service("nobody", CALLER_EXCHANGE)
    rig.call({"service_name": "nobody"}, destination="target.relay")
    (answer,) = rig.answers
    assert_error_answer(answer, "target.relay", exceptions.UnroutableMessage, 1042, "nobody")
    assert_logged(caplog, "target.relay failed", "UnroutableMessage")
    if rig.is_async:
        assert_logged(caplog, "a message it sent was not confirmed", "nobody.sink")
    assert rig.dead_letters() == [] and rig.broker.unroutable == []
    rig.assert_still_serves()
