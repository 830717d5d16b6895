"""Bad input on the wire: broken headers, broken bodies, unknown services and methods.

Each case checks, on both engines: the error class and code (what the
preprocessor raises), that the server logged it, what the caller received (an
Error at its ``rpc_error_method`` when the headers make a valid call), whether
the delivery was acked or dead-lettered (dead letters land in the target queue's
``.dlq`` with the reason in headers), and that the next good call is
answered by the same running server.
"""

from __future__ import annotations

import pytest

from tavrida2 import exceptions
from tavrida2.messages import AMQPMessage
from tests.unit.bad_input_support import (
    REPLY_TO,
    Rig,
    Target,
    assert_error_answer,
    assert_logged,
    body_of,
    call_headers,
    prepare_error,
)

GOOD_BODY = body_of({"value": 1})


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest):
    rig = Rig(request.param)
    rig.start()
    yield rig
    rig.stop()


def expect(headers, body, exc_class: type[exceptions.TavridaError], code: int, *text: str):
    """The preprocessor's error for this delivery: its class, code and message."""
    error = prepare_error(headers, body)
    assert type(error) is exc_class
    assert error.code == code
    for fragment in text:
        assert fragment in str(error)
    return error


def assert_rejected(rig: Rig, *sent_headers) -> None:
    assert [m.headers for m in rig.dead_letters()] == list(sent_headers)
    assert rig.answers == []
    assert Target.handled == []


def assert_answered_with(rig: Rig, source: str, exc_class, code: int, *text: str) -> None:
    assert len(rig.answers) == 1
    assert_error_answer(rig.answers[0], source, exc_class, code, *text)
    assert rig.dead_letters() == []  # acked here, and the Error accepted by the caller
    assert Target.handled == []


# -- headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["correlation_id", "request_id", "message_type", "source", "destination"]
)
def test_missing_header_is_logged_and_rejected(rig: Rig, caplog, field: str) -> None:
    headers = call_headers(**{field: None})
    error = expect(headers, GOOD_BODY, exceptions.FieldMustExist, 1001, field)
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1001)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_missing_message_id_on_a_call_is_answered(rig: Rig, caplog) -> None:
    headers = call_headers(message_id=None)
    error = expect(headers, GOOD_BODY, exceptions.FieldMustExist, 1001, "message_id")
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1001)", str(error))
    assert_answered_with(rig, "target.echo", exceptions.FieldMustExist, 1001, "message_id")
    rig.assert_still_serves()


def test_headers_that_are_not_a_table_fail_validation() -> None:
    with pytest.raises(exceptions.FieldMustExist, match="headers") as caught:
        AMQPMessage(GOOD_BODY, "not a table").validate()  # type: ignore[arg-type]
    assert caught.value.code == 1001


@pytest.mark.parametrize(
    "value", ["bogus", "", "REQUEST", 5, ["request"], {"type": "request"}], ids=repr
)
def test_unknown_message_type_is_logged_and_rejected(rig: Rig, caplog, value) -> None:
    headers = call_headers(message_type=value)
    error = expect(headers, GOOD_BODY, exceptions.UnsuitableFieldValue, 1002, "message_type")
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1002)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


@pytest.mark.parametrize("field", ["correlation_id", "request_id", "source", "reply_to"])
def test_header_of_another_type_than_text_is_rejected(rig: Rig, caplog, field: str) -> None:
    headers = call_headers(**{field: 12345})
    error = expect(headers, GOOD_BODY, exceptions.UnsuitableFieldValue, 1002, field)
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1002)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_message_id_of_another_type_on_a_call_is_answered(rig: Rig, caplog) -> None:
    headers = call_headers(message_id=12345)
    error = expect(headers, GOOD_BODY, exceptions.UnsuitableFieldValue, 1002, "message_id")
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1002)", str(error))
    assert_answered_with(rig, "target.echo", exceptions.UnsuitableFieldValue, 1002, "12345")
    rig.assert_still_serves()


@pytest.mark.parametrize("field", ["source", "message_id"])
def test_empty_header_on_a_call_is_answered(rig: Rig, caplog, field: str) -> None:
    """The caller can still be answered: its reply_to and the ids are there."""
    headers = call_headers(**{field: ""})
    error = expect(headers, GOOD_BODY, exceptions.FieldMustFullyDefined, 1003, field)
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1003)", str(error))
    assert_answered_with(rig, "target.echo", exceptions.FieldMustFullyDefined, 1003, field)
    rig.assert_still_serves()


@pytest.mark.parametrize("field", ["correlation_id", "request_id", "destination"])
def test_empty_header_that_an_answer_needs_is_rejected(rig: Rig, caplog, field: str) -> None:
    """No answer with an empty id or source: the caller would have to reject it."""
    headers = call_headers(**{field: ""})
    error = expect(headers, GOOD_BODY, exceptions.FieldMustFullyDefined, 1003, field)
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1003)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_empty_source_on_a_cast_is_rejected(rig: Rig, caplog) -> None:
    headers = call_headers(source="", reply_to="")
    expect(headers, GOOD_BODY, exceptions.FieldMustFullyDefined, 1003, "source")
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1003)")
    assert_rejected(rig, headers)
    rig.assert_still_serves()


@pytest.mark.parametrize("field", ["source", "destination", "reply_to"])
@pytest.mark.parametrize("value", ["a.b.c", ".method", "service.", "."])
def test_bad_entry_point_is_logged_and_rejected(rig: Rig, caplog, field, value) -> None:
    headers = call_headers(**{field: value})
    error = expect(headers, GOOD_BODY, exceptions.WrongEntryPointFormat, 1006, repr(value))
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1006)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


