"""``tavrida2 run CONFIG --metrics-port PORT`` on RabbitMQ: a real process, scraped over HTTP.

Known traffic (calls that succeed and fail, casts that fail and are
dead-lettered, casts that succeed) must show as exact counts at
``http://127.0.0.1:PORT/metrics``; the broker closing the server's connection
shows as one reconnect; SIGTERM still stops the server with exit code 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tavrida2.client import RPCClient
from tavrida2.discovery import LocalDiscovery
from tavrida2.exceptions import RemoteError
from tests.integration.conftest import (
    ENGINES,
    Names,
    amqp_config,
    close_connection,
    connection_pids,
    consumers,
    wait_until,
)
from tests.integration.metrics_app import SERVICE

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            first = int(sock.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


class Process:
    """``python -m tavrida2 run CONFIG --metrics-port PORT`` with a config of the test's own."""

    def __init__(self, tmp_path: Path, names: Names, async_engine: bool, workers: int = 1) -> None:
        self.queue = names.queue("metrics")
        self.exchange = names.exchange("metrics")
        self.connection_name = names.connection("metrics")
        self.port = free_ports(workers)
        self.workers = workers
        (tmp_path / "services.ds").write_text(f"[{SERVICE}]\nexchange = {self.exchange}\n")
        config = tmp_path / "metrics.ini"
        config.write_text(
            "[server]\n"
            f'queue_name = "{self.queue}"\n'
            f'exchange_name = "{self.exchange}"\n'
            'discovery = "services.ds"\n'
            f'services = [{{"name": "{SERVICE}", '
            '"controller": "tests.integration.metrics_app.MetricsController"}]\n'
            "max_attempts = 1\n"
            "stop_timeout = 10\n"
            "announce = false\n"
            "[connection]\n"
            "host = 127.0.0.1\n"
            "port = 5672\n"
            "retry_delay = 0.2\n"
            "reconnect_attempts = -1\n"
            f"connection_name = {self.connection_name}\n"
            f"async_engine = {str(async_engine).lower()}\n"
        )
        self.log_path = tmp_path / "server.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("TAVRIDA2_URL", None)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tavrida2", "run", str(config),
                 "--metrics-port", str(self.port), "--workers", str(workers)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(
            lambda: consumers(self.queue) == workers or self.proc.poll() is not None, "consuming"
        )
        assert self.proc.poll() is None, self.log

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def scrape(self, worker: int = 0) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample at /metrics (of worker ``worker``), by name and labels."""
        url = f"http://127.0.0.1:{self.port + worker}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sum over the workers."""
        key = (name, frozenset(labels.items()))
        return sum(self.scrape(worker).get(key, 0.0) for worker in range(self.workers))

    def handled(self, method: str, outcome: str = "ok") -> float:
        return self.value(
            "tavrida2_messages_total", service=SERVICE, method=method, type="request",
            outcome=outcome,
        )  # fmt: skip

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture(params=ENGINES)
def process(request: pytest.FixtureRequest, tmp_path: Path, names: Names) -> Iterator[Process]:
    running = Process(tmp_path, names, bool(request.param))
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(10)


def test_a_scrape_after_known_traffic_shows_its_counts(process: Process) -> None:
    disc = LocalDiscovery()
    disc.register_remote_service(SERVICE, process.exchange)
    with RPCClient(amqp_config(False), disc, source="t2metrics_test", timeout=10) as cli:
        for n in range(5):
            assert cli[SERVICE].add(a=n, b=1).call().payload == {"sum": n + 1}
        with pytest.raises(RemoteError):
            cli[SERVICE].fail().call()
        for _ in range(2):
            cli[SERVICE].fail().cast()
        for n in range(3):
            cli[SERVICE].note(text=str(n)).cast()

        wait_until(lambda: process.handled("note") == 3, "the notes counted")
        wait_until(lambda: process.handled("fail", "error") == 3, "the failures counted")
        queue = {"queue": process.queue}
        wait_until(
            lambda: process.value("tavrida2_dead_lettered_total", reason="failed", **queue) == 2,
            "the failed casts dead-lettered",
        )
        samples = process.scrape()

        def value(name: str, **labels: str) -> float:
            return samples.get((name, frozenset(labels.items())), 0.0)

        labels = {"service": SERVICE, "type": "request"}
        assert value("tavrida2_messages_total", method="add", outcome="ok", **labels) == 5
        assert value("tavrida2_messages_total", method="fail", outcome="ok", **labels) == 0
        assert value("tavrida2_messages_total", method="fail", outcome="error", **labels) == 3
        duration = "tavrida2_message_duration_seconds_count"
        assert value(duration, method="add", outcome="ok", **labels) == 5
        assert value(duration, method="fail", outcome="error", **labels) == 3
        assert value("tavrida2_messages_in_flight", service=SERVICE) == 0
        assert value("tavrida2_retries_total", **queue) == 0
        assert value("tavrida2_dead_lettered_total", reason="unhandleable", **queue) == 0
        assert value("tavrida2_unhandleable_total", **queue) == 0
        assert value("tavrida2_reconnects_total", **queue) == 0
        assert ("process_cpu_seconds_total", frozenset()) in samples  # the default registry

        # the broker closes the server's connection: one reconnect, and it serves on
        (pid,) = wait_until(lambda: connection_pids(process.connection_name), "its connection")
        close_connection(pid, "metrics test")
        wait_until(lambda: process.value("tavrida2_reconnects_total", **queue) == 1, "reconnect")
        wait_until(lambda: consumers(process.queue) == 1, "consuming again")
        assert cli[SERVICE].add(a=2, b=2).call().payload == {"sum": 4}
    wait_until(lambda: process.handled("add") == 6, "the sixth add counted")
    assert process.stop() == 0, process.log


def test_each_worker_serves_its_own_metrics(tmp_path: Path, names: Names) -> None:
    """``--workers 2 --metrics-port P``: P and P+1, together counting all the traffic."""
    running = Process(tmp_path, names, async_engine=False, workers=2)
    try:
        disc = LocalDiscovery()
        disc.register_remote_service(SERVICE, running.exchange)
        with RPCClient(amqp_config(False), disc, source="t2metrics_test", timeout=10) as cli:
            for n in range(20):
                cli[SERVICE].note(text=str(n)).cast()
        wait_until(lambda: running.handled("note") == 20, "20 notes over both workers")
        labels = {"service": SERVICE, "method": "note", "type": "request", "outcome": "ok"}
        key = ("tavrida2_messages_total", frozenset(labels.items()))
        each = [running.scrape(worker).get(key, 0.0) for worker in range(2)]
        assert sum(each) == 20
        assert running.stop() == 0, running.log
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(10)
