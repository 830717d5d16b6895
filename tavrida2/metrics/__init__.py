"""Prometheus metrics of servers: ``pip install 'tavrida2[metrics]'`` (prometheus_client).

- :class:`PrometheusMetrics` holds the metric families in a registry (the
  default one of prometheus_client, or one of your own) and instruments the
  servers given it: ``Server(..., metrics=PrometheusMetrics())``;
- :class:`MetricsMiddleware` is the incoming middleware it puts first on each
  controller: per service, method, message type and outcome, a counter and a
  latency histogram, and the messages in flight;
- :class:`ServerInstruments` counts what the engine and the driver report of
  one server: deliveries no handler took, retries, dead letters, reconnects;
- :class:`MetricsEndpoint` serves ``http://HOST:PORT/metrics`` for Prometheus
  (``tavrida2 run CONFIG --metrics-port PORT``).

A server without ``metrics`` has no trace of this package on its path.
See ``docs/metrics.md`` for the names and labels.
"""

from __future__ import annotations

try:
    import prometheus_client as _prometheus_client  # noqa: F401
except ImportError as exc:  # the `metrics` extra is not installed
    raise ImportError(
        "tavrida2 metrics need prometheus_client: pip install 'tavrida2[metrics]'",
        name=exc.name,
    ) from exc

from tavrida2.metrics.exposition import DEFAULT_HOST, MetricsEndpoint, MetricsPortInUse
from tavrida2.metrics.families import DEFAULT_BUCKETS
from tavrida2.metrics.instruments import PrometheusMetrics, ServerInstruments
from tavrida2.metrics.middleware import MESSAGE_TYPES, OUTCOMES, MetricsMiddleware

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_HOST",
    "MESSAGE_TYPES",
    "OUTCOMES",
    "MetricsEndpoint",
    "MetricsMiddleware",
    "MetricsPortInUse",
    "PrometheusMetrics",
    "ServerInstruments",
]
