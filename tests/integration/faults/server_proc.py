"""A tavrida2 server in a process of its own, for the tests that kill it or flood it.

    python server_proc.py --engine sync|async --queue Q --exchange X --ledger FILE
                          [--connection-name NAME] [--sleep SECONDS] [--no-fsync]
                          [--prefetch N]

It serves ``tally.note(n)``: sleeps ``--sleep`` seconds, then appends ``n`` and a
newline to ``--ledger`` (one ``write`` on an ``O_APPEND`` file, then ``fsync``
unless ``--no-fsync``) before the handler returns, so before the delivery is
acknowledged: a test counts what was handled across a SIGKILL, and a line
written for a delivery that was never acknowledged shows as a duplicate once
the broker redelivers it. It runs until SIGTERM/SIGINT (or SIGKILL).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from tavrida2 import config, dispatcher, server, service

_options: argparse.Namespace


@dispatcher.rpc_service("tally")
class Tally(service.ServiceController):
    ledger_fd = -1

    @dispatcher.rpc_method(service="tally", method="note")
    def note(self, request, proxy, n):
        if _options.sleep:
            time.sleep(_options.sleep)
        os.write(self.ledger_fd, f"{n}\n".encode())
        if not _options.no_fsync:
            os.fsync(self.ledger_fd)


def main() -> None:
    global _options
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("sync", "async"), required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--connection-name", default="t2it-faults-server")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--prefetch", type=int, default=None)
    parser.add_argument("--no-fsync", action="store_true")
    _options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="server_proc %(levelname)s %(message)s")
    Tally.ledger_fd = os.open(_options.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    overrides = {} if _options.prefetch is None else {"prefetch_count": _options.prefetch}
    conf = config.ConnectionConfig.from_url(
        _options.url,
        async_engine=_options.engine == "async",
        connection_name=_options.connection_name,
        retry_delay=0.2,
        **overrides,
    )
    server.Server(conf, _options.queue, _options.exchange, [Tally]).run()


if __name__ == "__main__":
    main()
