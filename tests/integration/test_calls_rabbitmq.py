"""Calls that wait for their answer, on the real RabbitMQ: both clients, both engines.

``RPCClient`` (pika) and ``AsyncRPCClient`` (aio-pika) against a server on the
sync and on the async engine: the answer, ``RemoteError`` fields,
``CallTimeout`` against a slow handler, an unknown method failing fast, 1,000
concurrent async calls, the sync client shared by 8 threads, an expired
request not run, a connection lost with calls pending, ``call(wait=True)``
inside handlers, and the client's bad input.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pika
import pytest

from tavrida2 import client, discovery, dispatcher, exceptions, messages, server, service
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    close_connection,
    connection_pids,
    queue_info,
    wait_until,
)
from tests.threads import in_threads

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]


@dispatcher.rpc_service("calc")
class Calc(service.ServiceController):
    rec: ClassVar[Recorder] = Recorder()

    @dispatcher.rpc_method(service="calc", method="add")
    def add(self, request, proxy, x, y):
        return {"sum": x + y}

    @dispatcher.rpc_method(service="calc", method="fail")
    def fail(self, request, proxy, reason):
        raise KeyError(reason)

    @dispatcher.rpc_method(service="calc", method="slow")
    def slow(self, request, proxy, seconds, label="slow"):
        self.rec.add(label, request.headers.get("deadline"))
        time.sleep(seconds)
        return {"slept": seconds}


@dispatcher.rpc_service("front")
class Front(service.ServiceController):
    """Calls ``calc`` inline from its handlers (``call(wait=True)``)."""

    @dispatcher.rpc_method(service="front", method="twice")
    def twice(self, request, proxy, x):
        first = proxy.calc.add(x=x, y=x).call(wait=True, timeout=10)
        second = proxy.calc.add(x=first.payload["sum"], y=0).call(wait=True, timeout=10)
        return {"result": second.payload["sum"], "deadline_sent": "deadline" in second.headers}

    @dispatcher.rpc_method(service="front", method="relay_error")
    def relay_error(self, request, proxy):
        try:
            proxy.calc.fail(reason="inner").call(wait=True, timeout=10)
        except exceptions.RemoteError as exc:
            return {"class": exc.remote_class, "code": exc.code}
        return {}


@dispatcher.rpc_service("front")
class AsyncFront(service.ServiceController):
    """As ``Front`` with ``async def`` handlers (async engine only)."""

    @dispatcher.rpc_method(service="front", method="twice")
    async def twice(self, request, proxy, x):
        first = await proxy.calc.add(x=x, y=x).call(wait=True, timeout=10)
        second = await proxy.calc.add(x=first.payload["sum"], y=0).call(wait=True, timeout=10)
        return {"result": second.payload["sum"], "deadline_sent": "deadline" in second.headers}

    @dispatcher.rpc_method(service="front", method="relay_error")
    async def relay_error(self, request, proxy):
        try:
            await proxy.calc.fail(reason="inner").call(wait=True, timeout=10)
        except exceptions.RemoteError as exc:
            return {"class": exc.remote_class, "code": exc.code}
        return {}


class Setup:
    """A calc server (and optionally a front server) on one engine, and clients for them."""

    def __init__(self, names: Names, servers: Servers) -> None:
        self.names = names
        self.servers = servers
        self.calc_ex = names.exchange("calc")
        self.front_ex = names.exchange("front")
        self.disc = discovery.LocalDiscovery()
        self.disc.register_remote_service("calc", self.calc_ex)
        self.disc.register_remote_service("front", self.front_ex)
        self.client_name = names.connection("client")

    def start_calc(self, engine: bool, **config: Any) -> server.Server:
        Calc.set_discovery(self.disc)
        conf = amqp_config(engine, self.names.connection("calc"), **config)
        srv = server.Server(conf, self.names.queue("calc"), self.calc_ex, [Calc])
        self.servers.start(srv)
        return srv

    def start_front(self, engine: bool, controller: type[service.ServiceController]) -> None:
        controller.set_discovery(self.disc)
        conf = amqp_config(engine, self.names.connection("front"))
        self.servers.start(
            server.Server(conf, self.names.queue("front"), self.front_ex, [controller])
        )

    def client(self, **kwargs: Any) -> client.RPCClient:
        conf = amqp_config(False, self.client_name)
        return client.RPCClient(conf, self.disc, source="script", **kwargs)

    def async_client(self, **kwargs: Any) -> client.AsyncRPCClient:
        conf = amqp_config(True, self.client_name)
        return client.AsyncRPCClient(conf, self.disc, source="script", **kwargs)


@pytest.fixture
def setup(names: Names, servers: Servers) -> Iterator[Setup]:
    Calc.rec = Recorder()
    yield Setup(names, servers)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _queued(queue: str) -> int:
    info = queue_info(queue)
    assert info is not None
    return int(info["messages_ready"]) + int(info["messages_unacknowledged"])


# -- the answer, errors, timeouts ------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_sync_client_gets_the_answer_and_remote_errors(engine: bool, setup: Setup) -> None:
    setup.start_calc(engine)
    with setup.client() as cli:
        answer = cli.calc.add(x=2, y=3).call(timeout=10)
        assert isinstance(answer, messages.IncomingResponse)
        assert answer.payload == {"sum": 5}
        assert answer.headers["source"] == "calc.add"
        assert answer.headers["destination"] == "script"
        assert "deadline" not in answer.headers
        with pytest.raises(exceptions.RemoteError) as raised:
            cli.calc.fail(reason="nope").call(timeout=10)
    assert raised.value.remote_class == "KeyError"
    assert raised.value.remote_message == "'nope'"
    assert raised.value.code == exceptions.UNKNOWN_ERROR


@pytest.mark.parametrize("engine", ENGINES)
def test_async_client_gets_the_answer_and_remote_errors(engine: bool, setup: Setup) -> None:
    setup.start_calc(engine)

    async def scenario() -> tuple[Any, exceptions.RemoteError]:
        async with setup.async_client() as cli:
            answer = await cli.calc.add(x=2, y=3).call(timeout=10)
            with pytest.raises(exceptions.RemoteError) as raised:
                await cli.calc.fail(reason="nope").call(timeout=10)
            return answer, raised.value

    answer, error = run(scenario())
    assert answer.payload == {"sum": 5}
    assert (error.remote_class, error.remote_message) == ("KeyError", "'nope'")


@pytest.mark.parametrize("engine", ENGINES)
def test_unknown_method_fails_fast_with_handler_not_found(engine: bool, setup: Setup) -> None:
    setup.start_calc(engine)
    with setup.client() as cli:
        started = time.monotonic()
        with pytest.raises(exceptions.RemoteError) as raised:
            cli.calc.nope().call(timeout=20)
        assert time.monotonic() - started < 5
    assert raised.value.code == exceptions.HandlerNotFound._service_error_code

    async def scenario() -> exceptions.RemoteError:
        async with setup.async_client() as cli:
            with pytest.raises(exceptions.RemoteError) as raised:
                await cli.calc.nope().call(timeout=20)
            return raised.value

    started = time.monotonic()
    assert run(scenario()).code == exceptions.HandlerNotFound._service_error_code
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("engine", ENGINES)
def test_call_times_out_at_its_timeout_not_before_and_not_at_the_answer(
    engine: bool, setup: Setup
) -> None:
    # Not before the timeout (less a clock tick); well before the handler could
    # answer, with room for a loaded machine: a call that waited for the answer
    # returns it, one that never times out hangs, one that fires early is too quick.
    timeout, slack = 0.5, 5.0
    handler_seconds = timeout + slack + 1.0  # no answer can come within the bound
    setup.start_calc(engine)
    with setup.client() as cli:
        started = time.monotonic()
        with pytest.raises(exceptions.CallTimeout) as raised:
            cli.calc.slow(seconds=handler_seconds).call(timeout=timeout)
        elapsed = time.monotonic() - started
    assert isinstance(raised.value, TimeoutError)
    assert timeout - 0.01 <= elapsed < timeout + slack, elapsed

    async def scenario() -> float:
        async with setup.async_client() as cli:
            started = time.monotonic()
            with pytest.raises(exceptions.CallTimeout):
                await cli.calc.slow(seconds=handler_seconds).call(timeout=timeout)
            return time.monotonic() - started

    elapsed = run(scenario())
    assert timeout - 0.01 <= elapsed < timeout + slack, elapsed


def test_default_timeout_is_the_clients(setup: Setup) -> None:
    # The client's 0.4 s, not the library's 30 s default: not before 0.4 s (less
    # a clock tick), and before the handler answers (which a 30 s wait would get).
    timeout, slack = 0.4, 5.0
    setup.start_calc(False)
    with setup.client(timeout=timeout) as cli:
        started = time.monotonic()
        with pytest.raises(exceptions.CallTimeout):
            cli.calc.slow(seconds=timeout + slack + 1.0).call()
        elapsed = time.monotonic() - started
    assert timeout - 0.01 <= elapsed < timeout + slack, elapsed


# -- many calls ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_thousand_concurrent_async_calls_all_answered(engine: bool, setup: Setup) -> None:
    setup.start_calc(engine)

    async def scenario() -> list[Any]:
        async with setup.async_client() as cli:
            return await asyncio.gather(
                *(cli.calc.add(x=i, y=1000).call(timeout=30) for i in range(1000))
            )

    answers = run(scenario())
    assert [a.payload["sum"] for a in answers] == [i + 1000 for i in range(1000)]


@pytest.mark.parametrize("engine", ENGINES)
def test_sync_client_shared_by_eight_threads(engine: bool, setup: Setup) -> None:
    setup.start_calc(engine)
    results: dict[int, list[int]] = {}

    with setup.client() as cli:

        def worker(n: int) -> None:
            results[n] = [
                cli.calc.add(x=n * 1000, y=i).call(timeout=20).payload["sum"] for i in range(150)
            ]

        assert in_threads(worker, 8, 60) == []
    assert results == {n: [n * 1000 + i for i in range(150)] for n in range(8)}


def test_sync_client_shared_by_sixty_four_threads_mixing_call_and_call_async(
    setup: Setup,
) -> None:
    """Requests handed between threads reach the broker, each answer its own caller."""
    setup.start_calc(False)
    results: dict[int, list[int]] = {}

    with setup.client() as cli:

        def worker(n: int) -> None:
            sums = []
            for i in range(40):
                if i % 4 == 3:  # a few handles in flight, then their results
                    pending = [
                        cli.calc.add(x=n * 1000, y=i + k).call_async(timeout=20) for k in range(3)
                    ]
                    sums.append(pending[0].result().payload["sum"])
                    assert [p.result().payload["sum"] for p in pending[1:]] == [
                        n * 1000 + i + 1,
                        n * 1000 + i + 2,
                    ]
                else:
                    sums.append(cli.calc.add(x=n * 1000, y=i).call(timeout=20).payload["sum"])
            results[n] = sums

        assert in_threads(worker, 64, 120) == []
    assert results == {n: [n * 1000 + i for i in range(40)] for n in range(64)}


def test_call_async_handles_many_in_flight(setup: Setup) -> None:
    setup.start_calc(False)
    with setup.client() as cli:
        pending = [cli.calc.add(x=i, y=i).call_async(timeout=20) for i in range(300)]
        assert [p.result().payload["sum"] for p in pending] == [2 * i for i in range(300)]


# -- the caller's deadline ---------------------------------------------------------------


def test_request_whose_caller_gave_up_while_it_waited_is_not_run(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    # sync engine, prefetch 10: the late request is delivered at once and waits
    # in the server behind the slow one, past its caller's deadline
    setup.start_calc(False, prefetch_count=10)
    caplog.set_level(logging.WARNING, logger="tavrida2.engine")
    with setup.client() as cli:
        first = cli.calc.slow(seconds=1.5, label="first").call_async(timeout=10)
        assert Calc.rec.wait_for("first")
        with pytest.raises(exceptions.CallTimeout):
            cli.calc.slow(seconds=0, label="late").call(timeout=0.3)
        assert first.result().payload == {"slept": 1.5}
        assert cli.calc.add(x=1, y=1).call(timeout=10).payload == {"sum": 2}
    assert Calc.rec.of("late") == []
    [deadline] = Calc.rec.of("first")
    assert isinstance(deadline, int) and abs(deadline - (time.time() * 1000 + 10_000)) < 60_000
    assert any("not run" in r.getMessage() and "expired" in r.getMessage() for r in caplog.records)


def test_request_expired_in_the_queue_is_dropped_by_the_broker(setup: Setup) -> None:
    # async engine, prefetch 1: the late request stays in the broker, whose
    # per-message TTL (the ``expiration`` property) drops it
    srv = setup.start_calc(True, prefetch_count=1)
    with setup.client() as cli:
        first = cli.calc.slow(seconds=1.5, label="first").call_async(timeout=10)
        assert Calc.rec.wait_for("first")
        with pytest.raises(exceptions.CallTimeout):
            cli.calc.slow(seconds=0, label="late").call(timeout=0.3)
        assert first.result().payload == {"slept": 1.5}
        assert cli.calc.add(x=1, y=1).call(timeout=10).payload == {"sum": 2}
    assert Calc.rec.of("late") == []
    assert _queued(srv.queue_name) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_request_past_its_deadline_header_is_not_run(
    engine: bool, setup: Setup, channel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    srv = setup.start_calc(engine)
    caplog.set_level(logging.WARNING, logger="tavrida2.engine")
    headers = {
        "correlation_id": "c1",
        "request_id": "r1",
        "message_id": "m1",
        "message_type": "request",
        "source": "script",
        "destination": "calc.slow",
        "reply_to": "",
        "deadline": int(time.time() * 1000) - 5_000,
    }
    body = b'{"context": {}, "payload": {"seconds": 0, "label": "expired"}}'
    channel.basic_publish(setup.calc_ex, "calc.slow", body, pika.BasicProperties(headers=headers))
    headers = {**headers, "message_id": "m2", "deadline": int(time.time() * 1000) + 60_000}
    body = b'{"context": {}, "payload": {"seconds": 0, "label": "in time"}}'
    channel.basic_publish(setup.calc_ex, "calc.slow", body, pika.BasicProperties(headers=headers))
    assert Calc.rec.wait_for("in time")
    wait_until(lambda: _queued(srv.queue_name) == 0, "the queue to be empty")
    assert Calc.rec.of("expired") == []
    wait_until(lambda: any("not run" in r.getMessage() for r in caplog.records), "the warning")


# -- lost connections --------------------------------------------------------------------


def test_sync_calls_pending_when_the_connection_drops_raise_at_once(setup: Setup) -> None:
    setup.start_calc(False)
    with setup.client() as cli:
        assert cli.calc.add(x=1, y=1).call(timeout=10).payload == {"sum": 2}
        pending = cli.calc.slow(seconds=3, label="pending").call_async(timeout=30)
        assert Calc.rec.wait_for("pending")
        [pid] = wait_until(lambda: connection_pids(setup.client_name), "the client's connection")
        started = time.monotonic()
        close_connection(pid)
        with pytest.raises(exceptions.ConnectionClosed):
            pending.result()
        assert time.monotonic() - started < 5
        # the next call reconnects
        assert cli.calc.add(x=2, y=2).call(timeout=10).payload == {"sum": 4}


def test_async_calls_pending_when_the_connection_drops_raise_at_once(setup: Setup) -> None:
    setup.start_calc(True)

    async def scenario() -> float:
        async with setup.async_client() as cli:
            assert (await cli.calc.add(x=1, y=1).call(timeout=10)).payload == {"sum": 2}
            pending = asyncio.ensure_future(
                cli.calc.slow(seconds=3, label="pending").call(timeout=30)
            )
            await asyncio.to_thread(Calc.rec.wait_for, "pending")
            [pid] = await asyncio.to_thread(
                wait_until, lambda: connection_pids(setup.client_name), "the client's connection"
            )
            started = time.monotonic()
            await asyncio.to_thread(close_connection, pid)
            with pytest.raises(exceptions.ConnectionClosed):
                await pending
            elapsed = time.monotonic() - started
            # the client reconnects by itself
            answer = await cli.calc.add(x=2, y=2).call(timeout=10)
            assert answer.payload == {"sum": 4}
            return elapsed

    assert run(scenario()) < 5


# -- inside handlers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("front_engine", "controller"),
    [
        pytest.param(False, Front, id="sync-engine"),
        pytest.param(True, Front, id="async-engine-plain-def"),
        pytest.param(True, AsyncFront, id="async-engine-async-def"),
    ],
)
@pytest.mark.parametrize("calc_engine", ENGINES)
def test_handlers_call_with_wait_and_get_the_answer_inline(
    front_engine: bool,
    controller: type[service.ServiceController],
    calc_engine: bool,
    setup: Setup,
) -> None:
    setup.start_calc(calc_engine)
    setup.start_front(front_engine, controller)
    with setup.client() as cli:
        answer = cli.front.twice(x=21).call(timeout=20)
        assert answer.payload == {"result": 42, "deadline_sent": False}
        relayed = cli.front.relay_error().call(timeout=20)
        assert relayed.payload == {"class": "KeyError", "code": exceptions.UNKNOWN_ERROR}
        # many at once (async engine: several handlers wait at the same time)
        pending = [cli.front.twice(x=i).call_async(timeout=30) for i in range(40)]
        assert [p.result().payload["result"] for p in pending] == [2 * i for i in range(40)]


# -- bad input ---------------------------------------------------------------------------


def test_sync_client_bad_input(setup: Setup) -> None:
    setup.start_calc(False)
    cli = setup.client()
    with pytest.raises(exceptions.UnableToDiscover):
        cli.ghost.add(x=1, y=1).call()
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="timeout"):
            cli.calc.add(x=1, y=1).call(timeout=bad)
    with pytest.raises(TypeError, match="'x'"):
        cli.calc.add(x=object(), y=1).call(timeout=5)
    assert cli.calc.add(x=1, y=1).call(timeout=10).payload == {"sum": 2}
    cli.close()
    with pytest.raises(exceptions.ConnectionClosed, match="closed"):
        cli.calc.add(x=1, y=1).call(timeout=5)


def test_async_client_bad_input(setup: Setup) -> None:
    setup.start_calc(True)

    async def scenario() -> None:
        cli = setup.async_client()
        with pytest.raises(exceptions.UnableToDiscover):
            await cli.ghost.add(x=1, y=1).call()
        with pytest.raises(ValueError, match="timeout"):
            await cli.calc.add(x=1, y=1).call(timeout=0)
        with pytest.raises(TypeError, match="'x'"):
            await cli.calc.add(x={1, 2}, y=1).call(timeout=5)
        assert (await cli.calc.add(x=1, y=1).call(timeout=10)).payload == {"sum": 2}
        await cli.close()
        with pytest.raises(exceptions.ConnectionClosed, match="closed"):
            await cli.calc.add(x=1, y=1).call(timeout=5)

    run(scenario())


@pytest.mark.parametrize("engine", ENGINES)
def test_call_to_an_exchange_without_the_service_queue_is_unroutable(
    engine: bool, setup: Setup
) -> None:
    setup.start_calc(engine)
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("calc", setup.front_ex)  # exists? declare it, unbound
    setup.start_front(engine, Front)  # declares front_ex, bound to front.# only
    conf = amqp_config(False, setup.client_name)
    with client.RPCClient(conf, disc, source="script") as cli:
        started = time.monotonic()
        with pytest.raises(exceptions.UnroutableMessage):
            cli.calc.add(x=1, y=1).call(timeout=20)
        assert time.monotonic() - started < 5

    async def scenario() -> None:
        async with client.AsyncRPCClient(amqp_config(True), disc, source="script") as cli:
            with pytest.raises(exceptions.UnroutableMessage):
                await cli.calc.add(x=1, y=1).call(timeout=20)

    run(scenario())


# -- casts in flight ---------------------------------------------------------------------


@dispatcher.rpc_service("tally")
class Tally(service.ServiceController):
    rec: ClassVar[Recorder] = Recorder()

    @dispatcher.rpc_method(service="tally", method="note")
    def note(self, request, proxy, n):
        self.rec.add("note", n)


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "transient"])
def test_cast_async_keeps_casts_in_flight_and_all_arrive(
    persistent: bool, names: Names, servers: Servers
) -> None:
    Tally.rec = Recorder()
    exchange = names.exchange("tally")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("tally", exchange)
    disc.register_remote_service("nobody", exchange)
    Tally.set_discovery(disc)
    servers.start(
        server.Server(
            amqp_config(False, names.connection("tally")), names.queue("tally"), exchange, [Tally]
        )
    )
    conf = amqp_config(False, names.connection("client"), persistent=persistent)
    with client.RPCClient(conf, disc, source="script") as cli:
        handles = [cli.tally.note(n=i).cast_async() for i in range(500)]
        for handle in handles:
            assert handle.result() is None
        unroutable = cli.nobody.note(n=0).cast_async()
        with pytest.raises(exceptions.UnroutableMessage):
            unroutable.result()
        # the connection is fine after a returned cast
        cli.tally.note(n=500).cast_async().result()
    assert sorted(Tally.rec.wait_for("note", 501)) == list(range(501))


def test_cast_async_to_a_missing_exchange_raises_exchange_not_found(names: Names) -> None:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("ghost", names.exchange("never-declared"))
    with client.RPCClient(amqp_config(False, names.connection("client")), disc, "script") as cli:
        with pytest.raises(exceptions.ExchangeNotFound):
            cli.ghost.note(n=1).cast_async().result()
        with pytest.raises(exceptions.ExchangeNotFound):
            cli.ghost.note(n=1).cast()


def test_cast_async_pending_when_the_connection_drops_end_at_once(
    names: Names, channel: Any
) -> None:
    exchange, queue = names.exchange("tally"), names.queue("tally")
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "tally.#")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("tally", exchange)
    client_name = names.connection("client")
    with client.RPCClient(amqp_config(False, client_name), disc, source="script") as cli:
        cli.tally.note(n=0).cast()
        [pid] = wait_until(lambda: connection_pids(client_name), "the client's connection")
        handles = [cli.tally.note(n=i).cast_async() for i in range(2000)]
        close_connection(pid)
        started = time.monotonic()
        outcomes = []
        for handle in handles:
            try:
                handle.result(timeout=20)
                outcomes.append("confirmed")
            except exceptions.ConnectionClosed:
                outcomes.append("closed")
        assert time.monotonic() - started < 10
        # every handle ended one way or the other; a closed one was not confirmed
        assert len(outcomes) == 2000
        assert set(outcomes) <= {"confirmed", "closed"}
        # the client reconnects for the next cast
        cli.tally.note(n=1).cast_async().result()


def test_closing_a_client_with_casts_in_flight_ends_them_cleanly(
    names: Names, channel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """close() while many cast_async() handles wait for their confirmations: each ends
    confirmed or with ConnectionClosed, and pika's I/O loop raises nothing on the way."""
    exchange, queue = names.exchange("tally"), names.queue("tally")
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "tally.#")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("tally", exchange)
    cli = client.RPCClient(amqp_config(False, names.connection("client")), disc, "script")
    handles = [cli.tally.note(n=i).cast_async() for i in range(400)]
    with caplog.at_level(logging.ERROR):
        cli.close()
    outcomes = set()
    for handle in handles:
        try:
            handle.result(timeout=0.1)
            outcomes.add("confirmed")
        except exceptions.ConnectionClosed:
            outcomes.add("closed")
    assert outcomes <= {"confirmed", "closed"}
    assert "AttributeError" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("pika")]
