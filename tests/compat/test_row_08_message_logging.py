"""Row 8: the log lines of every message sent and received, as Tavrida 1.0 wrote them.

1.0 logged each incoming and each outgoing AMQP message at DEBUG on the
``tavrida.steps`` logger, ``Incoming AMQP message with headers '...' and body
'...'`` (``Outgoing`` for sent ones), with the values of the
``authorization`` and ``proxy-authorization`` headers (any case) shown as
``<authorization>`` and ``<proxy-authorization>``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tavrida2 import dispatcher, exceptions, service
from tavrida2.postprocessor import PostProcessor
from tavrida2.preprocessor import PreProcessor
from tavrida2.steps import LogIncomingAMQPMessageMiddleware
from tests.compat.memory_rig import Rig

SECRET = "Bearer s3cr3t-t0ken"


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest) -> Any:
    made = Rig(request.param)
    yield made
    made.stop()


def echo_service(rig: Rig) -> None:
    @dispatcher.rpc_service("l_echo")
    class Echo(service.ServiceController):
        @dispatcher.rpc_method(service="l_echo", method="echo")
        def echo(self, request, proxy, value):
            return {"value": value}

    rig.serve("l_echo_queue", "l_echo_exchange", Echo)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tavrida.steps"]


def test_row_08a_each_message_in_and_out_is_logged_on_tavrida_steps(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tavrida.steps")
    echo_service(rig)
    rig.client_headers = {"Authorization": SECRET, "proxy-authorization": SECRET, "x-k": "v"}

    rig.run(lambda cli: cli.l_echo.echo(value=5).call(timeout=5))

    logged = lines(caplog)
    outgoing = [t for t in logged if t.startswith("Outgoing AMQP message with headers '")]
    incoming = [t for t in logged if t.startswith("Incoming AMQP message with headers '")]
    # the client's request and the server's answer, each sent once and received once
    assert len(outgoing) == len(incoming) == 2, logged
    for text in logged:
        assert SECRET not in text
        assert "'Authorization': '<authorization>'" in text
        assert "'proxy-authorization': '<proxy-authorization>'" in text
        assert "'x-k': 'v'" in text
    assert any('and body \'{"context": ' in t and '"payload": {"value": 5}' in t for t in logged)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "tavrida.steps")


def test_row_08b_kept_the_steps_are_not_in_the_pipeline_unless_debug_is_on() -> None:
    logging.getLogger("tavrida.steps").setLevel(logging.INFO)
    try:
        pre = PreProcessor(router=_empty_table(), service_list=[])
        post = PostProcessor(driver=_NoDriver(), discovery=_discovery())
    finally:
        logging.getLogger("tavrida.steps").setLevel(logging.NOTSET)

    assert not any(isinstance(step, LogIncomingAMQPMessageMiddleware) for step in pre._steps)
    assert post._log_step is None


def test_row_08b_the_steps_are_in_the_pipeline_when_debug_is_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tavrida.steps")

    pre = PreProcessor(router=_empty_table(), service_list=[])
    post = PostProcessor(driver=_NoDriver(), discovery=_discovery())

    assert isinstance(pre._steps[0], LogIncomingAMQPMessageMiddleware)
    assert post._log_step is not None


def _empty_table() -> Any:
    from tavrida2.router import RoutingTable

    return RoutingTable([])


def _discovery() -> Any:
    from tavrida2.discovery import LocalDiscovery

    return LocalDiscovery()


class _NoDriver:
    def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is published here")


def test_row_08c_kept_payload_secrets_and_url_passwords_are_masked_too(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """1.0 logged the body as it was; tavrida2 also masks sensitive keys and URL passwords."""
    caplog.set_level(logging.DEBUG, logger="tavrida.steps")
    echo_service(rig)

    rig.run(
        lambda cli: cli.l_echo.echo(value={"authorization": SECRET, "dsn": "amqp://u:pw@h/"}).call(
            timeout=5
        )
    )

    logged = lines(caplog)
    assert logged
    for text in logged:
        assert SECRET not in text and ":pw@" not in text
    assert any('"authorization": "<authorization>"' in t and "amqp://u:***@h/" in t for t in logged)


def test_row_08d_kept_tavrida2s_own_logs_are_on_tavrida2_loggers(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing call handler: 1.0 logged on ``tavrida.service``, tavrida2 on ``tavrida2.*``."""

    @dispatcher.rpc_service("l_fail")
    class Fail(service.ServiceController):
        @dispatcher.rpc_method(service="l_fail", method="fail")
        def fail(self, request, proxy):
            raise ValueError("broken")

    rig.serve("l_fail_queue", "l_fail_exchange", Fail)

    def call(cli: Any) -> Any:
        async def waiting() -> None:
            with pytest.raises(exceptions.RemoteError):
                await cli.l_fail.fail().call(timeout=5)

        if rig.is_async:
            return waiting()
        with pytest.raises(exceptions.RemoteError):
            cli.l_fail.fail().call(timeout=5)
        return None

    with caplog.at_level(logging.ERROR):
        rig.run(call)

    [record] = [r for r in caplog.records if "l_fail.fail failed" in r.getMessage()]
    assert record.name == "tavrida2.service"
    assert not [r for r in caplog.records if r.name.startswith("tavrida.")]
