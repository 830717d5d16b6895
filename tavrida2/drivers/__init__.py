"""AMQP drivers behind one interface (:mod:`tavrida2.drivers.base`).

``memory`` (in-process, both engines) is always available; the RabbitMQ
drivers are chosen by ``ConnectionConfig.driver == "amqp"``.
"""

from __future__ import annotations

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import AsyncDriver, Disposition, SyncDriver


def create_sync_driver(config: ConnectionConfig) -> SyncDriver:
    """A blocking driver for ``config``."""
    if config.driver == "memory":
        from tavrida2.drivers.memory import MemoryDriver

        return MemoryDriver(config)
    try:
        from tavrida2.drivers.pika_sync import PikaDriver
    except ImportError:
        raise exceptions.IncorrectAMQPLibrary() from None
    return PikaDriver(config)


def create_async_driver(config: ConnectionConfig) -> AsyncDriver:
    """An asyncio driver for ``config``."""
    if config.driver == "memory":
        from tavrida2.drivers.memory import AsyncMemoryDriver

        return AsyncMemoryDriver(config)
    try:
        from tavrida2.drivers.aio import AioDriver
    except ImportError:
        raise exceptions.IncorrectAMQPLibrary() from None
    return AioDriver(config)


__all__ = ["AsyncDriver", "Disposition", "SyncDriver", "create_async_driver", "create_sync_driver"]
