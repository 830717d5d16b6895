"""Living services on RabbitMQ: hooks, broadcasts, announcements, single-process tasks, info.

Servers run in child processes: ``tavrida2 run CONFIG`` on a config file and a
controller module written to ``tmp_path`` (the hooks), or
``living_server_proc.py`` (the rest), which appends what it does to a record
file shared by the processes of a test. Each test runs on both engines.

- the hooks run in order on a real connection: ``pre_start`` (its cast is
  delivered), ``post_start``, ``pre_stop``; a failing ``pre_start`` makes
  ``tavrida2 run`` exit non-zero naming the hook and the error;
- a broadcast reaches each of 3 processes of one queue exactly once, a cast
  and a call exactly one of them;
- ``tavrida2 peers --json`` lists 2 live instances announcing every 0.5 s;
  after a SIGKILL the next listing shows only the survivor; an instance's
  announcements arrive every period (never 3 periods apart: they expire then);
- a ``single=True`` periodic task runs in one of 2 processes; SIGKILL it and
  the other takes over;
- ``tavrida2 call <service>.info`` answers the server's structure.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from tavrida2 import client, discovery
from tavrida2.liveness import HEARTBEAT_EXCHANGE
from tavrida2.messages import broadcast_exchange
from tests.integration.conftest import (
    BROKER_URL,
    ENGINES,
    Names,
    amqp_config,
    consumers,
    pika_params,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
COMMAND = str(Path(sys.executable).with_name("tavrida2"))
SCRIPT = Path(__file__).with_name("living_server_proc.py")
#: The bound of every wait in this file (generous: nothing here should take a second).
WAIT = 10.0
ANNOUNCE = 0.5


def engine_name(async_engine: bool) -> str:
    return "async" if async_engine else "sync"


def tavrida2(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a record file (a last line cut short is left out)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line]


# -- servers in child processes ---------------------------------------------------------


class Fleet:
    """``living_server_proc.py`` processes of one service and queue; stopped after the test."""

    def __init__(self, names: Names, workdir: Path) -> None:
        self.service = f"t2living{uuid.uuid4().hex[:12]}"
        self.queue = names.queue("living")
        self.exchange = names.exchange("living")
        names.exchanges.append(broadcast_exchange(self.service))
        self.workdir = workdir
        self.record = workdir / "record.jsonl"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        label: str,
        async_engine: bool,
        announce_period: float | None = None,
        single_period: float | None = None,
    ) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            str(SCRIPT),
            "--engine",
            engine_name(async_engine),
            "--service",
            self.service,
            "--queue",
            self.queue,
            "--exchange",
            self.exchange,
            "--record",
            str(self.record),
            "--label",
            label,
            "--connection-name",
            f"t2it-living-{label}",
        ]
        if announce_period is not None:
            args += ["--announce-period", str(announce_period)]
        if single_period is not None:
            args += ["--single-period", str(single_period)]
        with self.log(label).open("ab") as log:
            process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.processes[label] = process
        return process

    def log(self, label: str) -> Path:
        return self.workdir / f"{label}.log"

    def logs(self) -> str:
        return "\n".join(
            f"--- {label}:\n" + "\n".join(self.log(label).read_text().splitlines()[-15:])
            for label in self.processes
        )

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_records(self.record) if event is None or r["event"] == event]

    def wait_ready(self, *labels: str) -> None:
        """Until each process consumes (its ``post_start`` hook ran); fail if one exits."""

        def ready() -> bool:
            for label in labels:
                code = self.processes[label].poll()
                assert code is None, f"{label} exited with {code}:\n{self.logs()}"
            done = {r["label"] for r in self.records("ready")}
            return set(labels) <= done

        wait_until(ready, f"{', '.join(labels)} ready", WAIT)

    def kill(self, label: str) -> None:
        process = self.processes[label]
        process.send_signal(signal.SIGKILL)
        process.wait(WAIT)

    def terminate(self, label: str) -> int:
        """SIGTERM and wait: the exit code (SIGKILL after a while: then negative)."""
        process = self.processes[label]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(WAIT)
        return process.returncode

    def stop_all(self) -> None:
        for label in self.processes:
            self.terminate(label)


@pytest.fixture
def fleet(names: Names, tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(names, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


# -- (1) hooks, through `tavrida2 run CONFIG` -----------------------------------------------

HOOKS_MODULE = """\
import json

