"""What a trace holds: :class:`TraceRecord`, and the cheap :class:`TraceEntry` it is made from.

The hot path (a message sent or received) only makes a :class:`TraceEntry`: the
time, the ids the message already carries, a shallow copy of its headers and of
its payload. Masking secrets and writing the JSON preview happen later, when
the entry is read (:meth:`TraceEntry.record`): by a query, or by a sink's
background thread.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tavrida2.steps import LoggingMiddleware

SENT = "sent"
RECEIVED = "received"

#: Header and payload keys whose values a trace masks besides the logs' own
#: (``authorization``, ``proxy-authorization``): a trace is kept, often in a
#: database, for longer than a log line.
TRACE_SENSITIVE_KEYS = ("password", "passwd", "secret", "token", "api_key", "cookie")
#: Characters of the payload's JSON kept in :attr:`TraceRecord.payload_preview`.
DEFAULT_PREVIEW_CHARS = 200
#: Where :class:`~tavrida2.tracing.SqlSink` writes unless told otherwise: a file in the
#: working directory (and where ``tavrida2 trace`` reads unless given ``--db``).
DEFAULT_DB_URL = "sqlite:///tavrida2-trace.db"
#: The table of the trace database.
DEFAULT_TABLE = "tavrida2_trace"

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr).encode
#: Orders entries made in the same clock tick (one process).
_sequence = itertools.count()


def service_of(entry_point: str) -> str:
    """``"calc"`` for ``"calc.add"`` and for ``"calc"``; ``""`` for ``""``."""
    return entry_point.partition(".")[0]


@dataclass(frozen=True)
class TraceRecord:
    """One message a process sent or received, as a trace keeps it.

    ``service`` is the service of the side that recorded the message: for a
    message *sent*, its source's service (the caller of a request, the answering
    service of a response or error, the publisher of a notification); for a
    message *received*, its destination's service (the callee of a request, the
    caller an answer comes back to). A received notification names no
    destination, so its ``service`` is ``""`` (its ``source`` is the publisher).

    ``headers`` is a copy with secrets masked as the message logs mask them;
    ``payload_preview`` is the payload's JSON, masked alike and cut to the
    store's ``preview_chars`` (ending in ``...`` when cut). ``exchange`` and
    ``routing_key`` are where a sent message went (``None`` for received ones).
    ``at`` is the epoch time in seconds when it was recorded.
    """

    at: float
    direction: str
    service: str
    message_type: str
    correlation_id: str
    request_id: str
    message_id: str
    source: str
    destination: str
    exchange: str | None
    routing_key: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    payload_preview: str = ""
    #: Orders records of one process made in the same clock tick.
    seq: int = 0


class Masker:
    """Masks headers and builds payload previews the way :class:`TraceStore` is set up."""

    __slots__ = ("_masker", "preview_chars")

    def __init__(
        self,
        preview_chars: int = DEFAULT_PREVIEW_CHARS,
        sensitive_keys: Iterable[str] = (),
    ) -> None:
        if isinstance(sensitive_keys, str):
            raise TypeError("sensitive_headers must be a list of names, not a str")
        if isinstance(preview_chars, bool) or not isinstance(preview_chars, int):
            raise TypeError(f"preview_chars must be an int, got {preview_chars!r}")
        if preview_chars < 0:
            raise ValueError(f"preview_chars must be 0 or more, got {preview_chars}")
        self.preview_chars = preview_chars
        self._masker = LoggingMiddleware((*TRACE_SENSITIVE_KEYS, *sensitive_keys))

    def headers(self, headers: Mapping[str, Any]) -> dict[str, Any]:
        return self._masker.mask(dict(headers))

    def preview(self, payload: Mapping[str, Any]) -> str:
        limit = self.preview_chars
        if not limit:
            return ""
        text = _encode(self._masker.mask_value(dict(payload)))
        return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


class TraceEntry:
    """A message as the hot path saw it; :meth:`record` makes its :class:`TraceRecord`.

    Sinks receive entries (``sink.put(entry)``) and call :meth:`record` off the
    hot path. The payload is copied one level deep when the entry is made: a
    handler that changes a nested object after sending it may see the change in
    the preview.
    """

    __slots__ = (
        "_masker",
        "_record",
        "at",
        "correlation_id",
        "destination",
        "direction",
        "exchange",
        "headers",
        "message_id",
        "message_type",
        "payload",
        "request_id",
        "routing_key",
        "seq",
        "source",
    )

    def __init__(
        self,
        masker: Masker,
        at: float,
        direction: str,
        message: Any,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> None:
        headers = dict(message.headers)
        self._masker = masker
        self._record: TraceRecord | None = None
        self.at = at
        self.seq = next(_sequence)
        self.direction = direction
        self.message_type: str = message.message_type
        self.correlation_id: str = message.correlation_id
        self.request_id: str = message.request_id
        self.message_id: str = message.message_id
        self.source: str = headers.get("source") or ""
        self.destination: str = headers.get("destination") or ""
        self.exchange = exchange
        self.routing_key = routing_key
        self.headers = headers
        self.payload: dict[str, Any] = dict(message.payload)

    @property
    def service(self) -> str:
        """The service of the side that recorded it (see :class:`TraceRecord`)."""
        return service_of(self.source if self.direction == SENT else self.destination)

    def record(self) -> TraceRecord:
        """The masked record (made once, then kept)."""
        made = self._record
        if made is None:
            made = self._record = TraceRecord(
                at=self.at,
                direction=self.direction,
                service=self.service,
                message_type=self.message_type,
                correlation_id=self.correlation_id,
                request_id=self.request_id,
                message_id=self.message_id,
                source=self.source,
                destination=self.destination,
                exchange=self.exchange,
                routing_key=self.routing_key,
                headers=self._masker.headers(self.headers),
                payload_preview=self._masker.preview(self.payload),
                seq=self.seq,
            )
        return made


__all__ = [
    "DEFAULT_DB_URL",
    "DEFAULT_PREVIEW_CHARS",
    "DEFAULT_TABLE",
    "RECEIVED",
    "SENT",
    "TRACE_SENSITIVE_KEYS",
    "Masker",
    "TraceEntry",
    "TraceRecord",
    "service_of",
]
