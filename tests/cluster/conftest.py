"""The 3-node cluster of the cluster tests (``make cluster-test``), and their figures.

Fixture ``cluster`` (session): three RabbitMQ nodes ``t2c<pid>n1..3@localhost``
on free ports from 5700 up, with their files under pytest's temp folder, the
second and third joined to the first; stopped at the end of the session. The
shared broker (``rabbit@localhost``) is not touched. A missing
``rabbitmq-server`` is an error, not a skip.

Each fail-over test records a row with :class:`FailoverFigures`; the rows are
printed at the end of the session and written to ``build/cluster-figures.json``.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokers.rabbit_node import Cluster, free_ports

FIGURES_FILE = Path("build") / "cluster-figures.json"
_ROWS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(
        free_ports(3, 5700, 5799), tmp_path_factory.mktemp("cluster"), prefix=f"t2c{os.getpid()}n"
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()  # data and logs stay in pytest's temp folder (the last few runs)


class FailoverFigures:
    """``record(...)``: one row of the session's fail-over figures."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def record(self, **row: Any) -> None:
        self.rows.append(row)


@pytest.fixture
def failover_figures(request: pytest.FixtureRequest) -> FailoverFigures:
    rows = request.config.stash.setdefault(_ROWS, [])
    return FailoverFigures(rows)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rows = session.config.stash.get(_ROWS, [])
    if not rows:
        return
    path = session.config.rootpath / FIGURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"written": datetime.datetime.now().isoformat(timespec="seconds"), "rows": rows}
    path.write_text(json.dumps(document, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("cluster fail-over figures")
    columns = list(rows[0])
    terminalreporter.write_line("| " + " | ".join(columns) + " |")
    terminalreporter.write_line("|" + "---|" * len(columns))
    for row in rows:
        terminalreporter.write_line("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    terminalreporter.write_line(f"(written to {config.rootpath / FIGURES_FILE})")
