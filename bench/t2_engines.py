"""tavrida2-sync and tavrida2-async: the same workloads through tavrida2 itself.

Server: a ``bench`` service (``add``, the one-way ``note``, ``stats``) run by
``server.Server`` on its own queue and exchange, prefetch 64; T2_ENGINE=sync uses the sync
engine (plain handlers), T2_ENGINE=async the async engine (``async def`` handlers).
Client: ``RPCClient`` (sync: W1 ``call()``, W2 a window of 64 ``call_async()`` handles,
W3 a window of 64 ``cast_async()`` handles, each confirmed by the broker, if the client
has ``cast_async``, else a loop of confirmed ``cast()``) or ``AsyncRPCClient`` (async: W2
and W3 keep 64 ``call()``/``cast()`` in flight, 64 workers).  Library defaults otherwise:
casts are persistent (durable queue, delivery_mode 2) unless T2_PERSISTENT=0, which gives
server and client ``ConnectionConfig(persistent=False)`` (the ``-transient`` rows).
The sync client as users also write it: T2_W2=threads runs W2 as 64 threads sharing the one
``RPCClient``, each calling ``call()`` (the tavrida2-sync-threads row); T2_W3=loop runs W3
as a loop of ``cast()``, each confirmed in turn (the tavrida2-sync-cast-loop row).
T2_WORKERS=N (N > 1) serves with N worker processes on the one queue under the supervisor
of ``tavrida2 run --workers`` (tavrida2.workers): ready once all N consume; ``stats()``
(W3) counts the notes of all N (a shared file, one slot per worker); the server's CPU is
that of the supervisor and its workers.

    T2_ENGINE=sync|async [T2_PERSISTENT=0] [T2_W2=threads] [T2_W3=loop] [T2_WORKERS=N] \
        python bench/t2_engines.py server|client
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import sys
import tempfile
import threading
import time
from typing import Any

import common

from tavrida2 import config, discovery, dispatcher, server, service
from tavrida2.engine import DEFAULT_STOP_TIMEOUT
from tavrida2.workers import Supervisor, SupervisorLink, WorkerSpec
from tavrida2.workers.link import LINK_VARIABLE, SLOT_VARIABLE

ASYNC = os.environ.get("T2_ENGINE", "sync") == "async"
PERSISTENT = os.environ.get("T2_PERSISTENT", "1") != "0"
W2_THREADS = os.environ.get("T2_W2") == "threads"
W3_LOOP = os.environ.get("T2_W3") == "loop"
WORKERS = int(os.environ.get("T2_WORKERS", "1"))
COUNTER_FILE = "T2_COUNTER_FILE"  # the workers' shared counts of notes
_SLOT = struct.Struct("<qd")  # count, time of the last note
QUEUE = common.prefix()
EXCHANGE = common.prefix() + "_exchange"


def _setup() -> tuple[config.ConnectionConfig, discovery.LocalDiscovery]:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("bench", EXCHANGE)
    extra: dict[str, Any] = {} if PERSISTENT else {"persistent": False}
    conf = config.ConnectionConfig.from_url(
        common.amqp_url(), async_engine=ASYNC, prefetch_count=common.WINDOW, **extra
    )
    return conf, disc


class SharedCounter(common.Counter):
    """A worker's count of notes in its slot of a file all workers map; stats() sums them."""

    __slots__ = ("_map", "_offset")

    def __init__(self, path: str, slot: int) -> None:
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        self._offset = slot * _SLOT.size
        super().__init__()
        self.count, self.last = _SLOT.unpack_from(self._map, self._offset)  # a restarted worker

    def hit(self) -> None:
        self.count += 1
        self.last = time.time()
        _SLOT.pack_into(self._map, self._offset, self.count, self.last)

    def stats(self) -> dict[str, Any]:
        slots = [_SLOT.unpack_from(self._map, at) for at in range(0, len(self._map), _SLOT.size)]
        return {"count": sum(c for c, _ in slots), "last": max(t for _, t in slots)}


def _counter() -> common.Counter:
    path = os.environ.get(COUNTER_FILE)
    return SharedCounter(path, int(os.environ[SLOT_VARIABLE])) if path else common.Counter()


def _controller(counter: common.Counter) -> type[service.ServiceController]:
    if ASYNC:

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
                return counter.stats()

        return AsyncBench

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
            return counter.stats()

    return SyncBench


