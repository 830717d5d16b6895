"""The line between a supervisor and one of its worker processes: a socket pair.

The supervisor passes its worker one end of a socket pair, by number, in
``TAVRIDA2_SUPERVISOR_FD``. The worker writes ``ready`` on it once its server
consumes; the supervisor never writes, so the worker reads end-of-file only when
the supervisor is gone (killed with SIGKILL, say): the worker then stops its
server as SIGTERM would — drains and exits — rather than live on unsupervised.
When the worker dies, the supervisor reads end-of-file in turn and reaps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import MutableMapping
from typing import Protocol

log = logging.getLogger(__name__)

#: The number of the worker's end of the socket pair.
LINK_VARIABLE = "TAVRIDA2_SUPERVISOR_FD"
#: The worker's name, e.g. ``hello.ini#2`` (its log lines carry it).
NAME_VARIABLE = "TAVRIDA2_WORKER"
#: The worker's slot, 0 to N-1 among the workers of its config, kept across restarts.
SLOT_VARIABLE = "TAVRIDA2_WORKER_SLOT"
READY = b"ready\n"


class Stoppable(Protocol):
    """What a link needs of a server: :class:`tavrida2.server.Server` is one."""

    started: threading.Event

    def stop(self) -> None: ...


class SupervisorLink:
    """A worker's end of the line to its supervisor (see the module docstring)."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self.name = name

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None
    ) -> SupervisorLink | None:
        """The link this process was started with, or None (not a supervised worker).

        ``TAVRIDA2_SUPERVISOR_FD`` is taken out of ``environ`` (``os.environ`` by
        default) so that a process the worker starts does not believe itself
        supervised; the worker's name and slot stay, for the application to read.
        """
        env = os.environ if environ is None else environ
        raw = env.pop(LINK_VARIABLE, None)
        name = env.get(NAME_VARIABLE) or f"pid {os.getpid()}"
        if raw is None:
            return None
        try:
            sock = socket.socket(fileno=int(raw))
        except (ValueError, OSError) as exc:
            log.warning(
                "%s=%r: not a socket of a supervisor (%s); unsupervised", LINK_VARIABLE, raw, exc
            )
            return None
        sock.set_inheritable(False)
        return cls(sock, name)

    def attach(self, server: Stoppable) -> None:
        """Report ``server`` ready once it consumes; stop it if the supervisor goes away."""
        threading.Thread(
            target=self._report_ready, args=(server,), name="tavrida2-ready", daemon=True
        ).start()
        threading.Thread(
            target=self._watch, args=(server,), name="tavrida2-lifeline", daemon=True
        ).start()

    def _report_ready(self, server: Stoppable) -> None:
        server.started.wait()
        with contextlib.suppress(OSError):  # the supervisor is gone: _watch stops the server
            self._sock.sendall(READY)

    def _watch(self, server: Stoppable) -> None:
        try:
            while self._sock.recv(64):
                pass  # the supervisor sends nothing; data would be ignored
        except OSError:
            pass
        self._sock.close()
        log.warning("worker %s: the supervisor is gone; stopping", self.name)
        server.stop()


__all__ = ["LINK_VARIABLE", "NAME_VARIABLE", "READY", "SLOT_VARIABLE", "SupervisorLink"]
