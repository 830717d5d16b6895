"""Bad input at the handlers: payloads that do not fit, wrong results, broken middlewares,
failing handlers, and handler definitions that cannot work.

As in test_bad_input.py: error class and code, the log, what the caller got,
ack or reject, and the next good call answered by the same running server.
"""

from __future__ import annotations

import pytest

from tavrida2 import config, dispatcher, exceptions, middleware, server, service
from tavrida2.discovery import LocalDiscovery
from tavrida2.messages import IncomingRequestCast, Response
from tavrida2.postprocessor import PostProcessor
from tavrida2.proxies import RPCProxy
from tests.unit.bad_input_support import (
    Rig,
    Target,
    assert_error_answer,
    assert_logged,
    call_headers,
)


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest):
    rig = Rig(request.param)
    rig.start()
    yield rig
    rig.stop()


def target_controller(rig: Rig) -> service.ServiceController:
    (controller,) = [s for s in rig.servers[0].services if type(s) is Target]
    return controller


def only_answer(rig: Rig):
    assert len(rig.answers) == 1, rig.answers
    assert rig.dead_letters() == []  # acked
    return rig.answers[0]


# -- payloads that do not fit ------------------------------------------------------


def test_missing_parameter_is_answered_with_wrong_parameters(rig: Rig, caplog) -> None:
    info = Target.get_dispatcher().get_handler_info("target.echo", "request")
    with pytest.raises(exceptions.WrongParameters, match="missing parameter") as caught:
        info.select({"other": 1}, strict=False)
    assert caught.value.code == 1041
    rig.call({"other": 1})
    assert_error_answer(only_answer(rig), "target.echo", exceptions.WrongParameters, 1041, "value")
    assert_logged(caplog, "target.echo failed", "WrongParameters", "missing parameter(s) value")
    assert Target.handled == []
    rig.assert_still_serves()


def test_missing_parameter_of_a_cast_is_logged_and_rejected(rig: Rig, caplog) -> None:
    rig.cast({})
    record = assert_logged(caplog, "message rejected", "WrongParameters")
    assert isinstance(record.exc_info[1], exceptions.WrongParameters)
    assert [m.headers["destination"] for m in rig.dead_letters()] == ["target.echo"]
    assert rig.answers == [] and Target.handled == []
    rig.assert_still_serves()


def test_extra_parameters_are_dropped_by_default(rig: Rig) -> None:
    rig.call({"value": 1, "extra": 2, "proxy": 3})
    assert [(a.kind, a.payload) for a in rig.answers] == [("response", {"value": 1})]
    assert Target.handled == [("echo", {"value": 1})]


def test_extra_parameters_are_refused_by_a_strict_controller(rig: Rig, caplog) -> None:
    rig.call({"value": 1, "extra": 2}, destination="strict_target.echo")
    answer = only_answer(rig)
    assert_error_answer(
        answer, "strict_target.echo", exceptions.WrongParameters, 1041, "unexpected", "extra"
    )
    assert_logged(caplog, "strict_target.echo failed", "unexpected parameter(s) extra")
    assert Target.handled == []
    rig.call({"value": 2}, destination="strict_target.echo")  # exactly its parameters: fine
    assert [(a.kind, a.payload) for a in rig.answers[1:]] == [("response", {"value": 2})]
    rig.assert_still_serves()


@pytest.mark.parametrize("key", ["request", "proxy", "self"])
def test_payload_key_that_a_kwargs_handler_takes_itself_is_refused(rig, caplog, key) -> None:
    rig.call({key: 1, "ok": 2}, destination="kwargs_target.any")
    assert_error_answer(
        only_answer(rig), "kwargs_target.any", exceptions.WrongParameters, 1041, key
    )
    assert_logged(caplog, "kwargs_target.any failed", "WrongParameters")
    assert Target.handled == []
    rig.call({"ok": 2}, destination="kwargs_target.any")
    assert [(a.kind, a.payload) for a in rig.answers[1:]] == [("response", {"keys": ["ok"]})]
    rig.assert_still_serves()


