"""``tavrida2 run --metrics-port``, ``[metrics]`` in a config file, and their bad input.

A port in use is one line on stderr and exit code 2, before anything connects;
so is a missing prometheus_client (naming the extra). Workers each get a port
of their own. On the memory broker (``TAVRIDA2_URL=memory://``) the command
runs in this process; the scrape of a real process is in
tests/integration/test_metrics_rabbitmq.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tavrida2 import configfile, exceptions, server
from tavrida2.metrics import MetricsEndpoint, MetricsPortInUse
from tavrida2.workers import launch
from tavrida2.workers.supervisor import WorkerSpec
from tests.unit.test_cli import Deployment, run_cli

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "samples" / "deploy" / "hello.ini"
WORLD = ROOT / "samples" / "deploy" / "world.ini"


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    monkeypatch.setenv("TAVRIDA2_URL", "memory://metrics_cli")
    return Deployment(tmp_path)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on for the test."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_port_in_use_is_one_line_and_exit_2(
    deployment: Deployment, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = deployment.config()
    code, _, err = run_cli("run", str(config), "--metrics-port", str(busy_port), capsys=capsys)

    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("tavrida2: error")]
    assert lines == [
        f"tavrida2: error: metrics port {busy_port} on 127.0.0.1 is in use (another process "
        "listens there); choose another --metrics-port"
    ]
    assert "Traceback" not in err


def test_a_port_in_use_from_the_installed_command(busy_port: int, tmp_path: Path) -> None:
    """The same from a real process: exit code 2 and the line, no traceback."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("tavrida2")), "run", str(HELLO), "--metrics-port",
         str(busy_port)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "TAVRIDA2_URL": "memory://"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"tavrida2: error: metrics port {busy_port} on 127.0.0.1 is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_prometheus_client_names_the_extra(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(sys.modules):
        if name == "tavrida2.metrics" or name.startswith("tavrida2.metrics."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails

    code, _, err = run_cli("run", str(deployment.config()), "--metrics-port", "0", capsys=capsys)

    assert code == 2
    assert "prometheus_client: pip install 'tavrida2[metrics]'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_bad_port_is_a_usage_error(
    deployment: Deployment, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli("run", str(deployment.config()), "--metrics-port", port, capsys=capsys)
    assert code == 2
    assert "--metrics-port" in err


def test_a_metrics_host_without_a_port_is_refused(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        "run", str(deployment.config()), "--metrics-host", "0.0.0.0", capsys=capsys
    )
    assert code == 2
    assert "a metrics host (0.0.0.0) but no metrics port" in err


def test_an_unknown_metrics_host_is_one_line() -> None:
    endpoint = MetricsEndpoint(free_port(), "no-such-host.invalid")
    with pytest.raises(exceptions.ConfigError, match="cannot serve metrics on no-such-host"):
        endpoint.start()


def test_the_metrics_section_of_a_config_file(deployment: Deployment) -> None:
    loaded = configfile.load(deployment.config(extra="[metrics]\nport = 9187\n"))
    assert loaded.metrics == ("127.0.0.1", 9187)
    loaded = configfile.load(deployment.config(extra="[metrics]\nport = 0\nhost = 0.0.0.0\n"))
    assert loaded.metrics == ("0.0.0.0", 0)
    assert configfile.load(deployment.config()).metrics is None


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("[metrics]\nhost = 127.0.0.1\n", "section [metrics]: key 'port' is missing"),
        ("[metrics]\nport = 70000\n", "section [metrics], key 'port': 70000 is not valid"),
        ("[metrics]\nport = 9100\npath = /m\n", "section [metrics]: unknown key 'path'"),
    ],
)
def test_a_bad_metrics_section_names_the_key(
    deployment: Deployment, section: str, problem: str
) -> None:
    with pytest.raises(exceptions.ConfigError, match=problem.replace("[", r"\[")):
        configfile.load(deployment.config(extra=section))


