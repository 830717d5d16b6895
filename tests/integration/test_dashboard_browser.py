"""``tavrida2 dashboard`` in a real browser: Debian's chromium driven by Playwright.

A copy of the config-file sample (samples/deploy) with names of its own runs on
RabbitMQ: ``tavrida2 run`` for hello.ini and world.ini (announcing every second,
tracing into one SQLite file) and ``tavrida2 dashboard --allow-replay`` over
both. The page must show every service, exchange and queue of the topology;
the running instances; the world queue's depth going up after casts while its
server is stopped and down once it runs again; a dead letter browsed and
replayed (click, confirm) back to where it was going; the chain of a call in
the traces. Each view is photographed: into a temporary folder, or, under
``make screenshots`` (which sets TAVRIDA2_SCREENSHOTS), into docs/_static, where
the dashboard chapter shows them; a test run leaves the checkout as it was.
Queue depths come from the management API, whose statistics are up to 5 s old:
the waits allow for that.

No browser is downloaded: Playwright launches /usr/bin/chromium
(``make test`` installs it: scripts/ensure-browser-tools.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tavrida2.client import RPCClient
from tavrida2.config import ConnectionConfig
from tavrida2.discovery.local import LocalDiscovery
from tavrida2.topology import build_graph
from tests.integration.conftest import consumers, pika_params, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.browser, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "samples" / "deploy"
#: Where ``make screenshots`` has the pictures written (docs/_static).
SCREENSHOTS_ENV = "TAVRIDA2_SCREENSHOTS"
COMMAND = str(Path(sys.executable).with_name("tavrida2"))
CHROMIUM = "/usr/bin/chromium"
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The management API's statistics are refreshed every 5 s; the page polls every 2 s.
STATS_WAIT_MS = 25_000


class SampleSystem:
    """The deploy sample's files under ``folder``, every broker name made unique."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.prefix = f"t2dash{uuid.uuid4().hex[:6]}_"
        self.trace_db = f"sqlite:///{folder / 'trace.db'}"
        shutil.copy(DEPLOY / "hello_world.py", folder / "hello_world.py")
        (folder / "services.ds").write_text(self._renamed("services.ds"))
        for name in ("hello", "world"):
            text = self._renamed(f"{name}.ini").replace(
                "[connection]", "announce_period = 1\n\n[connection]", 1
            )
            (folder / f"{name}.ini").write_text(f"{text}\n[trace]\ndb = {self.trace_db}\n")
        self.configs = [str(folder / "hello.ini"), str(folder / "world.ini")]
        self.graph = build_graph(self.configs)
        self.world_queue = f"{self.prefix}world_queue"
        self.world_dlq = f"{self.world_queue}.dlq"

    def _renamed(self, name: str) -> str:
        return (DEPLOY / name).read_text().replace("t2sample_", self.prefix)

    def delete_from_broker(self) -> None:
        connection = pika.BlockingConnection(pika_params())
        try:
            channel = connection.channel()
            for queue in self.graph.queues:
                if "<instance>" not in queue:
                    channel.queue_delete(queue)
            for exchange in self.graph.exchanges:
                if exchange.startswith(self.prefix):
                    channel.exchange_delete(exchange)
        finally:
            connection.close()


