"""A server described by an INI file, as in the Tavrida 1.0 examples.

::

    [server]
    queue_name = "hello_queue"
    exchange_name = "hello_exchange"
    ; the .ds file of every service that names none itself (relative to this file)
    discovery = "services.ds"
    services = [{"name": "test_hello", "controller": "hello.HelloController",
                 "subscriptions": ["test_world"]}]
    ; or every controller module of a folder (relative to this file):
    ; services = "controllers/"
    ; dead letters (all optional): hello_queue.dlx / hello_queue.dlq by default
    max_attempts = 3
    retry_delay = 1.0
    ; classic (default) or quorum (replicated; docs/scaling.md)
    queue_type = quorum
    ; seconds a stopping server waits for the handlers in progress
    stop_timeout = 30
    ; seconds between announcements on tavrida2.heartbeat (announce = false: none)
    announce_period = 5
    ; OpenTelemetry spans of every message (the tavrida2[otel] extra)
    otel = true

    [connection]
    host = localhost
    ; or several brokers: hosts = rabbit1, rabbit2:5673
    port = 5672
    username = guest
    password = guest
    virtual_host = /
    async_engine = false

    [ssl]
    ca_certs = /etc/ssl/ca.pem
    ; the client's certificate, if the broker asks for one
    certfile = /etc/ssl/client.pem
    keyfile = /etc/ssl/client.key

    [metrics]
    ; tavrida2 run serves Prometheus metrics on http://host:port/metrics
    ; (the `metrics` extra; --metrics-port and --metrics-host win)
    port = 9100
    host = 127.0.0.1

Values are JSON where they parse as JSON (numbers, ``true``, lists, objects,
"quoted strings"), plain strings otherwise; booleans also accept yes/no/on/off.
The file is checked against a JSON Schema (:data:`SCHEMA`): an unknown key, a
missing required key or a value of the wrong type is a :class:`ConfigError`
naming the file, the section, the key and what was expected. Controllers are
imported by dotted path (``module.Class``), looked up first in the folder of
the config file. ``TAVRIDA2_URL`` in the environment overrides the broker
address (host, port, credentials, virtual host, TLS) of ``[connection]``.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import copy
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import jsonschema

from tavrida2 import exceptions
from tavrida2.config import BOOL_WORDS, ConnectionConfig, Credentials
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.discovery.dsfile import DSFile, FileBasedDiscoveryService
from tavrida2.engine import DEFAULT_STOP_TIMEOUT
from tavrida2.queuetypes import CLASSIC, DEFAULT_DELIVERY_LIMIT, QUEUE_TYPES, QUORUM
from tavrida2.service import ServiceController
from tavrida2.servicefolder import load_folder

#: Environment variable whose URL overrides the broker address of ``[connection]``.
URL_VARIABLE = "TAVRIDA2_URL"
#: Where metrics are served unless ``[metrics] host`` says otherwise: this host only
#: (the same as ``tavrida2.metrics.DEFAULT_HOST``, which needs prometheus_client).
DEFAULT_METRICS_HOST = "127.0.0.1"

_NAME = {"type": "string", "minLength": 1}
_SERVICE = {
    "type": "object",
    "properties": {
        "name": _NAME,
        "controller": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$"},
        "discovery": _NAME,
        "subscriptions": {"type": "array", "items": _NAME},
    },
    "required": ["name", "controller"],
    "additionalProperties": False,
}
#: The JSON Schema every server config file is checked against.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "server": {
            "type": "object",
            "properties": {
                "queue_name": _NAME,
                "exchange_name": _NAME,
                "discovery": _NAME,
                # a list of services, or the folder of their controller modules
                "services": {
                    "type": ["array", "string"],
                    "items": _SERVICE,
                    "minItems": 1,
                    "minLength": 1,
                },
                "dead_letters": {"type": "boolean"},
                "dead_letter_exchange": _NAME,
                "dead_letter_queue": _NAME,
                "max_attempts": {"type": "integer", "minimum": 1},
                "retry_delay": {"type": "number", "minimum": 0},
                "retry_delay_max": {"type": "number", "minimum": 0},
                "stop_timeout": {"type": "number", "exclusiveMinimum": 0},
                "announce": {"type": "boolean"},
                "announce_period": {"type": "number", "exclusiveMinimum": 0},
                "queue_type": {"enum": list(QUEUE_TYPES)},
                "delivery_limit": {"type": "integer", "minimum": 1},
                "otel": {"type": "boolean"},
            },
            "required": ["queue_name", "exchange_name", "services"],
            "additionalProperties": False,
        },
        "connection": {
            "type": "object",
            "properties": {
                "host": _NAME,
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "username": {"type": "string"},
                "password": {"type": "string"},
                "virtual_host": _NAME,
                "heartbeat_interval": {"type": "number", "minimum": 0},
                "connection_attempts": {"type": "integer", "minimum": 1},
                "retry_delay": {"type": "number", "minimum": 0},
                "socket_timeout": {"type": "number", "minimum": 0},
                "reconnect_attempts": {"type": "integer"},
                "async_engine": {"type": "boolean"},
                "ssl": {"type": "boolean"},
                "prefetch_count": {"type": "integer", "minimum": 0},
                "publish_timeout": {"type": "number", "exclusiveMinimum": 0},
                "persistent": {"type": "boolean"},
                "connection_name": _NAME,
                "hosts": {
                    "type": ["array", "string"],
                    "items": _NAME,
                    "minItems": 1,
                    "minLength": 1,
                },
                "shuffle_hosts": {"type": "boolean"},
                # Tavrida 1.0's (pika's); async engine: see ConnectionConfig.to_aio_params
                "channel_max": {"type": "integer", "minimum": 1, "maximum": 65535},
                "frame_max": {"type": "integer", "minimum": 4096, "maximum": 131072},
                "locale": _NAME,
                "backpressure_detection": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "ssl": {
            "type": "object",
            "properties": {
                # empty: not given (Tavrida 1.0's example file leaves them "")
                "ca_certs": {"type": "string"},
                "certfile": {"type": "string"},
                "keyfile": {"type": "string"},
                "server_hostname": _NAME,
                "verify": {"type": "boolean"},
                # Tavrida 1.0's ssl.wrap_socket arguments (tavrida2.tls_compat)
                "cert_reqs": {"enum": [0, 1, 2]},
                "ssl_version": {"type": "integer"},
                "suppress_ragged_eofs": {"type": "boolean"},
                "ciphers": {"type": "string"},
                "server_side": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "metrics": {
            "type": "object",
            "properties": {
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "host": _NAME,
            },
            "required": ["port"],
            "additionalProperties": False,
        },
        "trace": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "minimum": 1},
                "db": _NAME,
                "table": _NAME,
                "preview_chars": {"type": "integer", "minimum": 0},
                "sensitive_headers": {"type": "array", "items": {"type": "string"}},
                "queue_size": {"type": "integer", "minimum": 1},
            },
            "additionalProperties": False,
        },
    },
    "required": ["server"],
    "additionalProperties": False,
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_BOOLEAN_KEYS = frozenset(
    (section, key)
    for section in ("server", "connection", "ssl")
    for key, spec in SCHEMA["properties"][section]["properties"].items()
    if spec.get("type") == "boolean"
)


@dataclass(frozen=True)
class ServiceEntry:
    """One service of ``[server] services``: its controller class and discovery."""

    name: str
    controller: type[ServiceController]
    discovery: AbstractDiscovery


@dataclass(frozen=True)
class ServerConfig:
    """A loaded, checked server config file."""

    path: str
    queue_name: str
    exchange_name: str
    services: tuple[ServiceEntry, ...]
    connection: ConnectionConfig
    #: None when ``dead_letters = false``.
    dead_letters: DeadLetterPolicy | None = None
    #: Seconds a stopping server waits for the handlers in progress.
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    #: Seconds between the server's announcements; None: it does not announce;
    #: "default": 5 s on RabbitMQ, none on the in-memory broker.
    announce_period: float | Literal["default"] | None = "default"
    #: The ``[trace]`` settings (:func:`tavrida2.tracing.make_tracer`), None without one.
    trace: dict[str, Any] | None = None
    #: ``"classic"`` or ``"quorum"`` (:mod:`tavrida2.queuetypes`).
    queue_type: str = CLASSIC
    #: Whether the server traces its messages with OpenTelemetry (:mod:`tavrida2.otel`).
    otel: bool = False
    #: ``(host, port)`` of ``[metrics]``: where ``tavrida2 run`` serves Prometheus
    #: metrics (:mod:`tavrida2.metrics`); None without the section.
    metrics: tuple[str, int] | None = None

    @property
    def controllers(self) -> list[type[ServiceController]]:
        return [entry.controller for entry in self.services]

    def bind_discovery(self) -> None:
        """Give every controller class the discovery its entry names."""
        for entry in self.services:
            entry.controller.set_discovery(entry.discovery)


def _error(path: str, where: str, problem: str) -> exceptions.ConfigError:
    return exceptions.ConfigError(reason=f"{path}, {where}: {problem}")


def read_sections(path: str) -> dict[str, dict[str, Any]]:
    """The file's sections as dicts of decoded values (see the module docstring)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys as written
    try:
        with open(path, encoding="utf-8") as stream:
            parser.read_file(stream)
    except FileNotFoundError:
        raise exceptions.ConfigError(reason=f"{path}: no such config file") from None
    except OSError as exc:
        raise exceptions.ConfigError(
            reason=f"{path}: cannot read the config file ({exc.strerror or exc})"
        ) from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise exceptions.ConfigError(
            reason=f"{path}: not a valid INI file ({' '.join(str(exc).split())})"
        ) from None
    sections: dict[str, dict[str, Any]] = {}
    for section in parser.sections():
        values: dict[str, Any] = {}
        for key, raw in parser.items(section):
            values[key] = _decode(raw, (section, key) in _BOOLEAN_KEYS)
        sections[section] = values
    return sections


