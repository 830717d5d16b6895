"""Tracing: the messages a process sent and received, kept to follow a chain of calls.

- :class:`TraceStore` keeps the last N messages in memory (a
  :class:`~tavrida2.postprocessor.Tracer`: ``Server(..., tracer=store)``,
  ``RPCClient(..., tracer=store)``), queryable by service, type and correlation id;
- :class:`SqlSink` writes every one of them to a SQL database from a background
  thread (SQLite by default, PostgreSQL by URL);
- :func:`read_chain` and :func:`trace_command` (``tavrida2 trace``) read a chain back;
- :func:`make_tracer` builds a store (and its sink) from plain settings.

``SqlSink``, ``read_chain``, ``TraceDatabaseError`` and ``SinkStats`` need
SQLAlchemy (``pip install 'tavrida2[trace]'``); they are imported on first use,
so the in-memory store works without it. See ``docs/tracing.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tavrida2.tracing.command import format_chain, trace_command
from tavrida2.tracing.records import (
    DEFAULT_DB_URL,
    DEFAULT_TABLE,
    RECEIVED,
    SENT,
    TRACE_SENSITIVE_KEYS,
    TraceEntry,
    TraceRecord,
)
from tavrida2.tracing.settings import make_tracer
from tavrida2.tracing.store import TraceSink, TraceStore

if TYPE_CHECKING:
    from tavrida2.tracing.database import TraceDatabaseError, read_chain
    from tavrida2.tracing.sink import SinkStats, SqlSink

_NEEDS_SQLALCHEMY = {
    "TraceDatabaseError": "tavrida2.tracing.database",
    "read_chain": "tavrida2.tracing.database",
    "SinkStats": "tavrida2.tracing.sink",
    "SqlSink": "tavrida2.tracing.sink",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_SQLALCHEMY.get(name)
    if module is None:
        raise AttributeError(f"module 'tavrida2.tracing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_DB_URL",
    "DEFAULT_TABLE",
    "RECEIVED",
    "SENT",
    "TRACE_SENSITIVE_KEYS",
    "SinkStats",
    "SqlSink",
    "TraceDatabaseError",
    "TraceEntry",
    "TraceRecord",
    "TraceSink",
    "TraceStore",
    "format_chain",
    "make_tracer",
    "read_chain",
    "trace_command",
]
