"""Test helpers for tavrida2 users and for its own tests.

``reset_global_state()`` empties what lives at process level: the Router
singleton, the discovery bound to controller classes, the in-memory brokers,
the config file ``configfile.get_config`` read.
The pytest fixture :func:`tavrida2_isolation` calls it around each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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


@pytest.fixture
def tavrida2_isolation() -> Iterator[None]:
    """Run a test with fresh global state, and leave none behind."""
    reset_global_state()
    yield
    reset_global_state()


__all__ = ["reset_global_state", "tavrida2_isolation"]
