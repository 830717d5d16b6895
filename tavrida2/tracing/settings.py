"""make_tracer: a TraceStore (and its SQL sink) from plain settings, as a config file gives them."""

from __future__ import annotations

from collections.abc import Iterable

from tavrida2.tracing.records import DEFAULT_PREVIEW_CHARS, DEFAULT_TABLE
from tavrida2.tracing.store import DEFAULT_SIZE, TraceSink, TraceStore


def make_tracer(
    size: int = DEFAULT_SIZE,
    db: str | None = None,
    *,
    table: str | None = None,
    preview_chars: int = DEFAULT_PREVIEW_CHARS,
    sensitive_headers: Iterable[str] = (),
    queue_size: int | None = None,
) -> TraceStore:
    """A :class:`TraceStore` of ``size`` records; with ``db``, one that also writes to it.

    ``db`` is a SQLAlchemy URL (``sqlite:///trace.db``,
    ``postgresql://user:password@host/db``); ``table`` and ``queue_size`` go to
    its :class:`~tavrida2.tracing.SqlSink`. A bad URL raises
    :class:`~tavrida2.tracing.TraceDatabaseError` here, at start, not later.
    """
    sinks: list[TraceSink] = []
    if db:
        from tavrida2.tracing.sink import DEFAULT_QUEUE_SIZE, SqlSink

        sinks.append(
            SqlSink(db, table=table or DEFAULT_TABLE, queue_size=queue_size or DEFAULT_QUEUE_SIZE)
        )
    return TraceStore(
        size, sinks=sinks, preview_chars=preview_chars, sensitive_headers=sensitive_headers
    )


__all__ = ["make_tracer"]
