"""An engine's failures reach every listener: the metrics and the delivery's span.

``tavrida2.engine.DeliveryEvents`` is the one hook an engine tells of a
delivery no handler took, a handler that raised, a retry and a dead letter;
a server with both metrics and OpenTelemetry gives it both listeners.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tavrida2 import dispatcher, service
from tavrida2.engine import FAILED, UNHANDLEABLE, delivery_events
from tavrida2.metrics import PrometheusMetrics
from tavrida2.testing import RunningServices
from tests.otel_support import in_memory_telemetry


class Heard:
    """A listener that writes down what it was told."""

    def __init__(self, name: str, log: list[tuple[str, str, Any]]) -> None:
        self.name, self.log = name, log

    def unhandleable(self, error: Exception) -> None:
        self.log.append((self.name, "unhandleable", str(error)))

    def failed(self, error: Exception) -> None:
        self.log.append((self.name, "failed", str(error)))

    def retried(self) -> None:
        self.log.append((self.name, "retried", None))

    def dead_lettered(self, reason: str) -> None:
        self.log.append((self.name, "dead_lettered", reason))


def test_no_listener_is_none_and_one_is_itself() -> None:
    one = Heard("one", [])
    assert delivery_events() is None
    assert delivery_events(None, None) is None
    assert delivery_events(None, one) is one


def test_several_listeners_are_each_told_in_their_order() -> None:
    log: list[tuple[str, str, Any]] = []
    events = delivery_events(Heard("a", log), None, Heard("b", log))
    assert events is not None
    events.unhandleable(ValueError("bad"))
    events.failed(KeyError("k"))
    events.retried()
    events.dead_lettered(FAILED)
    assert log == [
        ("a", "unhandleable", "bad"),
        ("b", "unhandleable", "bad"),
        ("a", "failed", "'k'"),
        ("b", "failed", "'k'"),
        ("a", "retried", None),
        ("b", "retried", None),
        ("a", "dead_lettered", FAILED),
        ("b", "dead_lettered", FAILED),
    ]


@dispatcher.rpc_service("till")
class Till(service.ServiceController):
    @dispatcher.rpc_method(method="pay")
    def pay(self, request, proxy, amount):
        if amount < 0:
            raise ValueError("a negative amount")
        return {"paid": amount}


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_a_server_with_metrics_and_otel_tells_both(
    tavrida2_server: RunningServices, async_engine: bool
) -> None:
    registry = CollectorRegistry()
    telemetry, exporter, _ = in_memory_telemetry()
    tavrida2_server(
        Till,
        async_engine=async_engine,
        metrics=PrometheusMetrics(registry),
        otel=telemetry,
        dead_letters=False,
    )
    client = tavrida2_server.client
    client.till.pay(amount=-1).cast()  # the handler raises: rejected
    client.till.refund(amount=1).cast()  # no such method: unhandleable
    assert client.till.pay(amount=2).call(timeout=10).payload == {"paid": 2}

    def dead(reason: str) -> float:
        value = registry.get_sample_value(
            "tavrida2_dead_lettered_total", {"queue": "till", "reason": reason}
        )
        return value or 0.0

    tavrida2_server.wait_until(lambda: dead(FAILED) == 1 and dead(UNHANDLEABLE) == 1)
    assert registry.get_sample_value("tavrida2_unhandleable_total", {"queue": "till"}) == 1

    def failed_spans() -> list[str]:
        return sorted(
            span.name
            for span in exporter.get_finished_spans()
            if span.status.status_code.name == "ERROR" and span.kind.name == "CONSUMER"
        )

    tavrida2_server.wait_until(lambda: len(failed_spans()) == 2)
    assert failed_spans() == ["process till.pay", "process till.refund"]
