"""A worker process for the supervisor's tests, without a broker: ``fake_worker.py MODE [FILE]``.

ready     report ready at once; SIGTERM: exit 0
stubborn  report ready; ignore SIGTERM (the supervisor must SIGKILL it)
fail      exit 3 at once, never ready
crash     report ready, exit 1 after 0.1 s (0 if SIGTERM came first)
lifeline  report ready; when the supervisor is gone, write "lifeline" to FILE and exit 0

Every mode writes its pid and the worker's slot to FILE (if given) when it starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from tavrida2.workers.link import SLOT_VARIABLE, SupervisorLink


class _Server:
    """What the link needs of a server: ``started`` and ``stop()``."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


def main() -> int:
    mode = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else None
    slot = os.environ.get(SLOT_VARIABLE, "?")
    if out:
        with open(out, "a") as f:
            f.write(f"start {os.getpid()} slot {slot}\n")
    if mode == "fail":
        return 3
    link = SupervisorLink.from_environment()
    assert link is not None, "not started by a supervisor"
    server = _Server()
    link.attach(server)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
    server.started.set()
    if mode == "crash":
        return 0 if server.stopped.wait(0.1) else 1
    server.stopped.wait(60)
    if mode == "lifeline" and out:
        with open(out, "a") as f:
            f.write("lifeline\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
