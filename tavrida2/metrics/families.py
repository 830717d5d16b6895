"""The metric families of tavrida2, made once per Prometheus registry.

Several servers of a process (or several :class:`~tavrida2.metrics.PrometheusMetrics`
on one registry) share them, told apart by their ``service`` and ``queue``
labels; a test gives a registry of its own and starts from zero.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


__all__ = ["DEFAULT_BUCKETS", "Families", "families_of"]
