"""The faster property encoders of ``tavrida2.drivers.wire`` write the libraries' bytes.

Each is compared with the library's own encoder: on arbitrary header tables and
properties (hypothesis; what the library refuses, the fast one refuses with the
same error), on the messages tavrida2 sends, whole content header frames
included, and the drivers are checked to publish with them on every path.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.compat
import pika.data
import pika.exceptions
import pika.frame
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands, encode, header
from pamqp import frame as pamqp_frame

from tavrida2.drivers import wire
from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.base import DIRECT_REPLY_TO
from tavrida2.drivers.shared import properties
from tavrida2.drivers.wire import PamqpProperties, PikaProperties, pamqp_table, pika_table
from tavrida2.messages import (
    DEADLINE_HEADER,
    AMQPMessage,
    Error,
    MessageType,
    Notification,
    Request,
    Response,
)
from tests.unit.aio_fakes import FakeNetwork
from tests.unit.test_aio_publishing import scenario
from tests.unit.test_pika_publishing import connected

PAMQP_FIELDS = list(commands.Basic.Properties.__slots__)
PIKA_FIELDS = [name for name, _, _ in wire._PIKA_FIELDS]
TAVRIDA_KEYS = ["source", "destination", "reply_to", "correlation_id", "request_id",
                "message_type", "message_id", DEADLINE_HEADER, "x-tavrida2-attempt"]  # fmt: skip


def outcome(encoder: Callable[[], Any]) -> tuple[Any, ...]:
    """What ``encoder()`` returns, or the type and arguments of what it raises."""
    try:
        return ("bytes", encoder())
    except Exception as exc:
        return ("raised", type(exc), repr(exc.args))


def pika_encoded(props: Any) -> bytes:
    return b"".join(props.encode())


def pika_lib_table(table: Any) -> tuple[int, bytes]:
    """What pika's ``encode_table`` returns (the encoded size), and the bytes."""
    pieces: list[bytes] = [b"before"]
    size = pika.data.encode_table(pieces, table)
    return size, b"".join(pieces)


def pika_fast_table(table: Any) -> tuple[int, bytes]:
    pieces: list[bytes] = [b"before"]
    size = pika_table(pieces, table)
    return size, b"".join(pieces)


# -- strategies ----------------------------------------------------------------

keys = st.one_of(
    st.sampled_from(TAVRIDA_KEYS),
    st.text(max_size=12),
    st.text(min_size=120, max_size=140),  # pamqp truncates a name over 128 characters
    st.text(alphabet="é€😀", min_size=60, max_size=90),  # over 255 bytes of UTF-8
    st.sampled_from(["k" * n for n in (127, 128, 129, 255, 256)] + ["é" * 127, "é" * 128]),
)
integers = st.one_of(
    st.integers(-300, 70000),
    st.sampled_from([-(2**63) - 1, -(2**63), -(2**31) - 1, -(2**31), 2**31 - 1, 2**31]),
    st.sampled_from([2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64]),
    st.integers(-(2**70), 2**70),
)
scalars = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="aé€😀\x00", max_size=10),
    integers,
    st.booleans(),
    st.none(),
    st.floats(),
    st.decimals(places=3, allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=8)),
    st.builds(pika.compat.long, integers),
    st.sampled_from(list(MessageType)),  # a str subclass
    st.builds(time.gmtime, st.integers(0, 2**31)),
    st.builds(object),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3)
)
tables = st.one_of(
    st.dictionaries(keys, values, max_size=10),
    st.dictionaries(st.sampled_from(TAVRIDA_KEYS), st.text(max_size=40) | integers, max_size=9),
    st.dictionaries(keys | st.integers() | st.binary(max_size=4), values, max_size=3),
)
short_strings = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=30),
    st.text(min_size=250, max_size=300),
    st.text(alphabet="é€", min_size=120, max_size=130),
    st.sampled_from(["s" * 255, "s" * 256, "é" * 127, "é" * 128, b"b" * 255, b"b" * 256]),
    st.binary(max_size=300),
    st.integers(),
    st.sampled_from(list(MessageType)),
)
octets = st.one_of(st.none(), st.integers(-3, 300), st.booleans(), st.just("1"))
timestamps = st.one_of(st.none(), st.datetimes(), st.integers(-1, 2**65), st.just("now"))
header_tables = st.one_of(st.none(), st.just({}), tables, st.just([]), st.just("x"))


# what tavrida2 and most users set: each value of a kind the fast encoders take
plain_tables = st.dictionaries(
    keys, st.text(max_size=40) | integers | st.booleans() | st.none(), max_size=10
)
plain = {
    "short": st.none() | st.just("") | st.text(max_size=30),
    "headers": st.none() | plain_tables,
    "octet": st.none() | st.integers(0, 255),
    "timestamp": st.none() | st.integers(0, 2**64 - 1) | st.datetimes(),
}
anything = {"short": short_strings, "headers": header_tables, "octet": octets,
            "timestamp": timestamps}  # fmt: skip
