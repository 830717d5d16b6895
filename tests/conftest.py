"""Shared fixtures: every test starts and ends with fresh global state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tavrida2.testing import reset_global_state


@pytest.fixture(autouse=True)
def _isolated_global_state() -> Iterator[None]:
    reset_global_state()
    yield
    reset_global_state()
