"""samples/from-1.0: a Tavrida 1.0 project, only its import renamed, under ``tavrida2 run``.

The sample's files are copied to a folder of the test, with the prefix
``from10_`` of its exchanges and queues made unique; both servers are started
with the ``tavrida2`` command, or as 1.0 started them (``python
shop_server.py --config-file shop_config.cfg``), on the sample's 1.0-style
config files (1.0's keys, ``[ssl]`` with empty values, Python-literal
values), and driven by the
sample's client script, which finds them with the sample's 1.0-style custom
discovery. Checked: a handler returning None answers a waiting caller with an
empty Response and a 1.0-style call not at all; the middleware saw every kind
of message; an error keeps its class and code; a nackable error requeued the
cast once; SIGTERM stops both servers with exit status 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.integration.conftest import consumers, pika_params, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "from-1.0"
COMMAND = str(Path(sys.executable).with_name("tavrida2"))
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SERVERS = ("stock", "shop")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The sample in ``tmp_path``, its names prefixed uniquely; deleted from the broker after."""
    prefix = f"t2it-from10-{uuid.uuid4().hex[:12]}_"
    folder = tmp_path / "from-1.0"
    shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("services.ds", "shop_config.cfg", "stock_config.cfg"):
        path = folder / name
        path.write_text(path.read_text().replace("from10_", prefix))
    yield folder, prefix
    connection = pika.BlockingConnection(pika_params())
    try:
        channel = connection.channel()
        for service in SERVERS:
            queue = f"{prefix}{service}_queue"
            for name in (queue, f"{queue}.dlq", f"{queue}.retry"):
                channel.queue_delete(name)
            for exchange in (f"{queue}.dlx", f"{prefix}{service}_exchange"):
                channel.exchange_delete(exchange)
            channel.exchange_delete(f"{prefix}{service}_notifications")
    finally:
        connection.close()


def server_command(launch: str, folder: Path, name: str) -> list[str]:
    if launch == "tavrida2_run":
        return [COMMAND, "run", str(folder / f"{name}_config.cfg")]
    # as Tavrida 1.0 ran it: the server script with --config-file, from its folder
    return [sys.executable, f"{name}_server.py", "--config-file", f"{name}_config.cfg"]


@pytest.mark.parametrize("launch", ["tavrida2_run", "script"])
def test_the_1_0_project_runs_under_tavrida2(project: tuple[Path, str], launch: str) -> None:
    folder, prefix = project
    environment = {**os.environ, "TAVRIDA2_URL": BROKER_URL}
    processes: dict[str, subprocess.Popen[str]] = {}
    logs = {name: folder / f"{name}.log" for name in SERVERS}
    try:
        for name in SERVERS:
            with open(logs[name], "w") as out:
                processes[name] = subprocess.Popen(
                    server_command(launch, folder, name),
                    cwd=ROOT if launch == "tavrida2_run" else folder,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=environment,
                )
        for name in SERVERS:
            wait_until(
                lambda n=name: (
                    consumers(f"{prefix}{n}_queue") == 1 or processes[n].poll() is not None
                ),
                f"{name} consuming",
            )
            assert processes[name].poll() is None, logs[name].read_text()

        done = subprocess.run(
            [sys.executable, str(folder / "client_app.py"), "--url", BROKER_URL],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        codes = {}
        for name, proc in processes.items():
            proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
    report = {name: log.read_text() for name, log in logs.items()}

    assert result["ping"] == {}  # None answers a waiting caller with an empty Response
    assert result["level"] == {
        "item": "teapot",
        "left": 6,  # 3 - 2 reserved + 5 restocked
        "released": ["teapot"],
        "restock_attempts": 2,  # WarehouseBusy (nackable) requeued it once
    }
    # the two orders run side by side: their events interleave. An error's class is
    # its module's: the script's own classes are __main__'s, as in 1.0
    module = "stock_server" if launch == "tavrida2_run" else "__main__"
    assert sorted(result["status"]["events"]) == sorted(
        [
            "order teapot x2",
            "reserved teapot, 1 left",
            "low stock: teapot",
            "order cup x50",
            f"reserve failed: {module}.OutOfStock (code 2001)",
        ]
    ), result
    assert "release answered" not in result["status"]["events"]  # stock.release returned {}
    assert set(result["status"]["audited"]) == {"request", "response", "error", "notification"}
    assert codes == dict.fromkeys(SERVERS, 0), report
    assert "Traceback" not in report["shop"], report["shop"]
    assert "WarehouseBusy" in report["stock"] and "requeued at once" in report["stock"]
