"""Calls whose caller waits for the answer (direct reply-to), on the memory broker.

``bus`` runs each test twice: ``sync`` is the blocking ``RPCClient`` with
servers on the sync engine that were started but that no thread runs (the
waiting client delivers to them); ``async`` is the ``AsyncRPCClient`` with
servers on the async engine, served in tasks of the test's event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tavrida2 import client, config, discovery, dispatcher, exceptions, messages, server, service
from tavrida2.drivers.memory import MemoryBroker
from tests.unit.bad_input_support import body_of, call_headers

BROKER = "calls"
CALC_QUEUE, CALC_EXCHANGE = "calc_queue", "calc_exchange"
FRONT_QUEUE, FRONT_EXCHANGE = "front_queue", "front_exchange"
SINK_QUEUE, SINK_EXCHANGE = "sink_queue", "sink_exchange"
APP_QUEUE, APP_EXCHANGE = "app_queue", "app_exchange"
CALC_NOTIFICATIONS = "calc_notifications"
REPLY_QUEUE_PREFIX = "amq.rabbitmq.reply-to."
SOURCE = "client_app"


class PlanetError(Exception):
    """What ``calc.fail`` raises for kind ``custom``."""


def now_ms() -> int:
    return int(time.time() * 1000)


def calc_discovery() -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("calc", CALC_EXCHANGE)
    return disc


def calc_service(seen: list[messages.Message]) -> type[service.ServiceController]:
    """``calc.add`` answers the sum, ``calc.fail`` raises, ``calc.relay`` casts and publishes."""

    @dispatcher.rpc_service("calc")
    class Calc(service.ServiceController):
        @dispatcher.rpc_method(method="add")
        def add(self, request, proxy, a, b):
            seen.append(request)
            return {"sum": a + b}

        @dispatcher.rpc_method(method="fail")
        def fail(self, request, proxy, kind, text):
            raise {"builtin": ValueError, "custom": PlanetError}[kind](text)

        @dispatcher.rpc_method(method="relay")
        def relay(self, request, proxy, note):
            seen.append(request)
            proxy.sink.put(note=note).cast()
            proxy.publish(note=note)
            return {"relayed": note}

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("sink", SINK_EXCHANGE)
    disc.register_local_publisher("calc", CALC_NOTIFICATIONS)
    Calc.set_discovery(disc)
    return Calc


class Bus:
    """Servers on the memory broker and a client, on one engine (see the module docstring)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.broker = MemoryBroker.get(BROKER)
        self.discovery = calc_discovery()
        self.discovery.register_remote_service("front", FRONT_EXCHANGE)
        self.specs: list[tuple[str, str, list[type[service.ServiceController]]]] = []
        self.sync_servers: list[server.Server] = []
        self.client: Any = None
        self.elapsed = math.nan

    @property
    def is_async(self) -> bool:
        return self.engine == "async"

    @property
    def client_class(self) -> type[client.RPCClient] | type[client.AsyncRPCClient]:
        return client.AsyncRPCClient if self.is_async else client.RPCClient

    def config(self) -> config.ConnectionConfig:
        return config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=self.is_async)

    def serve(self, queue: str, exchange: str, *services: type[service.ServiceController]) -> None:
        self.specs.append((queue, exchange, list(services)))

    def declare_unconsumed_calc_queue(self) -> None:
        """The calc queue and its binding, with no server consuming it."""
        self.broker.declare_exchange(CALC_EXCHANGE)
        self.broker.declare_queue(CALC_QUEUE)
        self.broker.bind_queue(CALC_QUEUE, CALC_EXCHANGE, "calc.#")

    def make_servers(self) -> list[server.Server]:
        return [server.Server(self.config(), q, ex, classes) for q, ex, classes in self.specs]

    def run(self, action: Callable[[Any], Any]) -> Any:
        """Serve, open a client, return what ``action(client)`` gives (awaited if awaitable).

        ``elapsed`` is how long the action (and its awaiting) took; everything
        it set off is delivered before this returns.
        """
        if self.is_async:
            return asyncio.run(self._run_async(action))
        if not self.sync_servers:
            self.sync_servers = self.make_servers()
            for srv in self.sync_servers:
                srv.start()
        with client.RPCClient(self.config(), self.discovery, source=SOURCE) as cli:
            self.client = cli
            start = time.monotonic()
            try:
                result = action(cli)
            finally:
                self.elapsed = time.monotonic() - start
            self.broker.run_until_idle()
        return result

    async def _run_async(self, action: Callable[[Any], Any]) -> Any:
        servers = self.make_servers()
        tasks = [asyncio.ensure_future(srv.serve()) for srv in servers]
        try:
            await until(lambda: all(srv.started.is_set() for srv in servers), tasks)
            async with client.AsyncRPCClient(self.config(), self.discovery, source=SOURCE) as cli:
                self.client = cli
                start = time.monotonic()
                try:
                    result = action(cli)
                    if inspect.isawaitable(result):
                        result = await result
                finally:
                    self.elapsed = time.monotonic() - start
                await until(self.broker.is_idle, tasks)
            return result
        finally:
            for srv in servers:
                srv.stop()
            await asyncio.gather(*tasks)

    def stop(self) -> None:
        for srv in self.sync_servers:
            srv.stop()
            if srv.driver is not None:
                srv.driver.close()

    def reply_queues(self) -> list[str]:
        return [q for q in self.broker.queue_names() if q.startswith(REPLY_QUEUE_PREFIX)]


