"""The service of the metrics test (tests/integration/test_metrics_rabbitmq.py).

``add(a, b)`` answers the sum; ``fail()`` raises; ``note(text)`` does nothing.
"""

from __future__ import annotations

from typing import Any

from tavrida2 import dispatcher, service

SERVICE = "t2metrics"


@dispatcher.rpc_service(SERVICE)
class MetricsController(service.ServiceController):
    @dispatcher.rpc_method(service=SERVICE, method="add")
    def add(self, request: Any, proxy: Any, a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @dispatcher.rpc_method(service=SERVICE, method="fail")
    def fail(self, request: Any, proxy: Any) -> None:
        raise RuntimeError("failing on purpose")

    @dispatcher.rpc_method(service=SERVICE, method="note")
    def note(self, request: Any, proxy: Any, text: str) -> None:
        return None
