"""Runs the periodic and cron tasks of a server, on either engine.

:class:`Scheduler` keeps, for each task, when it runs next and the run in
progress; :meth:`Scheduler.tick` does what is due at a given time (its clock
is a plain function, so tests drive it with times of their choosing): it
starts the runs that are due, skips a start that falls while the previous run
of the same task still goes (runs never overlap), and deals with runs past
their timeout: an ``async def`` task on the async engine is cancelled, any
other is reported once (a thread cannot be stopped). A run that raises is
logged with its traceback; the schedule goes on either way.

The sync engine runs tasks in a thread pool and ticks in a thread of its own
(:meth:`Scheduler.run_in_thread`); the async engine runs them as tasks of the
server's loop (``async def``) or in its executor, and ticks in a task
(:meth:`Scheduler.run_in_loop`). A task declared ``single=True`` first claims
its lease (an exclusive queue on the broker): in the processes that do not
hold it, the run does nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tavrida2.schedule import TaskInfo

log = logging.getLogger(__name__)

#: The longest a scheduler sleeps between two looks at its tasks.
_IDLE = 1.0

#: Claims a lease: sync (``bool``) or async (an awaitable of ``bool``).
Claim = Callable[[str], Any]


@dataclass
class Entry:
    """One task of a server, and the state of its schedule."""

    #: ``Service.method``, for logs.
    label: str
    task: TaskInfo
    #: Makes one run: returns the handler's result (sync) or its coroutine.
    call: Callable[[], Any]
    #: The name of the lease to hold (``single=True``), or None.
    lease: str | None = None
    next_at: float = 0.0
    running: Any = None
    started_at: float = 0.0
    overran: bool = False
    #: Runs that did the work (not skipped for the lease), ended well or not.
    runs: int = 0


class Scheduler:
    """The schedule of a server's tasks (see the module docstring)."""

    def __init__(
        self,
        entries: list[Entry],
        *,
        clock: Callable[[], float] = time.time,
        claim: Claim | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        run_sync: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
    ) -> None:
        self.entries = entries
        self._clock = clock
        self._claim = claim
        self._loop = loop
        self._run_sync = run_sync
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._started = clock()
        for entry in entries:
            entry.next_at = entry.task.next_after(self._started, True, self._started)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def is_async(self) -> bool:
        return self._loop is not None

    # -- what is due ---------------------------------------------------------------

    def tick(self, now: float | None = None) -> float:
        """Start what is due at ``now``; deal with overruns; seconds until the next event."""
        now = self._clock() if now is None else now
        nearest = now + _IDLE
        for entry in self.entries:
            if entry.running is not None and entry.running.done():
                entry.running = None
            running = entry.running is not None and not entry.overran
            if running and now - entry.started_at > entry.task.timeout:
                self._overrun(entry, now)
            if now >= entry.next_at:
                if entry.running is None:
                    self._start(entry, now)
                else:
                    log.warning(
                        "%s: not started at its time, its previous run still goes "
                        "(runs never overlap)",
                        entry.label,
                    )
                entry.next_at = entry.task.next_after(now, False, self._started)
            nearest = min(nearest, entry.next_at)
        return max(0.0, nearest - now)

    def _start(self, entry: Entry, now: float) -> None:
        entry.started_at, entry.overran = now, False
        if self._loop is not None:
            entry.running = self._loop.create_task(self._run_async(entry))
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, len(self.entries)), thread_name_prefix="tavrida2-task"
            )
        entry.running = self._pool.submit(self._run_sync_entry, entry)

    def _overrun(self, entry: Entry, now: float) -> None:
        entry.overran = True
        cancel = self._loop is not None and entry.task.is_coroutine
        log.error(
            "%s: still running %.1f s after it started (timeout %g s); %s",
            entry.label,
            now - entry.started_at,
            entry.task.timeout,
            "cancelled" if cancel else "it cannot be cancelled, its next runs wait for it",
        )
        if cancel:
            entry.running.cancel()

    # -- one run -------------------------------------------------------------------

    def _run_sync_entry(self, entry: Entry) -> None:
        try:
            if entry.lease is not None and not self._holds(entry):
                return
            entry.runs += 1
            entry.call()
        except Exception:
            log.exception("%s failed; the schedule goes on", entry.label)

    def _holds(self, entry: Entry) -> bool:
        assert self._claim is not None and entry.lease is not None
        held = bool(self._claim(entry.lease))
        if not held:
            log.debug("%s: another process holds its lease; not run here", entry.label)
        return held

    async def _run_async(self, entry: Entry) -> None:
        try:
            if entry.lease is not None:
                assert self._claim is not None
                if not await self._claim(entry.lease):
                    log.debug("%s: another process holds its lease; not run here", entry.label)
                    return
            entry.runs += 1
            if entry.task.is_coroutine:
                await entry.call()
            else:
                assert self._run_sync is not None
                await self._run_sync(entry.call)
        except asyncio.CancelledError:
            if not entry.overran:
                raise
        except Exception:
            log.exception("%s failed; the schedule goes on", entry.label)

    # -- running the schedule -----------------------------------------------------

    def run_in_thread(self) -> None:
        """Tick in a thread of its own until :meth:`stop` (the sync engine)."""
        if not self.entries or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.tick()):
                pass

        self._thread = threading.Thread(target=loop, name="tavrida2-scheduler", daemon=True)
        self._thread.start()

    def run_in_loop(self) -> None:
        """Tick in a task of the loop until :meth:`stop_async` (the async engine)."""
        if not self.entries or self._ticker is not None:
            return
        assert self._loop is not None

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.tick())

        self._ticker = self._loop.create_task(loop())

    def halt(self) -> None:
        """No more runs (from any thread); those in progress go on."""
        self._stop.set()

    def stop(self, timeout: float) -> None:
        """No more runs; wait at most ``timeout`` for those in progress (sync engine)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        running = [e.running for e in self.entries if e.running is not None]
        if running:
            _, unfinished = concurrent.futures.wait(running, timeout=timeout)
            if unfinished and timeout > 0:
                log.warning("%s task run(s) still going at stop; left behind", len(unfinished))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def stop_async(self, timeout: float) -> None:
        """No more runs; wait at most ``timeout`` for those in progress, then cancel them."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        running = [e.running for e in self.entries if e.running is not None]
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=timeout)
        for task in unfinished:
            task.cancel()
        if unfinished:
            log.warning("%s task run(s) still going at stop; cancelled", len(unfinished))
            await asyncio.wait(unfinished, timeout=1.0)


__all__ = ["Entry", "Scheduler"]
