"""The metric families of tavrida2 in a Prometheus registry, and what one server binds of them.

The families are made once per registry: several servers of a process (or
several :class:`PrometheusMetrics` on one registry) share them, told apart by
their ``service`` and ``queue`` labels; a test gives a registry of its own and
starts from zero.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from tavrida2.engine import FAILED, UNHANDLEABLE
from tavrida2.metrics.middleware import MetricsMiddleware

#: Latency buckets in seconds: from half a millisecond (a handler that only
#: answers) to half a minute.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_HANDLED_LABELS = ("service", "method", "type", "outcome")


@dataclass(frozen=True)
class Families:
    """The metric families of one registry."""

    messages: Counter
    duration: Histogram
    in_flight: Gauge
    unhandleable: Counter
    retries: Counter
    dead_lettered: Counter
    reconnects: Counter
    buckets: tuple[float, ...]


_families: weakref.WeakKeyDictionary[CollectorRegistry, Families] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def families_of(registry: CollectorRegistry, buckets: Sequence[float]) -> Families:
    """The families of ``registry``, made on first use (with ``buckets``)."""
    with _families_lock:
        known = _families.get(registry)
        if known is not None:
            return known
        made = Families(
            messages=Counter(
                "tavrida2_messages",
                "Messages taken by a handler, by how their handling ended",
                _HANDLED_LABELS,
                registry=registry,
            ),
            duration=Histogram(
                "tavrida2_message_duration_seconds",
                "Seconds from the incoming middlewares to the end of the handler (its answer sent)",
                _HANDLED_LABELS,
                registry=registry,
                buckets=tuple(buckets),
            ),
            in_flight=Gauge(
                "tavrida2_messages_in_flight",
                "Messages whose handling has started and not ended",
                ("service",),
                registry=registry,
            ),
            unhandleable=Counter(
                "tavrida2_unhandleable",
                "Deliveries no handler took (malformed, unknown service or method, expired)",
                ("queue",),
                registry=registry,
            ),
            retries=Counter(
                "tavrida2_retries",
                "Failed casts and notifications sent for another attempt",
                ("queue",),
                registry=registry,
            ),
            dead_lettered=Counter(
                "tavrida2_dead_lettered",
                "Messages given up on: dead-lettered, or rejected for the broker to dead-letter",
                ("queue", "reason"),
                registry=registry,
            ),
            reconnects=Counter(
                "tavrida2_reconnects",
                "Lost broker connections the server restored",
                ("queue",),
                registry=registry,
            ),
            buckets=tuple(buckets),
        )
        _families[registry] = made
        return made


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

    def unhandleable(self) -> None:
        self._unhandleable.inc()

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


__all__ = ["DEFAULT_BUCKETS", "Families", "PrometheusMetrics", "ServerInstruments"]
