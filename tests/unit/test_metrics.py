"""Prometheus metrics of a server (``tavrida2.metrics``) on the memory broker, both engines.

A ``shop`` server with metrics in a registry of the test's own gets known
traffic — calls, failing casts (retried, then dead-lettered), a broadcast, a
notification, a response and an error, messages no handler takes, a duplicate
a middleware stops — and the counters, histograms and the in-flight gauge must
say exactly that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tavrida2 import config, dispatcher, exceptions, middleware, server, service
from tavrida2.client import RPCClient
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.discovery import LocalDiscovery
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.messages import IncomingRequestCast, new_id
from tavrida2.metrics import MetricsMiddleware, PrometheusMetrics
from tests.unit.bad_input_support import body_of, call_headers

BROKER = "metrics"
QUEUE, EXCHANGE, NEWS = "shop_queue", "shop_exchange", "news_events"
ENGINES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series that does not exist (yet)."""
    return registry.get_sample_value(name, labels) or 0.0


def handled(registry: CollectorRegistry, method: str, kind: str, outcome: str = "ok") -> float:
    return sample(
        registry, "tavrida2_messages_total", service="shop", method=method, type=kind,
        outcome=outcome,
    )  # fmt: skip


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Shop:
    """The ``shop`` server with metrics (registry ``registry``), running in a thread."""

    def __init__(
        self, async_engine: bool, dedup: bool = False, queue_type: str = "classic"
    ) -> None:
        self.registry = CollectorRegistry()
        self.broker = MemoryBroker.get(BROKER)
        self.entered = threading.Event()
        self.gate = threading.Event()
        entered, gate = self.entered, self.gate

        @dispatcher.rpc_service("shop")
        class ShopController(service.ServiceController):
            def __init__(self, postprocessor: Any) -> None:
                super().__init__(postprocessor)
                if dedup:
                    self.add_incoming_middleware(middleware.DeduplicationMiddleware())

            @dispatcher.rpc_method(method="order")
            def order(self, request, proxy, item):
                if item == "bad":
                    raise ValueError("no such item")
                return {"item": item}

            @dispatcher.rpc_method(method="nap")
            def nap(self, request, proxy, seconds):
                time.sleep(seconds)

            @dispatcher.rpc_method(method="hold")
            def hold(self, request, proxy):
                entered.set()
                assert gate.wait(10)

            @dispatcher.broadcast_method(method="flush")
            def flush(self, request, proxy):
                return None

            @dispatcher.subscription_method(service="news", method="published")
            def on_news(self, message, proxy, title):
                return None

            @dispatcher.rpc_response_method(service="stock", method="reserve")
            def reserved(self, response, proxy, **payload):
                return None

            @dispatcher.rpc_error_method(service="stock", method="reserve")
            def not_reserved(self, error, proxy):
                return None

        disc = LocalDiscovery()
        disc.register_remote_publisher("news", NEWS)
        ShopController.set_discovery(disc)
        self.client_discovery = LocalDiscovery()
        self.client_discovery.register_remote_service("shop", EXCHANGE)
        self.conf = config.ConnectionConfig.from_url(
            f"memory://{BROKER}", async_engine=async_engine
        )
        self.metrics = PrometheusMetrics(self.registry)
        self.server = server.Server(
            self.conf,
            QUEUE,
            EXCHANGE,
            [ShopController],
            dead_letters=DeadLetterPolicy.for_queue(QUEUE, max_attempts=2, retry_delay=0.01),
            metrics=self.metrics,
            queue_type=queue_type,
        )
        self._threads = server.run_servers([self.server])

    def client(self) -> RPCClient:
        return RPCClient(self.conf, self.client_discovery, source="buyer", timeout=5)

    def publish(self, routing_key: str, headers: dict[str, Any], payload: dict[str, Any]) -> None:
        exchange = NEWS if headers["message_type"] == "notification" else EXCHANGE
        self.broker.publish(exchange, routing_key, body_of(payload), headers, None, True)

    def settle(self) -> None:
        """Until nothing waits anywhere, the retry queue included."""
        retry = f"{QUEUE}.retry"  # a quorum queue has none

        def idle() -> bool:
            waiting = retry in self.broker.queue_names() and self.broker.message_count(retry)
            return self.broker.is_idle() and not waiting

        wait_for(idle, "the broker idle")

    def stop(self) -> None:
        self.gate.set()
        self.server.stop()
        for thread in self._threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(params=ENGINES)