KINDS = {"headers": "headers", "delivery_mode": "octet", "priority": "octet",
         "timestamp": "timestamp"}  # fmt: skip


def property_values(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries({name: kinds[KINDS.get(name, "short")] for name in fields})
        for kinds in (plain, anything)
    )


def with_values(cls: type, attributes: dict[str, Any]) -> Any:
    """A property object with ``attributes`` set after construction (as aiormq
    sets ``message_id``), past the constructor's checks."""
    props = cls()
    for name, value in attributes.items():
        setattr(props, name, value)
    return props


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- pamqp (aiormq) ------------------------------------------------------------


@SETTINGS
@given(tables)
def test_pamqp_table_is_pamqps(table: dict[Any, Any]):
    assert outcome(lambda: pamqp_table(table)) == outcome(lambda: encode.field_table(table))


@SETTINGS
@given(property_values(PAMQP_FIELDS))
def test_pamqp_properties_marshal_as_pamqps(attributes: dict[str, Any]):
    lib = with_values(commands.Basic.Properties, attributes)
    fast = with_values(PamqpProperties, attributes)
    assert outcome(fast.marshal) == outcome(lib.marshal)


@given(st.dictionaries(keys, integers | st.text(max_size=3), max_size=6))
def test_pamqp_table_follows_the_deprecated_rabbitmq_switch(table: dict[str, Any]):
    encode.support_deprecated_rabbitmq(True)
    try:
        assert outcome(lambda: pamqp_table(table)) == outcome(lambda: encode.field_table(table))
    finally:
        encode.support_deprecated_rabbitmq(False)


def test_pamqp_properties_are_pamqps_to_aiormq():
    props = PamqpProperties(content_type="application/json", delivery_mode=2)
    assert isinstance(props, commands.Basic.Properties)
    # aiormq replaces properties that are false (``properties or ...``) and sets
    # message_id on the object it was given
    assert props and len(props) == len(PAMQP_FIELDS)
    assert [name for name, _ in props] == PAMQP_FIELDS
    props.message_id = "m-1"
    lib = commands.Basic.Properties(content_type="application/json", delivery_mode=2)
    lib.message_id = "m-1"
    assert props.marshal() == lib.marshal()


# -- pika ----------------------------------------------------------------------


@SETTINGS
@given(tables)
def test_pika_table_is_pikas(table: dict[Any, Any]):
    assert outcome(lambda: pika_fast_table(table)) == outcome(lambda: pika_lib_table(table))


@SETTINGS
@given(property_values(PIKA_FIELDS))
def test_pika_properties_encode_as_pikas(attributes: dict[str, Any]):
    lib = with_values(pika.BasicProperties, attributes)
    fast = with_values(PikaProperties, attributes)
    assert outcome(lambda: pika_encoded(fast)) == outcome(lambda: pika_encoded(lib))


def test_pika_properties_are_pikas():
    props = PikaProperties(delivery_mode=pika.DeliveryMode.Persistent, headers={"a": "b"})
    assert isinstance(props, pika.BasicProperties) and props.delivery_mode == 2
    frame = pika.frame.Header(7, 12, props).marshal()
    assert frame == pika.frame.Header(7, 12, pika.BasicProperties(**vars(props))).marshal()


# -- the messages tavrida2 sends ---------------------------------------------------


def tavrida_messages() -> list[AMQPMessage]:
    user = {"tenant": "acme", "trace": "é€😀", "retries": 3, "flag": True, "none": None}
    call = Request({"source": "client.Hello", "destination": "hello.World.say"}, {}, {"n": 1})
    call.headers[DEADLINE_HEADER] = int(time.time() * 1000) + 30_000
    call.headers.update(user)
    cast = Request({"source": "a.B", "destination": "b.C.cast", "x-tavrida2-attempt": 2}, {}, {})
    call_message = AMQPMessage.create_from_message(call)
    call_message.reply_to, call_message.correlation_id = DIRECT_REPLY_TO, call.correlation_id
    response = Response.create_by_request(call, {"greeting": "hi"})
    response.amqp_correlation_id = call.correlation_id
    error = Error.create_by_request(call, ValueError("no"))
    notification = Notification({"source": "hello.World"}, {}, {"said": "hi"})
    messages = [AMQPMessage.create_from_message(m) for m in (cast, response, error, notification)]
    expiring = AMQPMessage.create_from_message(notification)
    expiring.expiration = "60000"
    return [call_message, *messages, expiring, AMQPMessage(b"{}", {})]