async def until(condition: Callable[[], bool], tasks: list[asyncio.Future[Any]]) -> None:
    """Wait (at most 5 s) for ``condition``; a server task that ended raises its error."""
    deadline = time.monotonic() + 5
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError("a server stopped on its own")
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


@pytest.fixture(params=["sync", "async"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    running = Bus(request.param)
    yield running
    running.stop()


def add(a: int, b: int, timeout: float = 5.0) -> Callable[[Any], Any]:
    return lambda cli: cli.calc.add(a=a, b=b).call(timeout=timeout)


# -- answers ------------------------------------------------------------------------


def test_call_returns_the_answer_with_its_payload(bus: Bus) -> None:
    seen: list[messages.Message] = []
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))

    answer = bus.run(add(2, 3))

    assert type(answer) is messages.IncomingResponse
    assert answer.payload == {"sum": 5}
    assert answer.headers["message_type"] == "response"
    assert answer.headers["source"] == "calc.add"
    assert answer.headers["destination"] == SOURCE
    assert answer.request_id == seen[0].request_id
    assert "deadline" not in answer.headers
    assert bus.broker.discarded == bus.broker.unroutable == []


@pytest.mark.parametrize(
    ("kind", "remote_class"),
    [("builtin", "ValueError"), ("custom", f"{__name__}.PlanetError")],
)
def test_error_answer_raises_remote_error_with_class_message_and_code(
    bus: Bus, kind: str, remote_class: str
) -> None:
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service([]))

    with pytest.raises(exceptions.RemoteError) as caught:
        bus.run(lambda cli: cli.calc.fail(kind=kind, text="no such planet").call(timeout=5))

    error = caught.value
    assert (error.remote_class, error.remote_message, error.code) == (
        remote_class,
        "no such planet",
        1000,
    )
    assert not isinstance(error, exceptions.CallTimeout)
    assert bus.broker.discarded == []


def test_unknown_method_raises_remote_error_handler_not_found_quickly(bus: Bus) -> None:
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service([]))

    with pytest.raises(exceptions.RemoteError) as caught:
        bus.run(lambda cli: cli.calc.nope(x=1).call(timeout=30))

    assert caught.value.code == 1004
    assert caught.value.remote_class == "tavrida2.exceptions.HandlerNotFound"
    assert "calc.nope" in caught.value.remote_message
    # answered, not timed out (RemoteError, not CallTimeout), and long before the
    # 30 s timeout even on a loaded machine
    assert bus.elapsed < 5.0
    assert bus.broker.message_count(CALC_QUEUE) == 0


