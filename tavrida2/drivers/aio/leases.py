"""The async driver's leases: exclusive queues that one connection holds at a time.

As :mod:`tavrida2.drivers.pika_sync.leases`: the first connection to declare a
lease's exclusive queue holds it until it closes; the broker refuses the
others (405 RESOURCE_LOCKED), on a channel of their own that the refusal
closes.
"""

from __future__ import annotations

from typing import Any

import aiormq.exceptions as aex

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio.connection import channel_error
from tavrida2.drivers.aio.publishing import Publishing


class Leases(Publishing):
    """Claims of exclusive queues (a base of the async driver)."""

    _lease_channel: Any = None

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._leases: set[str] = set()

    def _detach(self, reason: str) -> None:
        self._leases.clear()  # exclusive queues go with their connection
        self._lease_channel = None
        super()._detach(reason)

    async def claim(self, name: str) -> bool:
        """Whether this connection holds the lease ``name`` (claiming it if it is free)."""
        await self._ensure_connected()
        if name in self._leases:
            return True
        channel = self._lease_channel
        if channel is None or channel.is_closed:
            channel = self._lease_channel = await self._bounded(
                "open a channel", self._channel("lease", confirms=False)
            )
        try:
            await channel.queue_declare(name, exclusive=True, auto_delete=True)
        except aex.ChannelLockedResource:
            self._lease_channel = None
            return False
        except aex.ChannelClosed as exc:
            self._lease_channel = None
            raise channel_error(exc, name) from None
        self._leases.add(name)
        return True


__all__ = ["Leases"]
