"""The driver contract, part 1: topology, routing, what travels, connection state.

What every driver (tavrida2/drivers/base.py) must do, written against the
interface only and run for each kind in ``harness.KINDS`` (the ``env`` fixture
of conftest.py): the memory sync and async drivers, and the RabbitMQ ones
(``pika``, ``aio``; marker ``rabbitmq``). Names are uuid4-based, so the suite
runs on a shared, real broker. Part 2 (consuming and settling) is
test_driver_contract_delivery.py.
"""

from __future__ import annotations

import copy

import pytest

from tavrida2 import exceptions
from tavrida2.drivers.routing import topic_matches
from tavrida2.messages import AMQPMessage
from tests.contract.harness import Env, Inbox, exchange_with_queues, msg, publish_markers
from tests.unit.test_routing import TOPIC_CASES

# -- topology ------------------------------------------------------------------


def test_declare_exchange_queue_and_binding_are_idempotent(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, queue = env.exchange(), env.queue()
        for _ in range(2):
            await pub.declare_exchange(exchange)
            await pub.declare_exchange(exchange, "topic", durable=True)
            assert await pub.declare_queue(queue) == queue
            assert await pub.declare_queue(queue, durable=True, arguments=None) == queue
            await pub.bind_queue(queue, exchange, "a.#")
        await pub.publish(exchange, "a.b", msg(b"once"))
        await publish_markers(pub, [queue])
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks([queue]))
        await inbox.wait_for_markers([queue])
        assert inbox.bodies(queue) == [b"once"]

    env.run(body)


def test_exchange_bindings_alternate_exchanges_and_unbinding_route_like_rabbitmq(
    env: Env,
) -> None:
    """The routing of ``rpc_method(prefetch=N)`` (drivers/topology.py split_by_method)."""

    async def body() -> None:
        pub = await env.driver()
        service, by_method, others = env.exchange("svc"), env.exchange("by"), env.exchange("alt")
        main, method = env.queue("main"), env.queue("method")
        await pub.declare_exchange(service, durable=False)
        await pub.declare_exchange(others, "fanout", durable=False)
        await pub.declare_exchange(by_method, "topic", False, others)
        for queue in (main, method):
            await pub.declare_queue(queue, durable=False)
        await pub.bind_queue(main, service, "s.#")  # an earlier run's binding
        await pub.bind_queue(main, others, "")
        await pub.bind_queue(method, by_method, "s.m")
        await pub.bind_exchange(by_method, service, "s.#")
        await pub.unbind_queue(main, service, "s.#")
        await pub.unbind_queue(main, service, "s.#")  # none left: nothing happens
        for key in ("s.m", "s.other", "s", "s.m.deeper"):
            await pub.publish(service, key, msg(key.encode()))
        with pytest.raises(exceptions.UnroutableMessage):
            await pub.publish(service, "t.m", msg(b"nobody"))
        await publish_markers(pub, [main, method])
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks([main, method]))
        await inbox.wait_for_markers([main, method])
        assert inbox.bodies(method) == [b"s.m"]
        assert inbox.bodies(main) == [b"s.other", b"s", b"s.m.deeper"]

    env.run(body)


def test_an_exchange_redeclared_with_another_alternate_fails(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, alternate = env.exchange(), env.exchange("alt")
        await pub.declare_exchange(alternate, "fanout", durable=False)
        await pub.declare_exchange(exchange, "topic", False, alternate)
        with pytest.raises(exceptions.PreconditionFailed):
            await pub.declare_exchange(exchange, "topic", False)

    env.run(body)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("topic", True), ("direct", True)),
        (("topic", True), ("fanout", True)),
        (("topic", False), ("topic", True)),
    ],
    ids=["topic-then-direct", "topic-then-fanout", "transient-then-durable"],
)
def test_redeclaring_an_exchange_differently_fails(env: Env, first, second) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange = env.exchange()
        await pub.declare_exchange(exchange, *first)
        with pytest.raises(exceptions.PreconditionFailed) as caught:
            await pub.declare_exchange(exchange, *second)
        assert caught.value.code == 1057
        assert isinstance(caught.value, exceptions.DriverError)
        await pub.declare_exchange(exchange, *first)  # the driver is still usable

    env.run(body)


