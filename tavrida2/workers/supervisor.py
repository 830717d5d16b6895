"""A supervisor of worker processes: spawn, restart with backoff, stop the group on a signal.

Each worker is a command (``python -m tavrida2 run CONFIG``) started in a process
group of its own, so that a Ctrl-C at the terminal reaches only the supervisor,
which then stops its workers in order. The supervisor's loop is one thread: it
waits on the workers' links (:mod:`tavrida2.workers.link`), on a wake-up socket
its signal handlers write to, and on the next deadline (a restart, a SIGKILL).

- A worker that exits on its own is restarted after its backoff, and the log says
  so with its exit code or signal (the group keeps running).
- SIGTERM or SIGINT: SIGTERM to every worker, which drains (stops consuming,
  finishes its handlers, acknowledges, closes); a worker still alive
  ``stop_timeout + kill_margin`` seconds later gets SIGKILL. A second signal sends
  SIGKILL at once.
- SIGUSR1 logs the state of every worker; so does every change of state, the
  moment all workers first consume, and the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from tavrida2.workers.link import LINK_VARIABLE, NAME_VARIABLE, READY, SLOT_VARIABLE
from tavrida2.workers.state import Exit, RestartPolicy, Worker, WorkerState, exit_code

log = logging.getLogger(__name__)

#: Seconds past a worker's ``stop_timeout`` before SIGKILL: more than the 3 s a
#: worker's own last resort takes (``tavrida2.server``), so it gets to exit first.
KILL_MARGIN = 5.0
_TICK = 0.5  # the longest the loop sleeps: a bound on noticing an exit the link missed


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one worker: its command, and how long it may take to stop."""

    name: str
    argv: Sequence[str]
    stop_timeout: float
    env: Mapping[str, str] = field(default_factory=dict)
    #: 0 to N-1 among the workers of one config (``TAVRIDA2_WORKER_SLOT``).
    slot: int = 0
    #: ``(host, port)`` where the worker serves its metrics (in ``argv``); None: none.
    metrics: tuple[str, int] | None = None


@dataclass
class _Running:
    spec: WorkerSpec
    worker: Worker
    process: subprocess.Popen[bytes] | None = None
    link: socket.socket | None = None


