"""Rows 4a-4p of docs/migrating-notes-a.md: Tavrida 1.0 server config files.

Written from 1.0's documented config keys ([server], [connection] with pika's
connection parameters, [ssl] with ``ssl.wrap_socket``'s arguments), its
``configfile`` helpers and ``CLIServer(config_file=None, project_name=None)``
reading ``--config-file`` from the command line.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tavrida2 import config, configfile, exceptions, server, service

DS = """\
[{name}]
exchange={name}_exchange
notifications={name}_notifications
"""

CONTROLLER = """\
from tavrida2 import dispatcher, service


@dispatcher.rpc_service("{name}")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="{name}", method="hello")
    def hello(self, request, proxy, param):
        return {{"param": param}}
"""

# the keys and spelling of 1.0's example config file: quoted values, a Python-style
# services list, capitalised booleans, empty [ssl] values, server_side
CONFIG_1_0 = """\
[server]
queue_name="{name}_queue"
exchange_name='{name}_exchange'
services=[
    {{
        'name': '{name}',
        'discovery': 'services.ds',
        'controller': '{module}.HelloController'
    }}]
discovery="services.ds"

[connection]
host=localhost
username=guest
password=guest
port=5672
virtual_host="/"
heartbeat_interval=10
connection_attempts=3
retry_delay=1.0
socket_timeout=3.0
channel_max=100
frame_max=65536
locale=en_US
backpressure_detection=False
reconnect_attempts=-1
async_engine=False
ssl=False