from tavrida2 import dispatcher, service

RECORD = @RECORD@
FAIL = @FAIL@


def record(event, value=None):
    with open(RECORD, "a") as stream:
        stream.write(json.dumps({"event": event, "value": value}) + "\\n")


@dispatcher.rpc_service(@SERVICE@)
class Hooks(service.ServiceController):
    @dispatcher.on("pre_start")
    @ASYNC@def open_pool(self, proxy):
        record("pre_start")
        if FAIL:
            raise ConnectionRefusedError("database at db:5432 refused")
        @AWAIT@proxy.@SERVICE_NAME@.note(what="sent by pre_start").cast()

    @dispatcher.on("post_start")
    @ASYNC@def started(self):
        record("post_start")

    @dispatcher.on("pre_stop")
    @ASYNC@def close_pool(self, proxy):
        record("pre_stop")

    @dispatcher.rpc_method(method="note")
    def note(self, request, proxy, what):
        record("note", what)
"""


def write_hooks_server(
    tmp_path: Path, names: Names, async_engine: bool, fail: bool
) -> tuple[Path, Path, str]:
    """A config file, a .ds file and a controller module in ``tmp_path``: (config, record, queue).

    The async engine gets ``async def`` hooks that await their cast, the sync
    engine plain ones.
    """
    service = f"t2hooks{uuid.uuid4().hex[:12]}"
    queue, exchange = names.queue("hooks"), names.exchange("hooks")
    record = tmp_path / "hooks.jsonl"
    module = (
        HOOKS_MODULE.replace("@RECORD@", repr(str(record)))
        .replace("@FAIL@", repr(fail))
        .replace("@SERVICE@", repr(service))
        .replace("@SERVICE_NAME@", service)
        .replace("@ASYNC@", "async " if async_engine else "")
        .replace("@AWAIT@", "await " if async_engine else "")
    )
    (tmp_path / "living_hooks.py").write_text(module)
    (tmp_path / "services.ds").write_text(f"[{service}]\nexchange = {exchange}\n")
    config = tmp_path / "hooks.ini"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            queue_name = "{queue}"
            exchange_name = "{exchange}"
            discovery = "services.ds"
            services = [{{"name": "{service}", "controller": "living_hooks.Hooks"}}]
            stop_timeout = 5
            announce = false

            [connection]
            host = 127.0.0.1
            port = 5672
            username = guest
            password = guest
            connection_attempts = 1
            retry_delay = 0.2
            async_engine = {str(async_engine).lower()}
            connection_name = t2it-living-hooks
            """
        )
    )
    return config, record, queue


