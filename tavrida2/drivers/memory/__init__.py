"""The in-process broker and its drivers for both engines (``memory://`` URLs).

- :mod:`.broker`: :class:`MemoryBroker`, RabbitMQ's routing, queues, prefetch,
  acknowledgements, dead-lettering and TTLs in the process;
- :mod:`.drivers`: :class:`MemoryDriver` (sync) and :class:`AsyncMemoryDriver`.
"""

from __future__ import annotations

from tavrida2.drivers.memory.broker import Delivery, MemoryBroker, StoredMessage
from tavrida2.drivers.memory.drivers import AsyncMemoryDriver, MemoryDriver

__all__ = ["AsyncMemoryDriver", "Delivery", "MemoryBroker", "MemoryDriver", "StoredMessage"]
