"""Every row of the benchmark still runs: a tiny `bench/run.py` pass, no timings judged.

`make bench` is not part of `make test` (it measures; tests assert behaviour). This only
checks that every engine of the bench (the raw floors, the -tavwire floors, and tavrida2's
server and clients as users write them: threads sharing a client, a `cast()` loop, ...)
works against the current code, every answer checked by the harness, so the benchmark
cannot rot unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import run as bench_run  # noqa: E402  (bench/run.py, the runner itself)


def test_bench_every_row_completes_every_workload(tmp_path: Path) -> None:
    env = dict(os.environ, BENCH_RESULTS_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--scale", "0.01", "--reps", "1", "--no-docs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "last.json").read_text())["summary"]
    assert set(summary) == set(bench_run.BY_NAME)
    for engine in bench_run.ENGINES:
        s = summary[engine.name]
        assert s["errors"] == [], engine.name
        for w in engine.workloads:
            assert s["reps_ok"][w] == 1, (engine.name, w)
            assert s[w] > 0, (engine.name, w)
            assert s[w + "_cpu_us"]["client"] is not None, (engine.name, w)
    # the targets have a measured ratio (met or not) for every row they name
    assert "**not met**" in done.stdout or " met |" in done.stdout
    for target in bench_run.TAVWIRE_TARGETS:
        assert bench_run.ratio(summary, target.ours, target.ref, target.key), target.label()
