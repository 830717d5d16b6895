"""The supervisor with real processes and fake workers (tests/unit/fake_worker.py), no broker.

What the RabbitMQ tests cannot make happen on demand: a worker that ignores SIGTERM,
one that never starts, one that crashes in a loop, a supervisor killed with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tavrida2.workers import (
    EXIT_OK,
    EXIT_START_FAILED,
    EXIT_UNCLEAN_STOP,
    Backoff,
    RestartPolicy,
    Supervisor,
    WorkerSpec,
)

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).resolve().parent
SUPERVISOR = str(HERE / "supervisor_proc.py")
FAKE = str(HERE / "fake_worker.py")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return result


class Supervised:
    """``supervisor_proc.py`` in a process of its own; its log in a file."""

    def __init__(self, tmp_path: Path, mode: str, count: int, stop_timeout: float = 5.0) -> None:
        self.out = tmp_path / "workers.txt"
        self.out.touch()
        self.log_path = tmp_path / "supervisor.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, SUPERVISOR, mode, str(count), str(self.out), str(stop_timeout)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def starts(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if line.startswith("start")]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(mode: str, count: int, stop_timeout: float = 5.0) -> Supervised:
        running = Supervised(tmp_path, mode, count, stop_timeout)
        started.append(running)
        return running

    yield start
    for running in started:
        running.end()


def test_sigterm_stops_every_worker_and_exits_0(supervised: Callable[..., Supervised]) -> None:
    group = supervised("ready", 3)
    wait_for(lambda: "workers, all consuming: 3 running" in group.log, "three workers running")
    assert sorted(line.split()[-1] for line in group.starts()) == ["0", "1", "2"]  # slots
    group.signal(signal.SIGUSR1)
    wait_for(lambda: "workers, status (SIGUSR1): 3 running" in group.log, "the status table")
    group.signal(signal.SIGTERM)
    assert group.wait() == EXIT_OK, group.log
    assert "workers, stopped: 3 stopped" in group.log
    assert group.log.count("ended: exit code 0)") == 3


def test_a_worker_that_ignores_sigterm_is_killed_and_the_exit_code_says_so(
    supervised: Callable[..., Supervised],
) -> None:
    group = supervised("stubborn", 1, stop_timeout=0.3)
    wait_for(lambda: "all consuming" in group.log, "the worker running")
    started = time.monotonic()
    group.signal(signal.SIGTERM)
    assert group.wait() == EXIT_UNCLEAN_STOP, group.log
    assert time.monotonic() - started < 5  # stop_timeout 0.3 + kill margin 0.3, then SIGKILL
    assert "still running 0.6 s after SIGTERM; SIGKILL" in group.log
    assert "ended: signal SIGKILL (not a clean stop)" in group.log


def test_a_second_signal_kills_at_once(supervised: Callable[..., Supervised]) -> None:
    group = supervised("stubborn", 2, stop_timeout=60)
    wait_for(lambda: "all consuming" in group.log, "the workers running")
    group.signal(signal.SIGINT)
    wait_for(lambda: "stopping 2 worker(s)" in group.log, "the stop")
    group.signal(signal.SIGINT)
    assert group.wait(10) == EXIT_UNCLEAN_STOP, group.log
    assert "SIGINT again while stopping: SIGKILL to the workers" in group.log


def test_a_crashing_worker_is_restarted_with_a_growing_delay(
    supervised: Callable[..., Supervised],
) -> None:
    group = supervised("crash", 1)
    wait_for(lambda: len(group.starts()) >= 4, "three restarts")
    group.signal(signal.SIGTERM)
    assert group.wait() == EXIT_OK, group.log
    log = group.log
    assert "stopped on its own (exit code 1); restarting it in 0.1 s (restart 1;" in log
    assert "restarting it in 0.2 s (restart 2;" in log
    assert "restarting it in 0.4 s (restart 3;" in log
    assert "the group keeps running" in log


def test_a_worker_that_cannot_start_makes_the_supervisor_give_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "workers.txt"
    specs = [
        WorkerSpec(f"fail#{i}", [sys.executable, FAKE, "fail", str(out)], 5.0, slot=i)
        for i in range(2)
    ]
    policy = RestartPolicy(Backoff(0.05, 2.0, 1.0), start_failures=3)
    caplog.set_level(logging.INFO, "tavrida2.workers")
    started = time.monotonic()
    assert Supervisor(specs, policy).run() == EXIT_START_FAILED
    assert time.monotonic() - started < 20
    assert "could not start 3 times in a row (last: exit code 3); giving up" in caplog.text
    # the first to give up stops the group: the other is not spawned a fourth time
    assert 4 <= out.read_text().count("start") <= 6
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the pytest process's own again


def test_a_command_that_does_not_exist_is_a_failure_to_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "no-such-command")
    out = tmp_path / "workers.txt"
    specs = [
        WorkerSpec("x#1", [missing], 1.0),
        WorkerSpec("y#1", [sys.executable, FAKE, "ready", str(out)], 1.0),
    ]
    policy = RestartPolicy(Backoff(0.01, 2.0, 0.1), start_failures=1)
    assert Supervisor(specs, policy).run() == EXIT_START_FAILED
    assert f"cannot start {missing}" in caplog.text
    assert not out.exists(), "the group gave up before the second worker was spawned"


def test_workers_stop_themselves_when_the_supervisor_is_killed(
    supervised: Callable[..., Supervised],
) -> None:
    group = supervised("lifeline", 2)
    wait_for(lambda: "all consuming" in group.log, "the workers running")
    pids = [int(line.split()[1]) for line in group.starts()]
    group.signal(signal.SIGKILL)
    group.wait()
    wait_for(lambda: group.out.read_text().count("lifeline") == 2, "both workers to notice")

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie until init reaps it: /proc says so
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

    wait_for(lambda: all(gone(pid) for pid in pids), "both workers to exit")


def test_a_supervisor_needs_workers_with_distinct_names() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Supervisor([])
    spec = WorkerSpec("a#1", ["true"], 1.0)
    with pytest.raises(ValueError, match="names must differ"):
        Supervisor([spec, spec])