def test_driver_stays_usable_after_channel_errors(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
        with pytest.raises(exceptions.ExchangeNotFound):
            await pub.publish(env.exchange("missing"), "k", msg())
        with pytest.raises(exceptions.UnroutableMessage):
            await pub.publish(exchange, "nobody", msg())
        with pytest.raises(exceptions.PreconditionFailed):
            await pub.declare_exchange(exchange, "direct", durable=False)
        await pub.publish(exchange, "k", msg(b"after"))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        assert inbox.bodies(names["q"]) == [b"after"]

    env.run(body)


# -- routing -------------------------------------------------------------------


def test_topic_routing_follows_the_table(env: Env) -> None:
    bindings = sorted({binding for binding, _, _ in TOPIC_CASES})
    routing_keys = sorted({routing for _, routing, _ in TOPIC_CASES})

    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(
            env, pub, {binding: [binding] for binding in bindings}
        )
        for index, routing in enumerate(routing_keys):
            await pub.publish(exchange, routing, msg(str(index).encode()), mandatory=False)
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        got = {b: [routing_keys[int(x)] for x in inbox.bodies(q)] for b, q in names.items()}
        for binding, keys in got.items():
            assert len(keys) == len(set(keys)), f"{binding!r} got a message twice"
        for binding, routing, expected in TOPIC_CASES:
            assert (routing in got[binding]) is expected, (binding, routing)
        for binding in bindings:
            assert set(got[binding]) == {r for r in routing_keys if topic_matches(binding, r)}

    env.run(body)


def test_a_message_reaches_each_bound_queue_once(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(
            env, pub, {"many": ["a.#", "*.b", "a.b", "#", "a.b"], "one": ["a.b"], "none": ["c"]}
        )
        await pub.publish(exchange, "a.b", msg(b"m"))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        assert inbox.bodies(names["many"]) == [b"m"]
        assert inbox.bodies(names["one"]) == [b"m"]
        assert inbox.bodies(names["none"]) == []

    env.run(body)


def test_default_exchange_routes_by_queue_name(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        queue = await pub.declare_queue(env.queue(), durable=False)
        await pub.publish("", queue, msg(b"direct"))
        with pytest.raises(exceptions.UnroutableMessage):
            await pub.publish("", env.queue("missing"), msg())
        await publish_markers(pub, [queue])
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks([queue]))
        await inbox.wait_for_markers([queue])
        assert inbox.bodies(queue) == [b"direct"]

    env.run(body)


def test_mandatory_publish_without_route_raises_unroutable(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, _ = await exchange_with_queues(env, pub, {"q": ["a.*"]})
        for key in ("b", "a", "a.b.c", ""):
            with pytest.raises(exceptions.UnroutableMessage) as caught:
                await pub.publish(exchange, key, msg())
            assert caught.value.code == 1042
            assert isinstance(caught.value, exceptions.DriverError)

    env.run(body)


def test_non_mandatory_publish_without_route_is_dropped_silently(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"q": ["a.*"]})
        await pub.publish(exchange, "nobody.listens.here", msg(b"lost"), mandatory=False)
        await pub.publish(exchange, "a.b", msg(b"kept"), mandatory=False)
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        assert inbox.bodies(names["q"]) == [b"kept"]

    env.run(body)


@pytest.mark.parametrize("mandatory", [True, False])
def test_publish_to_a_missing_exchange_raises(env: Env, mandatory: bool) -> None:
    async def body() -> None:
        pub = await env.driver()
        missing = env.exchange("missing")
        with pytest.raises(exceptions.ExchangeNotFound) as caught:
            await pub.publish(missing, "a.b", msg(), mandatory=mandatory)
        assert caught.value.code == 1053
        assert missing in str(caught.value)

    env.run(body)


# -- what travels ------------------------------------------------------------------


def test_body_and_headers_arrive_identical_and_as_copies(env: Env) -> None:
    payload = bytes(range(256)) + "é €".encode()
    headers = {
        "text": "hello é",
        "empty": "",
        "number": 42,
        "negative": -70000,
        "big": 2**40,
        "flag": True,
        "nested": {"inner": "x", "deeper": {"n": 1}},
        "items": ["a", 2, {"k": "v"}],
    }

    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"a": ["k"], "b": ["#"]})
        sent_headers = copy.deepcopy(headers)
        sent = AMQPMessage(payload, sent_headers)
        await pub.publish(exchange, "k", sent)
        sent_headers["text"] = "changed"
        sent_headers["nested"]["inner"] = "changed"
        sent_headers["added"] = "late"
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        (first_a,) = inbox.got[names["a"]]
        (first_b,) = inbox.got[names["b"]]
        for got in (first_a, first_b):
            assert isinstance(got.body, bytes)
            assert got.body == payload
            assert got.headers == headers
        first_a.headers["nested"]["inner"] = "mutated"
        assert first_b.headers["nested"]["inner"] == "x"

    env.run(body)


def test_a_text_body_travels_as_utf8(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
        await pub.publish(exchange, "k", AMQPMessage('{"t": "héllo €"}', {}))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        assert inbox.bodies(names["q"]) == ['{"t": "héllo €"}'.encode()]

    env.run(body)


@pytest.mark.parametrize("value", [-1, -128, 127, 128, 255, -32768, 65535, -(2**31), 2**63 - 1])
def test_integer_headers_travel_at_every_width(env: Env, value: int) -> None:
    # pamqp < 4 could not encode -128..-1 (gmr/pamqp#45, fixed by #58)
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
        await pub.publish(exchange, "k", msg(b"n", n=value, nested={"n": value}, items=[value]))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        (got,) = inbox.got[names["q"]]
        assert got.headers == {"n": value, "nested": {"n": value}, "items": [value]}

    env.run(body)


def test_amqp_properties_travel(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
        await pub.publish(
            exchange,
            "k",
            AMQPMessage(
                b"{}",
                {"h": "v"},
                reply_to="amq.gen-reply",
                correlation_id="cid-1",
                expiration="60000",
            ),
        )
        await pub.publish(exchange, "k", msg(b"plain"))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        with_props, plain = inbox.got[names["q"]]
        assert (with_props.reply_to, with_props.correlation_id, with_props.expiration) == (
            "amq.gen-reply",
            "cid-1",
            "60000",
        )
        assert with_props.headers == {"h": "v"}
        assert (plain.reply_to, plain.correlation_id, plain.expiration) == (None, None, None)

    env.run(body)


# -- connection state --------------------------------------------------------------


def test_publish_on_a_closed_driver_raises_connection_closed(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange = env.exchange()
        await pub.declare_exchange(exchange, durable=False)
        await pub.close()
        with pytest.raises(exceptions.ConnectionClosed) as caught:
            await pub.publish(exchange, "k", msg(), mandatory=False)
        assert caught.value.code == 1052
        with pytest.raises(exceptions.ConnectionClosed):
            await pub.declare_exchange(env.exchange(), "topic", durable=False)

    env.run(body)