@pytest.mark.parametrize("delivery_mode", [1, 2])
def test_tavrida_messages_are_encoded_as_the_libraries_do(delivery_mode: int):
    for message in tavrida_messages():
        kwargs = properties(message, delivery_mode)
        size = len(message.body)
        fast, lib = PikaProperties(**kwargs), pika.BasicProperties(**kwargs)
        assert pika_encoded(fast) == pika_encoded(lib)
        frame = pika.frame.Header(1, size, fast).marshal()
        assert frame == pika.frame.Header(1, size, lib).marshal()
        assert fast._encode_fast() is not None  # not the fallback
        decoded = pika.BasicProperties().decode(pika_encoded(fast))
        assert decoded.headers == message.headers

        aio_fast = PamqpProperties(**kwargs)
        aio_lib = commands.Basic.Properties(**kwargs)
        if not aio_fast.message_id:  # as aiormq's basic_publish does
            aio_fast.message_id = aio_lib.message_id = "0f" * 16
        assert aio_fast.marshal() == aio_lib.marshal()
        assert wire._pamqp_table(message.headers) is not None  # not the fallback
        frames = [
            pamqp_frame.marshal(header.ContentHeader(body_size=size, properties=props), 1)
            for props in (aio_fast, aio_lib)
        ]
        assert frames[0] == frames[1]
        _, _, decoded_frame = pamqp_frame.unmarshal(frames[0])
        assert isinstance(decoded_frame, header.ContentHeader)
        assert decoded_frame.properties.headers == message.headers


def test_header_values_of_every_kind_are_encoded_as_the_libraries_do():
    table = {
        "text": "x",
        "decimal": decimal.Decimal("1.25"),
        "when": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        "nested": {"list": [1, "two", None, False], "deep": {"k": "v"}},
        "big": 2**40,
        "small": -5,
        "kind": MessageType.REQUEST,
    }
    assert pamqp_table(table) == encode.field_table(table)
    assert pika_fast_table(table) == pika_lib_table(table)
    table["float"] = 1.5  # pamqp's only
    assert pamqp_table(table) == encode.field_table(table)


def test_the_cache_of_field_names_stays_small():
    table = {f"header-{n}": "v" for n in range(3 * wire._KEY_CACHE_SIZE)}
    assert pamqp_table(table) == encode.field_table(table)
    assert pika_fast_table(table) == pika_lib_table(table)
    assert len(wire._pamqp_keys) <= wire._KEY_CACHE_SIZE
    assert len(wire._pika_keys) <= wire._KEY_CACHE_SIZE


# -- the drivers publish with them -------------------------------------------------


def test_the_sync_driver_publishes_with_the_fast_properties(monkeypatch: pytest.MonkeyPatch):
    driver, _broker = connected(monkeypatch)
    message = AMQPMessage(b"{}", {"message_id": "m-1", "source": "a.B"})
    driver.publish("ex", "rk", message)  # the confirmed pipeline
    driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAA", AMQPMessage(b"{}", {}, correlation_id="c"))
    driver.consume_replies(lambda m: None, lambda c, e: None)
    driver.publish("ex", "rk", AMQPMessage(b"{}", {}, DIRECT_REPLY_TO, "c-2"))  # a call
    sent = [
        driver._pipeline.published,
        driver._consume_channel.published,
        driver._call_channel.published,
    ]
    assert [len(published) for published in sent] == [1, 1, 1]
    assert all(type(p[0].properties) is PikaProperties for p in sent)
    driver.close()


def test_the_async_driver_publishes_with_the_fast_properties(monkeypatch: pytest.MonkeyPatch):
    async def body(driver: AioDriver, network: FakeNetwork) -> list[Any]:
        await driver.connect()
        await driver.consume_replies(lambda m: None, lambda c, e: None)
        await driver.publish("ex", "rk", AMQPMessage(b"{}", {"message_id": "m-1"}))
        answer = AMQPMessage(b"{}", {}, correlation_id="c-1")
        await driver.publish("", f"{DIRECT_REPLY_TO}.g2dkAAA", answer)
        await driver.publish("ex", "rk", AMQPMessage(b"{}", {}, DIRECT_REPLY_TO, "c-2"))
        await asyncio.sleep(0)
        return [driver._publish.published, driver._consume.published, driver._call.published]

    sent = scenario(monkeypatch, body)
    assert [len(published) for published in sent] == [1, 1, 1]
    assert all(type(p[0].properties) is PamqpProperties for p in sent)


def test_an_unencodable_header_is_still_the_librarys_error():
    table = {"bad": object()}
    with pytest.raises(TypeError, match="bad error"):
        PamqpProperties(headers=table).marshal()
    with pytest.raises(pika.exceptions.UnsupportedAMQPFieldException):
        PikaProperties(headers=table).encode()