# -- wrong results -----------------------------------------------------------------


def test_handler_returning_a_wrong_type_answers_wrong_response(rig: Rig, caplog) -> None:
    rig.call({}, destination="target.wrong")
    answer = only_answer(rig)
    assert_error_answer(answer, "target.wrong", exceptions.WrongResponse, 1009, "['not', 'a'")
    assert_logged(caplog, "target:", "Got incorrect response")
    assert Target.handled == [("wrong", {})]
    rig.assert_still_serves()


def test_cast_handler_returning_a_wrong_type_is_logged_and_acked(rig: Rig, caplog) -> None:
    rig.cast({}, destination="target.wrong")
    assert_logged(caplog, "Got incorrect response")
    assert rig.answers == [] and rig.dead_letters() == []
    rig.assert_still_serves()


class BadIncoming(middleware.Middleware):
    """Returns garbage for the value "bad", the message otherwise."""

    def process(self, message):
        return "garbage" if message.payload.get("value") == "bad" else message


class BadOutgoing(middleware.Middleware):
    def process(self, message):
        return {"not": "a message"} if message.payload.get("value") == "bad" else message


class FailingIncoming(middleware.Middleware):
    def process(self, message):
        if message.payload.get("value") == "bad":
            raise KeyError("middleware lost its key")
        return message


def test_incoming_middleware_returning_a_wrong_type(rig: Rig, caplog) -> None:
    target_controller(rig).add_incoming_middleware(BadIncoming())
    rig.call({"value": "bad"})
    answer = only_answer(rig)
    assert_error_answer(answer, "target.echo", exceptions.IncorrectMessage, 1031, "'garbage'")
    assert_logged(caplog, "target.echo failed", "IncorrectMessage")
    assert Target.handled == []
    rig.assert_still_serves()


def test_incoming_middleware_returning_a_wrong_type_on_a_cast(rig: Rig, caplog) -> None:
    target_controller(rig).add_incoming_middleware(BadIncoming())
    rig.cast({"value": "bad"})
    record = assert_logged(caplog, "message rejected", "IncorrectMessage")
    assert isinstance(record.exc_info[1], exceptions.IncorrectMessage)
    assert len(rig.dead_letters()) == 1 and rig.answers == []
    rig.assert_still_serves()


def test_incoming_middleware_raising_answers_its_exception(rig: Rig, caplog) -> None:
    target_controller(rig).add_incoming_middleware(FailingIncoming())
    rig.call({"value": "bad"})
    assert_error_answer(only_answer(rig), "target.echo", KeyError, 1000, "lost its key")
    assert_logged(caplog, "target.echo failed", "KeyError")
    rig.assert_still_serves()


def test_outgoing_middleware_returning_a_wrong_type(rig: Rig, caplog) -> None:
    target_controller(rig).add_outgoing_middleware(BadOutgoing())
    rig.call({"value": "bad"})
    answer = only_answer(rig)
    assert_error_answer(
        answer, "target.echo", exceptions.IncorrectOutgoingMessage, 1031, "'not': 'a message'"
    )
    assert_logged(caplog, "outgoing middleware failed", "IncorrectOutgoingMessage")
    assert Target.handled == [("echo", {"value": "bad"})]  # the handler ran; its answer did not
    rig.assert_still_serves()


# -- failing handlers ----------------------------------------------------------------


def test_exception_in_a_cast_handler_is_logged_and_rejected(rig: Rig, caplog) -> None:
    rig.cast({"value": 7}, destination="target.explode")
    record = assert_logged(caplog, "Handler target.explode failed", "kaboom 7", "message rejected")
    assert isinstance(record.exc_info[1], ValueError)
    assert [m.headers["destination"] for m in rig.dead_letters()] == ["target.explode"]
    assert rig.answers == []
    assert Target.handled == [("explode", {"value": 7})]
    rig.assert_still_serves()


