"""Recent messages of a trace database (what a :class:`~tavrida2.tracing.SqlSink` wrote).

Records are masked when they are written; :func:`recent` reads the newest,
:func:`tavrida2.tracing.database.read_chain` one chain of calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tavrida2.tracing.records import DEFAULT_TABLE, TraceRecord


def recent(url: str, limit: int = 50, table: str = DEFAULT_TABLE) -> list[TraceRecord]:
    """The newest ``limit`` records of the trace database at ``url``, newest first.

    Raises :class:`~tavrida2.tracing.database.TraceDatabaseError` as
    ``read_chain`` does (no such file, no trace table...).
    """
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from tavrida2.tracing import database

    parsed = database.parse_url(url)
    shown = database.display_url(url)
    database.check_sqlite_file(parsed, shown)
    engine = database.create_engine(parsed, database.DEFAULT_CONNECT_TIMEOUT, shown)
    trace = database.trace_table(table)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(table):
                raise database.TraceDatabaseError(f"{shown}: no table {table!r}")
            query = (
                sa.select(trace)
                .order_by(trace.c.at.desc(), trace.c.seq.desc(), trace.c.id.desc())
                .limit(limit)
            )
            rows = connection.execute(query).mappings().all()
    except SQLAlchemyError as exc:
        raise database.TraceDatabaseError(f"{shown}: {database.describe_error(exc)}") from None
    finally:
        engine.dispose()
    return [database.from_row(row) for row in rows]


def to_json(record: TraceRecord) -> dict[str, Any]:
    """A record as the page shows it."""
    return dict(dataclasses.asdict(record), headers=dict(record.headers))


__all__ = ["recent", "to_json"]
