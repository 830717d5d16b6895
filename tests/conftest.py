"""Shared fixtures: every test starts and ends with fresh global state.

The reset of tavrida2's global state is the ``tavrida2_isolation`` fixture of
tavrida2's pytest plugin, given to every test by ``tavrida2_isolation = true``
in setup.cfg; here the logging levels that in-process ``tavrida2`` commands set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.brokers.tls_broker import tls_broker

# loggers whose level the `tavrida2` command sets when it runs in-process (cli.main)
_LOGGERS = ("", "tavrida2", "pika", "aio_pika", "aiormq")


@pytest.fixture(autouse=True)
def _restored_logging() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in _LOGGERS}
    root_handlers = list(logging.getLogger().handlers)
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = root_handlers


__all__ = ["tls_broker"]  # shared by every module that asks for it (tests/brokers/tls_broker.py)