def test_exception_in_a_cast_handler_is_handler_failed() -> None:
    controller = Target(PostProcessor(_NoPublisher(), LocalDiscovery()))
    cast = IncomingRequestCast(call_headers("target.explode", reply_to=""), {}, {"value": 1})
    info = Target.get_dispatcher().get_handler_info("target.explode", "request")
    with pytest.raises(exceptions.HandlerFailed) as caught:
        controller.handle(info, cast, RPCProxy(controller.postprocessor, "target.explode"))
    assert caught.value.code == 1045
    assert isinstance(caught.value, exceptions.NackableException)
    assert isinstance(caught.value.__cause__, ValueError)
    assert "target.explode" in str(caught.value)


def test_exception_in_a_call_handler_is_answered(rig: Rig, caplog) -> None:
    rig.call({"value": 8}, destination="target.explode")
    assert_error_answer(only_answer(rig), "target.explode", ValueError, 1000, "kaboom 8")
    record = assert_logged(caplog, "target.explode failed", "kaboom 8")
    assert record.exc_info is not None  # a traceback for an unexpected exception
    rig.assert_still_serves()


class _NoPublisher:
    def publish(self, *args, **kwargs):
        raise AssertionError("nothing should be published")


# -- handler definitions that cannot work --------------------------------------------


def test_async_handler_on_the_sync_engine_fails_at_server_construction() -> None:
    @dispatcher.rpc_service("async_target")
    class AsyncTarget(service.ServiceController):
        @dispatcher.rpc_method(method="work")
        async def work(self, request, proxy):
            return {}

    sync_conf = config.ConnectionConfig.from_url("memory://incompatible")
    with pytest.raises(exceptions.IncompatibleHandler, match=r"AsyncTarget\.work") as caught:
        server.Server(sync_conf, "q", "x", [AsyncTarget])
    assert caught.value.code == 1046
    async_conf = config.ConnectionConfig.from_url("memory://incompatible", async_engine=True)
    assert server.Server(async_conf, "q", "x", [AsyncTarget]).queue_name == "q"


def test_error_handler_with_extra_required_parameters_fails_at_class_definition() -> None:
    with pytest.raises(exceptions.WrongHandlerSignature, match="on_error") as caught:

        @dispatcher.rpc_service("bad_errors")
        class BadErrors(service.ServiceController):
            @dispatcher.rpc_error_method(service="remote", method="m")
            def on_error(self, error, proxy, detail):
                pass

    assert caught.value.code == 1043
    assert "error handler takes only" in str(caught.value)


def test_error_handler_with_optional_parameters_is_accepted() -> None:
    @dispatcher.rpc_service("fine_errors")
    class FineErrors(service.ServiceController):
        @dispatcher.rpc_error_method(service="remote", method="m")
        def on_error(self, error, proxy, detail=None):
            pass

    assert FineErrors.get_dispatcher().get_handler("remote.m", "error") == "on_error"


@pytest.mark.parametrize(
    "handler",
    [
        lambda self, request: None,
        lambda self, request, proxy, value, /: None,
    ],
    ids=["no-proxy-parameter", "positional-only-payload"],
)
def test_handler_signature_that_cannot_take_a_message_fails(handler) -> None:
    with pytest.raises(exceptions.WrongHandlerSignature) as caught:
        dispatcher.rpc_service("bad_signature")(
            type(
                "BadSignature",
                (service.ServiceController,),
                {"h": dispatcher.rpc_method(method="h")(handler)},
            )
        )
    assert caught.value.code == 1043


def test_a_handler_may_still_return_a_response_object(rig: Rig) -> None:
    """Control: the documented result types pass the checks that refuse the rest."""

    def echo_response(self, request, proxy, value):
        return Response.create_by_request(request, {"value": value, "via": "Response"})

    controller = target_controller(rig)
    controller.echo = echo_response.__get__(controller)  # type: ignore[method-assign]
    rig.call({"value": 5})
    assert [(a.kind, a.payload) for a in rig.answers] == [
        ("response", {"value": 5, "via": "Response"})
    ]