def async_engine(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def shop(async_engine: bool) -> Iterator[Shop]:
    rig = Shop(async_engine)
    try:
        yield rig
    finally:
        rig.stop()


def test_known_traffic_gives_exact_counts(shop: Shop) -> None:
    registry = shop.registry
    with shop.client() as cli:
        for n in range(5):
            assert cli.shop.order(item=f"book-{n}").call().payload == {"item": f"book-{n}"}
        with pytest.raises(exceptions.RemoteError):
            cli.shop.order(item="bad").call()
        for _ in range(2):
            cli.shop.order(item="bad").cast()  # fails twice each: a retry, then a dead letter
        cli.shop.order(item="pen").cast()
        cli.shop.flush().broadcast()
        cli.shop.nope().cast()  # no such method: dead-lettered at once
        with pytest.raises(exceptions.RemoteError):
            cli.shop.nope().call()  # no such method: the caller gets the Error
    answer = {"source": "stock.reserve", "reply_to": "", "destination": "shop.order"}
    shop.publish("shop.order", call_headers(**answer, message_type="response"), {"left": 3})
    shop.publish("shop.order", call_headers(**answer, message_type="error"), {"message": "none"})
    shop.publish(
        "news.published",
        call_headers("", source="news.published", reply_to="", message_type="notification"),
        {"title": "sale"},
    )
    shop.settle()
    wait_for(lambda: handled(registry, "order", "request", "error") == 5, "the failures counted")
    wait_for(lambda: handled(registry, "order", "request") == 6, "the handled orders counted")

    assert handled(registry, "flush", "broadcast") == 1
    assert handled(registry, "news.published", "notification") == 1
    assert handled(registry, "stock.reserve", "response") == 1
    assert handled(registry, "stock.reserve", "error") == 1
    assert handled(registry, "order", "request", "rejected") == 0
    queue = {"queue": QUEUE}
    assert sample(registry, "tavrida2_retries_total", **queue) == 2
    assert sample(registry, "tavrida2_dead_lettered_total", reason="failed", **queue) == 2
    assert sample(registry, "tavrida2_dead_lettered_total", reason="unhandleable", **queue) == 1
    assert sample(registry, "tavrida2_unhandleable_total", **queue) == 2
    assert shop.broker.message_count(f"{QUEUE}.dlq") == 3
    assert sample(registry, "tavrida2_reconnects_total", **queue) == 0
    assert sample(registry, "tavrida2_messages_in_flight", service="shop") == 0

    # the histograms counted what the counters did, by outcome
    labels = {"service": "shop", "method": "order", "type": "request"}
    duration = "tavrida2_message_duration_seconds"
    assert sample(registry, f"{duration}_count", outcome="ok", **labels) == 6
    assert sample(registry, f"{duration}_count", outcome="error", **labels) == 5
    assert sample(registry, f"{duration}_bucket", outcome="ok", le="+Inf", **labels) == 6
    assert sample(registry, f"{duration}_sum", outcome="ok", **labels) > 0


def test_a_retry_on_a_quorum_queue_is_counted(async_engine: bool) -> None:
    """There a failed cast goes back to its queue (a requeue), not to the retry queue."""
    rig = Shop(async_engine, queue_type="quorum")
    try:
        with rig.client() as cli:
            cli.shop.order(item="bad").cast()
        rig.settle()
        queue = {"queue": QUEUE}
        wait_for(
            lambda: (
                sample(rig.registry, "tavrida2_dead_lettered_total", reason="failed", **queue) == 1
            ),
            "the dead letter counted",
        )
        assert sample(rig.registry, "tavrida2_retries_total", **queue) == 1
        assert handled(rig.registry, "order", "request", "error") == 2
    finally:
        rig.stop()


def test_the_latency_histogram_puts_a_slow_handler_in_its_bucket(shop: Shop) -> None:
    with shop.client() as cli:
        cli.shop.nap(seconds=0.06).call()
        cli.shop.nap(seconds=0).call()
    labels = {"service": "shop", "method": "nap", "type": "request", "outcome": "ok"}
    bucket = "tavrida2_message_duration_seconds_bucket"
    wait_for(lambda: sample(shop.registry, bucket, le="+Inf", **labels) == 2, "both naps timed")

    assert sample(shop.registry, bucket, le="0.05", **labels) == 1
    assert sample(shop.registry, bucket, le="0.1", **labels) == 2
    assert sample(shop.registry, "tavrida2_message_duration_seconds_sum", **labels) >= 0.06


def test_the_in_flight_gauge_counts_a_handler_while_it_runs(shop: Shop) -> None:
    gauge = "tavrida2_messages_in_flight"
    with shop.client() as cli:
        cli.shop.hold().cast()
        assert shop.entered.wait(10)
        assert sample(shop.registry, gauge, service="shop") == 1
        assert handled(shop.registry, "hold", "request") == 0
        shop.gate.set()
        shop.settle()
    wait_for(lambda: handled(shop.registry, "hold", "request") == 1, "the hold handled")
    assert sample(shop.registry, gauge, service="shop") == 0


def test_a_message_a_middleware_stops_is_rejected(async_engine: bool) -> None:
    rig = Shop(async_engine, dedup=True)
    try:
        headers = call_headers("shop.order", reply_to="", message_id=new_id())
        for _ in range(2):
            rig.publish("shop.order", dict(headers), {"item": "cup"})
            rig.settle()
        wait_for(lambda: handled(rig.registry, "order", "request", "rejected") == 1, "rejected")
        assert handled(rig.registry, "order", "request") == 1
        assert sample(rig.registry, "tavrida2_messages_in_flight", service="shop") == 0
        # the metrics middleware came first: it timed the one it did not let through too
        first = rig.server.services[0]._incoming_middlewares[0]
        assert isinstance(first, MetricsMiddleware)
    finally:
        rig.stop()


def test_a_server_without_metrics_adds_no_middleware() -> None:
    @dispatcher.rpc_service("plain")
    class Plain(service.ServiceController):
        @dispatcher.rpc_method(method="ping")
        def ping(self, request, proxy):
            return {}

    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")
    srv = server.Server(conf, "plain_queue", "plain_exchange", [Plain])
    srv.start()
    try:
        assert srv.metrics is None
        assert srv.services[0]._incoming_middlewares == []
        assert srv.driver is not None and srv.driver.on_reconnect is None
    finally:
        srv.stop()
        assert srv.driver is not None
        srv.driver.close()


def test_reconnects_are_counted_through_the_drivers_hook(shop: Shop) -> None:
    driver = shop.server.driver
    assert driver is not None and driver.on_reconnect is not None
    driver.on_reconnect()
    driver.on_reconnect()
    assert sample(shop.registry, "tavrida2_reconnects_total", queue=QUEUE) == 2


def test_servers_of_one_process_share_a_registry() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusMetrics(registry), PrometheusMetrics(registry)
    assert first.families is second.families
    first.for_server("a_queue").dead_lettered("failed")
    second.for_server("b_queue").dead_lettered("failed")
    second.for_server("b_queue").retried()

    name = "tavrida2_dead_lettered_total"
    assert sample(registry, name, queue="a_queue", reason="failed") == 1
    assert sample(registry, name, queue="b_queue", reason="failed") == 1
    assert sample(registry, "tavrida2_retries_total", queue="b_queue") == 1
    assert sample(registry, "tavrida2_retries_total", queue="a_queue") == 0


@pytest.mark.parametrize(
    "buckets", [(), (0.1, 0.01), (0, 1), ("1",)], ids=["none", "unsorted", "zero", "text"]
)
def test_bad_buckets_are_refused(buckets: Any) -> None:
    with pytest.raises(ValueError, match="buckets"):
        PrometheusMetrics(CollectorRegistry(), buckets)


def test_nested_handlers_on_one_thread_are_timed_apart() -> None:
    """On the memory broker a handler's call runs the called handler inside it."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    outer, inner = metrics.middleware("outer"), metrics.middleware("inner")
    first = call_headers("outer.slow", reply_to="")
    second = call_headers("inner.fast", reply_to="")
    slow, fast = IncomingRequestCast(first, {}, {}), IncomingRequestCast(second, {}, {})
    outer.process(slow)
    time.sleep(0.03)
    inner.process(fast)
    inner.handled(fast)
    outer.failed(slow, RuntimeError("late"))

    def seconds(svc: str, method: str, outcome: str) -> float:
        return sample(
            registry, "tavrida2_message_duration_seconds_sum", service=svc, method=method,
            type="request", outcome=outcome,
        )  # fmt: skip

    assert seconds("inner", "fast", "ok") < 0.03 <= seconds("outer", "slow", "error")
    assert sample(registry, "tavrida2_messages_in_flight", service="outer") == 0
    assert sample(registry, "tavrida2_messages_in_flight", service="inner") == 0
