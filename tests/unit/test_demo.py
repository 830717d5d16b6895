"""`make demo` runs samples/demo.py: it must run the whole tutorial flow and exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_tutorial_flow() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for handler in (
        "hello (request",
        "world (request",
        "world_resp",
        "world_error",
        "fail (request",
        "hello_subscription",
    ):
        assert f"--- {handler}" in done.stdout
    assert "=== 6 of 6 handler calls; broker idle: True" in done.stdout
