"""The ``env`` fixture: every contract test runs once per driver kind of ``harness.KINDS``."""

from __future__ import annotations

import pytest

from tests.contract.harness import KINDS, Env


@pytest.fixture(params=[pytest.param(kind, id=kind.id, marks=kind.marks) for kind in KINDS])
def env(request: pytest.FixtureRequest) -> Env:
    return Env(request.param)
