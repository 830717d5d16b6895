"""``tavrida2 trace CORRELATION_ID --db URL``: a chain of calls read back from a trace database."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TextIO

from tavrida2.tracing.records import DEFAULT_TABLE, SENT, TraceRecord, service_of

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_DATABASE = 2
_PREVIEW_WIDTH = 60
_ANSWERS = ("response", "error")


def trace_command(
    correlation_id: str,
    db: str,
    out: TextIO,
    *,
    err: TextIO | None = None,
    table: str | None = None,
) -> int:
    """Print the chain ``correlation_id`` from the trace database ``db`` to ``out``.

    Returns 0 when found; 1 (one line on ``err``) when the database has no
    message of that chain; 2 (one paragraph on ``err``, the URL's password
    masked) when the database cannot be opened or holds no trace table.
    ``err`` defaults to ``out``; ``table`` to ``tavrida2_trace``.
    """
    err = out if err is None else err
    try:
        from tavrida2.tracing.database import TraceDatabaseError, display_url, read_chain
    except ImportError as exc:
        print(f"tavrida2 trace: {exc}", file=err)
        return EXIT_BAD_DATABASE
    table = table or DEFAULT_TABLE
    try:
        records = read_chain(correlation_id, db, table=table)
    except TraceDatabaseError as exc:
        reason = str(exc).rstrip(".?! ")
        print(
            f"tavrida2 trace: cannot read the trace database {reason}. --db takes the "
            "SQLAlchemy URL of a database a SqlSink writes to, e.g. "
            "sqlite:///tavrida2-trace.db or postgresql://user:password@host:5432/db"
            f"{'' if table == DEFAULT_TABLE else f' (table {table!r})'}.",
            file=err,
        )
        return EXIT_BAD_DATABASE
    if not records:
        print(
            f"tavrida2 trace: no message with correlation id {correlation_id!r} in "
            f"{display_url(db)} (table {table})",
            file=err,
        )
        return EXIT_NOT_FOUND
    out.write(format_chain(records))
    return EXIT_FOUND


def format_chain(records: Sequence[TraceRecord]) -> str:
    """A chain as a table, one line per record, calls indented under their caller.

    Columns: milliseconds since the first record, ``sent``/``recv``, the
    message type, ``source -> destination`` (indented by the depth of the
    call), the request id and the payload preview.
    """
    if not records:
        return ""
    ordered = sorted(records, key=lambda r: (r.at, r.seq))
    start = ordered[0].at
    depths = _depths(ordered)
    requests = {r.request_id for r in ordered if r.message_type == "request"}
    services = sorted({service_of(ep) for r in ordered for ep in (r.source, r.destination)} - {""})
    rows = [
        (
            f"{(r.at - start) * 1000:.3f}",
            "sent" if r.direction == SENT else "recv",
            r.message_type,
            "  " * depths.get(r.request_id, 0) + f"{r.source or '-'} -> {r.destination or '-'}",
            r.request_id,
            _cut(r.payload_preview),
        )
        for r in ordered
    ]
    header = ("+ms", "dir", "type", "source -> destination", "request_id", "payload")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    span = (ordered[-1].at - start) * 1000
    lines = [
        f"correlation id {ordered[0].correlation_id}: {len(ordered)} message(s), "
        f"{len(requests)} request(s), {span:.3f} ms; services: {', '.join(services)}",
        "",
    ]
    for row in (header, *rows):
        cells = [row[0].rjust(widths[0])]
        cells += [cell.ljust(width) for cell, width in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join((*cells, row[-1])).rstrip())
    return "\n".join(lines) + "\n"


def _cut(text: str) -> str:
    return text if len(text) <= _PREVIEW_WIDTH else text[: _PREVIEW_WIDTH - 3] + "..."


def _depths(records: Sequence[TraceRecord]) -> dict[str, int]:
    """How deep each request (or notification) sits in the chain, by its request id.

    A request sent by ``svc.method`` is counted as made while handling the
    latest earlier request to ``svc.method`` that was not answered yet: the
    headers name no parent, so the nesting is inferred from times.
    """
    answered: dict[str, float] = {}
    calls: list[tuple[str, str, str, float]] = []
    seen: set[str] = set()
    for r in records:
        if r.message_type in _ANSWERS:
            answered.setdefault(r.request_id, r.at)
        elif r.request_id not in seen:
            seen.add(r.request_id)
            calls.append((r.request_id, r.source, r.destination, r.at))
    depths: dict[str, int] = {}
    for index, (request_id, source, _, at) in enumerate(calls):
        depth = 0
        for parent_id, _, parent_destination, parent_at in reversed(calls[:index]):
            if (
                parent_destination
                and parent_destination == source
                and parent_at <= at <= answered.get(parent_id, math.inf)
            ):
                depth = depths[parent_id] + 1
                break
        depths[request_id] = depth
    return depths


__all__ = ["EXIT_BAD_DATABASE", "EXIT_FOUND", "EXIT_NOT_FOUND", "format_chain", "trace_command"]