class Processes:
    """tavrida2 commands run in the sample's folder, stopped with SIGTERM at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[str]:
        with open(self.folder / f"{name}.log", "a") as log:
            self.running[name] = subprocess.Popen(
                [COMMAND, *args],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "TAVRIDA2_URL": URL},
            )
        return self.running[name]

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def stop(self, name: str) -> int:
        process = self.running.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def system(tmp_path: Path) -> Iterator[SampleSystem]:
    sample = SampleSystem(tmp_path)
    try:
        yield sample
    finally:
        sample.delete_from_broker()


@pytest.fixture
def processes(system: SampleSystem) -> Iterator[Processes]:
    running = Processes(system.folder)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the views' screenshots go to."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/ensure-browser-tools.sh"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def serve_world(processes: Processes, system: SampleSystem) -> None:
    process = processes.start("world", "run", "world.ini")
    wait_until(
        lambda: consumers(system.world_queue) == 1 or process.poll() is not None, "world consuming"
    )
    assert process.poll() is None, processes.log("world")


def screenshot(shots: Path, page: Page, view: str) -> None:
    path = shots / f"dashboard-{view}.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000, (path, len(data))


def open_view(page: Page, view: str) -> None:
    page.click(f"#tabs button[data-view={view}]")
    expect(page.locator(f"#view-{view}")).to_be_visible()


def queue_cell(page: Page, table: str, queue: str) -> object:
    return page.locator(f'#{table} tr[data-queue="{queue}"] td.depth')


def test_the_dashboard_of_a_running_sample(
    system: SampleSystem, processes: Processes, browser: Browser, shots: Path
) -> None:
    serve_world(processes, system)
    hello = processes.start("hello", "run", "hello.ini")
    port = free_port()
    dashboard = processes.start(
        "dashboard", "dashboard", "--config", "hello.ini", "world.ini", "--port", str(port),
        "--allow-replay", "--db", system.trace_db,
    )  # fmt: skip
    wait_until(lambda: consumers(f"{system.prefix}hello_queue") == 1, "hello consuming")
    conf = ConnectionConfig.from_url(URL)
    disc = LocalDiscovery()
    disc.register_remote_service("test_hello", f"{system.prefix}hello_exchange")
    disc.register_remote_service("test_world", f"{system.prefix}world_exchange")
    with RPCClient(conf, disc, source="browser_test") as cli:
        assert cli.test_hello.hello(param=7).call(timeout=10).payload == {"hello": 7}
        cli.test_world.no_such_method(param=1).cast()  # cannot be handled: a dead letter

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    wait_until(lambda: dashboard.poll() is not None or _answers(port), "the dashboard answering")
    assert dashboard.poll() is None, processes.log("dashboard")
    page.goto(f"http://127.0.0.1:{port}/")

    # the topology: every service, exchange and queue in the picture and the table
    expect(page.locator("#services-table tbody tr")).to_have_count(2)
    pictured = set(page.locator("#topology-picture svg text").all_text_contents())
    everything = set(system.graph.services) | set(system.graph.exchanges) | set(system.graph.queues)
    assert everything <= pictured, everything - pictured
    expect(page.locator("#management-status")).to_be_hidden()
    expect(page.locator("#config-errors")).to_be_hidden()
    screenshot(shots, page, "topology")

    # the running instances, from their announcements
    open_view(page, "instances")
    expect(page.locator("#instances-table tbody tr")).to_have_count(2)
    expect(page.locator("#instances-table")).to_contain_text("test_world")
    consumers_shown = page.locator("#consumers-table tbody tr")
    expect(consumers_shown).to_have_count(2, timeout=STATS_WAIT_MS)  # the broker's view
    expect(consumers_shown.first).to_contain_text(system.prefix)
    screenshot(shots, page, "instances")

    # the dead letter, counted by the management API
    open_view(page, "deadletters")
    expect(queue_cell(page, "deadletters-table", system.world_dlq)).to_have_text(
        "1", timeout=STATS_WAIT_MS
    )

    # casts to a stopped service: its queue's depth goes up
    assert processes.stop("world") == 0, processes.log("world")
    with RPCClient(conf, disc, source="browser_test") as cli:
        for param in range(3):
            cli.test_world.world(param=param).cast()
    open_view(page, "queues")
    expect(queue_cell(page, "queues-table", system.world_queue)).to_have_text(
        "3", timeout=STATS_WAIT_MS
    )
    screenshot(shots, page, "queues")

    # the dead letter browsed, then replayed from the page (click, confirm): back in the queue
    open_view(page, "deadletters")
    page.locator(f'#deadletters-table tr[data-queue="{system.world_dlq}"] button.browse').click()
    expect(page.locator("#letters-table tbody tr")).to_have_count(1)
    expect(page.locator("#letters-table")).to_contain_text("test_world.no_such_method")
    message_id = page.locator("#letters-table tbody tr").first.get_attribute("data-message-id")
    api = f"http://127.0.0.1:{port}/api"
    letter = page.request.get(f"{api}/deadletters/{system.world_dlq}/{message_id}")
    assert letter.ok and letter.json()["destination"] == "test_world.no_such_method"
    missing = page.request.get(f"{api}/deadletters/{system.world_dlq}/no-such-id")
    assert missing.status == 404 and "no-such-id" in missing.json()["error"]
    queue = page.request.get(f"{api}/queues/{system.world_queue}")
    assert queue.ok
    assert (queue.json()["messages"], queue.json()["consumers"]) == (3, 0)  # world is stopped
    page.locator(f'#deadletters-table tr[data-queue="{system.world_dlq}"] button.replay').click()
    expect(page.locator("#replay-dialog")).to_be_visible()
    screenshot(shots, page, "replay")
    page.click("#replay-confirm")
    expect(page.locator("#replay-result")).to_have_text(
        f"Replayed 1 dead letter(s) of {system.world_dlq}."
    )
    expect(page.locator("#letters-table tbody tr")).to_have_count(0)
    expect(queue_cell(page, "deadletters-table", system.world_dlq)).to_have_text(
        "0", timeout=STATS_WAIT_MS
    )
    screenshot(shots, page, "deadletters")
    open_view(page, "queues")
    expect(queue_cell(page, "queues-table", system.world_queue)).to_have_text(
        "4", timeout=STATS_WAIT_MS
    )

    # the service runs again: its queue empties; the replayed letter is dead again
    serve_world(processes, system)
    expect(queue_cell(page, "queues-table", system.world_queue)).to_have_text(
        "0", timeout=STATS_WAIT_MS
    )
    expect(queue_cell(page, "queues-table", system.world_dlq)).to_have_text(
        "1", timeout=STATS_WAIT_MS
    )

    # the traces: the call's chain, followed from a correlation id
    open_view(page, "traces")
    call = page.locator("#traces-table tbody tr", has_text="test_hello.hello → test_world.world")
    expect(call.first).to_be_visible(timeout=10_000)
    call.first.locator("a.correlation").click()
    expect(page.locator("#trace-chain")).to_contain_text("browser_test")
    expect(page.locator("#trace-chain")).to_contain_text("test_world.world")
    screenshot(shots, page, "traces")
    assert errors == []
    assert hello.poll() is None, processes.log("hello")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_the_page_says_what_it_cannot_show(tmp_path: Path, browser: Browser, shots: Path) -> None:
    """A config that does not load and an unreachable management API: said, the rest shown."""
    broken = tmp_path / "broken.ini"
    broken.write_text("[server]\nqueue_name = q\n")
    processes = Processes(tmp_path)
    port = free_port()
    process = processes.start(
        "dashboard", "dashboard", "--config", str(DEPLOY / "world.ini"), "broken.ini",
        "--port", str(port), "--management-url", f"http://guest:s3cret@127.0.0.1:{free_port()}/",
    )  # fmt: skip
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), "the dashboard answering")
        page = browser.new_page(viewport={"width": 1400, "height": 700})
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#config-errors")).to_contain_text("Not loaded: broken.ini, section")
        expect(page.locator("#config-errors")).to_contain_text("'exchange_name' is missing")
        expect(page.locator("#management-status")).to_contain_text("does not answer")
        expect(page.locator("#management-status")).not_to_contain_text("s3cret")
        expect(page.locator("#services-table tbody tr")).to_have_count(2)  # world.ini's
        open_view(page, "deadletters")
        expect(page.locator("#replay-mode")).to_contain_text("Read-only")
        expect(page.locator("button.replay").first).to_be_disabled()
        screenshot(shots, page, "errors")
    finally:
        processes.stop_all()
    assert "not loaded: broken.ini" in processes.log("dashboard")