@pytest.mark.parametrize("async_engine", ENGINES)
def test_hooks_run_in_order_and_a_cast_from_pre_start_is_delivered(async_engine, names, tmp_path):
    config, record, queue = write_hooks_server(tmp_path, names, async_engine, fail=False)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [COMMAND, "run", str(config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def delivered() -> bool:
            assert process.poll() is None, f"tavrida2 run exited:\n{log.read_text()}"
            events = [r["event"] for r in read_records(record)]
            return "note" in events and "post_start" in events

        wait_until(delivered, "the cast of pre_start handled, and post_start", WAIT)
        assert consumers(queue) == 1
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    assert code == 0, log.read_text()
    records = read_records(record)
    events = [r["event"] for r in records]
    hooks = [event for event in events if event != "note"]
    assert hooks == ["pre_start", "post_start", "pre_stop"], events
    assert [r["value"] for r in records if r["event"] == "note"] == ["sent by pre_start"]
    # the cast left in pre_start (connection up) and was handled once consuming
    assert events.index("pre_start") < events.index("note") < events.index("pre_stop")


@pytest.mark.parametrize("async_engine", ENGINES)
def test_a_failing_pre_start_makes_tavrida2_run_exit_non_zero_with_a_clear_error(
    async_engine, names, tmp_path
):
    config, record, queue = write_hooks_server(tmp_path, names, async_engine, fail=True)
    done = tavrida2("run", str(config), timeout=30)
    assert done.returncode != 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tavrida2: "), done.stderr
    assert "pre_start" in last and "Hooks.open_pool" in last, done.stderr
    assert "database at db:5432 refused" in last, done.stderr
    assert [r["event"] for r in read_records(record)] == ["pre_start"]
    assert not consumers(queue)  # it never consumed (None: the queue is gone with it)


# -- (2) a broadcast reaches every process, a request one ----------------------------------


@pytest.mark.parametrize("async_engine", ENGINES)
def test_a_broadcast_reaches_each_of_3_processes_once_and_a_cast_and_a_call_one(
    async_engine, fleet
):
    labels = ("one", "two", "three")
    for label in labels:
        fleet.start(label, async_engine)
    fleet.wait_ready(*labels)
    assert consumers(fleet.queue) == 3
    pids = {label: fleet.processes[label].pid for label in labels}

    disc = discovery.LocalDiscovery()
    disc.register_remote_service(fleet.service, fleet.exchange)
    with client.RPCClient(
        amqp_config(False), disc, source="t2it_ops", service=fleet.service
    ) as cli:
        cli.drop_cache(key="users").broadcast()
        cli.drop_cache(key="groups").broadcast()
        cli.note(what="once").cast()
        answer = cli.echo(n=7).call(timeout=WAIT).payload

    def all_handled() -> bool:
        return (
            len(fleet.records("drop_cache")) >= 6
            and len(fleet.records("note")) >= 1
            and len(fleet.records("echo")) >= 1
        )

    wait_until(all_handled, "2 broadcasts x 3 processes, the cast and the call", WAIT)
    time.sleep(1.0)  # a duplicate would show by now
    broadcasts = Counter((r["label"], r["value"]) for r in fleet.records("drop_cache"))
    assert broadcasts == Counter(
        {(label, key): 1 for label in labels for key in ("users", "groups")}
    )
    notes = fleet.records("note")
    assert [r["value"] for r in notes] == ["once"], notes
    echoes = fleet.records("echo")
    assert [r["value"] for r in echoes] == [7], echoes
    assert answer["n"] == 7 and answer["pid"] == echoes[0]["pid"]
    assert {r["pid"] for r in fleet.records("ready")} == set(pids.values())

    # and all stop cleanly, calling pre_stop
    for label in labels:
        assert fleet.terminate(label) == 0, fleet.logs()
    assert sorted(r["label"] for r in fleet.records("pre_stop")) == sorted(labels)


# -- (3) tavrida2 peers ---------------------------------------------------------------------


def peers(*extra: str, wait: float = 1.1) -> list[dict[str, Any]]:
    done = tavrida2("peers", "--url", BROKER_URL, "--wait", str(wait), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("async_engine", ENGINES)
def test_peers_lists_live_instances_and_not_one_killed(async_engine, fleet):
    for label in ("first", "second"):
        fleet.start(label, async_engine, announce_period=ANNOUNCE)
    fleet.wait_ready("first", "second")
    first, second = fleet.processes["first"].pid, fleet.processes["second"].pid

    def both_listed() -> list[dict[str, Any]] | None:
        rows = [row for row in peers() if fleet.service in row["services"]]
        return rows if {row["pid"] for row in rows} == {first, second} else None

    seen = wait_until(both_listed, "both instances listed", WAIT)
    assert len(seen) == 2, seen
    for row in seen:
        assert row["services"] == [fleet.service]
        assert row["queue"] == fleet.queue
        assert row["engine"] == engine_name(async_engine)
        assert row["state"] == "alive"
        assert 0 <= row["last_seen"] <= 1.1 + 0.5
        assert row["started_at"] <= time.time()
    assert len({row["instance"] for row in seen}) == 2

    ds = fleet.workdir / "living.ds"
    ds.write_text(f"[{fleet.service}]\nexchange = {fleet.exchange}\n")
    fleet.kill("first")
    killed_at = time.monotonic()
    # a listing started right after the kill: it listens 1.1 s, ending within 3 periods of
    # the kill (plus the command's start), and must hear the survivor and only it
    after = peers("--ds", str(ds))
    ended = time.monotonic() - killed_at
    assert [row["pid"] for row in after] == [second], (
        f"listing ended {ended:.2f} s after the kill: {after}\n{fleet.logs()}"
    )
    assert fleet.processes["second"].poll() is None


def announcements_of(pid: int, seconds: float) -> list[float]:
    """When (monotonic) the announcements of process ``pid`` arrived during ``seconds``."""
    connection = pika.BlockingConnection(pika_params())
    arrivals: list[float] = []

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if json.loads(body).get("pid") == pid:
            arrivals.append(time.monotonic())

    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue, HEARTBEAT_EXCHANGE, "")
        channel.basic_consume(queue, on_message, auto_ack=True)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            connection.process_data_events(time_limit=min(left, 0.1))
    finally:
        connection.close()
    return arrivals


@pytest.mark.parametrize("async_engine", ENGINES)
def test_an_instance_announces_itself_every_period(async_engine, fleet):
    fleet.start("only", async_engine, announce_period=ANNOUNCE)
    fleet.wait_ready("only")
    arrivals = announcements_of(fleet.processes["only"].pid, 3.0)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(arrivals)]
    # every 0.5 s: about 6 in 3 s; they expire after 3 periods, so no gap may reach that
    assert len(arrivals) >= 3, f"{len(arrivals)} announcement(s) in 3 s, gaps {gaps}"
    assert max(gaps) < 3 * ANNOUNCE, f"gaps between announcements: {gaps}\n{fleet.logs()}"


# -- (4) a task that runs in one process only -------------------------------------------------


@pytest.mark.parametrize("async_engine", ENGINES)
def test_a_single_periodic_task_runs_in_one_process_and_another_takes_over(async_engine, fleet):
    period = 0.2
    for label in ("a", "b"):
        fleet.start(label, async_engine, single_period=period)
    fleet.wait_ready("a", "b")
    time.sleep(2.0)
    ticks = fleet.records("tick")
    holders = Counter(r["label"] for r in ticks)
    assert len(holders) == 1, f"runs from both processes: {holders}\n{fleet.logs()}"
    ((holder, runs),) = holders.items()
    assert runs >= 4, f"only {runs} run(s) in 2 s with a period of {period} s"

    other = "b" if holder == "a" else "a"
    fleet.kill(holder)
    killed_at = time.time()
    wait_until(
        lambda: len([r for r in fleet.records("tick") if r["label"] == other]) >= 3,
        f"{other} taking over the task",
        WAIT,
    )
    after = [r for r in fleet.records("tick") if r["at"] > killed_at]
    assert {r["label"] for r in after} == {other}, after
    took_over = min(r["at"] for r in after) - killed_at
    assert took_over < WAIT, took_over
    print(f"{engine_name(async_engine)}: {runs} runs in 2 s; taken over in {took_over:.2f} s")


# -- <service>.info -------------------------------------------------------------------------


@pytest.mark.parametrize("async_engine", ENGINES)
def test_info_answers_the_structure_through_tavrida2_call(async_engine, fleet):
    process = fleet.start("only", async_engine, announce_period=ANNOUNCE, single_period=30)
    fleet.wait_ready("only")
    done = tavrida2(
        "call",
        f"{fleet.service}.info",
        "--exchange",
        fleet.exchange,
        "--url",
        BROKER_URL,
        "--timeout",
        str(WAIT),
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["queue"] == fleet.queue
    assert info["exchange"] == fleet.exchange
    assert info["engine"] == engine_name(async_engine)
    assert info["pid"] == process.pid
    (controller,) = info["controllers"]
    assert controller["service"] == fleet.service
    assert controller["broadcasts"] == [f"{fleet.service}.drop_cache"]
    assert controller["tasks"] == [
        {"method": "tick", "schedule": "every 30 s", "timeout": 30.0, "single": True}
    ]
    assert controller["hooks"] == {"post_start": ["ready"], "pre_stop": ["stopping"]}
    assert {h["entry_point"] for h in controller["handlers"]} == {
        f"{fleet.service}.note",
        f"{fleet.service}.echo",
    }
    assert broadcast_exchange(fleet.service) in info["exchanges"]
    assert "tavrida2.heartbeat" in info["exchanges"]
    assert fleet.queue in info["queues"]
    broadcast_queues = [q for q in info["queues"] if q.startswith(f"{fleet.queue}.broadcast.")]
    assert broadcast_queues == [f"{fleet.queue}.broadcast.{info['instance']}"]
