"""``tavrida2 run CONFIG --workers N`` on RabbitMQ: real supervisor, real worker processes.

Three workers share a queue (each handles some, the total is what was sent); a worker
killed with SIGKILL mid-stream is restarted and nothing is lost; SIGTERM to the
supervisor drains every worker (handlers in progress finish, exit code 0, the queue
is left empty). The handlers (tests/integration/workers_app.py) write what they did
to one file per worker pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tavrida2.client import RPCClient
from tavrida2.discovery import LocalDiscovery
from tavrida2.exceptions import TavridaError
from tests.integration.conftest import (
    ENGINES,
    WAIT,
    Names,
    amqp_config,
    consumers,
    queue_info,
    wait_until,
)
from tests.integration.workers_app import SERVICE

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


class Group:
    """A supervisor started with ``python -m tavrida2 run CONFIG --workers N``."""

    def __init__(self, tmp_path: Path, names: Names, workers: int, **connection: Any) -> None:
        self.workers = workers
        self.queue = names.queue("workers")
        self.exchange = names.exchange("workers")
        self.out = tmp_path / "out"
        self.out.mkdir()
        (tmp_path / "services.ds").write_text(f"[{SERVICE}]\nexchange = {self.exchange}\n")
        settings = {"host": "127.0.0.1", "port": 5672, "retry_delay": 0.2, **connection}
        self.config = tmp_path / "workers.ini"
        self.config.write_text(
            "[server]\n"
            f'queue_name = "{self.queue}"\n'
            f'exchange_name = "{self.exchange}"\n'
            'discovery = "services.ds"\n'
            f'services = [{{"name": "{SERVICE}", '
            '"controller": "tests.integration.workers_app.WorkersController"}]\n'
            "stop_timeout = 10\n"
            "announce = false\n"
            "[connection]\n" + "".join(f"{k} = {_ini(v)}\n" for k, v in settings.items())
        )
        self.log_path = tmp_path / "supervisor.log"
        env = dict(os.environ, T2W_OUT=str(self.out), PYTHONPATH=str(ROOT))
        env.pop("TAVRIDA2_URL", None)
        command = [sys.executable, "-m", "tavrida2", "run", str(self.config)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [*command, "--workers", str(workers)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_consuming()

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_consuming(self) -> None:
        wait_until(
            lambda: consumers(self.queue) == self.workers or self.proc.poll() is not None,
            f"{self.workers} workers consuming",
        )
        assert self.proc.poll() is None, self.log

    def lines(self) -> dict[int, list[str]]:
        """What each worker pid wrote."""
        return {int(path.stem): path.read_text().splitlines() for path in self.out.glob("*.log")}

    def handled(self, what: str = "end") -> Counter[int]:
        """How many times each ``n`` was handled (an ``end`` line), over all workers."""
        return Counter(
            int(line.split()[1])
            for lines in self.lines().values()
            for line in lines
            if line.startswith(what + " ")
        )

    def stop(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def group(tmp_path: Path, names: Names) -> Iterator[Callable[..., Group]]:
    started: list[Group] = []

    def start(workers: int, **connection: Any) -> Group:
        running = Group(tmp_path, names, workers, **connection)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.send_signal(signal.SIGTERM)
            try:
                running.proc.wait(30)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait(10)


def _ini(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def client(group: Group) -> RPCClient:
    disc = LocalDiscovery()
    disc.register_remote_service(SERVICE, group.exchange)
    return RPCClient(amqp_config(False), disc, source="t2workers_test")


def test_three_workers_share_a_queue(group: Callable[..., Group]) -> None:
    workers = group(3)
    with client(workers) as cli:
        calls = [cli.t2workers.whoami(n=i).call_async(timeout=WAIT) for i in range(30)]
        for n in range(300):
            cli.t2workers.record(n=n, delay=0.002).cast()
        answers = [handle.result().payload for handle in calls]
    wait_until(lambda: sum(workers.handled().values()) >= 300, "300 casts handled")
    assert workers.handled() == Counter(range(300)), "each cast handled once"
    assert sorted(answer["n"] for answer in answers) == list(range(30))
    per_pid = {
        pid: sum(line.startswith("end ") for line in lines)
        for pid, lines in workers.lines().items()
    }
    assert len(per_pid) == 3 and all(count > 0 for count in per_pid.values()), per_pid
    assert {answer["pid"] for answer in answers} <= set(per_pid)
    assert workers.stop() == 0, workers.log
    assert "workers, stopped: 3 stopped" in workers.log


def test_a_killed_worker_is_restarted_and_nothing_is_lost(group: Callable[..., Group]) -> None:
    workers = group(3)
    with client(workers) as cli:
        for n in range(300):
            cli.t2workers.record(n=n, delay=0.02).cast()
        calls = [cli.t2workers.whoami(n=i).call_async(timeout=WAIT * 2) for i in range(30)]
        wait_until(lambda: sum(workers.handled().values()) >= 60, "60 casts handled")
        victim = max(workers.lines(), key=lambda pid: len(workers.lines()[pid]))
        os.kill(victim, signal.SIGKILL)
        outcomes = []
        for handle in calls:
            try:
                outcomes.append(handle.result().payload["n"])
            except (TavridaError, TimeoutError) as exc:  # "returned or raised"
                outcomes.append(repr(exc))
    wait_until(lambda: set(workers.handled()) == set(range(300)), "every cast handled")
    assert outcomes == list(range(30)), "every call answered (redelivered if the victim had it)"
    wait_until(lambda: f"pid {victim} stopped on its own (signal SIGKILL)" in workers.log, "log")
    assert "restarting it in 0.5 s (restart 1; the group keeps running)" in workers.log
    workers.wait_consuming()  # three again, one of them new
    info = queue_info(workers.queue)
    assert info is not None and info["messages_ready"] == info["messages_unacknowledged"] == 0
    assert workers.stop() == 0, workers.log


@pytest.mark.parametrize("async_engine", ENGINES)
def test_sigterm_to_the_supervisor_drains_every_worker(
    group: Callable[..., Group], async_engine: bool
) -> None:
    workers = group(3, async_engine=async_engine, prefetch_count=1)
    with client(workers) as cli:
        for n in range(3):
            cli.t2workers.record(n=n, delay=1.5).cast()
    wait_until(lambda: len(workers.handled("start")) == 3, "each worker in a handler")
    assert len(workers.lines()) == 3, "one message per worker (prefetch 1)"
    assert workers.handled() == Counter(), "all three still in their handlers"
    assert workers.stop() == 0, workers.log
    assert workers.handled() == Counter(range(3)), "the handlers in progress finished, once"
    wait_until(lambda: queue_info(workers.queue) is not None, "the queue")
    info = queue_info(workers.queue)
    assert info is not None
    assert (info["consumers"], info["messages_ready"], info["messages_unacknowledged"]) == (0, 0, 0)
    assert workers.log.count("ended: exit code 0)") == 3


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_the_bench_server_with_worker_processes(tmp_path: Path, names: Names, engine: str) -> None:
    """bench/t2_engines.py with T2_WORKERS=2: ready once both consume; W3 counts both."""
    prefix = f"t2it-bench-{names.tag}"
    names.queues.append(prefix)
    names.exchanges.append(prefix + "_exchange")
    ready = tmp_path / "ready"
    env = dict(
        os.environ,
        T2_ENGINE=engine,
        T2_WORKERS="2",
        BENCH_PREFIX=prefix,
        BENCH_SCALE="0.02",
        BENCH_READY_FILE=str(ready),
        PYTHONPATH=str(ROOT),
    )
    script = str(ROOT / "bench" / "t2_engines.py")
    server_log = tmp_path / "server.log"
    with open(server_log, "w") as log:
        server = subprocess.Popen(
            [sys.executable, script, "server"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: ready.exists() or server.poll() is not None, "the bench server ready")
        assert server.poll() is None, server_log.read_text()
        assert int(ready.read_text()) == server.pid  # the supervisor says ready...
        assert consumers(prefix) == 2  # ...once both workers consume
        env["BENCH_SERVER_PID"] = str(server.pid)
        done = subprocess.run(
            [sys.executable, script, "client"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        results = [
            json.loads(line.removeprefix("RESULT "))
            for line in done.stdout.splitlines()
            if line.startswith("RESULT ")
        ]
        assert [r["workload"] for r in results] == ["w1", "w2", "w3"]
        assert all("error" not in r for r in results), results
        # the workers' CPU is read (clock ticks of 10 ms: a short workload may show 0.0)
        assert all(r["cpu_s"]["server"] is not None for r in results), results
        assert sum(r["cpu_s"]["server"] for r in results) > 0, results
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, server_log.read_text()
