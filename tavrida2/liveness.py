"""Who is alive: servers announce themselves; ``tavrida2 peers`` lists them; ``info()``.

Every running server publishes an announcement on the fanout exchange
``tavrida2.heartbeat`` every ``announce_period`` seconds (5 by default): its
instance id, services, host, pid, tavrida2 version, start time, queue,
exchange and engine. Announcements are transient and expire after three
periods; a server that stops says so in a last one. :func:`listen` binds a
queue of its own to the exchange for a few periods and keeps the latest
announcement of each instance: what ``tavrida2 peers`` prints, with how long
ago each was seen. A server killed outright stops announcing and is gone from
the next listing.

Each server also answers ``<service>.info`` (unless a controller has a handler
of that name) with :func:`describe`: its controllers and their handlers,
schemas, subscriptions, broadcasts, tasks and hooks, its queue, exchanges and
engine.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tavrida2.drivers.base import Disposition, SyncDriver
from tavrida2.drivers.topology import HEARTBEAT_EXCHANGE
from tavrida2.messages import AMQPMessage

if TYPE_CHECKING:
    from tavrida2.drivers.topology import Topology
    from tavrida2.service import ServiceController

#: Seconds between two announcements of a server, unless told otherwise.
DEFAULT_ANNOUNCE_PERIOD = 5.0
#: Marks an announcement (and tells its kind: ``alive`` or ``stopping``).
ANNOUNCE_HEADER = "x-tavrida2-announce"


def instance_id() -> str:
    """A new id for a server instance: host, pid and a random part."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


class AnnouncedServer(Protocol):
    """What an announcement and ``info()`` tell of a server (a :class:`~tavrida2.server.Server`)."""

    instance_id: str
    started_at: float
    announce_period: float | None

    @property
    def queue_name(self) -> str: ...

    @property
    def exchange_name(self) -> str: ...

    @property
    def service_classes(self) -> list[type[ServiceController]]: ...

    @property
    def is_async(self) -> bool: ...

    def topology(self) -> Topology: ...


def announcement(server: AnnouncedServer, state: str = "alive") -> AMQPMessage:
    """The announcement of ``server`` (``state`` is ``alive`` or ``stopping``)."""
    body = {
        "instance": server.instance_id,
        "services": [cls.service_name for cls in server.service_classes],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": _version(),
        "started_at": server.started_at,
        "queue": server.queue_name,
        "exchange": server.exchange_name,
        "engine": "async" if server.is_async else "sync",
        "period": server.announce_period,
        "state": state,
        "at": time.time(),
    }
    period = server.announce_period or DEFAULT_ANNOUNCE_PERIOD
    expiration = str(int(period * 3 * 1000))
    return AMQPMessage(json.dumps(body).encode(), {ANNOUNCE_HEADER: state}, expiration=expiration)


def _version() -> str:
    from tavrida2 import __version__

    return __version__


@dataclass
class Peer:
    """A server instance seen announcing itself."""

    instance: str
    services: list[str]
    host: str
    pid: int
    version: str
    started_at: float
    queue: str
    engine: str
    state: str
    #: When its last announcement was received (epoch seconds).
    seen_at: float

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.seen_at


def peer_of(message: AMQPMessage, now: float | None = None) -> Peer | None:
    """The instance an announcement describes (seen ``now``), None if it is not one."""
    try:
        body = json.loads(message.body)
        return Peer(
            str(body["instance"]),
            [str(s) for s in body["services"]],
            str(body["host"]),
            int(body["pid"]),
            str(body.get("version", "?")),
            float(body["started_at"]),
            str(body.get("queue", "")),
            str(body.get("engine", "?")),
            str(body.get("state", "alive")),
            time.time() if now is None else now,
        )
    except (ValueError, KeyError, TypeError):
        return None


def listen(driver: SyncDriver, seconds: float, services: Iterable[str] | None = None) -> list[Peer]:
    """The instances that announced themselves within ``seconds`` (connected ``driver``).

    With ``services``, only instances running one of them; an instance that
    said it is stopping is left out.
    """
    wanted = set(services) if services is not None else None
    queue = f"tavrida2.peers.{uuid.uuid4().hex}"
    driver.declare_exchange(HEARTBEAT_EXCHANGE, "fanout")
    driver.declare_queue(queue, durable=False, auto_delete=True)
    driver.bind_queue(queue, HEARTBEAT_EXCHANGE, "")
    peers: dict[str, Peer] = {}

    def on_announcement(message: AMQPMessage) -> Disposition:
        peer = peer_of(message)
        if peer is not None:
            peers[peer.instance] = peer
        return Disposition.ACK  # not an announcement of ours when None

    driver.consume(queue, on_announcement)
    timer = threading.Timer(seconds, driver.stop)
    timer.daemon = True
    timer.start()
    try:
        driver.run()
    finally:
        timer.cancel()
    return sorted(
        (
            p
            for p in peers.values()
            if p.state != "stopping" and (wanted is None or wanted & set(p.services))
        ),
        key=lambda p: (p.services, p.host, p.pid),
    )


def describe(server: AnnouncedServer) -> dict[str, Any]:
    """The structure of ``server``, as its ``info()`` answers."""
    controllers = []
    for cls in server.service_classes:
        dispatcher = cls.get_dispatcher()
        broadcasts = list(dispatcher.iter_broadcasts())
        handlers = [
            {
                "method": info.name,
                "type": info.message_type.value,
                "entry_point": info.entry_point,
                "schema": info.schema,
                **({"prefetch": info.prefetch} if info.prefetch is not None else {}),
                **({"timeout": info.timeout} if info.timeout is not None else {}),
            }
            for info in dispatcher.iter_handlers()
            if info not in broadcasts
        ]
        controllers.append(
            {
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "service": cls.service_name,
                "handlers": handlers,
                "subscriptions": sorted(dispatcher.subscriptions),
                "broadcasts": [info.entry_point for info in broadcasts],
                "tasks": [task.describe() for task in dispatcher.tasks],
                "hooks": {
                    name: [hook.name for hook in hooks]
                    for name, hooks in dispatcher.hooks.items()
                    if hooks
                },
            }
        )
    topology = server.topology()
    return {
        "instance": server.instance_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": _version(),
        "started_at": server.started_at,
        "engine": "async" if server.is_async else "sync",
        "queue": server.queue_name,
        "exchange": server.exchange_name,
        "exchanges": [exchange.name for exchange in topology.exchanges],
        "queues": [queue.name for queue in topology.queues],
        "controllers": controllers,
    }


__all__ = [
    "ANNOUNCE_HEADER",
    "DEFAULT_ANNOUNCE_PERIOD",
    "HEARTBEAT_EXCHANGE",
    "Peer",
    "announcement",
    "describe",
    "instance_id",
    "listen",
    "peer_of",
]
