"""What a server or client traces with: a tracer and a propagator (:class:`Telemetry`)."""

from __future__ import annotations

import importlib.metadata

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator

from tavrida2 import exceptions

#: The instrumentation scope of tavrida2's spans.
SCOPE = "tavrida2"


def _version() -> str | None:
    try:
        return importlib.metadata.version("tavrida2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return None


class Telemetry:
    """OpenTelemetry tracing of the messages of a server or client.

    ``tracer_provider``: where the spans go; by default the global provider
    (``opentelemetry.trace.set_tracer_provider``), followed even when it is set
    after the server was made. ``propagator``: how the trace context travels in
    the message headers; by default the global one (``opentelemetry.propagate``:
    W3C ``traceparent``/``tracestate`` and baggage unless configured otherwise).

    Example::

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        Server(conf, "q", "ex", [Hello], otel=Telemetry(tracer_provider=provider))
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise TypeError(f"tracer_provider must be a TracerProvider, got {tracer_provider!r}")
        if propagator is not None and not isinstance(propagator, TextMapPropagator):
            raise TypeError(f"propagator must be a TextMapPropagator, got {propagator!r}")
        self.tracer = trace.get_tracer(SCOPE, _version(), tracer_provider)
        self._propagator = propagator

    @property
    def propagator(self) -> TextMapPropagator:
        """The propagator given, else the global one at this moment."""
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()


def resolve(option: object) -> Telemetry | None:
    """The :class:`Telemetry` an ``otel=`` argument means: False/None off, True the globals."""
    if option is None or option is False:
        return None
    if option is True:
        return Telemetry()
    if isinstance(option, Telemetry):
        return option
    raise exceptions.ConfigError(
        reason=f"otel={option!r}: expected True, False or a tavrida2.otel.Telemetry"
    )


__all__ = ["SCOPE", "Telemetry", "resolve"]
