"""What one server binds of the metric families, and the servers' entry point to them.

The families themselves are in :mod:`tavrida2.metrics.families`.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry

from tavrida2.engine import FAILED, UNHANDLEABLE
from tavrida2.metrics.families import DEFAULT_BUCKETS, Families, families_of
from tavrida2.metrics.middleware import MetricsMiddleware


class ServerInstruments:
    """What one server's engine and driver report, counted with the server's ``queue`` label.

    An :class:`~tavrida2.engine.DeliveryEvents`; :meth:`reconnected` is the
    driver's ``on_reconnect``. The series exist (at 0) from the start.
    """

    def __init__(self, families: Families, queue: str) -> None:
        self.queue = queue
        self._unhandleable = families.unhandleable.labels(queue)
        self._retries = families.retries.labels(queue)
        self._dead_lettered = {
            reason: families.dead_lettered.labels(queue, reason)
            for reason in (UNHANDLEABLE, FAILED)
        }
        self._reconnects = families.reconnects.labels(queue)

    def unhandleable(self, error: Exception) -> None:
        self._unhandleable.inc()

    def failed(self, error: Exception) -> None:
        """Counted by the middleware, which sees the handler's outcome."""

    def retried(self) -> None:
        self._retries.inc()

    def dead_lettered(self, reason: str) -> None:
        self._dead_lettered[reason].inc()

    def reconnected(self) -> None:
        self._reconnects.inc()


class PrometheusMetrics:
    """Prometheus metrics for the servers given it: ``Server(..., metrics=PrometheusMetrics())``.

    Arguments:
        registry: where the metrics are registered; default prometheus_client's
            ``REGISTRY`` (which also holds the process's CPU and memory).
            Several servers may share one; a test gives a ``CollectorRegistry()``
            of its own.
        buckets: the latency histogram's buckets in seconds (the first
            :class:`PrometheusMetrics` of a registry sets them).

    Example::

        metrics = PrometheusMetrics()
        srv = server.Server(conf, "hello_queue", "hello_exchange", [Hello], metrics=metrics)
        with MetricsEndpoint(9100, registry=metrics.registry):
            srv.run()
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not buckets or any(
            isinstance(b, bool) or not isinstance(b, int | float) or not b > 0 for b in buckets
        ):
            raise ValueError(f"buckets={buckets!r}: expected positive numbers of seconds")
        if list(buckets) != sorted(buckets):
            raise ValueError(f"buckets={buckets!r}: expected them in increasing order")
        #: The registry the metrics are in.
        self.registry = REGISTRY if registry is None else registry
        self.families = families_of(self.registry, buckets)

    def for_server(self, queue: str) -> ServerInstruments:
        """The instruments of the server consuming ``queue``."""
        return ServerInstruments(self.families, queue)

    def middleware(self, service: str) -> MetricsMiddleware:
        """The incoming middleware measuring the handlers of ``service``."""
        return MetricsMiddleware(self.families, service)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(registry={self.registry!r})"


__all__ = ["PrometheusMetrics", "ServerInstruments"]
