"""OpenTelemetry tracing of tavrida2's messages (the ``tavrida2[otel]`` extra).

``Server(..., otel=True)``, ``RPCClient(..., otel=True)`` and
``AsyncRPCClient(..., otel=True)`` (or ``otel=Telemetry(tracer_provider=...)``)
open a span for each message a server handles and each message a server or
client sends, following OpenTelemetry's messaging conventions for RabbitMQ,
and carry the W3C trace context (``traceparent``, ``tracestate``) in the
AMQP headers, so a chain of calls across services is one trace. Off by
default: a server or client without ``otel`` does no tracing work at all.
See ``docs/opentelemetry.md``.

This package imports ``opentelemetry`` (the ``opentelemetry-api`` package);
the rest of tavrida2 imports it only when ``otel`` is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tavrida2 import exceptions

if TYPE_CHECKING:
    from tavrida2.otel.settings import Telemetry

#: What to install when ``otel`` is asked for without OpenTelemetry.
INSTALL_HINT = "pip install 'tavrida2[otel]' (the opentelemetry-api package)"


def load(option: object) -> Telemetry | None:
    """The :class:`Telemetry` of an ``otel=`` argument, None when it is off.

    Raises ``ConfigError`` when tracing is asked for and OpenTelemetry is not
    installed, or ``option`` is neither a bool nor a ``Telemetry``.
    """
    if option is None or option is False:
        return None
    try:
        from tavrida2.otel.settings import resolve
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        raise exceptions.ConfigError(
            reason=f"otel={option!r}: OpenTelemetry is not installed; {INSTALL_HINT}"
        ) from None
    return resolve(option)


def __getattr__(name: str) -> Any:
    if name == "Telemetry":
        from tavrida2.otel.settings import Telemetry

        return Telemetry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["INSTALL_HINT", "Telemetry", "load"]
