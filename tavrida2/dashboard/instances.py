"""The running server instances, heard from their announcements on ``tavrida2.heartbeat``.

A daemon thread keeps a connection of its own and a private auto-delete queue
bound to the announcements' fanout exchange; it reconnects (every few
seconds) when the broker goes away. The page shows each instance with how
long ago it was last heard, and forgets one not heard for :data:`FORGET_AFTER` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any

from tavrida2.config import ConnectionConfig
from tavrida2.drivers import create_sync_driver
from tavrida2.drivers.base import Disposition, SyncDriver
from tavrida2.liveness import DEFAULT_ANNOUNCE_PERIOD, HEARTBEAT_EXCHANGE, Peer, peer_of
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import AMQPMessage

log = logging.getLogger(__name__)
#: Seconds between attempts to connect again.
RECONNECT_DELAY = 3.0
#: Seconds after which an instance not heard is taken for gone (six default periods:
#: one announcing less often is still shown; one that stopped cleanly says so at once).
FORGET_AFTER = 6 * DEFAULT_ANNOUNCE_PERIOD


class InstanceListener:
    """Keeps the last announcement of every instance (thread-safe reads)."""

    def __init__(self, connection: ConnectionConfig) -> None:
        self._connection = connection
        self._peers: dict[str, Peer] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._driver: SyncDriver | None = None
        self._thread: threading.Thread | None = None
        #: Why the announcements cannot be heard now; None while listening.
        self.error: str | None = "not started"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="t2-dashboard-peers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        driver = self._driver
        if driver is not None:
            driver.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def peers(self, now: float | None = None) -> list[dict[str, Any]]:
        """The instances heard lately, as JSON-ready rows with ``last_seen`` seconds ago."""
        now = time.time() if now is None else now
        with self._lock:
            for instance, peer in list(self._peers.items()):
                if peer.age(now) > FORGET_AFTER:
                    del self._peers[instance]
            found = sorted(self._peers.values(), key=lambda p: (p.services, p.host, p.pid))
        return [dict(asdict(peer), last_seen=round(peer.age(now), 1)) for peer in found]

    def _on_announcement(self, message: AMQPMessage) -> Disposition:
        peer = peer_of(message)
        if peer is not None:
            with self._lock:
                if peer.state == "stopping":
                    self._peers.pop(peer.instance, None)
                else:
                    self._peers[peer.instance] = peer
        return Disposition.ACK

    def _run(self) -> None:
        while not self._stopping.is_set():
            driver = create_sync_driver(self._connection)
            try:
                driver.connect()
                queue = f"tavrida2.dashboard.{uuid.uuid4().hex}"
                driver.declare_exchange(HEARTBEAT_EXCHANGE, "fanout")
                driver.declare_queue(queue, durable=False, auto_delete=True)
                driver.bind_queue(queue, HEARTBEAT_EXCHANGE, "")
                driver.consume(queue, self._on_announcement)
                self._driver = driver
                self.error = None
                if not self._stopping.is_set():
                    driver.run()
            except Exception as exc:  # the broker is away: try again later
                self.error = mask_url_passwords(f"{self._connection.to_url()}: {exc}")
                log.debug("dashboard: announcements not heard: %s", self.error)
            finally:
                self._driver = None
                with contextlib.suppress(Exception):  # closing what failed anyway
                    driver.close()
            self._stopping.wait(RECONNECT_DELAY)


__all__ = ["FORGET_AFTER", "InstanceListener"]
