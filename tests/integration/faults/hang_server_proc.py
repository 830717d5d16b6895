"""A tavrida2 server in a process of its own whose handler may hang, for the stop_timeout tests.

    python hang_server_proc.py --engine sync|async --queue Q --exchange X --workdir DIR
                               --handler plain-hang|async-hang|normal
                               [--stop-timeout SECONDS] [--connection-name NAME]

It serves ``tally.note(n)``. ``plain-hang``: a plain ``def`` handler appends
``n`` to ``DIR/started.txt`` (fsynced), then blocks for ever
(``threading.Event().wait()``; on the async engine in the executor);
``async-hang``: an ``async def`` handler does the same, then awaits for ever;
``normal``: appends ``n`` to ``DIR/handled.txt`` (fsynced) and returns. It runs
``Server(..., stop_timeout=SECONDS).run()`` in the main thread, so SIGTERM and
SIGINT go through tavrida2's own signal handling. The dead-letter policy
retries a failing cast once after 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
from pathlib import Path

from tavrida2 import config, dispatcher, server, service
from tavrida2.deadletter import DeadLetterPolicy

_workdir = Path(".")


def _append(name: str, n: object) -> None:
    fd = os.open(_workdir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dispatcher.rpc_service("tally")
class PlainHang(service.ServiceController):
    @dispatcher.rpc_method(service="tally", method="note")
    def note(self, request, proxy, n):
        _append("started.txt", n)
        threading.Event().wait()


@dispatcher.rpc_service("tally")
class AsyncHang(service.ServiceController):
    @dispatcher.rpc_method(service="tally", method="note")
    async def note(self, request, proxy, n):
        _append("started.txt", n)
        await asyncio.Event().wait()


@dispatcher.rpc_service("tally")
class Normal(service.ServiceController):
    @dispatcher.rpc_method(service="tally", method="note")
    def note(self, request, proxy, n):
        _append("handled.txt", n)


HANDLERS = {"plain-hang": PlainHang, "async-hang": AsyncHang, "normal": Normal}


def main() -> None:
    global _workdir
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("sync", "async"), required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--handler", choices=sorted(HANDLERS), required=True)
    parser.add_argument("--stop-timeout", type=float, default=30.0)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--connection-name", default="t2it-faults-hang")
    options = parser.parse_args()
    _workdir = Path(options.workdir)
    logging.basicConfig(level=logging.INFO, format="hang_server_proc %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    conf = config.ConnectionConfig.from_url(
        options.url,
        async_engine=options.engine == "async",
        connection_name=options.connection_name,
        retry_delay=0.2,
    )
    server.Server(
        conf,
        options.queue,
        options.exchange,
        [HANDLERS[options.handler]],
        dead_letters=DeadLetterPolicy.for_queue(options.queue, max_attempts=2, retry_delay=0.1),
        stop_timeout=options.stop_timeout,
    ).run()


if __name__ == "__main__":
    main()
