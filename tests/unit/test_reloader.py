"""``tavrida2 run --reload`` without a broker: what is watched, and the restarts of a child.

The child here is a small Python script that writes a line to a log each time
it starts; the server as a child against RabbitMQ is in
tests/integration/test_reload_rabbitmq.py.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tavrida2 import cli, exceptions, reloader

WAIT = 20.0


def wait_for(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ini(
    folder: Path, services: str = '[{"name": "a", "controller": "m.A"}]', extra: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "server.ini"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            queue_name = "q"
            exchange_name = "x"
            discovery = "services.ds"
            services = {services}
            {extra}
            """
        )
    )
    return path


def test_the_config_folder_the_services_folder_and_extra_folders_are_watched(
    tmp_path: Path,
) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "lib").mkdir()
    one = ini(tmp_path / "deploy", services='"../plugins"')
    two = ini(tmp_path / "other")
    paths = reloader.watched_paths([str(one), str(two)], [str(tmp_path / "lib")])
    assert paths == [
        str(tmp_path / "deploy"),
        str(tmp_path / "plugins"),
        str(tmp_path / "other"),
        str(tmp_path / "lib"),
    ]


def test_a_missing_reload_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ConfigError, match=r"--reload-dir .*no such folder"):
        reloader.watched_paths([str(ini(tmp_path))], [str(tmp_path / "nope")])


def test_the_longest_stop_timeout_bounds_a_restart(tmp_path: Path) -> None:
    one = ini(tmp_path / "a", extra="stop_timeout = 45")
    two = ini(tmp_path / "b", extra="stop_timeout = 2")
    assert reloader.stop_timeout_of([str(one), str(two)]) == 45.0
    assert reloader.stop_timeout_of([str(two)]) == 30.0


@pytest.mark.parametrize(
    ("name", "watched"),
    [
        ("hello.py", True),
        ("hello.ini", True),
        ("services.ds", True),
        ("hello.pyc", False),
        ("notes.txt", False),
        (".hello.py", False),
        ("hello.py~", False),
    ],
)
def test_which_changes_restart(name: str, watched: bool) -> None:
    assert reloader.is_watched(None, f"/some/folder/{name}") is watched


def test_without_watchfiles_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)
    with pytest.raises(exceptions.ConfigError, match=r"pip install 'tavrida2\[reload\]'"):
        reloader.Reloader(["true"], ["."])


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["run", "{ini}", "--reload-dir", "{dir}"], "--reload-dir is for --reload"),
        (["run", "{dir}/missing.ini", "--reload"], "no such config file"),
        (["run", "{ini}", "--reload", "--reload-dir", "{dir}/nope"], "no such folder"),
    ],
)
def test_cli_mistakes_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    path = ini(tmp_path)
    args = [a.format(ini=path, dir=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    assert caught.value.code == 2
    assert problem in capsys.readouterr().err


CHILD = """
import sys, time
with open(sys.argv[1], "a") as log:
    log.write("started\\n")
import module  # the watched code: a syntax error makes the child exit
time.sleep(60)
"""


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[reloader.Reloader, Path, Path]]:
    """A reloader running a child that imports ``module.py`` of the watched folder."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "module.py").write_text("VALUE = 1\n")
    (folder / "child.py").write_text(CHILD)
    log = tmp_path / "starts.log"
    log.write_text("")
    watcher = reloader.Reloader(
        [sys.executable, str(folder / "child.py"), str(log)],
        [str(folder)],
        stop_timeout=5,
        debounce_ms=100,
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        yield watcher, folder, log
    finally:
        watcher.stop()
        thread.join(WAIT)
    assert not thread.is_alive()


def starts(log: Path) -> int:
    return log.read_text().count("started")


def test_a_change_restarts_the_child_once(
    watched: tuple[reloader.Reloader, Path, Path],
) -> None:
    _, folder, log = watched
    wait_for(lambda: starts(log) == 1, "the first start")
    time.sleep(0.5)  # the watcher is watching
    (folder / "module.py").write_text("VALUE = 2\n")
    (folder / "notes.txt").write_text("not watched\n")
    wait_for(lambda: starts(log) == 2, "a restart")
    time.sleep(1.0)
    assert starts(log) == 2


def test_a_child_that_exits_is_reported_and_started_when_fixed(
    watched: tuple[reloader.Reloader, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, folder, log = watched
    wait_for(lambda: starts(log) == 1, "the first start")
    time.sleep(0.5)
    (folder / "module.py").write_text("VALUE = (\n")
    wait_for(lambda: "exited with status 1" in caplog.text, "the exit reported")
    assert caplog.text.count("exited with status") == 1
    (folder / "module.py").write_text("VALUE = 3\n")
    wait_for(lambda: starts(log) == 3, "a start once fixed")


def test_stopping_the_watcher_stops_the_child(
    watched: tuple[reloader.Reloader, Path, Path],
) -> None:
    watcher, _, log = watched
    wait_for(lambda: starts(log) == 1, "the first start")
    child = watcher._child
    assert child is not None
    watcher.stop()
    wait_for(lambda: child.poll() is not None, "the child stopped")
