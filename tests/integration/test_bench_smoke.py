"""The benchmark's tavrida2 engines still run: a tiny `bench/run.py` pass, no timings judged.

`make bench` is not part of `make test` (it measures; tests assert behaviour). This only
checks that the bench's tavrida2 server and clients work against the current code, every
answer checked by the harness, so the benchmark cannot rot unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def test_bench_tavrida2_engines_complete_every_workload(tmp_path: Path) -> None:
    env = dict(os.environ, BENCH_RESULTS_DIR=str(tmp_path))
    done = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--only",
            "tavrida2-sync,tavrida2-async",
            "--scale",
            "0.01",
            "--reps",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "last.json").read_text())
    for engine in ("tavrida2-sync", "tavrida2-async"):
        summary = results["summary"][engine]
        assert summary["errors"] == []
        assert summary["reps_ok"] == {"w1": 1, "w2": 1, "w3": 1}
        assert all(summary[w] > 0 for w in ("w1", "w2", "w3"))
