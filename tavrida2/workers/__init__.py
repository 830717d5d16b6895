"""Worker processes: ``tavrida2 run CONFIG [CONFIG ...] --workers N`` and its supervisor.

- :mod:`~tavrida2.workers.state`: a worker's states, the restart backoff, the exit codes;
- :mod:`~tavrida2.workers.link`: the socket between a supervisor and a worker (ready, lifeline);
- :mod:`~tavrida2.workers.supervisor`: spawning, restarting and stopping the processes;
- :mod:`~tavrida2.workers.launch`: config files in, a supervised group out.
"""

from tavrida2.workers.link import SupervisorLink
from tavrida2.workers.state import (
    EXIT_OK,
    EXIT_START_FAILED,
    EXIT_UNCLEAN_STOP,
    Backoff,
    RestartPolicy,
    Worker,
    WorkerState,
)
from tavrida2.workers.supervisor import KILL_MARGIN, Supervisor, WorkerSpec

__all__ = [
    "EXIT_OK",
    "EXIT_START_FAILED",
    "EXIT_UNCLEAN_STOP",
    "KILL_MARGIN",
    "Backoff",
    "RestartPolicy",
    "Supervisor",
    "SupervisorLink",
    "Worker",
    "WorkerSpec",
    "WorkerState",
]
