"""What a supervisor knows of each worker, and what it does when one exits (no processes here).

A worker is ``starting`` from the moment its process is spawned until it reports
that it consumes, then ``running``. A worker that exits without being asked to
(a crash, a kill, exit code 0 all the same) is ``restarting``: spawned again after
a delay that doubles with each failure in a row (:class:`Backoff`) — the group is
kept at its size, never stopped because one member stopped. Once the group is
asked to stop, its workers are ``stopping`` (SIGTERM sent) and then ``stopped``.

A worker that exits before it ever reported that it consumes failed to *start*;
after :attr:`RestartPolicy.start_failures` such failures in a row the supervisor
gives up (a bad controller, an unreachable broker: restarting will not help).
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field

# the supervisor's exit codes (2, a user error, is the command's own)
EXIT_OK = 0  # stopped by SIGTERM/SIGINT, every worker drained and exited cleanly
EXIT_START_FAILED = 3  # a worker could not start (start_failures in a row): group stopped
EXIT_UNCLEAN_STOP = 4  # stopped, but a worker had to be killed or exited with an error


class WorkerState(enum.Enum):
    """Where a worker is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Backoff:
    """Delay before the n-th restart in a row: ``first * factor ** (n - 1)``, at most ``cap``."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap and self.factor >= 1):
            raise ValueError(f"{self}: expected 0 < first <= cap and factor >= 1")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (1 or more) failures in a row."""
        exponent = max(0, failures - 1)
        if exponent > 64:  # far past the cap; avoids overflowing the float
            return self.cap
        return min(self.cap, self.first * self.factor**exponent)


@dataclass(frozen=True)
class RestartPolicy:
    """How a supervisor restarts its workers."""

    backoff: Backoff = field(default_factory=Backoff)
    #: A worker that ran this many seconds before it exited starts its backoff again.
    stable_after: float = 10.0
    #: Failures to start in a row (exits before consuming) after which the supervisor gives up.
    start_failures: int = 5

    def __post_init__(self) -> None:
        if self.start_failures < 1 or self.stable_after < 0:
            raise ValueError(f"{self}: expected start_failures >= 1 and stable_after >= 0")


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``signal SIGKILL`` (Popen's negative return codes)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class Exit(enum.Enum):
    """What a supervisor does about a worker that exited."""

    RESTART = "restart"  # spawn it again at ``Worker.restart_at``
    GIVE_UP = "give up"  # it could not start, start_failures times in a row
    STOPPED = "stopped"  # it was asked to stop


@dataclass
class Worker:
    """One worker of a supervisor: its state, process id and restart counters."""

    name: str
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    #: Times it was spawned again after an exit of its own.
    restarts: int = 0
    #: Exits in a row without a run of ``stable_after`` seconds (drives the backoff).
    failures: int = 0
    #: Exits in a row before it reported that it consumes.
    start_failures: int = 0
    spawned_at: float = 0.0
    running_since: float | None = None
    restart_at: float | None = None
    #: When the supervisor sends SIGKILL to a worker that does not stop.
    kill_at: float | None = None
    killed: bool = False
    #: How its last process ended (``exit code 1``, ``signal SIGKILL``), None before.
    last_exit: str | None = None
    #: Whether its process ended cleanly once asked to stop (meaningful when stopped).
    clean_stop: bool = True

    def spawned(self, pid: int, now: float) -> None:
        self.state = WorkerState.STARTING
        self.pid = pid
        self.spawned_at = now
        self.running_since = None
        self.restart_at = None
        self.kill_at = None
        self.killed = False

    def ready(self, now: float) -> None:
        """It reported that it consumes."""
        if self.state is WorkerState.STARTING:
            self.state = WorkerState.RUNNING
            self.running_since = now
            self.start_failures = 0

    def stopping(self, now: float, grace: float) -> bool:
        """The group stops: True if it has a process to send SIGTERM to."""
        if self.state in (WorkerState.STARTING, WorkerState.RUNNING) and self.pid is not None:
            self.state = WorkerState.STOPPING
            self.kill_at = now + grace
            return True
        if self.state is not WorkerState.STOPPED:  # restarting, or never spawned
            self.state = WorkerState.STOPPED
            self.restart_at = None
            self.pid = None
        return False

    def exited(self, returncode: int, now: float, policy: RestartPolicy) -> Exit:
        """Its process ended with ``returncode`` (Popen's: negative for a signal)."""
        self.last_exit = describe_exit(returncode)
        self.pid = None
        if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
            self.state = WorkerState.STOPPED
            # before its SIGTERM handler was installed, the default action ends it: clean
            self.clean_stop = not self.killed and returncode in (0, -signal.SIGTERM)
            return Exit.STOPPED
        ran = self.running_since is not None
        if ran and now - (self.running_since or now) >= policy.stable_after:
            self.failures = 0
        self.failures += 1
        if not ran:
            self.start_failures += 1
            if self.start_failures >= policy.start_failures:
                self.state = WorkerState.STOPPED
                self.clean_stop = False
                return Exit.GIVE_UP
        self.state = WorkerState.RESTARTING
        self.running_since = None
        self.restart_at = now + policy.backoff.delay(self.failures)
        return Exit.RESTART

    def restarting(self) -> None:
        """Its backoff is over: it is spawned again (then :meth:`spawned`)."""
        self.restarts += 1

    def row(self, now: float) -> str:
        """One line of the status table."""
        parts = [f"{self.name}", self.state.value]
        parts.append(f"pid {self.pid}" if self.pid is not None else "pid -")
        parts.append(f"restarts {self.restarts}")
        if self.state is WorkerState.RUNNING and self.running_since is not None:
            parts.append(f"up {now - self.running_since:.0f} s")
        if self.state is WorkerState.RESTARTING and self.restart_at is not None:
            parts.append(f"next start in {max(0.0, self.restart_at - now):.1f} s")
        if self.last_exit is not None:
            parts.append(f"last exit: {self.last_exit}")
        return "  ".join(parts)


def exit_code(workers: list[Worker], gave_up: bool) -> int:
    """The supervisor's exit code once every worker stopped."""
    if gave_up:
        return EXIT_START_FAILED
    if any(not w.clean_stop for w in workers):
        return EXIT_UNCLEAN_STOP
    return EXIT_OK


__all__ = [
    "EXIT_OK",
    "EXIT_START_FAILED",
    "EXIT_UNCLEAN_STOP",
    "Backoff",
    "Exit",
    "RestartPolicy",
    "Worker",
    "WorkerState",
    "describe_exit",
    "exit_code",
]
