"""Fixtures of the fault tests (issue 7), and the figures they produce.

Each fault test records one row (or a few) with ``figures.record(...)``: sent,
handled, dead-lettered, duplicated, lost (always 0, or the test fails), for
calls how many returned and how many raised, the seconds it took, and notes.
At the end of the session the rows are written to ``build/fault-figures.json``
and printed as a Markdown table (the terminal summary), with each test's
outcome.

Other fixtures: ``broker_to_myself`` (a test that stops the broker waits until
no other pytest may be using it), ``stalling_proxy`` (a TCP proxy to the broker
that can cut or stall the network), ``server_processes`` (servers in child
processes, stopped after the test); the dead-letter topology the server may
declare for a test's queues (``<queue>.dlq``, ``.retry``, ``.dlx``) is deleted
after each test.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Names
from tests.integration.faults.stall_proxy import StallingProxy
from tests.integration.faults.support import (
    ServerProcess,
    delete_dead_letter_topology,
    other_pytests,
)

FIGURES_FILE = Path("build") / "fault-figures.json"
COLUMNS = (
    ("test", "test"),
    ("engine", "engine"),
    ("sent", "sent"),
    ("handled", "handled"),
    ("dead_lettered", "dead-lettered"),
    ("duplicated", "duplicated"),
    ("lost", "lost"),
    ("calls_returned", "calls returned"),
    ("calls_raised", "calls raised"),
    ("seconds", "seconds"),
    ("outcome", "outcome"),
    ("notes", "notes"),
)
#: How long a test that stops the broker waits for other pytest runs to end, then skips.
BROKER_WAIT = 180.0
BROKER_POLL = 10.0


class FigureBook:
    """The rows of one session, and the outcome of the tests that recorded them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.outcomes: dict[str, str] = {}

    def add(self, nodeid: str, row: dict[str, Any]) -> None:
        self.rows.append({**row, "nodeid": nodeid})

    def rows_with_outcomes(self) -> list[dict[str, Any]]:
        """The rows in the issue's order (a test named ``"(n) ..."``), with each test's outcome."""
        rows = [{**row, "outcome": self.outcomes.get(row["nodeid"], "?")} for row in self.rows]
        return sorted(rows, key=_issue_order)

    def markdown(self) -> str:
        def cell(value: Any) -> str:
            if value is None:
                return ""
            if isinstance(value, float):
                return f"{value:.1f}"
            return str(value).replace("|", "\\|")

        lines = [
            "| " + " | ".join(title for _, title in COLUMNS) + " |",
            "|" + "|".join("---" for _ in COLUMNS) + "|",
        ]
        for row in self.rows_with_outcomes():
            lines.append("| " + " | ".join(cell(row.get(key)) for key, _ in COLUMNS) + " |")
        return "\n".join(lines)


_BOOK = pytest.StashKey[FigureBook]()


def _issue_order(row: dict[str, Any]) -> int:
    """The fault's number in issue 7 when the test name starts with it, ``"(4) ..."``."""
    match = re.match(r"\((\d+)\)", str(row.get("test", "")))
    return int(match.group(1)) if match else 99


def _book(config: pytest.Config) -> FigureBook:
    if _BOOK not in config.stash:
        config.stash[_BOOK] = FigureBook()
    return config.stash[_BOOK]


class Figures:
    """``figures.record(...)``: one row of figures for the running test."""

    def __init__(self, book: FigureBook, nodeid: str) -> None:
        self._book = book
        self._nodeid = nodeid

    def record(
        self,
        *,
        test: str,
        engine: str,
        sent: int,
        handled: int,
        dead_lettered: int,
        duplicated: int,
        lost: int,
        calls_returned: int | None = None,
        calls_raised: int | None = None,
        seconds: float,
        notes: str = "",
    ) -> None:
        self._book.add(
            self._nodeid,
            {
                "test": test,
                "engine": engine,
                "sent": sent,
                "handled": handled,
                "dead_lettered": dead_lettered,
                "duplicated": duplicated,
                "lost": lost,
                "calls_returned": calls_returned,
                "calls_raised": calls_raised,
                "seconds": round(seconds, 2),
                "notes": notes,
            },
        )


@pytest.fixture(scope="session")
def figure_book(pytestconfig: pytest.Config) -> FigureBook:
    return _book(pytestconfig)


@pytest.fixture
def figures(figure_book: FigureBook, request: pytest.FixtureRequest) -> Figures:
    return Figures(figure_book, request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    book = item.config.stash.get(_BOOK, None)
    recorded = book is not None and any(row["nodeid"] == item.nodeid for row in book.rows)
    if recorded and (report.when == "call" or report.failed):
        assert book is not None
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        if report.when != "call" and report.failed:
            outcome = f"error in {report.when}"
        if book.outcomes.get(item.nodeid, "passed") == "passed":
            book.outcomes[item.nodeid] = outcome
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    book = session.config.stash.get(_BOOK, None)
    if book is None or not book.rows:
        return
    path = session.config.rootpath / FIGURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": book.rows_with_outcomes(),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    book = config.stash.get(_BOOK, None)
    if book is None or not book.rows:
        return
    terminalreporter.section("fault figures")
    terminalreporter.write_line(book.markdown())
    terminalreporter.write_line(f"(written to {config.rootpath / FIGURES_FILE})")


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def broker_to_myself() -> None:
    """Wait (polling) while another pytest run may be using the broker; skip if it lasts.

    Stopping the broker's application disturbs every client of it: a test that
    does so must not run while somebody else's tests do.
    """
    deadline = time.monotonic() + BROKER_WAIT
    while others := other_pytests():
        if time.monotonic() > deadline:
            pytest.skip(f"another pytest may be using the broker after {BROKER_WAIT} s: {others}")
        time.sleep(BROKER_POLL)


@pytest.fixture
def stalling_proxy() -> Iterator[StallingProxy]:
    proxy = StallingProxy()
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.drop()


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    """Server processes a test appends here are stopped after it."""
    running: list[ServerProcess] = []
    try:
        yield running
    finally:
        for process in running:
            process.stop()


@pytest.fixture(autouse=True)
def _no_dead_letter_topology_left(names: Names) -> Iterator[None]:
    yield
    for queue in names.queues:
        delete_dead_letter_topology(queue)


@pytest.fixture
def tavrida2_log() -> Iterator[list[logging.LogRecord]]:
    """The warnings tavrida2 logs during the test (whether pytest's logging plugin runs or not)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(logging.WARNING), logging.getLogger("tavrida2")
    previous = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
