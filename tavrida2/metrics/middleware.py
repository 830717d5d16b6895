"""The incoming middleware that measures a controller's handlers.

Per message it reads the clock twice, looks its series up in a dict by one
header string, and updates three pre-bound children (in-flight gauge, counter,
histogram). The series of a (type, entry point) are bound to their labels the
first time it is seen.

How long each message takes is kept on a stack in a context variable: a
message's end is told to the middlewares in the reverse order of their
``process``, and on the in-memory broker a handler's call runs the called
handler inside it, in the same thread; on the async engine each delivery is a
task with its own context.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any

from tavrida2.entry_point import parse
from tavrida2.exceptions import WrongEntryPointFormat
from tavrida2.messages import BROADCAST_HEADER, Error, Message, Response
from tavrida2.middleware.base import Middleware

if TYPE_CHECKING:
    from tavrida2.metrics.families import Families

#: How a handled message ended: its handler returned; it failed (the handler
#: raised, what it sent was not confirmed, its payload was refused); an
#: incoming middleware stopped it before its handler (a duplicate, say).
OUTCOMES = ("ok", "error", "rejected")
#: The ``type`` label: the message types, a request sent to every instance
#: (``broadcast``) apart.
MESSAGE_TYPES = ("request", "broadcast", "response", "error", "notification")
_OK, _ERROR, _REJECTED = 0, 1, 2
_clock = time.perf_counter


class _Series:
    """The pre-bound children of one (service, method, type): a counter and a
    histogram per outcome, and the service's in-flight gauge.

    ``ok`` and ``error`` are bound at once (their series exist from the first
    message on); ``rejected``, which only services with a stopping middleware
    have, on its first use.
    """

    __slots__ = ("counters", "families", "histograms", "in_flight", "labels")

    def __init__(self, families: Families, labels: tuple[str, str, str], in_flight: Any) -> None:
        self.families = families
        self.labels = labels
        self.in_flight = in_flight
        self.counters: list[Any] = [None] * len(OUTCOMES)
        self.histograms: list[Any] = [None] * len(OUTCOMES)
        self.bind(_OK)
        self.bind(_ERROR)

    def bind(self, outcome: int) -> None:
        name = OUTCOMES[outcome]
        self.counters[outcome] = self.families.messages.labels(*self.labels, name)
        self.histograms[outcome] = self.families.duration.labels(*self.labels, name)


class _Started:
    """One message being handled: when, its series, and the one it is nested in."""

    __slots__ = ("at", "outer", "series")

    def __init__(self, at: float, series: _Series, outer: _Started | None) -> None:
        self.at = at
        self.series = series
        self.outer = outer


_started: contextvars.ContextVar[_Started | None] = contextvars.ContextVar(
    "tavrida2_metrics_started", default=None
)


class MetricsMiddleware(Middleware):
    """Counts and times the messages a controller's handlers take (``tavrida2.metrics``).

    A server with ``metrics=`` puts one first on each of its controllers
    (:meth:`PrometheusMetrics.middleware`), so that it also times the other
    middlewares and sees the messages they stop. Labels: ``service`` (the
    controller's), ``method`` (a request's method; for a response, error or
    notification the entry point it comes from, ``service.method``),
    ``type`` (:data:`MESSAGE_TYPES`) and ``outcome`` (``ok``, ``error``,
    ``rejected``).
    """

    def __init__(self, families: Families, service: str) -> None:
        self.service = service
        self._families = families
        self._in_flight = families.in_flight.labels(service)
        self._requests: dict[str, _Series] = {}
        self._broadcasts: dict[str, _Series] = {}
        self._by_source: dict[str, dict[str, _Series]] = {
            kind: {} for kind in ("response", "error", "notification")
        }
        #: messages of a type of no Tavrida version (built by hand, not received)
        self._others: dict[str, _Series] = {}

    def process(self, message: Message) -> Message:
        """Start timing ``message`` and count it in flight; return it unchanged."""
        kind = message.message_type
        if kind == "request":
            key = message._destination
            table = self._broadcasts if BROADCAST_HEADER in message._headers else self._requests
        else:
            key = message._source
            table = self._by_source.get(kind, self._others)
        series = table.get(key)
        if series is None:
            series = self._bind(table, key, message)
        series.in_flight.inc()
        _started.set(_Started(_clock(), series, _started.get()))
        return message

    def handled(self, message: Message) -> None:
        """Its handler returned: ``outcome="ok"``."""
        self._end(_OK)

    def failed(self, message: Message, error: BaseException | None = None) -> None:
        """It failed (the handler, a later middleware, its payload): ``outcome="error"``."""
        self._end(_ERROR)

    def stopped(self, message: Message, answer: Response | Error) -> None:
        """A later middleware stopped it: ``outcome="rejected"``."""
        self._end(_REJECTED)

    def _end(self, outcome: int) -> None:
        started = _started.get()
        if started is None:  # a hook without process(): nothing to end
            return
        seconds = _clock() - started.at
        _started.set(started.outer)
        series = started.series
        series.in_flight.dec()
        if series.counters[outcome] is None:
            series.bind(outcome)
        series.counters[outcome].inc()
        series.histograms[outcome].observe(seconds)

    def _bind(self, table: dict[str, _Series], key: str, message: Message) -> _Series:
        """The series of a (type, entry point) seen for the first time."""
        kind = message.message_type
        if kind == "request":
            try:
                method = parse(key).method or key
            except WrongEntryPointFormat:
                method = key
            if table is self._broadcasts:
                kind = "broadcast"
        else:
            method = key
            kind = kind or "unknown"
        series = _Series(self._families, (self.service, method, kind), self._in_flight)
        return table.setdefault(key, series)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(service={self.service!r})"


__all__ = ["MESSAGE_TYPES", "OUTCOMES", "MetricsMiddleware"]
