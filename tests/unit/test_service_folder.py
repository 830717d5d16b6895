"""``services = "folder/"`` in a server config file: every controller module of a folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tavrida2 import cli, client, config, configfile, discovery, exceptions, server
from tavrida2.drivers.memory import MemoryBroker

DS = """
[folder_a]
exchange = folder_ex
[folder_b]
exchange = folder_ex
notifications = folder_b_notes
"""
MODULE_A = """
from tavrida2 import dispatcher, service
from _shared import GREETING

@dispatcher.rpc_service("folder_a")
class A(service.ServiceController):
    @dispatcher.rpc_method(method="hello")
    def hello(self, request, proxy, name):
        return {"text": f"{GREETING}, {name}"}
"""
MODULE_B = """
from tavrida2 import dispatcher, service

@dispatcher.rpc_service("folder_b")
class B(service.ServiceController):
    @dispatcher.rpc_method(method="ping")
    def ping(self, request, proxy):
        return {"pong": True}
"""


def write(folder: Path, files: dict[str, str], services: str = '"controllers/"') -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (folder / "services.ds").write_text(DS)
    ini = folder / "server.ini"
    ini.write_text(
        textwrap.dedent(
            f"""\
            [server]
            queue_name = "folder_q"
            exchange_name = "folder_ex"
            discovery = "services.ds"
            services = {services}
            [connection]
            host = localhost
            """
        )
    )
    return ini


GOOD = {
    "controllers/a.py": MODULE_A,
    "controllers/b.py": MODULE_B,
    "controllers/_shared.py": 'GREETING = "hi"\n',
    "controllers/notes.txt": "not python",
}


def test_every_controller_module_of_the_folder_is_loaded(tmp_path: Path) -> None:
    loaded = configfile.load(write(tmp_path, GOOD))
    assert [e.name for e in loaded.services] == ["folder_a", "folder_b"]
    assert [c.__name__ for c in loaded.controllers] == ["A", "B"]
    assert loaded.controllers[0].__module__.endswith(".a")


def test_the_loaded_services_answer(tmp_path: Path) -> None:
    loaded = configfile.load(write(tmp_path, GOOD), {"TAVRIDA2_URL": "memory://folder"})
    loaded.bind_discovery()
    srv = server.Server(**server.file_server_arguments(loaded))
    srv.start()
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("folder_a", "folder_ex")
    disc.register_remote_service("folder_b", "folder_ex")
    conf = config.ConnectionConfig.from_url("memory://folder")
    with client.RPCClient(conf, disc, source="test") as cli:
        assert cli.folder_a.hello(name="x").call(timeout=5).payload == {"text": "hi, x"}
        assert cli.folder_b.ping().call(timeout=5).payload == {"pong": True}
    srv.stop()
    MemoryBroker.get("folder").run_until_idle()


def test_two_folders_may_hold_modules_of_one_name(tmp_path: Path) -> None:
    one = configfile.load(
        write(
            tmp_path / "one",
            {"controllers/a.py": MODULE_A, "controllers/_shared.py": "GREETING = 1"},
        )
    )
    two = configfile.load(write(tmp_path / "two", {"controllers/a.py": MODULE_B}))
    assert one.controllers[0].__module__ != two.controllers[0].__module__


def test_a_module_that_fails_to_import_is_named(tmp_path: Path) -> None:
    files = {**GOOD, "controllers/broken.py": "def oops(:\n"}
    with pytest.raises(exceptions.ConfigError) as caught:
        configfile.load(write(tmp_path, files))
    text = str(caught.value)
    assert "broken.py" in text and "SyntaxError" in text and "key 'services'" in text


def test_a_module_that_raises_while_importing_is_named(tmp_path: Path) -> None:
    files = {"controllers/a.py": "raise RuntimeError('no database')\n"}
    with pytest.raises(exceptions.ConfigError, match=r"a\.py.*RuntimeError: no database"):
        configfile.load(write(tmp_path, files))


@pytest.mark.parametrize(
    ("files", "services", "problem"),
    [
        ({}, '"missing/"', "no such services folder"),
        ({"controllers/x.py": "X = 1\n"}, '"controllers/"', "no controller in the services"),
        ({"controllers/x.py": "X = 1\n"}, '"controllers/x.py"', "not a folder"),
        ({"controllers/_a.py": MODULE_B}, '"controllers/"', "no controller"),
        ({"c/a.py": MODULE_B, "c/b.py": MODULE_B}, '"c/"', "serves 'folder_b', which"),
        ({}, '""', "key 'services'"),
    ],
)
def test_bad_folders_are_config_errors(
    tmp_path: Path, files: dict[str, str], services: str, problem: str
) -> None:
    with pytest.raises(exceptions.ConfigError, match=problem):
        configfile.load(write(tmp_path, files, services))


def test_the_cli_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = write(tmp_path, {**GOOD, "controllers/broken.py": "import nowhere_to_be_found\n"})
    with pytest.raises(SystemExit) as caught:
        cli.main(["topology", str(ini)])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "broken.py" in err and "nowhere_to_be_found" in err
