"""``rpc_method(prefetch=N, timeout=S)``: a method's own queue and its handler's time budget.

On the memory broker: the topology (a Tavrida 1.0 publish of ``svc.method``
reaches one queue, once), the consumers, the checks at decoration time, and
the timeout on both engines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tavrida2 import cli, client, config, dispatcher, exceptions, server, service
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.drivers.topology import ExchangeBindingSpec, MethodQueue, UnbindingSpec
from tests.unit.test_calls import Bus

BROKER = "method_queues"
QUEUE, EXCHANGE = "mq_queue", "mq_exchange"
SLOW_QUEUE = f"{QUEUE}.mq.slow"
CONF = config.ConnectionConfig.from_url(f"memory://{BROKER}")


def mq_service(seen: list[str] | None = None) -> type[service.ServiceController]:
    @dispatcher.rpc_service("mq")
    class MQ(service.ServiceController):
        @dispatcher.rpc_method(method="slow", prefetch=1, timeout=30)
        def slow(self, request, proxy, n):
            if seen is not None:
                seen.append(f"slow {n}")
            return {"slow": n}

        @dispatcher.rpc_method(method="fast")
        def fast(self, request, proxy, n):
            if seen is not None:
                seen.append(f"fast {n}")
            return {"fast": n}

    return MQ


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    yield MemoryBroker.get(BROKER)


def start(*classes: type[service.ServiceController]) -> server.Server:
    srv = server.Server(CONF, QUEUE, EXCHANGE, list(classes), dead_letters=False)
    srv.start()
    return srv


# -- decoration -------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        {"prefetch": 0},
        {"prefetch": -1},
        {"prefetch": 1.5},
        {"prefetch": True},
        {"prefetch": "2"},
        {"timeout": 0},
        {"timeout": -3},
        {"timeout": float("inf")},
        {"timeout": float("nan")},
        {"timeout": "5"},
        {"timeout": False},
    ],
)
def test_limits_that_are_not_positive_are_config_errors_naming_the_method(
    limits: dict[str, Any],
) -> None:
    with pytest.raises(exceptions.ConfigError, match=r"rpc_method 'svc\.work'"):
        dispatcher.rpc_method(service="svc", method="work", **limits)


def test_only_request_handlers_take_limits() -> None:
    with pytest.raises(TypeError, match="rpc_method"):
        dispatcher.rpc_response_method(service="svc", method="work", prefetch=1)
    with pytest.raises(TypeError, match="rpc_method"):
        dispatcher.broadcast_method(method="work", timeout=1)


def test_the_handler_info_carries_the_limits() -> None:
    cls = mq_service()
    info = cls.get_dispatcher().get_info_by_name("slow")
    assert (info.prefetch, info.timeout) == (1, 30.0)
    assert [i.name for i in cls.get_dispatcher().own_queue_methods()] == ["slow"]


# -- topology ---------------------------------------------------------------------


def test_a_method_with_prefetch_gets_its_own_queue_and_the_service_queue_not_its_messages(
    broker: MemoryBroker,
) -> None:
    srv = start(mq_service())
    topology = srv.topology()
    assert topology.method_queues == [MethodQueue(SLOW_QUEUE, "mq.slow", 1)]
    assert ExchangeBindingSpec(f"{QUEUE}.mq.by-method", EXCHANGE, "mq.#") in (
        topology.exchange_bindings
    )
    assert UnbindingSpec(QUEUE, EXCHANGE, "mq.#") in topology.unbindings
    # a Tavrida 1.0 caller publishes service.method to the service exchange
    assert broker.route(EXCHANGE, "mq.slow") == [SLOW_QUEUE]
    assert broker.route(EXCHANGE, "mq.fast") == [QUEUE]
    assert broker.route(EXCHANGE, "mq.info") == [QUEUE]
    assert broker.route(EXCHANGE, "mq") == [QUEUE]
    assert broker.consumer_count(SLOW_QUEUE) == broker.consumer_count(QUEUE) == 1
    srv.stop()


def test_the_binding_of_an_earlier_run_without_method_queues_is_removed(
    broker: MemoryBroker,
) -> None:
    plain = server.Server(CONF, QUEUE, EXCHANGE, [mq_service()], dead_letters=False)
    broker.declare_exchange(EXCHANGE)
    broker.declare_queue(QUEUE)
    broker.bind_queue(QUEUE, EXCHANGE, "mq.#")
    assert broker.route(EXCHANGE, "mq.slow") == [QUEUE]
    plain.start()
    assert (QUEUE, "mq.#") not in broker.bindings(EXCHANGE)
    assert broker.route(EXCHANGE, "mq.slow") == [SLOW_QUEUE]
    plain.stop()


def test_a_server_without_prefetch_methods_binds_as_before() -> None:
    @dispatcher.rpc_service("plain")
    class Plain(service.ServiceController):
        @dispatcher.rpc_method(method="work", timeout=5)
        def work(self, request, proxy):
            return {}

    topology = server.Server(CONF, QUEUE, EXCHANGE, [Plain], dead_letters=False).topology()
    assert topology.method_queues == topology.exchange_bindings == topology.unbindings == []
    assert [(b.exchange, b.routing_key) for b in topology.bindings] == [(EXCHANGE, "plain.#")]


def test_method_queues_take_the_dead_letter_arguments_of_the_server_queue() -> None:
    srv = server.Server(CONF, QUEUE, EXCHANGE, [mq_service()])
    queues = {q.name: dict(q.arguments) for q in srv.topology().queues}
    assert queues[SLOW_QUEUE] == queues[QUEUE]
    assert queues[SLOW_QUEUE]["x-dead-letter-exchange"] == f"{QUEUE}.dlx"


def test_info_shows_them() -> None:
    srv = server.Server(CONF, QUEUE, EXCHANGE, [mq_service()], dead_letters=False)
    handlers = {h["method"]: h for h in srv.describe()["controllers"][0]["handlers"]}
    assert (handlers["slow"]["prefetch"], handlers["slow"]["timeout"]) == (1, 30.0)
    assert "prefetch" not in handlers["fast"] and "timeout" not in handlers["fast"]
    assert SLOW_QUEUE in srv.describe()["queues"]


# -- calls ------------------------------------------------------------------------


def test_calls_reach_each_method_through_its_queue_once(broker: MemoryBroker) -> None:
    seen: list[str] = []
    start(mq_service(seen))
    disc_bus = Bus("sync")
    disc_bus.discovery.register_remote_service("mq", EXCHANGE)
    with client.RPCClient(CONF, disc_bus.discovery, source="test") as cli:
        assert cli.mq.slow(n=1).call(timeout=5).payload == {"slow": 1}
        assert cli.mq.fast(n=2).call(timeout=5).payload == {"fast": 2}
        cli.mq.slow(n=3).cast()
        cli.mq.fast(n=4).cast()
    broker.run_until_idle()
    assert sorted(seen) == ["fast 2", "fast 4", "slow 1", "slow 3"]
    assert broker.is_idle() and broker.unroutable == []


def test_a_slow_method_does_not_hold_up_the_others_on_the_sync_engine(
    broker: MemoryBroker,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    @dispatcher.rpc_service("mq")
    class MQ(service.ServiceController):
        @dispatcher.rpc_method(method="slow", prefetch=1)
        def slow(self, request, proxy):
            entered.set()
            release.wait(10)
            return {}

        @dispatcher.rpc_method(method="fast")
        def fast(self, request, proxy):
            return {"fast": True}

    srv = server.Server(CONF, QUEUE, EXCHANGE, [MQ], dead_letters=False)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    assert srv.started.wait(5)
    disc_bus = Bus("sync")
    disc_bus.discovery.register_remote_service("mq", EXCHANGE)
    try:
        with client.RPCClient(CONF, disc_bus.discovery, source="test") as cli:
            pending = cli.mq.slow().call_async(timeout=10)
            assert entered.wait(5)
            assert cli.mq.fast().call(timeout=5).payload == {"fast": True}
            release.set()
            assert pending.result().payload == {}
    finally:
        release.set()
        srv.stop()
        thread.join(10)
    assert not thread.is_alive()


# -- timeouts ---------------------------------------------------------------------


class Plain(service.ServiceController):
    """Plain handlers with a timeout: one past it, one within it."""

    done: list[str]

    @dispatcher.rpc_method(method="late", timeout=0.1)
    def late(self, request, proxy):
        time.sleep(0.3)
        self.done.append("late")
        return {"late": True}

    @dispatcher.rpc_method(method="quick", timeout=5)
    def quick(self, request, proxy):
        return {"quick": True}


def plain_service(done: list[str]) -> type[service.ServiceController]:
    @dispatcher.rpc_service("mq")
    class MQ(Plain):
        pass

    MQ.done = done
    return MQ


def async_service(done: list[str]) -> type[service.ServiceController]:
    @dispatcher.rpc_service("mq")
    class MQ(Plain):
        @dispatcher.rpc_method(method="never", timeout=0.1)
        async def never(self, request, proxy):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.done.append("cancelled")
                raise

    MQ.done = done
    return MQ


@pytest.fixture(params=["sync", "async"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    rig = Bus(request.param)
    rig.discovery.register_remote_service("mq", EXCHANGE)
    yield rig
    rig.stop()


def test_a_plain_handler_past_its_timeout_answers_handler_timeout(bus: Bus) -> None:
    done: list[str] = []
    bus.serve(QUEUE, EXCHANGE, plain_service(done))
    outcome = bus.run(lambda cli: cli.mq.late().try_call(timeout=5))
    ok, (code, result) = outcome
    assert (ok, code, result["class"]) == (True, 1063, "tavrida2.exceptions.HandlerTimeout")
    assert "0.1 s" in result["message"]
    assert bus.run(lambda cli: cli.mq.quick().call(timeout=5)).payload == {"quick": True}


def test_an_async_handler_past_its_timeout_is_cancelled_and_answered_in_time() -> None:
    done: list[str] = []
    rig = Bus("async")
    rig.discovery.register_remote_service("mq", EXCHANGE)
    rig.serve(QUEUE, EXCHANGE, async_service(done))

    async def call(cli: Any) -> Any:
        started = time.monotonic()
        outcome = await cli.mq.never().try_call(timeout=10)
        return outcome, time.monotonic() - started

    (ok, (code, _)), elapsed = rig.run(call)
    assert (ok, code) == (True, 1063)
    assert elapsed < 5
    assert done == ["cancelled"]


def test_a_handler_that_raises_timeout_error_itself_is_not_a_handler_timeout() -> None:
    @dispatcher.rpc_service("mq")
    class MQ(service.ServiceController):
        @dispatcher.rpc_method(method="own", timeout=5)
        async def own(self, request, proxy):
            raise TimeoutError("the database")

    rig = Bus("async")
    rig.discovery.register_remote_service("mq", EXCHANGE)
    rig.serve(QUEUE, EXCHANGE, MQ)
    ok, (code, result) = rig.run(lambda cli: cli.mq.own().try_call(timeout=5))
    assert ok and code != 1063 and result["message"] == "the database"


def test_the_topology_command_shows_the_method_routing(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "controllers").mkdir()
    (tmp_path / "controllers" / "mq.py").write_text(
        "from tavrida2 import dispatcher, service\n\n"
        '@dispatcher.rpc_service("mq")\n'
        "class MQ(service.ServiceController):\n"
        '    @dispatcher.rpc_method(method="slow", prefetch=2, timeout=9)\n'
        "    def slow(self, request, proxy):\n"
        "        return {}\n"
    )
    (tmp_path / "services.ds").write_text(f"[mq]\nexchange = {EXCHANGE}\n")
    ini = tmp_path / "server.ini"
    ini.write_text(
        f'[server]\nqueue_name = "{QUEUE}"\nexchange_name = "{EXCHANGE}"\n'
        'discovery = "services.ds"\nservices = "controllers/"\ndead_letters = false\n'
    )
    assert cli.main(["topology", str(ini)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{QUEUE}.mq.by-method (topic, durable, alternate-exchange {QUEUE}.mq.other-methods)" in out
    )
    assert f"{EXCHANGE} --[mq.#]--> exchange {QUEUE}.mq.by-method" in out
    assert f"{QUEUE}.mq.by-method --[mq.slow]--> {SLOW_QUEUE}" in out
    assert f"removed: {EXCHANGE} --[mq.#]--> {QUEUE}" in out
    assert f"mq.slow: {SLOW_QUEUE}, prefetch 2" in out
