"""The sync driver's leases: exclusive queues that one connection holds at a time.

A task that must run in one server process only (``single=True``) claims a
lease before each run: the process whose connection declared the exclusive
queue first holds it until that connection closes; the others are refused by
the broker (405 RESOURCE_LOCKED) and skip the run. Claims go out on a channel
of their own, which a refusal closes.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions as pex

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.errors import from_channel_close
from tavrida2.drivers.pika_sync.publishing import Publishing

_RESOURCE_LOCKED = 405


class Leases(Publishing):
    """Claims of exclusive queues (a base of the sync driver)."""

    _lease_channel: Any = None

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._leases: set[str] = set()

    def _detach(self, error: Exception) -> None:
        self._leases.clear()  # exclusive queues go with their connection
        self._lease_channel = None
        super()._detach(error)

    def claim(self, name: str) -> bool:
        """Whether this connection holds the lease ``name`` (claiming it if it is free)."""
        return bool(self._with_connection(lambda: self._claim(name)))

    def _claim(self, name: str) -> bool:
        if name in self._leases:
            return True
        channel = self._lease_channel
        if channel is None or not channel.is_open:
            channel = self._lease_channel = self._connection.channel()
        try:
            channel.queue_declare(name, exclusive=True, auto_delete=True)
        except pex.ChannelClosedByBroker as exc:
            self._lease_channel = None
            if exc.reply_code == _RESOURCE_LOCKED:
                return False
            raise from_channel_close(exc.reply_code, exc.reply_text, name) from None
        self._leases.add(name)
        return True


__all__ = ["Leases"]
