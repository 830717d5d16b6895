"""A supervisor of fake workers for the tests: ``supervisor_proc.py MODE COUNT FILE [STOP]``.

Runs COUNT workers of ``fake_worker.py MODE FILE`` with a quick backoff (0.1 s doubling
to 1 s, 3 failures to start in a row), a kill margin of 0.3 s, and exits with the
supervisor's exit code.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tavrida2.workers import Backoff, RestartPolicy, Supervisor, WorkerSpec

FAKE = str(Path(__file__).with_name("fake_worker.py"))


def main() -> int:
    mode, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stop_timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    specs = [
        WorkerSpec(f"fake#{i + 1}", [sys.executable, FAKE, mode, out], stop_timeout, slot=i)
        for i in range(count)
    ]
    policy = RestartPolicy(Backoff(0.1, 2.0, 1.0), start_failures=3)
    return Supervisor(specs, policy, kill_margin=0.3).run()


if __name__ == "__main__":
    sys.exit(main())
