"""The driver contract, part 2: consuming with manual acknowledgement, and prefetch.

Same suite as test_driver_contract.py (see there), run for each driver kind.
"""

from __future__ import annotations

import asyncio

from tavrida2.drivers.base import Disposition
from tavrida2.messages import AMQPMessage
from tests.contract.harness import (
    Env,
    Inbox,
    exchange_with_queues,
    msg,
    publish_markers,
    wait_until,
)

# -- consuming and settling ------------------------------------------------------


def test_messages_of_a_queue_arrive_in_order(env: Env) -> None:
    async def body() -> None:
        pub = await env.driver()
        exchange, names = await exchange_with_queues(env, pub, {"q": ["#"]})
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
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
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
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"], "other": ["k"]})
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
            {queue: inbox.callback(queue, lambda m: Disposition.REJECT), dead: inbox.callback(dead)}
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
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
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
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
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
        exchange, names = await exchange_with_queues(env, pub, {"q": ["k"]})
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
