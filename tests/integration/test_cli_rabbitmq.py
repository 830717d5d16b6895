"""``tavrida2 run`` on the config-file sample, ``tavrida2 call`` and ``cast`` against it.

Two server processes (samples/deploy/hello.ini on the sync engine, world.ini on
the async engine) started with the installed ``tavrida2`` command; the answer
of ``call`` printed as JSON; a remote error with exit code 1; SIGTERM stops
both servers with exit code 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.integration.conftest import consumers, pika_params, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "samples" / "deploy"
COMMAND = str(Path(sys.executable).with_name("tavrida2"))
QUEUES = ("t2sample_hello_queue", "t2sample_world_queue")
EXCHANGES = ("t2sample_hello_exchange", "t2sample_world_exchange", "t2sample_hello_notifications")


def tavrida2(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _delete_sample_topology() -> None:
    connection = pika.BlockingConnection(pika_params())
    try:
        channel = connection.channel()
        for queue in QUEUES:
            channel.queue_delete(queue)
        for exchange in EXCHANGES:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Both sample servers running; their stderr logs by name."""
    _delete_sample_topology()
    logs = {name: tmp_path / f"{name}.log" for name in ("world", "hello")}
    servers = {}
    try:
        for name, log in logs.items():
            with open(log, "w") as out:
                servers[name] = subprocess.Popen(
                    [COMMAND, "run", str(DEPLOY / f"{name}.ini")],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
        for name, queue in zip(logs, ("t2sample_world_queue", "t2sample_hello_queue"), strict=True):
            wait_until(
                lambda q=queue, n=name: consumers(q) == 1 or servers[n].poll() is not None,
                f"{name} consuming",
            )
            assert servers[name].poll() is None, logs[name].read_text()
        yield logs
    finally:
        codes = {}
        for name, proc in servers.items():
            proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = "killed"
        _delete_sample_topology()
    assert codes == {"world": 0, "hello": 0}, {n: log.read_text() for n, log in logs.items()}


def test_run_call_and_cast_on_the_config_file_sample(deployed: dict[str, Path]) -> None:
    ds = str(DEPLOY / "services.ds")
    called = tavrida2("call", "test_hello.hello", "param=123", "--ds", ds, "--timeout", "10")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"hello": 123}

    world = tavrida2(
        "call", "test_world.world", 'param="you"', "--exchange", "t2sample_world_exchange"
    )
    assert world.returncode == 0, world.stderr
    assert json.loads(world.stdout) == {"greeting": "world says hello to you"}

    cast = tavrida2("cast", "test_hello.hello", "param=124", "--ds", ds)
    assert cast.returncode == 0, cast.stderr
    assert cast.stdout == ""
    assert "sent test_hello.hello" in cast.stderr

    # what the servers did with them: handlers, the response handler, the notification
    wait_until(lambda: "hello(param=124)" in deployed["hello"].read_text(), "the cast handled")
    wait_until(
        lambda: deployed["hello"].read_text().count("test_world answered") == 2,
        "both answers of test_world at hello's response handler",
    )
    wait_until(
        lambda: "notification from test_hello: param=124" in deployed["world"].read_text(),
        "the notification at world",
    )


def test_call_of_a_missing_method_exits_1_with_the_remote_error(deployed: dict[str, Path]) -> None:
    ds = str(DEPLOY / "services.ds")
    failed = tavrida2("call", "test_hello.nope", "--ds", ds, "--timeout", "10")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "Traceback" not in failed.stderr
    assert "remote error: tavrida2.exceptions.HandlerNotFound" in failed.stderr
    assert "(code 1004)" in failed.stderr


def test_call_with_the_broker_unreachable_exits_1() -> None:
    failed = tavrida2(
        "call", "svc.m", "--exchange", "x", "--url", "amqp://guest:guest@127.0.0.1:1/%2F"
    )
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "127.0.0.1:1" in failed.stderr