def test_no_consumer_raises_call_timeout_after_the_timeout(bus: Bus) -> None:
    bus.declare_unconsumed_calc_queue()

    timeout, slack = 0.3, 5.0
    with pytest.raises(exceptions.CallTimeout) as caught:
        bus.run(add(1, 2, timeout=timeout))

    assert isinstance(caught.value, TimeoutError)
    assert "calc.add" in str(caught.value)
    # not before the timeout (less a clock tick); not at the 30 s default and not
    # never, with room for a loaded machine
    assert timeout - 0.01 <= bus.elapsed < timeout + slack, bus.elapsed
    assert bus.broker.message_count(CALC_QUEUE) == 1


def test_waiting_request_carries_reply_to_correlation_id_expiration_and_deadline(
    bus: Bus,
) -> None:
    bus.declare_unconsumed_calc_queue()
    before = now_ms()

    with pytest.raises(exceptions.CallTimeout):
        bus.run(add(1, 2, timeout=0.25))

    stored = bus.broker.get_message(CALC_QUEUE)
    assert stored is not None
    assert stored.properties["reply_to"].startswith(REPLY_QUEUE_PREFIX)
    assert stored.properties["correlation_id"] == stored.headers["request_id"]
    assert stored.properties["expiration"] == "250"
    deadline = stored.headers["deadline"]
    assert type(deadline) is int
    assert before + 250 <= deadline <= now_ms()
    assert stored.headers["reply_to"] == stored.headers["source"] == SOURCE


# -- refused before anything is sent -----------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_bad_timeouts_are_refused_before_sending(bus: Bus, timeout: Any, error: type) -> None:
    bus.declare_unconsumed_calc_queue()

    with pytest.raises(error, match="timeout"):
        bus.run(lambda cli: cli.calc.add(a=1, b=2).call(timeout=timeout))
    with pytest.raises(error, match="timeout"):
        bus.run(lambda cli: cli.calc.add(a=1, b=2).call_async(timeout=timeout))
    with pytest.raises(error, match="timeout"):
        bus.client_class(bus.config(), calc_discovery(), source=SOURCE, timeout=timeout)

    assert bus.broker.message_count(CALC_QUEUE) == 0


def test_unknown_service_raises_unable_to_discover_before_sending(bus: Bus) -> None:
    with pytest.raises(exceptions.UnableToDiscover, match="ghost"):
        bus.run(lambda cli: cli.ghost.method(x=1).call(timeout=5))

    assert bus.reply_queues() == []
    assert bus.broker.unroutable == []


def test_unserialisable_payload_raises_type_error_naming_the_key(bus: Bus) -> None:
    bus.declare_unconsumed_calc_queue()

    with pytest.raises(TypeError, match="payload key 'b': value of type set"):
        bus.run(lambda cli: cli.calc.add(a=1, b={1, 2}).call(timeout=5))

    assert bus.broker.message_count(CALC_QUEUE) == 0
    assert bus.reply_queues() == []


def test_a_closed_client_raises_connection_closed(bus: Bus) -> None:
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service([]))
    kept: dict[str, Any] = {}

    def call_and_keep_a_proxy(cli: Any) -> Any:
        kept["add"] = cli.calc.add
        return cli.calc.add(a=1, b=1).call(timeout=5)

    assert bus.run(call_and_keep_a_proxy).payload == {"sum": 2}
    closed = bus.client

    with pytest.raises(exceptions.ConnectionClosed):
        closed.calc  # noqa: B018
    with pytest.raises(exceptions.ConnectionClosed):
        result = kept["add"](a=1, b=1).cast()
        if inspect.isawaitable(result):
            asyncio.run(result)
    assert bus.broker.message_count(CALC_QUEUE) == 0