def _decode(raw: str, boolean: bool) -> Any:
    text = raw.strip()
    if boolean and text.lower() in BOOL_WORDS:
        return BOOL_WORDS[text.lower()]
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text[:1] in ("[", "{", "'", '"'):
        # Tavrida 1.0 read `services` as a Python literal (single quotes, True/None)
        # and its config library took 'single-quoted' strings
        try:
            value = ast.literal_eval(text)
            if isinstance(value, str | list | dict):
                return json.loads(json.dumps(value))  # tuples as lists; no sets or bytes
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def _check(path: str, sections: dict[str, dict[str, Any]]) -> None:
    """Check ``sections`` against :data:`SCHEMA`; raise for the first problem, in words."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(sections))
    if error is None:
        return
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {})))
        if not where:
            raise _error(path, f"section [{extra[0]}]", f"unknown section; expected {known}")
        raise _error(path, _where(where), f"unknown key {extra[0]!r}; the known keys are {known}")
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
        if not where:
            raise _error(path, f"section [{missing}]", "missing; it is required")
        raise _error(path, _where(where), f"key {missing!r} is missing; it is required")
    raise _error(
        path, _where(where), f"{error.instance!r} is not valid: expected {_expected(error)}"
    )


def _where(parts: list[Any]) -> str:
    text = f"section [{parts[0]}]"
    if len(parts) > 1:
        text += f", key {parts[1]!r}"
    if len(parts) > 2:
        text += ", item " + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts[2:])
    return text


def _expected(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    kind = schema.get("type")
    words = {
        "string": "a text",
        "integer": "a whole number",
        "number": "a number",
        "boolean": "true or false",
        "array": "a JSON list",
        "object": "a JSON object",
    }
    if error.validator in ("minimum", "maximum", "minLength", "minItems", "pattern"):
        return error.message
    if error.validator == "enum":
        return " or ".join(map(repr, schema.get("enum", ())))
    if isinstance(kind, str):
        return words.get(kind, kind)
    return error.message


def import_controller(path: str, dotted: str, where: str) -> type[ServiceController]:
    """The class ``module.Class`` named by ``dotted``, looked up first beside the config file."""
    module_name, _, class_name = dotted.rpartition(".")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = _running_script(module_name) or importlib.import_module(module_name)
    except ImportError as exc:
        raise _error(
            path, where, f"cannot import module {module_name!r} for controller {dotted!r} ({exc})"
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise _error(
            path,
            where,
            f"importing module {module_name!r} for controller {dotted!r} failed: "
            f"{type(exc).__name__}: {exc}",
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceController)):
        raise _error(
            path,
            where,
            f"{dotted!r} is not a service controller class (expected a subclass of "
            "tavrida2.service.ServiceController decorated with @dispatcher.rpc_service)",
        )
    return cls


def check_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read and check a server config file without importing its controllers; its sections."""
    file = os.fspath(path)
    sections = read_sections(file)
    _check(file, sections)
    return sections


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read, check and resolve a server config file (controllers imported, discovery read)."""
    file = os.fspath(path)
    sections = read_sections(file)
    _check(file, sections)
    server = sections["server"]
    if isinstance(server["services"], str):
        entries = _folder_entries(file, server)
    else:
        entries = _listed_entries(file, server)
    return ServerConfig(
        file,
        server["queue_name"],
        server["exchange_name"],
        tuple(entries),
        connection_config(file, sections, os.environ if environ is None else environ),
        dead_letter_policy(file, server),
        float(server.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
        _announce_period(server),
        dict(sections["trace"]) if "trace" in sections else None,
        server.get("queue_type", CLASSIC),
        bool(server.get("otel", False)),
        _metrics_endpoint(sections.get("metrics")),
    )


def _metrics_endpoint(section: Mapping[str, Any] | None) -> tuple[str, int] | None:
    if section is None:
        return None
    return str(section.get("host", DEFAULT_METRICS_HOST)), int(section["port"])


def _listed_entries(file: str, server: Mapping[str, Any]) -> list[ServiceEntry]:
    """The services of a ``services`` list: each controller imported by its dotted path."""
    entries = []
    for index, service in enumerate(server["services"]):
        where = f"section [server], key 'services', item [{index}]"
        controller = import_controller(file, service["controller"], where)
        if controller.service_name != service["name"]:
            raise _error(
                file,
                where,
                f"controller {service['controller']!r} serves {controller.service_name!r}, "
                f"not {service['name']!r} (its @dispatcher.rpc_service name)",
            )
        ds_path = service.get("discovery") or server.get("discovery")
        subscriptions = list(service.get("subscriptions", []))
        entries.append(_entry(file, server, where, controller, ds_path, subscriptions))
    return entries


def services_folder(file: str, server: Mapping[str, Any]) -> str | None:
    """The absolute path of the ``services`` folder of ``[server]``; None for a list."""
    services = server.get("services")
    if not isinstance(services, str):
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(file)), services))


def _folder_entries(file: str, server: Mapping[str, Any]) -> list[ServiceEntry]:
    """The services of a ``services`` folder: every controller its modules define.

    Each subscribes to the services whose notifications its handlers take.
    """
    folder = services_folder(file, server)
    assert folder is not None
    where = "section [server], key 'services'"
    try:
        controllers = load_folder(folder)
    except exceptions.ConfigError as exc:
        raise _error(file, where, str(exc)) from None
    entries = []
    for controller in controllers:
        subscriptions = sorted({ep.service for ep in controller.get_dispatcher().get_publishers()})
        entries.append(
            _entry(
                file,
                server,
                f"{where}, controller {controller.__name__} ({controller.service_name})",
                controller,
                server.get("discovery"),
                subscriptions,
            )
        )
    return entries


def _entry(
    file: str,
    server: Mapping[str, Any],
    where: str,
    controller: type[ServiceController],
    ds_path: str | None,
    subscriptions: list[str],
) -> ServiceEntry:
    """A service with its discovery, read from the ``.ds`` file and checked against [server]."""
    name = controller.service_name
    if not ds_path:
        raise _error(
            file,
            where,
            "no discovery: give the service a 'discovery' key or [server] a 'discovery' "
            "key (the path of a .ds file)",
        )
    ds_file = os.path.join(os.path.dirname(os.path.abspath(file)), ds_path)
    listed = DSFile(ds_file).entries.get(name)
    if listed is None:
        raise _error(
            file,
            where,
            f"the discovery file {ds_file} has no section [{name}] for this "
            "service; expected one with its 'exchange'",
        )
    if listed.exchange != server["exchange_name"]:
        raise _error(
            file,
            where,
            f"the discovery file {ds_file} says callers reach {name!r} on "
            f"exchange {listed.exchange!r}, but this server consumes from "
            f"{server['exchange_name']!r} (its exchange_name): expected the same name",
        )
    discovery = FileBasedDiscoveryService(ds_file, name, subscriptions)
    return ServiceEntry(name, controller, discovery)


def _announce_period(server: Mapping[str, Any]) -> float | Literal["default"] | None:
    if not server.get("announce", True):
        return None
    period = server.get("announce_period")
    return "default" if period is None else float(period)


def dead_letter_policy(path: str, server: Mapping[str, Any]) -> DeadLetterPolicy | None:
    """The dead letters of ``[server]`` (see :mod:`tavrida2.deadletter`); None if turned off."""
    if not server.get("dead_letters", True):
        return None
    try:
        policy = DeadLetterPolicy.for_queue(
            server["queue_name"],
            exchange=server.get("dead_letter_exchange"),
            queue=server.get("dead_letter_queue"),
            max_attempts=server.get("max_attempts", 3),
            retry_delay=server.get("retry_delay", 1.0),
            retry_delay_max=server.get("retry_delay_max", 60.0),
            delivery_limit=server.get("delivery_limit", DEFAULT_DELIVERY_LIMIT),
        )
        if server.get("queue_type") == QUORUM:
            policy.check_quorum()
        return policy
    except exceptions.ConfigError as exc:
        raise _error(path, "section [server]", str(exc._kwargs.get("reason", exc))) from None


def connection_config(
    path: str, sections: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
) -> ConnectionConfig:
    """``[connection]`` and ``[ssl]`` as a :class:`ConnectionConfig`; ``TAVRIDA2_URL`` wins."""
    values = dict(sections.get("connection", {}))
    username = values.pop("username", "guest")
    password = values.pop("password", "guest")
    kwargs: dict[str, Any] = dict(values)
    kwargs["credentials"] = Credentials(username, password)
    if sections.get("ssl"):
        ssl_options = dict(sections["ssl"])
        for key in ("ca_certs", "certfile", "keyfile"):  # as discovery: next to the file
            if ssl_options.get(key):
                ssl_options[key] = os.path.join(
                    os.path.dirname(os.path.abspath(path)), ssl_options[key]
                )
        kwargs["ssl_options"] = ssl_options
    url = environ.get(URL_VARIABLE)
    if url:
        try:
            from_url = ConnectionConfig.from_url(url)
        except exceptions.TavridaError as exc:
            raise exceptions.ConfigError(reason=f"{URL_VARIABLE}: {exc}") from None
        for name in ("host", "port", "hosts", "credentials", "virtual_host", "ssl", "driver"):
            kwargs[name] = getattr(from_url, name)
        kwargs["memory_broker"] = from_url.memory_broker
    try:
        return ConnectionConfig(**kwargs)
    except exceptions.ConfigError as exc:
        reason = str(exc._kwargs.get("reason", str(exc)))
        section = (
            "[ssl]" if reason.startswith(("ssl_options", "unknown ssl_options")) else "[connection]"
        )
        raise _error(path, f"section {section}", reason) from None


def _running_script(module_name: str) -> ModuleType | None:
    """``__main__`` when ``module_name`` names the script being run, else None.

    A Tavrida 1.0 server script (``python hello_server.py``) defines its
    controllers and names them in its config file as ``hello_server.Class``;
    importing ``hello_server`` would run the script a second time and define
    the controllers twice. As in 1.0, the running script's classes are used.
    """
    main = sys.modules.get("__main__")
    if main is None or module_name in sys.modules:
        return None
    if getattr(getattr(main, "__spec__", None), "name", None) == module_name:
        return main  # python -m module_name
    main_file = getattr(main, "__file__", None)
    if not main_file:
        return None
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.exists(spec.origin):
        return None
    return main if os.path.samefile(spec.origin, main_file) else None


# ---- Tavrida 1.0's configfile helpers (issue 17, item 4) ---------------------------
# 1.0 kept the file read last by get_config() in a process-wide object and read the
# services from it; so do these.

_loaded: dict[str, Any] = {}


def config_file_from_args(args: list[str] | None, project_name: str | None = None) -> str | None:
    """The ``--config-file PATH`` of a command line (Tavrida 1.0's option), or None.

    ``--help`` prints the usage and exits, as 1.0's did; other arguments raise
    ``ConfigError``: 1.0's config library refused them too.
    """
    parser = argparse.ArgumentParser(
        prog=project_name, description="Run the services of a config file.", exit_on_error=False
    )
    parser.add_argument(
        "--config-file", action="append", metavar="PATH", help="the server's config file"
    )
    try:
        known, unknown = parser.parse_known_args(list(args or ()))
    except argparse.ArgumentError as exc:
        raise exceptions.ConfigError(reason=f"command line: {exc}") from None
    if unknown:
        raise exceptions.ConfigError(
            reason=f"command line: unknown argument(s) {' '.join(unknown)}; "
            f"expected --config-file PATH ({parser.format_usage().strip()})"
        )
    files: list[str] = known.config_file or []
    if len(files) > 1:
        raise exceptions.ConfigError(
            reason=f"command line: --config-file given {len(files)} times; "
            "tavrida2 reads one config file"
        )
    return files[0] if files else None


def get_config(
    args: list[str] | None, project_name: str | None = None, config_file: str | None = None
) -> list[str]:
    """Read and check a server config file for the helpers below; ``[path]``.

    The file is ``--config-file PATH`` of ``args`` (a command line without
    the program name, e.g. ``sys.argv[1:]``), else ``config_file``; neither
    raises ``ConfigFileIsNotDefined``. ``project_name`` names the program in
    command-line errors. A bad file raises ``ConfigError``. As in Tavrida 1.0,
    the result is a list of the one path.
    """
    path = config_file_from_args(args, project_name) or config_file
    if not path:
        raise exceptions.ConfigFileIsNotDefined()
    path = os.fspath(path)
    sections = read_sections(path)
    _check(path, sections)
    _loaded.clear()
    _loaded.update(path=path, sections=sections)
    return [path]


def forget_config() -> None:
    """Forget the file :func:`get_config` read (the helpers raise ``ConfigFileIsNotDefined``)."""
    _loaded.clear()


def get_services() -> list[dict[str, Any]]:
    """The service dicts of ``[server] services`` of the file :func:`get_config` read."""
    if not _loaded:
        raise exceptions.ConfigFileIsNotDefined()
    services = _loaded["sections"]["server"]["services"]
    if isinstance(services, str):
        raise _error(
            _loaded["path"],
            "section [server], key 'services'",
            f"{services!r} is a folder of controllers; Tavrida 1.0's helpers read a list "
            "of services (the folder's services are known once the server loads it)",
        )
    return copy.deepcopy(list(services))


def get_services_controllers() -> list[str]:
    """The dotted names of the services' controller classes, in file order."""
    return [service["controller"] for service in get_services()]


def get_services_names() -> list[str]:
    """The names of the services, in file order."""
    return [service["name"] for service in get_services()]


def get_services_classes() -> list[type]:
    """The services' controller classes, imported (:func:`import_class`), in file order."""
    return [import_class(dotted) for dotted in get_services_controllers()]


def get_service_name_class_mapping() -> dict[str, type]:
    """Service name -> controller class."""
    return dict(zip(get_services_names(), get_services_classes(), strict=True))


def import_class(import_str: str) -> type:
    """The class named ``module.Class``, or ``Class`` of the running script; else ``ImportError``.

    ``module.Class`` where ``module`` is the running script gives the
    script's class rather than importing the script again.
    """
    module_name, _, class_name = import_str.rpartition(".")
    if module_name:
        module = _running_script(module_name) or importlib.import_module(module_name)
    else:
        module = sys.modules["__main__"]
    found = getattr(module, class_name, None)
    if not isinstance(found, type):
        raise ImportError(f"Class {class_name} cannot be found in module {module.__name__}")
    return found


# ---- end of Tavrida 1.0's configfile helpers ----


__all__ = [
    "DEFAULT_METRICS_HOST",
    "SCHEMA",
    "URL_VARIABLE",
    "ServerConfig",
    "ServiceEntry",
    "config_file_from_args",
    "connection_config",
    "forget_config",
    "get_config",
    "get_service_name_class_mapping",
    "get_services",
    "get_services_classes",
    "get_services_controllers",
    "get_services_names",
    "import_class",
    "import_controller",
    "load",
    "read_sections",
]
