"""The driver contract: what every driver (tavrida2/drivers/base.py) must do.

One suite, written against the interface only, run for each kind in
``harness.KINDS`` (today the memory sync and async drivers; the RabbitMQ ones
join by adding kinds there). Names are uuid4-based, so the same tests can run
on a shared, real broker.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from tavrida2 import exceptions
from tavrida2.drivers.base import Disposition
from tavrida2.drivers.routing import topic_matches
from tavrida2.messages import AMQPMessage
from tests.contract.harness import KINDS, Env, Inbox, publish_markers, wait_until
from tests.unit.test_routing import TOPIC_CASES


@pytest.fixture(params=[pytest.param(kind, id=kind.id, marks=kind.marks) for kind in KINDS])
def env(request: pytest.FixtureRequest) -> Env:
    return Env(request.param)


def msg(body: bytes = b"{}", **headers: object) -> AMQPMessage:
    return AMQPMessage(body, dict(headers))


async def _exchange_with_queues(env: Env, pub, bindings: dict[str, list[str]]):
    """A topic exchange and one queue per entry, bound with its keys; returns (exchange, names)."""
    exchange = env.exchange()
    await pub.declare_exchange(exchange, "topic", durable=False)
    names = {}
    for label, keys in bindings.items():
        queue = await pub.declare_queue(env.queue(label), durable=False)
        for key in keys:
            await pub.bind_queue(queue, exchange, key)
        names[label] = queue
    return exchange, names


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


@pytest.mark.parametrize(
    ("first", "second"),
    [(("topic", True), ("direct", True)), (("topic", True), ("fanout", True)),
     (("topic", False), ("topic", True))],
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
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
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
        exchange, names = await _exchange_with_queues(
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
        exchange, names = await _exchange_with_queues(
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
        exchange, _ = await _exchange_with_queues(env, pub, {"q": ["a.*"]})
        for key in ("b", "a", "a.b.c", ""):
            with pytest.raises(exceptions.UnroutableMessage) as caught:
                await pub.publish(exchange, key, msg())
            assert caught.value.code == 1042
            assert isinstance(caught.value, exceptions.DriverError)

    env.run(body)


def test_non_mandatory_publish_without_route_is_dropped_silently(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["a.*"]})
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


# -- consuming and settling ------------------------------------------------------


def test_messages_of_a_queue_arrive_in_order(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["#"]})
        sent = [f"m{i}".encode() for i in range(20)]
        for item in sent:
            await pub.publish(exchange, "k", msg(item))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()), prefetch_count=1)
        await inbox.wait_for_markers(names.values())
        assert inbox.bodies(names["q"]) == sent

    env.run(body)


def test_acked_delivery_is_gone(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
        queue = names["q"]
        await pub.publish(exchange, "k", msg(b"acked"))
        first = Inbox()
        consumer = await env.driver()
        await consumer.consume(first.callbacks([queue]))
        await wait_until(lambda: first.bodies(queue) == [b"acked"], "the delivery")
        await consumer.close()
        await publish_markers(pub, [queue])
        second = Inbox()
        await (await env.driver()).consume(second.callbacks([queue]))
        await second.wait_for_markers([queue])
        assert second.bodies(queue) == []
        assert first.got[queue][0].redelivered is False

    env.run(body)


def test_requeued_delivery_comes_back_redelivered(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"], "other": ["k"]})
        queue = names["q"]
        await pub.publish(exchange, "k", msg(b"again", n=1, nested={"x": "y"}))
        inbox = Inbox()
        answers = iter([Disposition.REQUEUE, Disposition.ACK])

        def mutate_then_answer(message: AMQPMessage) -> Disposition:
            if not message.redelivered:
                message.headers["nested"]["x"] = "mutated by the first consumer"
                message.headers["added"] = True
            return next(answers)

        consumer = await env.driver()
        await consumer.consume({queue: inbox.callback(queue, mutate_then_answer)})
        await wait_until(lambda: len(inbox.got[queue]) == 2, "the redelivery")
        await consumer.close()
        first, again = inbox.got[queue]
        assert [first.redelivered, again.redelivered] == [False, True]
        assert inbox.bodies(queue) == [b"again", b"again"]
        assert again.headers == {"n": 1, "nested": {"x": "y"}}
        # the copy in the other queue is neither redelivered nor changed
        await publish_markers(pub, names.values())
        after = Inbox()
        await (await env.driver()).consume(after.callbacks(names.values()))
        await after.wait_for_markers(names.values())
        assert after.bodies(queue) == []
        (other,) = after.got[names["other"]]
        assert (other.body, other.redelivered) == (b"again", False)
        assert other.headers == {"n": 1, "nested": {"x": "y"}}

    env.run(body)


def test_rejected_delivery_goes_to_the_dead_letter_exchange(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, dlx = env.exchange(), env.exchange("dlx")
        await pub.declare_exchange(exchange, durable=False)
        await pub.declare_exchange(dlx, durable=False)
        queue = await pub.declare_queue(
            env.queue(), durable=False, arguments={"x-dead-letter-exchange": dlx}
        )
        dead = await pub.declare_queue(env.queue("dead"), durable=False)
        other = await pub.declare_queue(env.queue("other"), durable=False)
        await pub.bind_queue(queue, exchange, "svc.#")
        await pub.bind_queue(other, exchange, "svc.#")
        await pub.bind_queue(dead, dlx, "#")
        await pub.publish(exchange, "svc.method", msg(b"poison", user="u1"))
        inbox = Inbox()
        await (await env.driver()).consume(
            {queue: inbox.callback(queue, lambda m: Disposition.REJECT),
             dead: inbox.callback(dead)}
        )
        await wait_until(lambda: len(inbox.got[dead]) == 1, "the dead letter")
        dead_letter = inbox.got[dead][0]
        assert dead_letter.body == b"poison"
        assert dead_letter.headers["user"] == "u1"
        assert inbox.bodies(queue) == [b"poison"]
        await publish_markers(pub, [queue, dead])
        await inbox.wait_for_markers([queue, dead])
        assert inbox.bodies(queue) == [b"poison"]
        assert inbox.bodies(dead) == [b"poison"]
        # the copy routed to another queue is untouched by the dead-lettering
        await publish_markers(pub, [other])
        later = Inbox()
        await (await env.driver()).consume(later.callbacks([other]))
        await later.wait_for_markers([other])
        (copy_,) = later.got[other]
        assert copy_.headers == {"user": "u1"}
        assert copy_.redelivered is False

    env.run(body)


def test_rejected_delivery_without_dead_letter_exchange_is_dropped(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
        queue = names["q"]
        await pub.publish(exchange, "k", msg(b"dropped"))
        await pub.publish(exchange, "k", msg(b"next"))
        await publish_markers(pub, [queue])
        inbox = Inbox()
        reject_first = iter([Disposition.REJECT, Disposition.ACK])
        await (await env.driver()).consume(
            {queue: inbox.callback(queue, lambda m: next(reject_first))}
        )
        await inbox.wait_for_markers([queue])
        assert inbox.bodies(queue) == [b"dropped", b"next"]
        assert [m.redelivered for m in inbox.got[queue]] == [False, False]

    env.run(body)


def test_prefetch_limits_unacked_deliveries(env: Env) -> None:
    total, prefetch = 6, 2

    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
        queue = names["q"]
        for i in range(total):
            await pub.publish(exchange, "k", msg(str(i).encode()))
        release = asyncio.Event()
        held: list[bytes] = []

        async def hold(message: AMQPMessage) -> Disposition:
            held.append(bytes(message.body))
            await release.wait()
            return Disposition.ACK

        await (await env.driver()).consume({queue: hold}, prefetch_count=prefetch)
        other = Inbox()
        try:
            await wait_until(lambda: len(held) >= 1, "the first held delivery")
            # while the first consumer holds its deliveries, a second one gets the rest
            await (await env.driver()).consume(other.callbacks([queue]))
            await wait_until(lambda: len(other.got[queue]) >= total - prefetch, "the rest")
            assert len(held) <= prefetch
        finally:
            release.set()
        await wait_until(lambda: len(held) + len(other.got[queue]) == total, "all")
        assert sorted(held + other.bodies(queue)) == sorted(str(i).encode() for i in range(total))

    env.run(body)


def test_callbacks_in_flight_are_bounded_by_prefetch(env: Env) -> None:
    total, prefetch = 8, 3
    # a sync driver runs one callback at a time; an async one up to prefetch at once
    level = prefetch if env.is_async else 1

    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
        for i in range(total):
            await pub.publish(exchange, "k", msg(str(i).encode()))
        release = asyncio.Event()
        in_flight: list[int] = [0]
        peak: list[int] = [0]
        done: list[bytes] = []

        async def hold(message: AMQPMessage) -> Disposition:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            await release.wait()
            in_flight[0] -= 1
            done.append(bytes(message.body))
            return Disposition.ACK

        await (await env.driver()).consume({names["q"]: hold}, prefetch_count=prefetch)
        try:
            await wait_until(lambda: in_flight[0] >= level, f"{level} callbacks in flight")
            await asyncio.sleep(0.05)  # room for a driver that would exceed its prefetch
            assert peak[0] == level
        finally:
            release.set()
        await wait_until(lambda: len(done) == total, "every delivery")
        assert peak[0] == level

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
        exchange, names = await _exchange_with_queues(env, pub, {"a": ["k"], "b": ["#"]})
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
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
        await pub.publish(exchange, "k", AMQPMessage('{"t": "héllo €"}', {}))
        await publish_markers(pub, names.values())
        inbox = Inbox()
        await (await env.driver()).consume(inbox.callbacks(names.values()))
        await inbox.wait_for_markers(names.values())
        assert inbox.bodies(names["q"]) == ['{"t": "héllo €"}'.encode()]

    env.run(body)


@pytest.mark.parametrize("value", [-1, -128, 127, 128, 255, -32768, 65535, -(2**31), 2**63 - 1])
def test_integer_headers_travel_at_every_width(env: Env, value: int) -> None:
    # pamqp <= 3.3.0 cannot encode -128..-1 (gmr/pamqp#45, fixed by #58)
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
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
        exchange, names = await _exchange_with_queues(env, pub, {"q": ["k"]})
        await pub.publish(
            exchange,
            "k",
            AMQPMessage(
                b"{}", {"h": "v"}, reply_to="amq.gen-reply", correlation_id="cid-1",
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
            "amq.gen-reply", "cid-1", "60000"
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