def wait_for(predicate: Any, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_closing_the_async_client_ends_its_waiting_call_with_connection_closed() -> None:
    bus = Bus("async")
    bus.declare_unconsumed_calc_queue()

    async def main() -> float:
        cli = client.AsyncRPCClient(bus.config(), bus.discovery, source=SOURCE)
        add_proxy = cli.calc.add
        waiting = asyncio.ensure_future(add_proxy(a=1, b=2).call(timeout=30))
        await until(lambda: bus.broker.message_count(CALC_QUEUE) == 1, [])
        start = time.monotonic()
        await cli.close()
        with pytest.raises(exceptions.ConnectionClosed):
            await waiting
        elapsed = time.monotonic() - start
        with pytest.raises(exceptions.ConnectionClosed):
            await add_proxy(a=1, b=2).call(timeout=5)
        return elapsed

    # ended by the close (ConnectionClosed, not CallTimeout), long before its 30 s timeout
    assert asyncio.run(main()) < 5.0


def test_closing_the_sync_client_ends_its_waiting_calls_with_connection_closed() -> None:
    bus = Bus("sync")
    bus.declare_unconsumed_calc_queue()
    cli = client.RPCClient(bus.config(), bus.discovery, source=SOURCE)
    add_proxy = cli.calc.add
    handle = add_proxy(a=1, b=2).call_async(timeout=30)
    raised: list[BaseException] = []

    def wait_in_a_thread() -> None:
        try:
            add_proxy(a=3, b=4).call(timeout=30)
        except BaseException as exc:  # checked below
            raised.append(exc)

    waiter = threading.Thread(target=wait_in_a_thread, daemon=True)
    waiter.start()
    assert wait_for(lambda: bus.broker.message_count(CALC_QUEUE) == 2)
    start = time.monotonic()
    cli.close()
    waiter.join(5)
    with pytest.raises(exceptions.ConnectionClosed, match="closed"):
        handle.result()
    # ended by the close (ConnectionClosed, not CallTimeout), long before their 30 s timeout
    assert time.monotonic() - start < 5.0
    assert not waiter.is_alive()
    assert [type(e) for e in raised] == [exceptions.ConnectionClosed]
    for send in (lambda: add_proxy(a=1, b=2).call(timeout=1), add_proxy(a=1, b=2).call_async):
        with pytest.raises(exceptions.ConnectionClosed):
            send()


# -- many calls in flight ------------------------------------------------------------


def test_fifty_call_async_handles_of_the_sync_client_get_their_own_answers() -> None:
    seen: list[messages.Message] = []
    bus = Bus("sync")
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))

    def start_then_wait(cli: client.RPCClient) -> list[Any]:
        handles = [cli.calc.add(a=i, b=1000).call_async(timeout=5) for i in range(50)]
        answers = {h.request_id: h.result() for h in reversed(handles)}
        return [answers[h.request_id] for h in handles]

    try:
        answers = bus.run(start_then_wait)
    finally:
        bus.stop()

    assert [a.payload for a in answers] == [{"sum": i + 1000} for i in range(50)]
    requests = {r.request_id: r.payload["a"] for r in seen}
    assert {a.request_id: a.payload["sum"] - 1000 for a in answers} == requests
    assert len(requests) == 50


def test_two_hundred_concurrent_async_calls_are_matched_to_their_answers() -> None:
    seen: list[messages.Message] = []
    bus = Bus("async")
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))

    answers = bus.run(
        lambda cli: asyncio.gather(*(cli.calc.add(a=i, b=i).call(timeout=5) for i in range(200)))
    )

    assert [a.payload for a in answers] == [{"sum": 2 * i} for i in range(200)]
    assert len({a.request_id for a in answers}) == 200
    assert {r.request_id for r in seen} == {a.request_id for a in answers}


# -- waiting inside handlers ----------------------------------------------------------