# -- body --------------------------------------------------------------------------

MALFORMED_BODIES = {
    "not-json": b"{not json",
    "empty": b"",
    "not-utf8": b'{"context": {}, "payload": {"v": "\xff\xfe"}}',
    "array": b"[1, 2]",
    "string": b'"text"',
    "no-context": b'{"payload": {"value": 1}}',
    "no-payload": b'{"context": {}}',
    "payload-array": b'{"context": {}, "payload": [1]}',
    "payload-null": b'{"context": {}, "payload": null}',
    "payload-text": b'{"context": {}, "payload": "value"}',
    "context-number": b'{"context": 5, "payload": {"value": 1}}',
    "too-deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_malformed_body_of_a_call_is_answered(rig: Rig, caplog, body: bytes) -> None:
    headers = call_headers()
    error = expect(headers, body, exceptions.MalformedBody, 1040)
    rig.send(headers, body)
    assert_logged(caplog, "(code 1040)", str(error))
    assert_answered_with(rig, "target.echo", exceptions.MalformedBody, 1040, str(error))
    rig.assert_still_serves()


@pytest.mark.parametrize(
    "name", ["not-json", "not-utf8", "array", "no-payload", "payload-array", "too-deep"]
)
def test_malformed_body_of_a_cast_is_logged_and_rejected(rig: Rig, caplog, name: str) -> None:
    headers, body = call_headers(reply_to=""), MALFORMED_BODIES[name]
    error = expect(headers, body, exceptions.MalformedBody, 1040)
    rig.send(headers, body)
    assert_logged(caplog, "(code 1040)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_null_context_is_taken_as_empty(rig: Rig) -> None:
    rig.send(call_headers(), b'{"context": null, "payload": {"value": 3}}')
    assert [(a.kind, a.payload) for a in rig.answers] == [("response", {"value": 3})]
    assert Target.handled == [("echo", {"value": 3})]


# -- routing -----------------------------------------------------------------------


def test_call_to_an_unknown_service_is_answered(rig: Rig, caplog) -> None:
    headers = call_headers("ghost.echo")
    error = expect(headers, GOOD_BODY, exceptions.ServiceNotFound, 1022, "ghost.echo")
    rig.send(headers, GOOD_BODY)  # routed to the target's queue, for a service it lacks
    assert_logged(caplog, "(code 1022)", str(error))
    assert_answered_with(rig, "ghost.echo", exceptions.ServiceNotFound, 1022, "ghost.echo")
    rig.assert_still_serves()


def test_call_to_an_unknown_method_is_answered(rig: Rig, caplog) -> None:
    headers = call_headers("target.nope")
    error = expect(headers, GOOD_BODY, exceptions.HandlerNotFound, 1004, "target.nope")
    rig.send(headers, GOOD_BODY, routing_key="target.nope")
    assert_logged(caplog, "(code 1004)", str(error))
    assert_answered_with(rig, "target.nope", exceptions.HandlerNotFound, 1004, "target.nope")
    rig.assert_still_serves()


@pytest.mark.parametrize(
    ("destination", "exc_class", "code"),
    [
        ("ghost.echo", exceptions.ServiceNotFound, 1022),
        ("target.nope", exceptions.HandlerNotFound, 1004),
    ],
)
def test_cast_to_an_unknown_handler_is_rejected(rig, caplog, destination, exc_class, code):
    headers = call_headers(destination, reply_to="")
    error = expect(headers, GOOD_BODY, exc_class, code, destination)
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, f"(code {code})", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_answer_nobody_waits_for_is_rejected(rig: Rig, caplog) -> None:
    """A response from an entry point the target has no response handler for."""
    headers = call_headers(
        "target.echo", message_type="response", reply_to="", source="other.method"
    )
    error = expect(headers, GOOD_BODY, exceptions.HandlerNotFound, 1004, "other.method")
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1004)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_notification_nobody_subscribes_to_is_rejected(rig: Rig, caplog) -> None:
    headers = call_headers("", message_type="notification", reply_to="", source="publisher.event")
    error = expect(
        headers, GOOD_BODY, exceptions.SubscriptionHandlerNotFound, 1030, "publisher.event"
    )
    rig.send(headers, GOOD_BODY)
    assert_logged(caplog, "(code 1030)", str(error))
    assert_rejected(rig, headers)
    rig.assert_still_serves()


def test_answer_to_a_call_with_direct_reply_to_goes_to_that_queue(rig: Rig, caplog) -> None:
    """A waiting caller (AMQP reply_to) gets the Error even when the headers lack a destination."""
    inbox = rig.broker.declare_queue("waiting-caller", durable=False)
    headers = call_headers(destination="", reply_to="")
    rig.publish(headers, GOOD_BODY, properties={"reply_to": inbox, "correlation_id": "c-1"})
    rig.settle()
    assert_logged(caplog, "(code 1003)", "destination")
    answer = rig.broker.get_message(inbox)
    assert answer is not None
    assert answer.properties.get("correlation_id") == "c-1"
    assert answer.headers["message_type"] == "error"
    error = AMQPMessage(answer.body, answer.headers).body_deserialize()["payload"]
    # on the wire, Tavrida 1.0's name of the class (tavrida2.errornames)
    assert (error["class"], error["code"]) == ("tavrida.exceptions.FieldMustFullyDefined", 1003)
    assert (answer.headers["source"], answer.headers["destination"]) == ("", REPLY_TO)
    assert rig.dead_letters() == []
    rig.assert_still_serves()
