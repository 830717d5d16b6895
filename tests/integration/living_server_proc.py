"""A living tavrida2 server in a process of its own, for test_living_rabbitmq.py.

    python living_server_proc.py --engine sync|async --service S --queue Q --exchange X
                                 --record FILE [--label L] [--announce-period SECONDS]
                                 [--single-period SECONDS] [--connection-name NAME]

Service ``S`` serves ``note(what)`` (a cast), ``echo(n)`` (a call: answers
``{"n": n, "pid": ...}``) and the broadcast ``drop_cache(key)``; with
``--single-period`` it also runs the periodic task ``tick`` every that many
seconds with ``single=True`` (one process of the queue only). Everything it
does is appended to ``--record`` as one JSON line ``{"pid", "label", "event",
"value", "at"}`` (one ``write`` on an ``O_APPEND`` file, so several processes
may share it): ``ready`` from its ``post_start`` hook (consuming its queue and
its broadcast queue), ``note``, ``echo``, ``drop_cache``, ``tick``, and
``pre_stop``. It announces itself every ``--announce-period`` seconds (none
without it) and runs until SIGTERM/SIGINT (or SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

from tavrida2 import config, discovery, dispatcher, server, service

_fd = -1
_label = ""


def record(event: str, value: Any = None) -> None:
    line = {"pid": os.getpid(), "label": _label, "event": event, "value": value, "at": time.time()}
    os.write(_fd, (json.dumps(line) + "\n").encode())


def controller(options: argparse.Namespace) -> type[service.ServiceController]:
    class Living(service.ServiceController):
        @dispatcher.on("post_start")
        def ready(self):
            record("ready")

        @dispatcher.on("pre_stop")
        def stopping(self):
            record("pre_stop")

        @dispatcher.rpc_method(method="note")
        def note(self, request, proxy, what):
            record("note", what)

        @dispatcher.rpc_method(method="echo")
        def echo(self, request, proxy, n):
            record("echo", n)
            return {"n": n, "pid": os.getpid()}

        @dispatcher.broadcast_method(method="drop_cache")
        def drop_cache(self, request, proxy, key):
            record("drop_cache", key)

    cls: type[service.ServiceController] = Living
    if options.single_period:

        class Ticking(Living):
            @dispatcher.periodic(options.single_period, single=True)
            def tick(self, proxy):
                record("tick")

        cls = Ticking
    cls = dispatcher.rpc_service(options.service)(cls)
    disc = discovery.LocalDiscovery()
    disc.register_remote_service(options.service, options.exchange)
    cls.set_discovery(disc)
    return cls


def main() -> None:
    global _fd, _label
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("sync", "async"), required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--label", default="")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--connection-name", default="t2it-living-server")
    parser.add_argument("--announce-period", type=float, default=None)
    parser.add_argument("--single-period", type=float, default=None)
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="living %(asctime)s %(levelname)s %(message)s")
    _fd = os.open(options.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _label = options.label
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
        [controller(options)],
        announce_period=options.announce_period,
        stop_timeout=5,
    ).run()


if __name__ == "__main__":
    main()
