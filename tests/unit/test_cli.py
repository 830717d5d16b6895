"""The ``tavrida2`` command and server config files, without a broker.

Every user error is one paragraph on stderr naming the file, section and key
and what was expected, exit code 2, no traceback. ``ds check`` and
``topology`` need no broker; ``run``, ``call`` and ``cast`` against RabbitMQ
are in tests/integration/test_cli_rabbitmq.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tavrida2 import cli, configfile, exceptions, server
from tests.unit.tls_support import make_pki

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "deploy"
_modules = itertools.count()

CONTROLLER = """
from tavrida2 import dispatcher, service

@dispatcher.rpc_service("svc_a")
class A(service.ServiceController):
    @dispatcher.rpc_method(service="svc_a", method="ping")
    def ping(self, request, proxy):
        return {{}}

NOT_A_CONTROLLER = 5
"""
DS = """
[svc_a]
exchange = ex_a
notifications = notes_a

[svc_b]
exchange = ex_b
"""


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


class Deployment:
    """A config file, a .ds file and a controller module in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.module = f"t2_cli_controllers_{next(_modules)}"
        (folder / f"{self.module}.py").write_text(CONTROLLER.format())
        (folder / "services.ds").write_text(DS)

    def config(self, server_section: str | None = None, extra: str = "") -> Path:
        section = server_section or textwrap.dedent(
            f"""\
            [server]
            queue_name = "q_a"
            exchange_name = "ex_a"
            discovery = "services.ds"
            services = [{{"name": "svc_a", "controller": "{self.module}.A"}}]
            """
        )
        path = self.folder / "server.ini"
        path.write_text(section + "\n" + textwrap.dedent(extra))
        return path


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return Deployment(tmp_path)


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == cli.EXIT_USAGE, err
    assert "Traceback" not in err
    assert err.startswith("tavrida2: error: ")
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# -- files that work ---------------------------------------------------------------------


def test_load_reads_a_config_file_and_its_discovery(deployment: Deployment) -> None:
    path = deployment.config(
        extra="""
        [connection]
        host = "broker.example"
        port = 5673
        username = ann
        password = "s3cret"
        virtual_host = /apps
        heartbeat_interval = 30
        connection_attempts = 5
        retry_delay = 0.5
        socket_timeout = 2
        reconnect_attempts = 7
        async_engine = yes
        ssl = false
        prefetch_count = 8
        publish_timeout = 4
        persistent = false

        [ssl]
        ca_certs = /etc/ca.pem
        """
    )
    loaded = configfile.load(path, environ={})
    assert (loaded.queue_name, loaded.exchange_name) == ("q_a", "ex_a")
    [entry] = loaded.services
    assert entry.name == "svc_a" and entry.controller.service_name == "svc_a"
    assert entry.discovery.get_remote("svc_b") == "ex_b"
    assert entry.discovery.get_local_publisher("svc_a") == "notes_a"
    conf = loaded.connection
    assert (conf.host, conf.port, conf.virtual_host) == ("broker.example", 5673, "/apps")
    assert (conf.credentials.username, conf.credentials.password) == ("ann", "s3cret")
    assert conf.async_engine is True and conf.persistent is False
    assert (conf.connection_attempts, conf.reconnect_attempts, conf.prefetch_count) == (5, 7, 8)
    assert (conf.retry_delay, conf.socket_timeout, conf.publish_timeout) == (0.5, 2, 4)
    assert conf.heartbeat_interval == 30
    assert conf.ssl_options == {"ca_certs": "/etc/ca.pem"}
    assert "s3cret" not in repr(conf) and "s3cret" not in conf.to_url()


def test_ssl_files_are_found_next_to_the_config_file(deployment: Deployment) -> None:
    (deployment.folder / "tls").mkdir()
    make_pki(deployment.folder / "tls")
    path = deployment.config(
        extra="""
        [connection]
        ssl = true

        [ssl]
        ca_certs = tls/ca.pem
        certfile = tls/client.pem
        keyfile = tls/client.key
        verify = yes
        """
    )
    conf = configfile.load(path, environ={}).connection
    folder = str(deployment.folder)
    assert conf.ssl_options == {
        "ca_certs": os.path.join(folder, "tls/ca.pem"),
        "certfile": os.path.join(folder, "tls/client.pem"),
        "keyfile": os.path.join(folder, "tls/client.key"),
        "verify": True,
    }


