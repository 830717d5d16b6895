"""TraceStore: the last N messages a process sent and received, and the sinks they go on to."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tavrida2.messages import Message
from tavrida2.tracing.records import (
    DEFAULT_PREVIEW_CHARS,
    RECEIVED,
    SENT,
    Masker,
    TraceEntry,
    TraceRecord,
)
from tavrida2.tracing.throttle import Throttle

log = logging.getLogger("tavrida2.tracing")

DEFAULT_SIZE = 1000


class TraceSink(Protocol):
    """Where a :class:`TraceStore` sends every entry as well (:class:`SqlSink`).

    ``put`` is called on the hot path, in the thread that sent or received the
    message: it must return at once and never raise. ``flush`` waits (at most
    ``timeout`` seconds) until what was put before is stored; ``close`` flushes
    (bounded) and stops.
    """

    def put(self, entry: TraceEntry) -> None: ...

    def flush(self, timeout: float = ...) -> bool: ...

    def close(self, timeout: float = ...) -> None: ...


class TraceStore:
    """Keeps the last ``size`` messages sent and received, to query them while running.

    A :class:`~tavrida2.postprocessor.Tracer`: give it to servers and clients
    (``Server(..., tracer=store)``, ``RPCClient(..., tracer=store)``); one store
    may serve several of them. Recording costs a copy of the headers and of the
    payload's top level; secrets are masked and previews written only when a
    record is read. ``sinks`` get every entry too, e.g. a :class:`SqlSink` that
    writes them to a database for ``tavrida2 trace``.

    ``sensitive_headers`` adds names (case-insensitive) whose values are masked
    in headers and payloads, besides ``authorization``-like headers, URL
    passwords and :data:`~tavrida2.tracing.records.TRACE_SENSITIVE_KEYS`.

    Example::

        store = TraceStore(1000, sinks=[SqlSink("sqlite:///trace.db")])
        server.Server(conf, "q", "x", [Hello], tracer=store).run()
        ...
        for rec in store.chain(correlation_id):
            print(rec.direction, rec.message_type, rec.source, "->", rec.destination)
    """

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        *,
        sinks: Iterable[TraceSink] = (),
        preview_chars: int = DEFAULT_PREVIEW_CHARS,
        sensitive_headers: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self._masker = Masker(preview_chars, sensitive_headers)
        self._entries: deque[TraceEntry] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._sinks: tuple[TraceSink, ...] = tuple(sinks)
        self._clock = clock
        self._sink_errors = Throttle(60.0)

    @property
    def size(self) -> int:
        """How many messages it keeps; older ones are forgotten."""
        return self._entries.maxlen or 0

    @property
    def sinks(self) -> tuple[TraceSink, ...]:
        return self._sinks

    def add_sink(self, sink: TraceSink) -> None:
        """Send every message recorded from now on to ``sink`` as well."""
        self._sinks = (*self._sinks, sink)

    # -- the Tracer protocol (hot path) ----------------------------------------

    def received(self, message: Message) -> None:
        """Record a message this process received."""
        self._add(TraceEntry(self._masker, self._clock(), RECEIVED, message))

    def sent(self, message: Message, exchange: str, routing_key: str) -> None:
        """Record a message this process sent to ``exchange`` with ``routing_key``."""
        self._add(TraceEntry(self._masker, self._clock(), SENT, message, exchange, routing_key))

    def _add(self, entry: TraceEntry) -> None:
        with self._lock:
            self._entries.append(entry)
        for sink in self._sinks:
            try:
                sink.put(entry)
            except Exception as exc:  # a sink must not fail the message
                if self._sink_errors.due():
                    log.warning("trace sink %r failed (logged once a minute): %r", sink, exc)

    # -- queries ----------------------------------------------------------------

    def _snapshot(self) -> list[TraceEntry]:
        with self._lock:
            return list(self._entries)

    def query(
        self,
        service: str | None = None,
        message_type: str | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
        direction: str | None = None,
    ) -> list[TraceRecord]:
        """Records that match every filter given, oldest first.

        ``service`` is the recording side's service (see :class:`TraceRecord`);
        ``message_type`` ``"request"``, ``"response"``, ``"error"`` or
        ``"notification"``; ``direction`` ``"sent"`` or ``"received"``.
        ``limit`` keeps the most recent ones.
        """
        if message_type is not None:
            message_type = str(message_type)
        matches = [
            entry
            for entry in self._snapshot()
            if (correlation_id is None or entry.correlation_id == correlation_id)
            and (message_type is None or entry.message_type == message_type)
            and (direction is None or entry.direction == direction)
            and (service is None or entry.service == service)
        ]
        if limit is not None:
            matches = matches[-limit:] if limit > 0 else []
        return [entry.record() for entry in matches]

    def all(self, limit: int | None = None) -> list[TraceRecord]:
        """Every record kept (the last ``limit`` if given), oldest first."""
        return self.query(limit=limit)

    def chain(self, correlation_id: str) -> list[TraceRecord]:
        """Every record of one chain of calls, in the order they were made."""
        return sorted(self.query(correlation_id=correlation_id), key=lambda r: (r.at, r.seq))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every record (the sinks keep theirs)."""
        with self._lock:
            self._entries.clear()

    # -- sinks ------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout`` s in all) until the sinks stored what they got."""
        deadline = time.monotonic() + timeout
        done = True
        for sink in self._sinks:
            done = sink.flush(max(deadline - time.monotonic(), 0.0)) and done
        return done

    def close(self, timeout: float = 5.0) -> None:
        """Flush and close the sinks (at most ``timeout`` s in all); the records stay."""
        deadline = time.monotonic() + timeout
        for sink in self._sinks:
            sink.close(max(deadline - time.monotonic(), 0.0))

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceStore(size={self.size}, kept={len(self)}, sinks={len(self._sinks)})"


__all__ = ["DEFAULT_SIZE", "TraceSink", "TraceStore"]
