"""The trace table in a SQL database (SQLAlchemy 2 Core), and reading a chain back.

One table (``tavrida2_trace`` unless named otherwise), made if missing, one row
per message sent or received, indexed by ``correlation_id``. SQLite
(``sqlite:///path.db``) and PostgreSQL (``postgresql://user:password@host/db``,
driven by psycopg 3) are the databases tested.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from tavrida2.masking import mask_url_passwords
from tavrida2.tracing.records import DEFAULT_DB_URL, DEFAULT_TABLE, TraceRecord

try:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL, Engine, make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
except ImportError as exc:  # pragma: no cover - the `trace` extra is not installed
    raise ImportError(
        "the SQL trace sink needs SQLAlchemy 2 and a database driver: pip install 'tavrida2[trace]'"
    ) from exc

#: Seconds to wait for a database connection.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Failures of a database that may come back: the rows are kept to be written again.
RETRIABLE_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    OSError,
)
_URL_HINT = "expected e.g. sqlite:///tavrida2-trace.db or postgresql://user:password@host:5432/db"


class TraceDatabaseError(Exception):
    """A trace database that cannot be opened or read; the message masks the URL's password."""


def parse_url(url: str | URL) -> URL:
    """``url`` as a SQLAlchemy URL; ``postgresql://`` and ``postgres://`` mean psycopg 3."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise TraceDatabaseError(
            f"{mask_url_passwords(str(url))}: not a database URL ({exc}); {_URL_HINT}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_url(url: str | URL) -> str:
    """``url`` with its password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return mask_url_passwords(url)


def describe_error(exc: BaseException) -> str:
    """One line about a database failure: the driver's error, URL passwords masked."""
    base = getattr(exc, "orig", None) or exc
    text = " ".join(str(base).split()) or "(no message)"
    if len(text) > 300:
        text = text[:297] + "..."
    return mask_url_passwords(f"{type(base).__name__}: {text}")


def create_engine(
    url: URL, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, shown: str | None = None
) -> Engine:
    """An engine for ``url`` whose connections give up after ``connect_timeout`` seconds.

    ``shown`` is how error messages name the database (default: ``url`` masked).
    """
    connect_args: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "postgresql":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
    elif backend == "sqlite":
        connect_args["timeout"] = connect_timeout
    try:
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise TraceDatabaseError(
            f"{shown or display_url(url)}: cannot use this database ({describe_error(exc)}); "
            f"{_URL_HINT}"
        ) from None


def trace_table(name: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """The trace table's definition (one row per message; see :class:`TraceRecord`)."""
    return sa.Table(
        name,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("message_type", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.String(), nullable=False, index=True),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("destination", sa.String(), nullable=False),
        sa.Column("exchange", sa.String(), nullable=True),
        sa.Column("routing_key", sa.String(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("payload_preview", sa.Text(), nullable=False),
    )


def ensure_table(engine: Engine, table: sa.Table) -> None:
    """Create ``table`` and its index if missing (another process may be doing it too)."""
    try:
        with engine.begin() as connection:
            table.create(connection, checkfirst=True)
    except SQLAlchemyError:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(table.name):
                raise


def to_row(record: TraceRecord) -> dict[str, Any]:
    return {
        "at": record.at,
        "seq": record.seq,
        "direction": record.direction,
        "service": record.service,
        "message_type": record.message_type,
        "correlation_id": record.correlation_id,
        "request_id": record.request_id,
        "message_id": record.message_id,
        "source": record.source,
        "destination": record.destination,
        "exchange": record.exchange,
        "routing_key": record.routing_key,
        "headers": json.dumps(dict(record.headers), ensure_ascii=False, default=str),
        "payload_preview": record.payload_preview,
    }


def from_row(row: Mapping[str, Any] | sa.RowMapping) -> TraceRecord:
    try:
        headers = json.loads(row["headers"] or "{}")
    except ValueError:
        headers = {}
    return TraceRecord(
        at=float(row["at"]),
        direction=row["direction"],
        service=row["service"],
        message_type=row["message_type"],
        correlation_id=row["correlation_id"],
        request_id=row["request_id"],
        message_id=row["message_id"],
        source=row["source"],
        destination=row["destination"],
        exchange=row["exchange"],
        routing_key=row["routing_key"],
        headers=headers if isinstance(headers, dict) else {},
        payload_preview=row["payload_preview"] or "",
        seq=int(row["seq"]),
    )


def check_sqlite_file(url: URL, shown: str) -> None:
    """Reading must not create an empty SQLite file where a typo points."""
    if url.get_backend_name() != "sqlite":
        return
    path = url.database or ""
    if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
        raise TraceDatabaseError(f"{shown}: no such file {path!r}")


def read_chain(
    correlation_id: str,
    url: str | URL = DEFAULT_DB_URL,
    *,
    table: str = DEFAULT_TABLE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> list[TraceRecord]:
    """Every record with ``correlation_id`` in the trace database at ``url``, in time order.

    Raises :class:`TraceDatabaseError` if the database cannot be opened or has
    no trace table; an empty list if nothing of that chain is there.
    """
    parsed = parse_url(url)
    shown = display_url(url)
    check_sqlite_file(parsed, shown)
    engine = create_engine(parsed, connect_timeout, shown)
    trace = trace_table(table)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(table):
                raise TraceDatabaseError(
                    f"{shown}: no table {table!r} (has a SqlSink written there?)"
                )
            query = (
                sa.select(trace)
                .where(trace.c.correlation_id == correlation_id)
                .order_by(trace.c.at, trace.c.seq, trace.c.id)
            )
            rows = connection.execute(query).mappings().all()
    except SQLAlchemyError as exc:
        raise TraceDatabaseError(f"{shown}: {describe_error(exc)}") from None
    finally:
        engine.dispose()
    return [from_row(row) for row in rows]


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DB_URL",
    "DEFAULT_TABLE",
    "RETRIABLE_ERRORS",
    "URL",
    "TraceDatabaseError",
    "check_sqlite_file",
    "create_engine",
    "describe_error",
    "display_url",
    "ensure_table",
    "parse_url",
    "read_chain",
    "trace_table",
]