def front_service(kind: str, seen: list[Any]) -> type[service.ServiceController]:
    """``front.ask`` calls ``calc.add`` with wait=True from a plain or an ``async def`` handler.

    Its response handler for ``calc.add`` records too: it must not be called.
    """

    class Front(service.ServiceController):
        @dispatcher.rpc_response_method(service="calc", method="add")
        def on_add(self, response, proxy, sum):
            seen.append(("on_add", response))

    if kind == "coroutine":

        class AsyncFront(Front):
            @dispatcher.rpc_method(service="front", method="ask")
            async def ask(self, request, proxy, a, b):
                pending = proxy.calc.add(a=a, b=b).call(wait=True, timeout=2)
                seen.append(("pending", pending))
                answer = await pending
                seen.append(("answer", answer))
                return {"sum": answer.payload["sum"]}

        cls: type[service.ServiceController] = AsyncFront
    else:

        class PlainFront(Front):
            @dispatcher.rpc_method(service="front", method="ask")
            def ask(self, request, proxy, a, b):
                answer = proxy.calc.add(a=a, b=b).call(wait=True, timeout=2)
                seen.append(("answer", answer))
                return {"sum": answer.payload["sum"]}

        cls = PlainFront
    cls = dispatcher.rpc_service("front")(cls)
    cls.set_discovery(calc_discovery())
    return cls


@pytest.mark.parametrize(
    ("engine", "kind"), [("sync", "plain"), ("async", "coroutine"), ("async", "plain")]
)
def test_call_with_wait_inside_a_handler_returns_the_answer(engine: str, kind: str) -> None:
    seen: list[Any] = []
    calc_seen: list[messages.Message] = []
    bus = Bus(engine)
    bus.serve(FRONT_QUEUE, FRONT_EXCHANGE, front_service(kind, seen))
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(calc_seen))

    try:
        answer = bus.run(lambda cli: cli.front.ask(a=20, b=22).call(timeout=5))
    finally:
        bus.stop()

    assert answer.payload == {"sum": 42}
    inner = dict(seen)["answer"]
    assert type(inner) is messages.IncomingResponse
    assert inner.payload == {"sum": 42}
    assert inner.request_id == calc_seen[0].request_id
    assert calc_seen[0].headers["source"] == "front.ask"
    if kind == "coroutine":
        assert inspect.isawaitable(dict(seen)["pending"])
    assert "on_add" not in dict(seen)
    assert bus.broker.discarded == bus.broker.unroutable == []


def test_handler_sees_the_waiting_requests_properties_and_deadline_but_does_not_pass_it_on(
    bus: Bus,
) -> None:
    seen: list[messages.Message] = []

    @dispatcher.rpc_service("sink")
    class Sink(service.ServiceController):
        @dispatcher.rpc_method(service="sink", method="put")
        def put(self, request, proxy, note):
            seen.append(request)

        @dispatcher.subscription_method(service="calc", method="relay")
        def on_relay(self, notification, proxy, note):
            seen.append(notification)

    sink_disc = discovery.LocalDiscovery()
    sink_disc.register_remote_publisher("calc", CALC_NOTIFICATIONS)
    Sink.set_discovery(sink_disc)
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))
    bus.serve(SINK_QUEUE, SINK_EXCHANGE, Sink)
    before = now_ms()

    answer = bus.run(lambda cli: cli.calc.relay(note="n").call(timeout=5))
    after = now_ms()

    assert answer.payload == {"relayed": "n"}
    request, *nested = seen
    assert type(request) is messages.IncomingRequestCall
    assert request.amqp_reply_to.startswith(REPLY_QUEUE_PREFIX)
    assert request.amqp_correlation_id == request.request_id
    assert request.headers["reply_to"] == SOURCE
    deadline = request.headers["deadline"]
    assert type(deadline) is int
    assert before + 5000 <= deadline <= after + 5000
    assert sorted(type(m).__name__ for m in nested) == [
        "IncomingNotification",
        "IncomingRequestCast",
    ]
    for message in nested:
        assert "deadline" not in message.headers
        assert message.correlation_id == request.correlation_id
        assert message.amqp_reply_to is None
    assert "deadline" not in answer.headers


