"""peers-bench server for tavrida2 (../shared/peers-bench/README.md is the contract).

A ``bench`` service (``add``, ``stats`` answered; ``note`` one-way) on ``server.Server``:
the async engine with ``async def`` handlers, or with T2_DRIVER=sync the sync engine with
plain handlers.  Library defaults (prefetch 64, confirms, JSON); handlers answer dicts, as
tavrida2 handlers do (``{"result": x + y}``, ``{"count", "last"}``), and the client turns
them back into the contract's values.  On SIGTERM the server stops, then deletes its queue
and exchange so that the broker is left clean.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import benchlib
import pika

from tavrida2 import config, discovery, dispatcher, server, service

SYNC = os.environ.get("T2_DRIVER", "async") == "sync"
QUEUE = benchlib.prefix()
EXCHANGE = benchlib.prefix() + "_exchange"


def make_controller(counter: benchlib.Counter) -> type[service.ServiceController]:
    if SYNC:

        @dispatcher.rpc_service("bench")
        class SyncBench(service.ServiceController):
            @dispatcher.rpc_method(service="bench", method="add")
            def add(self, request: Any, proxy: Any, x: int, y: int) -> dict[str, int]:
                return {"result": x + y}

            @dispatcher.rpc_method(service="bench", method="note")
            def note(self, request: Any, proxy: Any, n: int) -> None:
                counter.hit()

            @dispatcher.rpc_method(service="bench", method="stats")
            def stats(self, request: Any, proxy: Any) -> dict[str, Any]:
                count, last = counter.stats()
                return {"count": count, "last": last}

        return SyncBench

    @dispatcher.rpc_service("bench")
    class AsyncBench(service.ServiceController):
        @dispatcher.rpc_method(service="bench", method="add")
        async def add(self, request: Any, proxy: Any, x: int, y: int) -> dict[str, int]:
            return {"result": x + y}

        @dispatcher.rpc_method(service="bench", method="note")
        async def note(self, request: Any, proxy: Any, n: int) -> None:
            counter.hit()

        @dispatcher.rpc_method(service="bench", method="stats")
        async def stats(self, request: Any, proxy: Any) -> dict[str, Any]:
            count, last = counter.stats()
            return {"count": count, "last": last}

    return AsyncBench


def main() -> None:
    benchlib.arm_alarm()
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("bench", EXCHANGE)
    controller = make_controller(benchlib.Counter())
    controller.set_discovery(disc)
    conf = config.ConnectionConfig.from_url(benchlib.amqp_url(), async_engine=not SYNC)
    srv = server.Server(conf, queue_name=QUEUE, exchange_name=EXCHANGE, service_list=[controller])

    def announce() -> None:
        if srv.started.wait(60):
            benchlib.ready()

    threading.Thread(target=announce, daemon=True).start()
    srv.run()  # until SIGTERM
    conn = pika.BlockingConnection(pika.URLParameters(benchlib.amqp_url()))
    ch = conn.channel()
    ch.queue_delete(QUEUE)
    ch.exchange_delete(EXCHANGE)
    conn.close()


if __name__ == "__main__":
    main()
