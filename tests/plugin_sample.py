"""samples/testing (the examples of docs/testing.md), copied into an inner pytest run."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "testing"


def copy_sample(pytester: pytest.Pytester) -> None:
    """Write greeter.py and test_greeter.py into the inner run's folder."""
    for name in ("greeter.py", "test_greeter.py"):
        pytester.makepyfile(**{name[:-3]: (SAMPLE / name).read_text(encoding="utf-8")})
