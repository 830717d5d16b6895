"""The service of the worker tests (tests/integration/test_workers_rabbitmq.py).

Each handler appends a line to ``$T2W_OUT/<pid>.log`` with ``os.write`` (no buffer a
SIGKILL could lose): ``start N`` and ``end N`` around ``record``, ``call N`` in ``whoami``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tavrida2 import dispatcher, service

SERVICE = "t2workers"


def _note(line: str) -> None:
    path = os.path.join(os.environ["T2W_OUT"], f"{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@dispatcher.rpc_service(SERVICE)
class WorkersController(service.ServiceController):
    """``record(n, delay)``: a cast that takes ``delay`` seconds; ``whoami(n)``: the pid."""

    @dispatcher.rpc_method(service=SERVICE, method="record")
    def record(self, request: Any, proxy: Any, n: int, delay: float = 0.0) -> None:
        _note(f"start {n}")
        if delay:
            time.sleep(delay)
        _note(f"end {n}")

    @dispatcher.rpc_method(service=SERVICE, method="whoami")
    def whoami(self, request: Any, proxy: Any, n: int) -> dict[str, int]:
        _note(f"call {n}")
        return {"pid": os.getpid(), "n": n}
