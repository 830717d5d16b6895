"""Servers and a client on the memory broker, on the sync or the async engine.

``Rig(engine)`` collects servers with :meth:`Rig.serve`, then :meth:`Rig.run`
starts them, opens a client (``RPCClient`` or ``AsyncRPCClient``), runs an
action with it and returns once everything the action set off was delivered.
:meth:`Rig.publish_raw` puts a message on the broker as a Tavrida 1.0 service
would send it (headers and JSON body, no AMQP properties).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from tavrida2 import client, config, discovery, server, service
from tavrida2.drivers.memory import MemoryBroker

BROKER = "compat"


def headers_10(
    message_type: str, source: str, destination: str, reply_to: str = "", **extra: Any
) -> dict[str, Any]:
    """The headers a Tavrida 1.0 service sends (1.0's wire format, ids as uuid4 hex)."""
    return {
        "correlation_id": uuid.uuid4().hex,
        "request_id": uuid.uuid4().hex,
        "message_id": uuid.uuid4().hex,
        "message_type": message_type,
        "reply_to": reply_to,
        "source": source,
        "destination": destination,
        **extra,
    }


def body_10(payload: dict[str, Any], context: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"context": context or {}, "payload": payload}).encode()


class Rig:
    """Servers on one memory broker and a client, on one engine."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.broker = MemoryBroker.get(BROKER)
        self.discovery = discovery.LocalDiscovery()
        self.specs: list[tuple[str, str, list[type[service.ServiceController]], Any]] = []
        self._started: list[server.Server] = []
        #: User headers of the client's messages.
        self.client_headers: dict[str, Any] | None = None

    @property
    def is_async(self) -> bool:
        return self.engine == "async"

    def config(self) -> config.ConnectionConfig:
        return config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=self.is_async)

    def serve(
        self,
        queue: str,
        exchange: str,
        *services: type[service.ServiceController],
        dead_letters: Any = True,
    ) -> None:
        self.specs.append((queue, exchange, list(services), dead_letters))
        for cls in services:
            self.discovery.register_remote_service(cls.service_name, exchange)

    def _servers(self) -> list[server.Server]:
        return [
            server.Server(self.config(), q, ex, classes, dead_letters=dl)
            for q, ex, classes, dl in self.specs
        ]

    def publish_raw(self, exchange: str, routing_key: str, headers: dict[str, Any], body: bytes):
        """Publish as a foreign (Tavrida 1.0) sender: no AMQP properties."""
        self.broker.publish(exchange, routing_key, body, headers, None, True)

    def run(self, action: Callable[[Any], Any] | None = None) -> Any:
        """Serve, run ``action(client)`` (awaited if awaitable), deliver everything; its result."""
        if self.is_async:
            return asyncio.run(self._run_async(action))
        if not self._started:
            self._started = self._servers()
            for srv in self._started:
                srv.start()
        result = None
        if action is not None:
            with client.RPCClient(
                self.config(), self.discovery, source="compat_app", headers=self.client_headers
            ) as cli:
                result = action(cli)
        self.broker.run_until_idle()
        return result

    async def _run_async(self, action: Callable[[Any], Any] | None) -> Any:
        servers = self._servers()
        tasks = [asyncio.ensure_future(srv.serve()) for srv in servers]
        try:
            await _until(lambda: all(srv.started.is_set() for srv in servers), tasks)
            result = None
            if action is not None:
                async with client.AsyncRPCClient(
                    self.config(), self.discovery, source="compat_app", headers=self.client_headers
                ) as cli:
                    result = action(cli)
                    if inspect.isawaitable(result):
                        result = await result
            await _until(self.broker.is_idle, tasks)
            return result
        finally:
            for srv in servers:
                srv.stop()
            await asyncio.gather(*tasks)

    def stop(self) -> None:
        for srv in self._started:
            srv.stop()
            if srv.driver is not None:
                srv.driver.close()


async def _until(condition: Callable[[], bool], tasks: list[asyncio.Future[Any]]) -> None:
    """Wait (at most 5 s) for ``condition``; a server task that ended raises its error."""
    deadline = time.monotonic() + 5
    while not condition():
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError("a server stopped on its own")
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


__all__ = ["BROKER", "Rig", "body_10", "headers_10"]
