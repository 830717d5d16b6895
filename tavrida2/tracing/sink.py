"""SqlSink: every traced message written to a SQL database by a background thread.

The thread that sends or receives a message only puts it on a bounded queue
(never waiting on the database); one writer thread masks, batches and inserts.
A database that cannot be reached does not stop anything: the writer keeps
what it holds, retries with growing pauses (``retry_interval`` doubling up to
``max_retry_interval``), and logs at most once per ``log_interval`` (a minute)
how many records were lost meanwhile; writing resumes when the database is back.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tavrida2.tracing.database import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DB_URL,
    DEFAULT_TABLE,
    RETRIABLE_ERRORS,
    URL,
    create_engine,
    describe_error,
    display_url,
    ensure_table,
    parse_url,
    to_row,
    trace_table,
)
from tavrida2.tracing.records import TraceEntry
from tavrida2.tracing.throttle import Throttle

log = logging.getLogger("tavrida2.tracing")

#: Records that may wait for the writer; more are dropped (and counted).
DEFAULT_QUEUE_SIZE = 10_000
#: Seconds the writer sleeps at most before it looks again (clock, queue, close).
_POLL = 0.25

_Item = TraceEntry | threading.Event | None


@dataclass(frozen=True)
class SinkStats:
    """How a :class:`SqlSink` is doing.

    ``lost`` counts records that will never be written (queue full, a row
    refused, or still unwritten at ``close``); ``waiting`` those queued or held
    for the next write; ``failing`` is true from a failed write to the next
    good one; ``failures`` counts failed writes.
    """

    written: int
    lost: int
    waiting: int
    failing: bool
    failures: int
    last_error: str


class SqlSink:
    """Writes every traced message to the table ``table`` of the database at ``url``.

    ``url`` is a SQLAlchemy URL: ``sqlite:///tavrida2-trace.db`` (the default,
    a file in the working directory) or ``postgresql://user:password@host/db``
    (psycopg 3). The table is created if missing, indexed by correlation id;
    ``tavrida2 trace CORRELATION_ID --db URL`` reads it.

    Handlers never wait on the database: at most ``queue_size`` records wait
    for the writer thread, and a record that finds the queue full is dropped
    and counted. See the module docstring for an unreachable database.
    ``close()`` writes what is left (at most ``timeout`` seconds); it is also
    called when the interpreter exits. ``clock`` (monotonic seconds) paces
    retries and the once-a-minute log.

    Example::

        store = TraceStore(sinks=[SqlSink("postgresql://trace:secret@db/ops")])
    """

    def __init__(
        self,
        url: str | URL = DEFAULT_DB_URL,
        *,
        table: str = DEFAULT_TABLE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        batch_size: int = 200,
        retry_interval: float = 1.0,
        max_retry_interval: float = 30.0,
        log_interval: float = 60.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be 1 or more")
        #: The database URL with its password masked (for logs).
        self.url = display_url(url)
        self.table = table
        self._engine = create_engine(parse_url(url), connect_timeout, self.url)
        self._table = trace_table(table)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._retry_interval = retry_interval
        self._max_retry_interval = max_retry_interval
        self._clock = clock
        self._throttle = Throttle(log_interval, clock)
        self._closing = threading.Event()
        self._close_deadline = 0.0
        self._drop_lock = threading.Lock()
        self._dropped = 0  # by put(), queue full or closed
        # the writer thread's own state
        self._rows: list[dict[str, Any]] = []
        self._waiters: list[threading.Event] = []
        self._table_ready = False
        self._written = 0
        self._lost_writes = 0
        self._failures = 0
        self._failing = False
        self._failing_since = 0.0
        self._failure_reported = False
        self._reported_lost = 0
        self._last_error = ""
        self._retry_at = float("-inf")
        self._backoff = retry_interval
        self._thread = threading.Thread(target=self._run, name="tavrida2-trace-sink", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # -- the hot path -------------------------------------------------------------

    def put(self, entry: TraceEntry) -> None:
        """Queue ``entry`` for writing; drop (and count) it if the queue is full."""
        if self._closing.is_set() or self._queue.qsize() >= self._queue_size:
            with self._drop_lock:
                self._dropped += 1
            return
        self._queue.put(entry)

    # -- control -----------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was put before is written; false after ``timeout`` s."""
        if not self._thread.is_alive():
            return self.stats().waiting == 0
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is left (for at most ``timeout`` s; the rest is lost and logged), stop."""
        if not self._closing.is_set():
            self._close_deadline = time.monotonic() + timeout
            self._closing.set()
            self._queue.put(None)  # wake the writer
            atexit.unregister(self._at_exit)
        self._thread.join(timeout + _POLL)

    def _at_exit(self) -> None:
        self.close(2.0)

    def stats(self) -> SinkStats:
        return SinkStats(
            written=self._written,
            lost=self._lost(),
            waiting=self._queue.qsize() + len(self._rows),
            failing=self._failing,
            failures=self._failures,
            last_error=self._last_error,
        )

    def __enter__(self) -> SqlSink:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlSink({self.url!r}, table={self.table!r})"

    # -- the writer thread ----------------------------------------------------------

    def _lost(self) -> int:
        return self._dropped + self._lost_writes

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                if len(self._rows) < self._batch_size and not self._waiters:
                    self._collect(block=not self._rows)
                if self._rows and self._clock() >= self._retry_at:
                    self._write(self._rows)
                self._report()
                if not self._rows:
                    self._release()
                elif self._failing:  # hold them until it is time to try again
                    self._closing.wait(_POLL)
            self._finish()
        except Exception:  # pragma: no cover - a bug here must not pass silently
            log.exception(
                "trace sink %s: the writer thread failed; tracing to it stopped", self.url
            )
        finally:
            self._engine.dispose()

    def _collect(self, block: bool) -> None:
        try:
            item = self._queue.get(timeout=_POLL) if block else self._queue.get_nowait()
            while True:
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    self._waiters.append(item)  # written once what came before it is
                    return
                self._add_row(item)
                if len(self._rows) >= self._batch_size:
                    return
                item = self._queue.get_nowait()
        except queue.Empty:
            return

    def _add_row(self, entry: TraceEntry) -> None:
        try:
            self._rows.append(to_row(entry.record()))
        except Exception as exc:  # a payload that cannot be previewed
            self._lost_writes += 1
            self._last_error = f"a record could not be made: {exc!r}"

    def _release(self) -> None:
        for waiter in self._waiters:
            waiter.set()
        self._waiters.clear()

    def _write(self, rows: list[dict[str, Any]]) -> bool:
        """Insert ``rows``; on failure keep them if the database may come back."""
        try:
            if not self._table_ready:
                ensure_table(self._engine, self._table)
                self._table_ready = True
            with self._engine.begin() as connection:
                connection.execute(self._table.insert(), rows)
        except Exception as exc:
            self._table_ready = False  # it may have been dropped, or the database replaced
            self._failed(exc, rows, keep=isinstance(exc, RETRIABLE_ERRORS))
            return False
        self._written += len(rows)
        rows.clear()
        self._recovered()
        return True

    def _failed(self, exc: Exception, rows: list[dict[str, Any]], keep: bool) -> None:
        self._failures += 1
        self._last_error = describe_error(exc)
        if not keep:
            self._lost_writes += len(rows)
            rows.clear()
        if not self._failing:
            self._failing = True
            self._failing_since = self._clock()
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_retry_interval)

    def _recovered(self) -> None:
        if not self._failing:
            return
        self._failing = False
        self._backoff = self._retry_interval
        self._retry_at = float("-inf")
        if self._failure_reported:
            lost = self._lost()
            log.warning(
                "trace sink %s: writing again after %.0f s; "
                "%d record(s) lost since the last report",
                self.url,
                self._clock() - self._failing_since,
                lost - self._reported_lost,
            )
            self._reported_lost = lost
        self._failure_reported = False

    def _report(self) -> None:
        """The once-a-minute line: a failing database, or records lost to a full queue."""
        lost = self._lost()
        if self._failing:
            if not self._throttle.due():
                return
            log.warning(
                "trace sink %s: cannot write to the database (%s); %d record(s) waiting, "
                "%d lost since the last report; trying again every %g s at most "
                "(this is logged once a minute)",
                self.url,
                self._last_error,
                self._queue.qsize() + len(self._rows),
                lost - self._reported_lost,
                self._max_retry_interval,
            )
            self._failure_reported = True
        elif lost > self._reported_lost and self._throttle.due():
            log.warning(
                "trace sink %s: %d record(s) lost since the last report "
                "(its queue of %d was full: the database is slower than the messages)",
                self.url,
                lost - self._reported_lost,
                self._queue_size,
            )
        else:
            return
        self._reported_lost = lost

    def _finish(self) -> None:
        """At close: write what is queued, for as long as the close allows."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, threading.Event):
                self._waiters.append(item)
            elif item is not None:
                self._add_row(item)
        while self._rows and time.monotonic() < self._close_deadline:
            chunk = self._rows[: self._batch_size]
            del self._rows[: self._batch_size]
            if not self._write(chunk):
                self._rows[:0] = chunk
                break
        unwritten = len(self._rows)
        self._lost_writes += unwritten
        self._rows.clear()
        self._release()
        lost = self._lost() - self._reported_lost
        if lost:
            log.warning(
                "trace sink %s: closed; %d record(s) lost since the last report%s",
                self.url,
                lost,
                f" ({self._last_error})" if unwritten and self._last_error else "",
            )


__all__ = ["DEFAULT_QUEUE_SIZE", "SinkStats", "SqlSink"]