def serve() -> None:
    if WORKERS > 1 and LINK_VARIABLE not in os.environ:
        supervise()
        return
    conf, disc = _setup()
    controller = _controller(_counter())
    controller.set_discovery(disc)
    srv = server.Server(conf, queue_name=QUEUE, exchange_name=EXCHANGE, service_list=[controller])
    link = SupervisorLink.from_environment()
    if link is not None:
        link.attach(srv)  # the supervisor says ready once all workers consume
    else:

        def announce() -> None:
            if srv.started.wait(120):
                common.ready()

        threading.Thread(target=announce, daemon=True).start()
    srv.run()  # until SIGTERM


def supervise() -> None:
    """T2_WORKERS processes of ``serve()`` under tavrida2's supervisor, until SIGTERM."""
    fd, path = tempfile.mkstemp(prefix="t2bench-counts-")
    try:
        os.write(fd, bytes(_SLOT.size * WORKERS))
        os.close(fd)
        specs = [
            WorkerSpec(
                f"t2bench#{slot + 1}",
                [sys.executable, os.path.abspath(__file__), "server"],
                stop_timeout=DEFAULT_STOP_TIMEOUT,
                env={COUNTER_FILE: path, "BENCH_READY_FILE": ""},
                slot=slot,
            )
            for slot in range(WORKERS)
        ]
        code = Supervisor(specs, on_ready=common.ready).run()
    finally:
        os.unlink(path)
    if code:
        sys.exit(code)


class SyncClient:
    def __init__(self) -> None:
        from tavrida2.client import RPCClient

        conf, disc = _setup()
        self.cli = RPCClient(conf, disc, source=common.prefix() + "_client")
        # W3: a window of cast_async() handles if this tavrida2 has them (building the
        # proxy sends nothing) and T2_W3 is not "loop", else the harness's loop of note()
        # (a confirmed cast())
        if hasattr(self.cli.bench.note(n=0), "cast_async") and not W3_LOOP:
            self.note_many = self._note_many
            self.w3_how = f"a window of {common.WINDOW} `cast_async()` handles"
        else:
            self.w3_how = "a loop of `cast()`, each confirmed"
        if W2_THREADS:
            self.add_many = self._add_threads

    def add(self, x: int, y: int) -> int:
        return int(
            self.cli.bench.add(x=x, y=y).call(timeout=common.CALL_TIMEOUT_S).payload["result"]
        )

    def add_many(self, n: int, window: int, deadline: float) -> list[int]:
        cli, timeout = self.cli, common.CALL_TIMEOUT_S
        return common.windowed(
            lambda i: cli.bench.add(x=i, y=1).call_async(timeout=timeout),
            lambda handle: int(handle.result().payload["result"]),
            n,
            window,
            deadline,
        )

    def _add_threads(self, n: int, window: int, deadline: float) -> list[int]:
        """W2 as users write it with threads: ``window`` threads share the one client."""
        return common.threaded(lambda i: self.add(i, 1), n, window, deadline)

    def note(self, n: int) -> None:
        self.cli.bench.note(n=n).cast()

    def _note_many(self, n: int, window: int, deadline: float) -> None:
        cli = self.cli
        common.windowed(
            lambda i: cli.bench.note(n=i).cast_async(),
            lambda handle: handle.result(),
            n,
            window,
            deadline,
        )

    def stats(self) -> tuple[int, float]:
        s = self.cli.bench.stats().call(timeout=common.CALL_TIMEOUT_S).payload
        return s["count"], s["last"]

    def close(self) -> None:
        self.cli.close()


class AsyncClient:
    w3_how = f"{common.WINDOW} `cast()` in flight"

    async def connect(self) -> None:
        from tavrida2.client import AsyncRPCClient

        conf, disc = _setup()
        self.stack = contextlib.AsyncExitStack()
        client = AsyncRPCClient(conf, disc, source=common.prefix() + "_client")
        self.cli = await self.stack.enter_async_context(client)

    async def add(self, x: int, y: int) -> int:
        resp = await self.cli.bench.add(x=x, y=y).call(timeout=common.CALL_TIMEOUT_S)
        return int(resp.payload["result"])

    async def note(self, n: int) -> None:
        await self.cli.bench.note(n=n).cast()

    async def stats(self) -> tuple[int, float]:
        s = (await self.cli.bench.stats().call(timeout=common.CALL_TIMEOUT_S)).payload
        return s["count"], s["last"]

    async def close(self) -> None:
        await self.stack.aclose()


def client() -> None:
    if ASYNC:
        import asyncio

        asyncio.run(common.run_async(AsyncClient()))
    else:
        common.run_sync(SyncClient())


if __name__ == "__main__":
    common.main({"server": serve, "client": client})