def test_an_expired_request_is_not_run_but_acknowledged_and_logged(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[messages.Message] = []
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc_service(seen))
    reply_queue = bus.broker.declare_queue(f"{REPLY_QUEUE_PREFIX}gone", durable=False)
    headers = call_headers("calc.add", source=SOURCE, reply_to=SOURCE, deadline=now_ms() - 1000)
    properties = {
        "reply_to": reply_queue,
        "correlation_id": headers["request_id"],
        "expiration": "1000",
    }

    def publish_expired(cli: Any) -> None:
        bus.broker.publish(
            CALC_EXCHANGE, "calc.add", body_of({"a": 1, "b": 2}), headers, properties, True
        )

    with caplog.at_level(logging.WARNING, logger="tavrida2.engine"):
        bus.run(publish_expired)

    assert seen == []
    assert bus.broker.is_idle()
    assert bus.broker.message_count(CALC_QUEUE) == 0
    assert bus.broker.message_count(reply_queue) == 0
    assert bus.broker.discarded == bus.broker.unroutable == []
    warnings = [
        r
        for r in caplog.records
        if r.name == "tavrida2.engine"
        and r.levelno == logging.WARNING
        and "not run" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert headers["request_id"] in warnings[0].getMessage()


def test_the_answer_goes_to_the_callers_reply_queue_not_to_the_source_services_handler(
    bus: Bus,
) -> None:
    responses: list[messages.Message] = []

    @dispatcher.rpc_service(SOURCE)
    class App(service.ServiceController):
        @dispatcher.rpc_response_method(service="calc", method="add")
        def on_add(self, response, proxy, sum):
            responses.append(response)

    bus.serve(APP_QUEUE, APP_EXCHANGE, App)
    calc = calc_service([])
    calc.get_discovery().register_remote_service(SOURCE, APP_EXCHANGE)
    bus.serve(CALC_QUEUE, CALC_EXCHANGE, calc)

    answer = bus.run(add(1, 2))

    assert answer.payload == {"sum": 3}
    assert responses == []
    assert bus.broker.message_count(APP_QUEUE) == 0
    assert bus.broker.discarded == bus.broker.unroutable == []
    # the same service answers a Tavrida 1.0 call (wait=False) to the source's handler
    bus.run(lambda cli: cli.calc.add(a=3, b=4).call(wait=False))
    assert [r.payload for r in responses] == [{"sum": 7}]


@pytest.mark.parametrize(("persistent", "cast_mode"), [(True, 2), (False, 1)])
def test_casts_are_persistent_unless_configured_and_waiting_requests_are_transient(
    persistent: bool, cast_mode: int
) -> None:
    bus = Bus("sync")
    bus.declare_unconsumed_calc_queue()
    conf = config.ConnectionConfig.from_url(f"memory://{bus.broker.name}", persistent=persistent)
    with client.RPCClient(conf, bus.discovery, source=SOURCE) as cli:
        cli.calc.add(a=1, b=2).cast()
        with pytest.raises(exceptions.CallTimeout):
            cli.calc.add(a=1, b=2).call(timeout=0.05)
    cast, request = bus.broker.get_message(CALC_QUEUE), bus.broker.get_message(CALC_QUEUE)
    assert cast is not None and request is not None
    assert cast.properties["delivery_mode"] == cast_mode
    assert request.properties["delivery_mode"] == 1


def test_cast_async_returns_a_handle_whose_result_reports_the_outcome() -> None:
    bus = Bus("sync")
    bus.declare_unconsumed_calc_queue()
    bus.discovery.register_remote_service("nobody", CALC_EXCHANGE)
    with client.RPCClient(bus.config(), bus.discovery, source=SOURCE) as cli:
        handles = [cli.calc.add(a=i, b=0).cast_async() for i in range(5)]
        assert [h.result() for h in handles] == [None] * 5
        returned = cli.nobody.add(a=1, b=1).cast_async()
        with pytest.raises(exceptions.UnroutableMessage):
            returned.result()
    assert bus.broker.message_count(CALC_QUEUE) == 5


def test_async_client_cast_async_is_a_future() -> None:
    bus = Bus("async")
    bus.declare_unconsumed_calc_queue()

    async def main() -> None:
        async with client.AsyncRPCClient(bus.config(), bus.discovery, source=SOURCE) as cli:
            futures = [cli.calc.add(a=i, b=0).cast_async() for i in range(5)]
            assert all(isinstance(f, asyncio.Future) for f in futures)
            await asyncio.gather(*futures)

    asyncio.run(main())
    assert bus.broker.message_count(CALC_QUEUE) == 5
