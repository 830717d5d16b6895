"""The agents sample (samples/agents) as a deployment: ``tavrida2 run`` processes on RabbitMQ.

Four processes — users, comments and two emails servers — run the sample's
config files unchanged, in a virtual host of their own (``TAVRIDA2_URL``)
that is deleted afterwards. The scenario: a user registers and is welcomed by
mail (a subscription); the periodic task posts a comment that is mailed and
counted; broadcasts from a handler, from ``RPCClient`` and from
``AsyncRPCClient`` reach both emails servers; ``info`` and ``tavrida2 peers``
describe the servers; the cron task mails its report at the full minute;
SIGTERM stops each process with exit code 0 after its ``pre_stop`` hook, and
a broadcast then finds no instance. What the servers did is read in their logs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tavrida2 import client, config, discovery, exceptions
from tests.integration.conftest import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "samples" / "agents"
DS = AGENTS / "services.ds"
COMMAND = str(Path(sys.executable).with_name("tavrida2"))
#: Each process: its name and config file, in the order they start.
PROCESSES = (
    ("emails-1", "emails"),
    ("emails-2", "emails"),
    ("comments", "comments"),
    ("users", "users"),
)
WAIT = 30.0
#: The cron task runs at the next full minute after users started.
CRON_WAIT = 90.0


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"


@pytest.fixture
def url() -> Iterator[str]:
    """A virtual host for the sample's durable queues and exchanges, deleted afterwards."""
    vhost = f"t2agents-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


class Deployment:
    """The sample's processes, their logs, and the ``tavrida2`` command against them."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.env = dict(os.environ, TAVRIDA2_URL=url)
        self.logs = {name: folder / f"{name}.log" for name, _ in PROCESSES}
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, config_name: str) -> None:
        with open(self.logs[name], "w") as out:
            self.procs[name] = subprocess.Popen(
                [COMMAND, "run", str(AGENTS / f"{config_name}.ini")],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_until(
            lambda: "consuming" in self.log(name) or self.procs[name].poll() is not None,
            f"{name} consuming",
            WAIT,
        )
        assert self.procs[name].poll() is None, self.log(name)

    def log(self, name: str) -> str:
        return self.logs[name].read_text()

    def emails_logs(self) -> list[str]:
        return [self.log("emails-1"), self.log("emails-2")]

    def mailed(self, subject: str, to: str) -> int:
        """How many emails servers logged sending ``subject`` to ``to``."""
        return sum(f"sent {subject!r} to {to}" in log for log in self.emails_logs())

    def muted_everywhere(self, address: str) -> bool:
        """Whether both emails servers logged muting ``address``."""
        return all(f"emails: muted {address}" in log for log in self.emails_logs())

    def stop(self) -> dict[str, int | str]:
        """SIGTERM to each process still running; their exit codes."""
        codes: dict[str, int | str] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = "killed"
        return codes

    def tavrida2(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COMMAND, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def call(self, target: str, *params: str) -> object:
        done = self.tavrida2("call", target, *params, "--ds", str(DS), "--timeout", "20")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def client(self) -> client.RPCClient:
        disc = discovery.FileBasedDiscoveryService(DS, "users")
        conf = config.ConnectionConfig.from_url(self.url, connection_attempts=1)
        return client.RPCClient(conf, disc, source="agents_test")


@pytest.fixture
def deployment(url: str, tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(url, tmp_path)
    try:
        for name, config_name in PROCESSES:
            deployed.start(name, config_name)
        yield deployed
    finally:
        deployed.stop()


def test_the_agents_sample_runs_as_four_processes(deployment: Deployment) -> None:
    # a user registers: users publishes, one emails server sends the welcome
    assert deployment.call("users.register", "name=ann", "email=ann@example.com") == {"user_id": 1}
    wait_until(lambda: deployment.mailed("welcome", "ann@example.com"), "ann's welcome", WAIT)
    assert deployment.mailed("welcome", "ann@example.com") == 1

    # users.inform (2 s after start, then every 15 s) posts a comment: comments counts it
    # and has it mailed, users asks for the count
    wait_until(lambda: "users: user 1 has" in deployment.log("users"), "the count", WAIT)
    assert "comments: comment 1 by user 1: 'informer text'" in deployment.log("comments")
    wait_until(
        lambda: deployment.mailed("new comment", "user1@example.com"), "the comment's mail", WAIT
    )

    # broadcasts reach both emails servers: from a handler, RPCClient, AsyncRPCClient
    assert deployment.call("users.unsubscribe", "user_id=1") == {"muted": "ann@example.com"}
    with deployment.client() as cli:
        cli.emails.mute(address="bob@example.com").broadcast()

    async def from_asyncio() -> None:
        disc = discovery.FileBasedDiscoveryService(DS, "users")
        conf = config.ConnectionConfig.from_url(deployment.url, connection_attempts=1)
        async with client.AsyncRPCClient(conf, disc, source="agents_test") as acli:
            await acli.emails.mute(address="carol@example.com").broadcast()

    asyncio.run(from_asyncio())
    for address in ("ann@example.com", "bob@example.com", "carol@example.com"):
        wait_until(
            functools.partial(deployment.muted_everywhere, address),
            f"{address} muted by both emails servers",
            WAIT,
        )

    # <service>.info: the structure of one users server
    info = deployment.call("users.info")
    assert isinstance(info, dict)
    (users,) = info["controllers"]
    assert [task["method"] for task in users["tasks"]] == ["inform", "report"]
    assert users["hooks"] == {
        "pre_start": ["open_store"],
        "post_start": ["ready"],
        "pre_stop": ["close_store"],
    }
    assert users["subscriptions"] == ["comments.add"]

    # tavrida2 peers: every server announces itself (every 5 s)
    peers = deployment.tavrida2("peers", "--ds", str(DS), "--json", "--wait", "8")
    assert peers.returncode == 0, peers.stderr
    heard = sorted((p["services"], p["engine"]) for p in json.loads(peers.stdout))
    assert heard == [
        (["comments"], "async"),
        (["emails"], "sync"),
        (["emails"], "sync"),
        (["users"], "sync"),
    ]

    # the cron task (single=True) mails its report at the full minute
    wait_until(
        lambda: deployment.mailed("users report", "admin@example.com"), "the report", CRON_WAIT
    )

    # SIGTERM: each process calls its pre_stop hook and exits 0
    codes = deployment.stop()
    logs = {name: deployment.log(name) for name in deployment.logs}
    assert codes == {name: 0 for name, _ in PROCESSES}, logs
    assert "users: closing the store (1 users)" in logs["users"]
    assert "comments: closing the cache" in logs["comments"]
    for name in ("emails-1", "emails-2"):
        assert "emails: disconnecting SMTP" in logs[name]
    for name, log in logs.items():
        assert " ERROR " not in log and "Traceback" not in log, f"{name}:\n{log}"

    # the emails servers' broadcast queues went with them (auto-delete): nobody to reach
    # (once the broker has noticed the closed connections)
    with deployment.client() as cli:

        def unroutable() -> bool:
            try:
                cli.emails.mute(address="dan@example.com").broadcast()
            except exceptions.UnroutableMessage:
                return True
            return False

        wait_until(unroutable, "a broadcast to emails to find no queue", WAIT)