@pytest.mark.parametrize(
    ("ssl_section", "fragment"),
    [
        ("ca_certs = tls/nowhere.pem", "ca_certs="),
        ("certfile = tls/client.pem\nkeyfile = tls/server.key", "does not match"),
        ("verify = maybe", "verify"),
    ],
)
def test_bad_ssl_settings_are_config_errors_naming_the_section(
    deployment: Deployment, ssl_section: str, fragment: str
) -> None:
    (deployment.folder / "tls").mkdir()
    make_pki(deployment.folder / "tls")
    path = deployment.config(extra=f"[connection]\nssl = true\n\n[ssl]\n{ssl_section}\n")
    with pytest.raises(exceptions.ConfigError) as caught:
        configfile.load(path, environ={})
    assert str(path) in str(caught.value)
    assert "[ssl]" in str(caught.value) and fragment in str(caught.value)


def test_tavrida2_url_overrides_the_connection_address(deployment: Deployment) -> None:
    path = deployment.config(extra="[connection]\nhost = here\nasync_engine = true\n")
    env = {configfile.URL_VARIABLE: "amqp://bob:pw@there:5999/vh"}
    conf = configfile.load(path, environ=env).connection
    assert (conf.host, conf.port, conf.virtual_host) == ("there", 5999, "vh")
    assert conf.credentials.username == "bob"
    assert conf.async_engine is True  # the rest of [connection] still applies


def test_cli_server_builds_a_server_from_the_file(deployment: Deployment) -> None:
    srv = server.CLIServer(deployment.config())
    assert (srv.queue_name, srv.exchange_name) == ("q_a", "ex_a")
    assert [c.service_name for c in srv.file_config.controllers] == ["svc_a"]
    assert srv.file_config.controllers[0].get_discovery().get_remote("svc_a") == "ex_a"


def test_the_sample_deployment_files_load() -> None:
    for name in ("hello.ini", "world.ini"):
        loaded = configfile.load(SAMPLES / name, environ={})
        assert loaded.services


# -- bad config files ---------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.ini"
    assert_user_error(
        *run_cli("topology", str(missing), capsys=capsys)[::2], str(missing), "no such"
    )


def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli("run", str(tmp_path), capsys=capsys)  # a folder
    assert_user_error(code, err, str(tmp_path), "cannot read the config file")
    garbage = tmp_path / "garbage.ini"
    garbage.write_bytes(b"\xff\xfe\x00[server")
    code, _, err = run_cli("run", str(garbage), capsys=capsys)
    assert_user_error(code, err, str(garbage), "not a valid INI file")


def test_unknown_key(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    path = deployment.config(extra="[connection]\nhots = localhost\n")
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "section [connection]", "unknown key 'hots'", "host")


def test_unknown_section(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    path = deployment.config(extra="[conection]\nhost = x\n")
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "section [conection]", "unknown section")


def test_missing_required_key(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    path = deployment.config(
        '[server]\nexchange_name = "ex_a"\n'
        f'services = [{{"name": "svc_a", "controller": "{deployment.module}.A"}}]\n'
    )
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "section [server]", "'queue_name' is missing")


def test_missing_server_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.ini"
    path.write_text("[connection]\nhost = x\n")
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "section [server]", "required")


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("port = abc", "port", "a whole number"),
        ("async_engine = maybe", "async_engine", "true or false"),
        ("retry_delay = soon", "retry_delay", "a number"),
        ("port = 70000", "port", "70000"),
    ],
)
def test_value_of_the_wrong_type(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], line: str, key: str, expected: str
) -> None:
    path = deployment.config(extra=f"[connection]\n{line}\n")
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "section [connection]", f"key {key!r}", expected)


def test_services_of_the_wrong_shape(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment.config(
        "[server]\nqueue_name = q\nexchange_name = ex_a\ndiscovery = services.ds\n"
        'services = [{"name": "svc_a"}]\n'
    )
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "key 'services'", "'controller' is missing")


