"""The workers' state machine and backoff (no processes), the link, and ``run --workers`` input."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tavrida2 import cli
from tavrida2.workers import launch
from tavrida2.workers.link import LINK_VARIABLE, NAME_VARIABLE, READY, SLOT_VARIABLE, SupervisorLink
from tavrida2.workers.state import (
    EXIT_OK,
    EXIT_START_FAILED,
    EXIT_UNCLEAN_STOP,
    Backoff,
    Exit,
    RestartPolicy,
    Worker,
    WorkerState,
    describe_exit,
    exit_code,
)

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "samples" / "deploy" / "hello.ini"


# -- backoff -----------------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_up_to_its_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30


@pytest.mark.parametrize("kwargs", [{"first": 0}, {"first": 5, "cap": 1}, {"factor": 0.5}], ids=str)
def test_a_backoff_that_would_not_back_off_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="expected 0 < first <= cap and factor >= 1"):
        Backoff(**kwargs)


def test_a_restart_policy_needs_at_least_one_start_attempt() -> None:
    with pytest.raises(ValueError, match="start_failures >= 1"):
        RestartPolicy(start_failures=0)


# -- one worker's life ---------------------------------------------------------------------


def running_worker(now: float = 0.0) -> Worker:
    worker = Worker("a.ini#1")
    worker.spawned(101, now)
    assert worker.state is WorkerState.STARTING
    worker.ready(now + 0.5)
    assert worker.state is WorkerState.RUNNING
    return worker


def test_a_worker_that_crashes_is_restarted_later_and_later() -> None:
    policy = RestartPolicy()
    worker = running_worker()
    delays = []
    now = 1.0
    for _ in range(4):
        assert worker.exited(1, now, policy) is Exit.RESTART
        assert worker.state is WorkerState.RESTARTING and worker.pid is None
        assert worker.restart_at is not None
        delays.append(worker.restart_at - now)
        now = worker.restart_at
        worker.restarting()
        worker.spawned(200, now)
        worker.ready(now + 0.1)
        now += 1.0  # crashes one second after it consumes: not stable
    assert delays == [0.5, 1, 2, 4]
    assert worker.restarts == 4
    assert worker.last_exit == "exit code 1"


def test_a_worker_that_ran_long_enough_starts_its_backoff_again() -> None:
    policy = RestartPolicy(stable_after=10)
    worker = running_worker()
    worker.exited(1, 1.0, policy)
    worker.restarting()
    worker.spawned(102, 2.0)
    worker.ready(2.5)
    assert worker.exited(-signal.SIGKILL, 2.5 + 10, policy) is Exit.RESTART
    assert worker.restart_at == pytest.approx(12.5 + 0.5)
    assert worker.last_exit == "signal SIGKILL"


def test_a_worker_that_exits_0_on_its_own_is_restarted_too() -> None:
    worker = running_worker()
    assert worker.exited(0, 20.0, RestartPolicy()) is Exit.RESTART


def test_the_supervisor_gives_up_after_k_failures_to_start_in_a_row() -> None:
    policy = RestartPolicy(start_failures=3)
    worker = Worker("a.ini#1")
    now = 0.0
    outcomes = []
    for pid in range(3):
        worker.spawned(pid + 100, now)
        outcomes.append(worker.exited(2, now + 0.2, policy))
        now = worker.restart_at or now
    assert outcomes == [Exit.RESTART, Exit.RESTART, Exit.GIVE_UP]
    assert worker.state is WorkerState.STOPPED
    assert worker.start_failures == 3
    assert not worker.clean_stop


def test_consuming_once_resets_the_count_of_start_failures() -> None:
    policy = RestartPolicy(start_failures=2)
    worker = Worker("a.ini#1")
    worker.spawned(1, 0.0)
    assert worker.exited(1, 0.1, policy) is Exit.RESTART
    worker.spawned(2, 1.0)
    worker.ready(1.2)
    assert worker.start_failures == 0
    assert worker.exited(1, 2.0, policy) is Exit.RESTART  # ran: a crash, not a start failure
    worker.spawned(3, 3.0)
    assert worker.exited(1, 3.1, policy) is Exit.RESTART  # first failure to start in a row
    worker.spawned(4, 5.0)
    assert worker.exited(1, 5.1, policy) is Exit.GIVE_UP


def test_a_tight_crash_loop_spawns_a_bounded_number_of_processes() -> None:
    """A worker that dies 50 ms after it consumes, for ten minutes: no fork storm."""
    policy = RestartPolicy()
    worker = Worker("a.ini#1")
    now, spawns = 0.0, 0
    while now < 600:
        worker.spawned(spawns, now)
        spawns += 1
        worker.ready(now + 0.01)
        assert worker.exited(1, now + 0.05, policy) is Exit.RESTART
        assert worker.restart_at is not None
        now = worker.restart_at
        worker.restarting()
    # 0.5 + 1 + ... + 16 = 31.5 s, then one every 30 s: 6 + 19 spawns
    assert spawns <= 26


def test_stopping_a_group_member_by_member() -> None:
    policy = RestartPolicy()
    clean, stubborn, waiting, early = (running_worker() for _ in range(4))
    for worker in (clean, stubborn):
        assert worker.stopping(10.0, grace=35.0)
        assert worker.state is WorkerState.STOPPING and worker.kill_at == 45.0
    waiting.exited(1, 5.0, policy)  # between two runs: nothing to signal
    assert not waiting.stopping(10.0, grace=35.0)
    assert waiting.state is WorkerState.STOPPED and waiting.clean_stop
    early.spawned(300, 9.9)  # SIGTERM before its handler was installed: the default action
    assert early.stopping(10.0, grace=35.0)
    assert early.exited(-signal.SIGTERM, 10.1, policy) is Exit.STOPPED and early.clean_stop

    assert clean.exited(0, 11.0, policy) is Exit.STOPPED
    assert clean.state is WorkerState.STOPPED and clean.clean_stop
    assert exit_code([clean, waiting, early], gave_up=False) == EXIT_OK

    stubborn.killed = True
    assert stubborn.exited(-signal.SIGKILL, 45.1, policy) is Exit.STOPPED
    assert not stubborn.clean_stop
    assert exit_code([clean, stubborn], gave_up=False) == EXIT_UNCLEAN_STOP
    assert exit_code([clean, stubborn], gave_up=True) == EXIT_START_FAILED


def test_a_worker_that_fails_while_draining_is_not_a_clean_stop() -> None:
    worker = running_worker()
    worker.stopping(1.0, grace=8.0)
    worker.exited(1, 4.0, RestartPolicy())  # its own last resort: a handler did not return
    assert not worker.clean_stop


def test_exits_in_words() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-200) == "signal 200"


def test_a_status_row_says_state_pid_restarts_and_uptime() -> None:
    worker = running_worker(100.0)
    assert worker.row(110.5) == "a.ini#1  running  pid 101  restarts 0  up 10 s"
    worker.exited(-signal.SIGKILL, 111.0, RestartPolicy())
    assert worker.row(111.0) == (
        "a.ini#1  restarting  pid -  restarts 0  next start in 0.5 s  last exit: signal SIGKILL"
    )


# -- the link -----------------------------------------------------------------------------


class FakeServer:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()


def test_a_link_reports_ready_and_stops_the_server_when_the_supervisor_is_gone() -> None:
    supervisor_end, worker_end = socket.socketpair()
    env = {LINK_VARIABLE: str(worker_end.detach()), NAME_VARIABLE: "a.ini#2", SLOT_VARIABLE: "1"}
    link = SupervisorLink.from_environment(env)
    assert link is not None and link.name == "a.ini#2"
    # a process the worker starts must not think itself supervised; the name and slot stay
    assert env == {NAME_VARIABLE: "a.ini#2", SLOT_VARIABLE: "1"}
    server = FakeServer()
    link.attach(server)
    supervisor_end.settimeout(5)
    server.started.set()
    assert supervisor_end.recv(64) == READY
    assert not server.stopped.wait(0.2)
    supervisor_end.close()  # the supervisor dies
    assert server.stopped.wait(5)


def test_no_link_without_a_supervisor_and_none_from_a_bad_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert SupervisorLink.from_environment({}) is None
    assert SupervisorLink.from_environment({LINK_VARIABLE: "x"}) is None
    with open(__file__) as not_a_socket:
        assert SupervisorLink.from_environment({LINK_VARIABLE: str(not_a_socket.fileno())}) is None
    assert "not a socket of a supervisor" in caplog.text


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "said"),
    [("0", "0: expected 1 or more worker processes per config"), ("two", "expected a whole")],
)
def test_a_worker_count_below_1_is_a_usage_error(
    value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", str(HELLO), "--workers", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --workers" in err and said in err


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_a_bad_config_fails_before_any_worker_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_processes: None
) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\nqueue_name = q\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", str(HELLO), str(bad), "--workers", "3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}, section [server]: key 'exchange_name' is missing" in err
    assert "Traceback" not in err


def test_the_in_memory_broker_cannot_have_worker_processes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_processes: None
) -> None:
    monkeypatch.setenv("TAVRIDA2_URL", "memory://")
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", str(HELLO), "--workers", "2"])
    assert exited.value.code == 2
    assert "worker processes need RabbitMQ" in capsys.readouterr().err


def test_each_config_gets_n_named_workers_with_slots() -> None:
    world = ROOT / "samples" / "deploy" / "world.ini"
    specs = launch.worker_specs([str(HELLO), str(world)], 2, "DEBUG")
    assert [(s.name, s.slot) for s in specs] == [
        (f"{HELLO}#1", 0),
        (f"{HELLO}#2", 1),
        (f"{world}#1", 0),
        (f"{world}#2", 1),
    ]
    assert specs[0].argv[1:] == ["-m", "tavrida2", "--log-level", "DEBUG", "run", str(HELLO)]
    assert specs[0].stop_timeout == 30.0
