"""Test helpers for tavrida2 users and for its own tests (no pytest needed to import them).

- :func:`reset_global_state` empties what lives at process level: the Router
  singleton, the discovery bound to controller classes, the in-memory brokers,
  the config file ``configfile.get_config`` read;
- :class:`ControllerHarness` calls one handler directly with a recording proxy
  (:mod:`tavrida2.testing.harness`, :mod:`tavrida2.testing.outbox`);
- :class:`RunningServices` runs servers of a test on one broker
  (:mod:`tavrida2.testing.services`);
- :class:`VhostFactory` makes RabbitMQ vhosts of tests (:mod:`tavrida2.testing.vhosts`).

The pytest plugin (:mod:`tavrida2.testing.plugin`, enabled by installing
tavrida2) turns them into fixtures; it is loaded by pytest only.
"""

from __future__ import annotations

from typing import Any

from tavrida2 import configfile
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.router import Router
from tavrida2.service import ServiceController


def reset_global_state() -> None:
    """Forget registered services, class-level discovery, in-memory brokers, the config file."""
    Router().reset()
    ServiceController.reset_all_discovery()
    MemoryBroker.reset_all()
    configfile.forget_config()


# after reset_global_state: the plugin imports it from here
from tavrida2.testing.harness import (  # noqa: E402
    AnyServiceDiscovery,
    ControllerHarness,
    HandlerOutcome,
)
from tavrida2.testing.outbox import RecordingPostProcessor, Sent, SentMessages  # noqa: E402
from tavrida2.testing.services import RunningServices  # noqa: E402
from tavrida2.testing.vhosts import RabbitMQUnavailable, Vhost, VhostFactory  # noqa: E402


def __getattr__(name: str) -> Any:
    # ``from tavrida2.testing import tavrida2_isolation`` (a conftest of old): the fixture
    # lives in the plugin, which imports pytest, so only when asked for.
    if name == "tavrida2_isolation":
        from tavrida2.testing.plugin import tavrida2_isolation

        return tavrida2_isolation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnyServiceDiscovery",
    "ControllerHarness",
    "HandlerOutcome",
    "RabbitMQUnavailable",
    "RecordingPostProcessor",
    "RunningServices",
    "Sent",
    "SentMessages",
    "Vhost",
    "VhostFactory",
    "reset_global_state",
]