[ssl]
keyfile=""
certfile=""
server_side=False
cert_reqs=1
ssl_version=2
ca_certs=""
suppress_ragged_eofs=True
ciphers=""
"""


class Project:
    """A 1.0-style project folder: controller module, .ds file, config file."""

    def __init__(self, folder: Path) -> None:
        self.name = f"compat_{uuid.uuid4().hex[:8]}"
        self.module = f"{self.name}_server"
        self.folder = folder
        (folder / f"{self.module}.py").write_text(CONTROLLER.format(name=self.name))
        (folder / "services.ds").write_text(DS.format(name=self.name))
        self.config = folder / "hello_config.cfg"
        self.config.write_text(CONFIG_1_0.format(name=self.name, module=self.module))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    made = Project(tmp_path)
    monkeypatch.setenv(configfile.URL_VARIABLE, f"memory://{made.name}")
    yield made
    sys.modules.pop(made.module, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def connection_of(text: str, tmp_path: Path) -> config.ConnectionConfig:
    path = tmp_path / "connection.cfg"
    path.write_text(text)
    return configfile.connection_config(str(path), configfile.read_sections(str(path)), {})


def tls(tmp_path: Path, **ssl_keys: object) -> ssl.SSLContext:
    lines = "\n".join(f"{key}={value}" for key, value in ssl_keys.items())
    conf = connection_of(f"[connection]\nssl=true\n[ssl]\n{lines}\n", tmp_path)
    return conf._ssl_context()


def test_row_04a_channel_max_frame_max_and_locale_reach_pika(tmp_path: Path) -> None:
    conf = connection_of("[connection]\nchannel_max=100\nframe_max=65536\nlocale=en_GB\n", tmp_path)

    params = conf.to_pika_params()
    assert (params.channel_max, params.frame_max, params.locale) == (100, 65536, "en_GB")


def test_row_04a_out_of_range_values_are_refused_when_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    for key, value in (("channel_max", 0), ("frame_max", 1024)):
        path.write_text(
            "[server]\nqueue_name=q\nexchange_name=e\ndiscovery=x.ds\n"
            'services=[{"name": "a", "controller": "m.C"}]\n'
            f"[connection]\n{key}={value}\n"
        )
        with pytest.raises(exceptions.ConfigError, match=key):
            configfile.get_config([], config_file=str(path))


def test_row_04b_backpressure_detection_is_accepted_and_said_to_be_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tavrida2.config"):
        conf = connection_of("[connection]\nbackpressure_detection=true\n", tmp_path)

    assert conf.backpressure_detection is True
    assert "backpressure_detection=True is ignored" in caplog.text
    assert "connection.blocked" in caplog.text


def test_row_04c_cert_reqs_maps_to_certificate_checking(tmp_path: Path) -> None:
    unchecked = tls(tmp_path, cert_reqs=0)
    assert unchecked.verify_mode == ssl.CERT_NONE
    assert not unchecked.check_hostname
    for required in (1, 2):
        assert tls(tmp_path, cert_reqs=required).verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(exceptions.ConfigError, match="verify=True and cert_reqs=0 disagree"):
        tls(tmp_path, cert_reqs=0, verify="true")
    with pytest.raises(exceptions.ConfigError, match="cert_reqs"):
        tls(tmp_path, cert_reqs=3)


def test_row_04d_ssl_version_pins_tls_1_2_or_negotiates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pinned = tls(tmp_path, ssl_version=5)
    assert pinned.minimum_version == pinned.maximum_version == ssl.TLSVersion.TLSv1_2
    default = tls(tmp_path)
    negotiated = tls(tmp_path, ssl_version=2)
    assert (negotiated.minimum_version, negotiated.maximum_version) == (
        default.minimum_version,
        default.maximum_version,
    )
    with caplog.at_level(logging.INFO, logger="tavrida2.config"):
        connection_of("[connection]\nssl=true\n[ssl]\nssl_version=3\n", tmp_path)
    assert "ssl_version=3 (TLS 1.0) is ignored" in caplog.text
    with pytest.raises(exceptions.ConfigError, match="ssl_version=7"):
        tls(tmp_path, ssl_version=7)


def test_row_04e_ciphers_are_set_on_the_context(tmp_path: Path) -> None:
    context = tls(tmp_path, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-RSA-AES128-GCM-SHA256"]
    with pytest.raises(exceptions.ConfigError, match="ciphers='NO-SUCH-CIPHER'"):
        tls(tmp_path, ciphers="NO-SUCH-CIPHER")


def test_row_04f_suppress_ragged_eofs_and_server_side_are_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls(tmp_path, suppress_ragged_eofs="true", server_side="false")
    with caplog.at_level(logging.INFO, logger="tavrida2.config"):
        connection_of("[connection]\nssl=true\n[ssl]\nsuppress_ragged_eofs=false\n", tmp_path)
    assert "suppress_ragged_eofs=false is ignored" in caplog.text
    with pytest.raises(exceptions.ConfigError, match="server_side=True"):
        tls(tmp_path, server_side="true")


def test_row_04f_programmatic_1_0_ssl_options_work_too() -> None:
    conf = config.ConnectionConfig(
        "rabbit",
        ssl=True,
        ssl_options={"keyfile": None, "certfile": None, "cert_reqs": 0, "ssl_version": 2},
    )
    assert conf._ssl_context().verify_mode == ssl.CERT_NONE


def test_row_04g_a_1_0_config_file_runs_a_cliserver(project: Project) -> None:
    srv = server.CLIServer(str(project.config))

    conf = srv.file_config.connection
    assert (conf.channel_max, conf.frame_max, conf.locale) == (100, 65536, "en_US")
    assert srv.file_config.queue_name == f"{project.name}_queue"
    assert srv.file_config.exchange_name == f"{project.name}_exchange"
    [entry] = srv.file_config.services
    assert entry.name == project.name
    assert entry.discovery.get_local_publisher(project.name) == f"{project.name}_notifications"


def test_row_04h_python_literals_and_single_quotes_read_as_in_1_0(tmp_path: Path) -> None:
    path = tmp_path / "literal.cfg"
    path.write_text(
        "[server]\nqueue_name='q'\nexchange_name=\"e\"\n"
        "services=[{'name': 'a', 'controller': 'm.C', 'subscriptions': ('b',)}]\n"
        "discovery=x.ds\n"
    )
    sections = configfile.read_sections(str(path))

    assert sections["server"]["queue_name"] == "q"
    assert sections["server"]["exchange_name"] == "e"
    assert sections["server"]["services"] == [
        {"name": "a", "controller": "m.C", "subscriptions": ["b"]}
    ]


def test_row_04i_the_configfile_helpers_read_the_file_get_config_read(project: Project) -> None:
    with pytest.raises(exceptions.ConfigFileIsNotDefined):
        configfile.get_services()
    with pytest.raises(exceptions.ConfigFileIsNotDefined):
        configfile.get_config([])

    assert configfile.get_config(["--config-file", str(project.config)]) == [str(project.config)]
    assert configfile.get_config([], config_file=str(project.config)) == [str(project.config)]
    sys.path.insert(0, str(project.folder))

    controller = f"{project.module}.HelloController"
    assert configfile.get_services() == [
        {"name": project.name, "discovery": "services.ds", "controller": controller}
    ]
    assert configfile.get_services_controllers() == [controller]
    assert configfile.get_services_names() == [project.name]
    [cls] = configfile.get_services_classes()
    assert issubclass(cls, service.ServiceController)
    assert configfile.get_service_name_class_mapping() == {project.name: cls}
    assert configfile.import_class(controller) is cls


def test_row_04i_import_class_of_the_running_script_and_of_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / f"script_{uuid.uuid4().hex[:8]}.py"
    script.write_text("class Found:\n    pass\n")
    main = ModuleType("__main__")
    main.__file__ = str(script)
    exec(compile(script.read_text(), str(script), "exec"), main.__dict__)  # run "as a script"
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert configfile.import_class("Found") is main.Found
    assert configfile.import_class(f"{script.stem}.Found") is main.Found
    assert script.stem not in sys.modules  # not run a second time
    with pytest.raises(ImportError, match="Missing"):
        configfile.import_class("Missing")
    with pytest.raises(ImportError):
        configfile.import_class("no_such_module_here.Thing")


def test_row_04j_cliserver_without_a_file_reads_config_file_from_the_command_line(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["hello_server.py", "--config-file", str(project.config)])

    srv = server.CLIServer()

    assert srv.file_config.path == str(project.config)
    assert configfile.get_services_names() == [project.name]


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        ([], exceptions.ConfigFileIsNotDefined, "Config file is not defined"),
        (["--verbose"], exceptions.ConfigError, "unknown argument.*--verbose"),
        (["--config-file"], exceptions.ConfigError, "expected one argument"),
        (["--config-file", "a", "--config-file", "b"], exceptions.ConfigError, "2 times"),
    ],
    ids=["nothing", "unknown", "no-path", "twice"],
)
def test_row_04j_a_command_line_without_one_config_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], error: type[Exception], message: str
) -> None:
    monkeypatch.setattr(sys, "argv", ["hello_server.py", *argv])

    with pytest.raises(error, match=message):
        server.CLIServer(project_name="hello")


def test_row_04k_kept_a_given_file_wins_over_the_command_line(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1.0 parsed sys.argv even then (its --config-file won); tavrida2 run passes its own
    monkeypatch.setattr(sys, "argv", ["tavrida2", "run", "--config-file", "other.cfg"])

    assert server.CLIServer(project.config).file_config.path == str(project.config)


def test_row_04l_kept_the_async_engine_refuses_channel_max(tmp_path: Path) -> None:
    conf = connection_of("[connection]\nasync_engine=true\nchannel_max=100\n", tmp_path)
    with pytest.raises(exceptions.ConfigError, match="channel_max cannot be set on the async"):
        conf.to_aio_params()


def test_row_04m_kept_the_discovery_path_is_relative_to_the_config_file(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # 1.0 looked for services.ds here

    srv = server.CLIServer(project.config)
    assert srv.file_config.services[0].discovery.get_remote(project.name)


def test_row_04n_kept_tls_checks_the_certificate_and_name_by_default(tmp_path: Path) -> None:
    # 1.0 (ssl.wrap_socket) checked nothing unless cert_reqs was given, never the name
    context = tls(tmp_path, certfile="")
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_row_04o_a_1_0_server_script_runs_with_config_file_on_its_command_line(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path)
    script = tmp_path / f"{project.module}.py"
    script.write_text(
        CONTROLLER.format(name=project.name)
        + textwrap.dedent(
            f"""

            if __name__ == "__main__":
                from tavrida2 import client, discovery, server
                from tavrida2.drivers.memory import MemoryBroker

                srv = server.CLIServer()
                assert srv.file_config.controllers == [HelloController]
                srv.start()
                disc = discovery.FileBasedDiscoveryService("services.ds", "{project.name}")
                with client.RPCClient(srv.file_config.connection, disc, source="s") as cli:
                    print(cli.{project.name}.hello(param=5).call(timeout=5).payload)
                srv.stop()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, script.name, "--config-file", project.config.name],
        cwd=tmp_path,
        env={"TAVRIDA2_URL": f"memory://{project.name}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'param': 5}"


def test_row_04p_kept_an_unknown_key_is_refused(project: Project) -> None:
    # 1.0's config library ignored keys it did not know; tavrida2 names them (typos)
    original = project.config.read_text()
    project.config.write_text(original.replace("[connection]\n", "[connection]\nhearbeat=5\n"))
    with pytest.raises(exceptions.ConfigError, match="unknown key 'hearbeat'"):
        server.CLIServer(project.config)
    project.config.write_text(original.replace("[ssl]\n", "[ssl]\ndo_handshake_on_connect=1\n"))
    with pytest.raises(exceptions.ConfigError, match="unknown key 'do_handshake_on_connect'"):
        server.CLIServer(project.config)


def test_row_04i_the_helpers_refuse_a_services_folder_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "folder.cfg"
    path.write_text('[server]\nqueue_name=q\nexchange_name=e\nservices="controllers/"\n')
    configfile.get_config([], config_file=str(path))

    with pytest.raises(exceptions.ConfigError, match="'controllers/' is a folder"):
        configfile.get_services_names()
