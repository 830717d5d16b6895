"""peers-bench client for tavrida2 (../shared/peers-bench/README.md is the contract).

Default: ``AsyncRPCClient``; benchlib runs W2 and W3 as ``asyncio.gather`` under
``Semaphore(64)``.  T2_DRIVER=sync: ``RPCClient``; W2 keeps 64 ``call_async()`` handles in
flight (``benchlib.windowed``); W3 keeps 64 ``cast_async()`` handles in flight (each
confirmed by the broker; the contract's ``note_many(n)``) if the client has ``cast_async``,
else it is a loop of ``cast()``.  Answers come back by direct reply-to; casts are
confirmed, persistent publishes (library defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import benchlib

from tavrida2 import config, discovery
from tavrida2.client import AsyncRPCClient, RPCClient

SYNC = os.environ.get("T2_DRIVER", "async") == "sync"
TIMEOUT = 10.0
SOURCE = benchlib.prefix() + "_client"
WINDOW = 64


def setup() -> tuple[config.ConnectionConfig, discovery.LocalDiscovery]:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("bench", benchlib.prefix() + "_exchange")
    return config.ConnectionConfig.from_url(benchlib.amqp_url()), disc


class SyncClient:
    def __init__(self) -> None:
        self.cli = RPCClient(*setup(), source=SOURCE)
        # building the proxy sends nothing; benchlib uses note_many if the client has it
        self.cast_async = hasattr(self.cli.bench.note(n=0), "cast_async")
        if self.cast_async:
            self.note_many = self._note_many

    def add(self, x: int, y: int) -> int:
        return int(self.cli.bench.add(x=x, y=y).call(timeout=TIMEOUT).payload["result"])

    def add_many(self, pairs: list[tuple[int, int]], window: int) -> list[Any]:
        cli = self.cli
        return benchlib.windowed(
            lambda x, y: cli.bench.add(x=x, y=y).call_async(timeout=TIMEOUT),
            lambda pending: pending.result().payload["result"],
            pairs,
            window,
        )

    def note(self, n: int) -> None:
        self.cli.bench.note(n=n).cast()

    def _note_many(self, n: int) -> None:
        cli = self.cli
        benchlib.windowed(
            lambda i, _: cli.bench.note(n=i).cast_async(),
            lambda pending: pending.result(),
            [(i, 0) for i in range(n)],
            WINDOW,
        )

    def stats(self) -> list[Any]:
        p = self.cli.bench.stats().call(timeout=TIMEOUT).payload
        return [p["count"], p["last"]]

    def close(self) -> None:
        self.cli.close()


class AsyncClient:
    async def connect(self) -> None:
        self.stack = contextlib.AsyncExitStack()
        self.cli = await self.stack.enter_async_context(AsyncRPCClient(*setup(), source=SOURCE))

    async def add(self, x: int, y: int) -> int:
        return int((await self.cli.bench.add(x=x, y=y).call(timeout=TIMEOUT)).payload["result"])

    async def note(self, n: int) -> None:
        await self.cli.bench.note(n=n).cast()

    async def stats(self) -> list[Any]:
        p = (await self.cli.bench.stats().call(timeout=TIMEOUT)).payload
        return [p["count"], p["last"]]

    async def close(self) -> None:
        await self.stack.aclose()


if __name__ == "__main__":
    notes = {"reply": "direct reply-to (tavrida2 call())", "w3_comparable": True}
    if SYNC:
        client = SyncClient()
        notes |= {
            "w2": "64 call_async() handles (benchlib.windowed)",
            "w3": "64 cast_async() handles (benchlib.windowed)"
            if client.cast_async
            else "cast() loop",
        }
        benchlib.run_sync(client, notes=notes)
    else:
        notes |= {"w2": "gather + Semaphore(64)", "w3": "gather + Semaphore(64) of cast()"}
        asyncio.run(benchlib.run_async(AsyncClient(), notes=notes))