def test_controller_that_does_not_import(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment.config(
        "[server]\nqueue_name = q\nexchange_name = ex_a\ndiscovery = services.ds\n"
        'services = [{"name": "svc_a", "controller": "no_such_module_t2.A"}]\n'
    )
    code, _, err = run_cli("run", str(path), capsys=capsys)
    assert_user_error(
        code, err, str(path), "section [server], key 'services', item [0]", "no_such_module_t2"
    )


def test_controller_that_is_not_a_controller(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment.config(
        "[server]\nqueue_name = q\nexchange_name = ex_a\ndiscovery = services.ds\n"
        f'services = [{{"name": "svc_a", "controller": "{deployment.module}.NOT_A_CONTROLLER"}}]\n'
    )
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, "is not a service controller class")


def test_service_name_that_is_not_the_controllers(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment.config(
        "[server]\nqueue_name = q\nexchange_name = ex_b\ndiscovery = services.ds\n"
        f'services = [{{"name": "svc_b", "controller": "{deployment.module}.A"}}]\n'
    )
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, "serves 'svc_a', not 'svc_b'")


def test_service_whose_ds_entry_is_missing(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    (deployment.folder / "services.ds").write_text("[svc_b]\nexchange = ex_b\n")
    path = deployment.config()
    code, _, err = run_cli("run", str(path), capsys=capsys)
    assert_user_error(code, err, str(path), "item [0]", "no section [svc_a]", "services.ds")


def test_service_on_another_exchange_than_its_ds_entry(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment.config(
        "[server]\nqueue_name = q\nexchange_name = other_ex\ndiscovery = services.ds\n"
        f'services = [{{"name": "svc_a", "controller": "{deployment.module}.A"}}]\n'
    )
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, "'ex_a'", "'other_ex'", "exchange_name")


def test_service_without_any_discovery(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment.config(
        "[server]\nqueue_name = q\nexchange_name = ex_a\n"
        f'services = [{{"name": "svc_a", "controller": "{deployment.module}.A"}}]\n'
    )
    code, _, err = run_cli("topology", str(path), capsys=capsys)
    assert_user_error(code, err, "no discovery", "'discovery' key")


def test_ds_file_with_a_section_without_exchange(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = deployment.folder / "services.ds"
    ds.write_text("[svc_a]\nexchange = ex_a\n\n[svc_b]\nnotifications = notes_b\n")
    code, _, err = run_cli("ds", "check", str(ds), capsys=capsys)
    assert_user_error(code, err, str(ds), "section [svc_b]", "'exchange' is missing")
    code, _, err = run_cli("topology", str(deployment.config()), capsys=capsys)
    assert_user_error(code, err, str(ds), "section [svc_b]", "'exchange' is missing")


def test_bad_connection_value_from_the_environment(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(configfile.URL_VARIABLE, "http://nowhere")
    code, _, err = run_cli("topology", str(deployment.config()), capsys=capsys)
    assert_user_error(code, err, configfile.URL_VARIABLE)


# -- the other commands, and bad arguments ---------------------------------------------------


def test_ds_check_lists_services_and_exchanges(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli("ds", "check", str(deployment.folder / "services.ds"), capsys=capsys)
    assert code == 0
    assert "2 service(s)" in out
    assert "svc_a  exchange: ex_a  notifications: notes_a" in out
    assert "svc_b  exchange: ex_b" in out


def test_topology_prints_what_the_server_declares(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli("topology", str(deployment.config()), capsys=capsys)
    assert code == 0
    assert "  ex_a (topic, durable)" in out
    assert "  q_a (durable)" in out
    assert "  ex_a --[svc_a.#]--> q_a" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["call", "no_method", "--exchange", "x"], "expected SERVICE.METHOD"),
        (["call", "svc.m", "novalue", "--exchange", "x"], "expected KEY=VALUE"),
        (["call", "svc.m", "1x=2", "--exchange", "x"], "expected KEY=VALUE"),
        (["call", "svc.m", "a=1"], "--ds FILE"),
        (["cast", "svc.m", "--exchange", "x", "--context", "[1]"], "--context"),
        (["call", "svc.m", "--exchange", "x", "--timeout", "0"], "--timeout"),
        (["call", "svc.m", "--exchange", "x", "--url", "ftp://h"], "ftp://h"),
        (["call", "svc_x.m", "--ds", "/nonexistent/services.ds"], "/nonexistent/services.ds"),
    ],
)
def test_bad_call_arguments(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(*argv, capsys=capsys)
    assert_user_error(code, err, fragment)


def test_parse_params_reads_json_values_else_text() -> None:
    assert cli.parse_params(["a=1", "b=text", 'c="5"', "d=[1,2]", 'e={"k":true}', "f="]) == {
        "a": 1,
        "b": "text",
        "c": "5",
        "d": [1, 2],
        "e": {"k": True},
        "f": "",
    }
    with pytest.raises(cli.UsageError):
        cli.parse_params(["=1"])


def test_version_and_help_from_the_installed_command() -> None:
    command = Path(sys.executable).with_name("tavrida2")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("tavrida2 ")
    helped = subprocess.run([command, "--help"], capture_output=True, text=True, check=True)
    for word in ("run", "call", "cast", "ds", "topology", "examples:", "TAVRIDA2_URL"):
        assert word in helped.stdout
    bad = subprocess.run(
        [command, "topology", "/nonexistent.ini"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "/nonexistent.ini: no such config file" in bad.stderr


def test_config_errors_are_config_errors(deployment: Deployment) -> None:
    with pytest.raises(exceptions.ConfigError):
        configfile.load(deployment.folder / "missing.ini")