def test_the_command_line_wins_over_the_file(deployment: Deployment) -> None:
    config = deployment.config(extra="[metrics]\nport = 9187\nhost = 0.0.0.0\n")
    assert server.CLIServer(config).metrics_endpoint == ("0.0.0.0", 9187)
    assert server.CLIServer(config, metrics_port=9200).metrics_endpoint == ("0.0.0.0", 9200)
    assert server.CLIServer(config, metrics_host="127.0.0.1").metrics_endpoint == (
        "127.0.0.1",
        9187,
    )
    plain = server.CLIServer(deployment.config())
    assert plain.metrics is None and plain.metrics_endpoint is None


def test_cli_server_serves_its_metrics_while_it_runs(deployment: Deployment) -> None:
    srv = server.CLIServer(deployment.config(), metrics_port=0)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        assert srv.started.wait(10)
        url = srv.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert 'tavrida2_messages_in_flight{service="svc_a"} 0.0' in text
        assert 'tavrida2_dead_lettered_total{queue="q_a",reason="failed"} 0.0' in text
    finally:
        srv.stop()
        thread.join(10)
    assert not thread.is_alive()
    with pytest.raises(OSError):  # the endpoint closed with the server
        urllib.request.urlopen(url, timeout=2)


# -- workers -------------------------------------------------------------------------------


def metrics_argv(spec: WorkerSpec) -> list[str]:
    argv = list(spec.argv)
    return argv[argv.index("--metrics-port") :] if "--metrics-port" in argv else []


def test_each_worker_gets_the_next_port() -> None:
    specs = launch.worker_specs([str(HELLO), str(WORLD)], 2, metrics_port=9300)
    assert [spec.metrics for spec in specs] == [
        ("127.0.0.1", 9300),
        ("127.0.0.1", 9301),
        ("127.0.0.1", 9302),
        ("127.0.0.1", 9303),
    ]
    assert metrics_argv(specs[3]) == ["--metrics-port", "9303", "--metrics-host", "127.0.0.1"]
    assert all(spec.metrics is None for spec in launch.worker_specs([str(HELLO)], 2))


def test_workers_of_a_config_with_a_metrics_section_count_from_its_port(tmp_path: Path) -> None:
    for name in ("hello_world.py", "services.ds"):
        shutil.copy(HELLO.parent / name, tmp_path)
    config = tmp_path / "hello.ini"
    config.write_text(HELLO.read_text() + "\n[metrics]\nport = 9400\nhost = 0.0.0.0\n")

    specs = launch.worker_specs([str(config)], 3)

    assert [spec.metrics for spec in specs] == [("0.0.0.0", 9400 + n) for n in range(3)]


def test_a_worker_port_in_use_fails_before_any_worker_starts(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    code, _, err = run_cli(
        "run", str(HELLO), "--workers", "2", "--metrics-port", str(busy_port), capsys=capsys
    )
    assert code == 2
    assert f"tavrida2: error: metrics port {busy_port} on 127.0.0.1 is in use" in err
    assert "Traceback" not in err


def test_two_workers_on_one_port_are_refused() -> None:
    specs = [
        WorkerSpec("a#1", ["x"], 1.0, metrics=("127.0.0.1", 9500)),
        WorkerSpec("b#1", ["x"], 1.0, metrics=("127.0.0.1", 9500)),
    ]
    with pytest.raises(exceptions.ConfigError, match="a#1 and b#1 would both serve metrics"):
        launch.check_metrics_ports(specs)


def test_an_endpoint_refuses_a_port_another_endpoint_holds() -> None:
    with MetricsEndpoint(0) as first, pytest.raises(MetricsPortInUse):
        MetricsEndpoint(first.port).start()


def test_reload_gives_its_child_the_metrics_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tavrida2 import reloader

    commands: list[list[str]] = []

    class Recording:
        def __init__(self, command: list[str], *args: object) -> None:
            commands.append(command)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(reloader, "Reloader", Recording)
    argv = ["run", str(HELLO), "--reload", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"]
    code, _, _ = run_cli(*argv, capsys=capsys)

    assert code == 0
    [command] = commands
    assert command[command.index("run") :] == [
        "run", str(HELLO), "--workers", "1", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"
    ]  # fmt: skip