class Supervisor:
    """Runs one process per :class:`WorkerSpec` until SIGTERM/SIGINT (see the module docstring).

    Example::

        code = Supervisor([WorkerSpec("a#1", [sys.executable, "-m", "tavrida2", "run",
                                             "a.ini"], stop_timeout=30)]).run()
    """

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        policy: RestartPolicy | None = None,
        *,
        kill_margin: float = KILL_MARGIN,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if not specs:
            raise ValueError("a supervisor needs at least one worker")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must differ: {names}")
        self.policy = policy or RestartPolicy()
        self.kill_margin = kill_margin
        self._on_ready = on_ready
        self._all = [_Running(spec, Worker(spec.name)) for spec in specs]
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._gave_up = False
        self._signals: list[int] = []
        self._announced = False

    @property
    def workers(self) -> list[Worker]:
        return [entry.worker for entry in self._all]

    # -- the loop ----------------------------------------------------------------

    def run(self) -> int:
        """Supervise until the group stopped; the exit code (:mod:`tavrida2.workers.state`)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._selector.register(wake_r, selectors.EVENT_READ, None)
        previous = self._install_signals(wake_w)
        try:
            log.info(
                "supervisor pid %d: %d worker(s); a worker that exits is restarted "
                "(the group keeps running); SIGTERM or Ctrl-C stops them all, SIGUSR1 "
                "prints their state",
                os.getpid(),
                len(self._all),
            )
            now = time.monotonic()
            for entry in self._all:
                if not self._stopping:  # a worker that cannot be spawned at all gives up
                    self._spawn(entry, now)
            while not self._finished():
                self._wait(self._timeout(time.monotonic()))
                self._step(time.monotonic())
            self._report("stopped")
            return exit_code(self.workers, self._gave_up)
        finally:
            self._restore_signals(previous)
            for entry in self._all:
                self._close_link(entry)
            self._selector.close()
            wake_r.close()
            wake_w.close()

    def _finished(self) -> bool:
        return self._stopping and all(e.worker.state is WorkerState.STOPPED for e in self._all)

    def _timeout(self, now: float) -> float:
        deadlines = [e.worker.kill_at for e in self._all if e.worker.kill_at is not None]
        if not self._stopping:
            deadlines += [e.worker.restart_at for e in self._all if e.worker.restart_at is not None]
        if not deadlines:
            return _TICK
        return max(0.0, min(_TICK, min(deadlines) - now))

    def _wait(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            entry = key.data
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if entry is None:  # the wake-up socket of the signal handlers
                with contextlib.suppress(OSError):
                    while sock.recv(512):
                        pass
                continue
            try:
                data = sock.recv(512)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._close_link(entry)  # the worker is gone; _reap collects it
            elif READY.strip() in data and entry.worker.state is WorkerState.STARTING:
                entry.worker.ready(time.monotonic())
                self._changed(entry, "consuming")

    def _step(self, now: float) -> None:
        self._handle_signals(now)
        self._reap(now)
        if self._stopping:
            self._escalate(now)
        else:
            for entry in self._all:
                at = entry.worker.restart_at
                due = entry.worker.state is WorkerState.RESTARTING and at is not None and at <= now
                if due and not self._stopping:
                    entry.worker.restarting()
                    self._spawn(entry, now)
            self._announce_all_running()

    # -- processes ---------------------------------------------------------------

    def _spawn(self, entry: _Running, now: float) -> None:
        spec = entry.spec
        mine, theirs = socket.socketpair()
        env = dict(os.environ, **spec.env)
        env[LINK_VARIABLE] = str(theirs.fileno())
        env[NAME_VARIABLE] = spec.name
        env[SLOT_VARIABLE] = str(spec.slot)
        try:
            process = subprocess.Popen(
                list(spec.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
            )
        except OSError as exc:
            mine.close()
            theirs.close()
            log.error("worker %s: cannot start %s: %s", spec.name, spec.argv[0], exc)
            self._exited(entry, 127, now)
            return
        theirs.close()
        mine.setblocking(False)
        entry.process, entry.link = process, mine
        self._selector.register(mine, selectors.EVENT_READ, entry)
        entry.worker.spawned(process.pid, now)
        self._changed(entry, "spawned")

    def _close_link(self, entry: _Running) -> None:
        if entry.link is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(entry.link)
            entry.link.close()
            entry.link = None

    def _reap(self, now: float) -> None:
        for entry in self._all:
            if entry.process is None:
                continue
            returncode = entry.process.poll()
            if returncode is None:
                continue
            entry.process = None
            self._close_link(entry)
            self._exited(entry, returncode, now)

    def _exited(self, entry: _Running, returncode: int, now: float) -> None:
        worker = entry.worker
        was = worker.state
        pid = worker.pid
        outcome = worker.exited(returncode, now, self.policy)
        if outcome is Exit.STOPPED:
            how = "" if worker.clean_stop else " (not a clean stop)"
            self._changed(entry, f"pid {pid} ended: {worker.last_exit}{how}")
            return
        if outcome is Exit.GIVE_UP:
            log.error(
                "worker %s: could not start %d times in a row (last: %s); giving up: "
                "stopping the group",
                worker.name,
                worker.start_failures,
                worker.last_exit,
            )
            self._gave_up = True
            self._stop(now, "a worker could not start")
            return
        assert worker.restart_at is not None
        when = "before it consumed" if was is WorkerState.STARTING else "on its own"
        log.warning(
            "worker %s: pid %s stopped %s (%s); restarting it in %.1f s "
            "(restart %d; the group keeps running)",
            worker.name,
            pid,
            when,
            worker.last_exit,
            worker.restart_at - now,
            worker.restarts + 1,
        )

    def _stop(self, now: float, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("supervisor: %s; stopping %d worker(s) (SIGTERM)", reason, len(self._all))
        for entry in self._all:
            grace = entry.spec.stop_timeout + self.kill_margin
            if entry.worker.stopping(now, grace):
                self._signal(entry, signal.SIGTERM)
            self._changed(entry, None)

    def _escalate(self, now: float, at_once: bool = False) -> None:
        for entry in self._all:
            worker = entry.worker
            if worker.state is not WorkerState.STOPPING or entry.process is None:
                continue
            if at_once or (worker.kill_at is not None and now >= worker.kill_at):
                log.error(
                    "worker %s: pid %s %s; SIGKILL (its unacknowledged deliveries go back "
                    "to the queue)",
                    worker.name,
                    worker.pid,
                    "asked again to stop"
                    if at_once
                    else f"still running {entry.spec.stop_timeout + self.kill_margin:g} s "
                    "after SIGTERM",
                )
                worker.killed = True
                worker.kill_at = None
                self._signal(entry, signal.SIGKILL)

    @staticmethod
    def _signal(entry: _Running, signum: int) -> None:
        if entry.process is not None and entry.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                entry.process.send_signal(signum)

    # -- signals -----------------------------------------------------------------

    def _install_signals(self, wake: socket.socket) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD):
            previous[signum] = signal.signal(signum, handler)
        previous[-1] = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1, -1))
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _handle_signals(self, now: float) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGUSR1:
                self._report("status (SIGUSR1)")
            elif signum in (signal.SIGTERM, signal.SIGINT):
                name = signal.Signals(signum).name
                if self._stopping:
                    log.warning("supervisor: %s again while stopping: SIGKILL to the workers", name)
                    self._escalate(now, at_once=True)
                else:
                    self._stop(now, f"signal {name}")

    # -- reporting ---------------------------------------------------------------

    def _changed(self, entry: _Running, what: str | None) -> None:
        worker = entry.worker
        detail = f" ({what})" if what else ""
        log.info(
            "worker %s: %s%s, pid %s, restarts %d",
            worker.name,
            worker.state.value,
            detail,
            worker.pid if worker.pid is not None else "-",
            worker.restarts,
        )

    def _announce_all_running(self) -> None:
        if self._announced or any(e.worker.state is not WorkerState.RUNNING for e in self._all):
            return
        self._announced = True
        self._report("all consuming")
        if self._on_ready is not None:
            self._on_ready()

    def _report(self, title: str) -> None:
        now = time.monotonic()
        counts: dict[str, int] = {}
        for worker in self.workers:
            counts[worker.state.value] = counts.get(worker.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        rows = "\n".join(f"  {worker.row(now)}" for worker in self.workers)
        log.info("workers, %s: %s\n%s", title, summary, rows)


__all__ = ["KILL_MARGIN", "Supervisor", "WorkerSpec"]
