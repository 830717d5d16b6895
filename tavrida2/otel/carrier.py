"""AMQP headers as the carrier of the W3C trace context (``traceparent``, ``tracestate``)."""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator


class HeadersGetter(Getter[Any]):
    """Reads propagation fields from AMQP headers: a dict of str, or bytes from some peers.

    Anything else (a number, a table, headers that are no dict) counts as absent,
    so a malformed value starts a new trace instead of failing the delivery.
    """

    def get(self, carrier: Any, key: str) -> list[str] | None:
        if not isinstance(carrier, dict):
            return None
        value = carrier.get(key)
        if isinstance(value, bytes | bytearray):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                return None
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return [k for k in carrier if isinstance(k, str)] if isinstance(carrier, dict) else []


class HeadersSetter(Setter[dict[str, Any]]):
    """Writes propagation fields into the headers of an outgoing message."""

    def set(self, carrier: dict[str, Any], key: str, value: str) -> None:
        carrier[key] = value


_getter = HeadersGetter()
_setter = HeadersSetter()


def extract(propagator: TextMapPropagator, headers: Any) -> Context:
    """The remote parent in ``headers``, on an empty context (none: a new trace begins)."""
    return propagator.extract(headers, Context(), _getter)


def inject(propagator: TextMapPropagator, headers: dict[str, Any]) -> None:
    """Put the current context into ``headers``, replacing what the chain brought along.

    An incoming message's propagation headers travel on as user headers; left
    there, a ``tracestate`` the current span does not have would go on with it.
    """
    for field in propagator.fields:
        headers.pop(field, None)
    propagator.inject(headers, None, _setter)


__all__ = ["HeadersGetter", "HeadersSetter", "extract", "inject"]
