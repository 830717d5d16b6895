"""``tavrida2 run --reload`` as a real process on RabbitMQ: an edited controller answers.

The server's controllers come from a ``services`` folder in a temporary
directory; editing one restarts the server, and the next calls get the new
answer; a syntax error is reported and the server starts again once fixed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tavrida2 import client, discovery
from tests.integration.conftest import Names, amqp_config, consumers, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

COMMAND = str(Path(sys.executable).with_name("tavrida2"))

CONTROLLER = """
from tavrida2 import dispatcher, service

@dispatcher.rpc_service("reloaded")
class Reloaded(service.ServiceController):
    @dispatcher.rpc_method(method="version")
    def version(self, request, proxy):
        return {{"version": {version}}}
"""


class Deployment:
    """A config, a .ds file and a services folder in a temporary directory."""

    def __init__(self, folder: Path, names: Names) -> None:
        self.folder = folder
        self.queue = names.queue("reload")
        self.exchange = names.exchange("reload")
        self.controller = folder / "controllers" / "reloaded.py"
        self.controller.parent.mkdir()
        self.write(1)
        (folder / "services.ds").write_text(f"[reloaded]\nexchange = {self.exchange}\n")
        self.config = folder / "server.ini"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [server]
                queue_name = "{self.queue}"
                exchange_name = "{self.exchange}"
                discovery = "services.ds"
                services = "controllers/"
                stop_timeout = 5
                [connection]
                host = 127.0.0.1
                username = guest
                password = guest
                """
            )
        )
        self.log = folder / "server.log"
        self.workers = 1

    def write(self, version: Any) -> None:
        self.controller.write_text(CONTROLLER.format(version=version))


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def deployed(
    tmp_path: Path, names: Names, request: pytest.FixtureRequest
) -> Iterator[tuple[Deployment, subprocess.Popen[str]]]:
    deployment = Deployment(tmp_path, names)
    deployment.workers = request.param
    with open(deployment.log, "w") as out:
        proc = subprocess.Popen(
            [COMMAND, "run", str(deployment.config), "--reload", "--workers", str(request.param)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_until(
            lambda: consumers(deployment.queue) == request.param or proc.poll() is not None,
            "the server consuming",
        )
        assert proc.poll() is None, deployment.log.read_text()
        yield deployment, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def version(cli: Any) -> Any:
    ok, (code, result) = cli.reloaded.version().try_call(timeout=2)
    return result.get("version") if ok and code == 0 else None


def test_an_edited_controller_answers_after_the_restart(
    deployed: tuple[Deployment, subprocess.Popen[str]],
) -> None:
    deployment, proc = deployed
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("reloaded", deployment.exchange)
    with client.RPCClient(amqp_config(False), disc, source="it") as cli:
        assert version(cli) == 1
        time.sleep(0.5)
        deployment.write(2)
        wait_until(lambda: version(cli) == 2, "the new version answering")
        # every worker was started again: none answers the old version
        wait_until(lambda: consumers(deployment.queue) == deployment.workers, "all workers")
        assert [version(cli) for _ in range(6)] == [2] * 6

        deployment.write("(")  # a syntax error: the server cannot start
        wait_until(
            lambda: "it starts again when a file changes" in deployment.log.read_text(),
            "the failed start reported",
        )
        log = deployment.log.read_text()
        assert "reloaded.py" in log and "SyntaxError" in log
        assert proc.poll() is None  # still watching

        deployment.write(3)
        wait_until(lambda: version(cli) == 3, "the fixed version answering")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, deployment.log.read_text()
    assert consumers(deployment.queue) == 0
