"""Shared fixtures: every test starts and ends with fresh global state."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tavrida2.testing import reset_global_state

# loggers whose level the `tavrida2` command sets when it runs in-process (cli.main)
_LOGGERS = ("", "tavrida2", "pika", "aio_pika", "aiormq")


@pytest.fixture(autouse=True)
def _isolated_global_state() -> Iterator[None]:
    reset_global_state()
    saved = {name: logging.getLogger(name).level for name in _LOGGERS}
    root_handlers = list(logging.getLogger().handlers)
    yield
    reset_global_state()
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().handlers[:] = root_handlers
