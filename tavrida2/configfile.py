"""A server described by an INI file, as in the Tavrida 1.0 examples.

::

    [server]
    queue_name = "hello_queue"
    exchange_name = "hello_exchange"
    ; the .ds file of every service that names none itself (relative to this file)
    discovery = "services.ds"
    services = [{"name": "test_hello", "controller": "hello.HelloController",
                 "subscriptions": ["test_world"]}]
    ; dead letters (all optional): hello_queue.dlx / hello_queue.dlq by default
    max_attempts = 3
    retry_delay = 1.0
    ; classic (default) or quorum (replicated; docs/scaling.md)
    queue_type = quorum
    ; seconds a stopping server waits for the handlers in progress
    stop_timeout = 30
    ; seconds between announcements on tavrida2.heartbeat (announce = false: none)
    announce_period = 5

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

import configparser
import importlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
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
                "services": {"type": "array", "items": _SERVICE, "minItems": 1},
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
            },
            "additionalProperties": False,
        },
        "ssl": {
            "type": "object",
            "properties": {
                "ca_certs": _NAME,
                "certfile": _NAME,
                "keyfile": _NAME,
                "server_hostname": _NAME,
                "verify": {"type": "boolean"},
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
        module = importlib.import_module(module_name)
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


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read, check and resolve a server config file (controllers imported, discovery read)."""
    file = os.fspath(path)
    sections = read_sections(file)
    _check(file, sections)
    server = sections["server"]
    folder = os.path.dirname(os.path.abspath(file))
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
        if not ds_path:
            raise _error(
                file,
                where,
                "no discovery: give the service a 'discovery' key or [server] a 'discovery' "
                "key (the path of a .ds file)",
            )
        ds_file = os.path.join(folder, ds_path)
        listed = DSFile(ds_file).services.get(service["name"])
        if listed is None:
            raise _error(
                file,
                where,
                f"the discovery file {ds_file} has no section [{service['name']}] for this "
                "service; expected one with its 'exchange'",
            )
        if listed.exchange != server["exchange_name"]:
            raise _error(
                file,
                where,
                f"the discovery file {ds_file} says callers reach {service['name']!r} on "
                f"exchange {listed.exchange!r}, but this server consumes from "
                f"{server['exchange_name']!r} (its exchange_name): expected the same name",
            )
        discovery = FileBasedDiscoveryService(
            ds_file, service["name"], list(service.get("subscriptions", []))
        )
        entries.append(ServiceEntry(service["name"], controller, discovery))
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
        _metrics_endpoint(sections.get("metrics")),
    )


def _metrics_endpoint(section: Mapping[str, Any] | None) -> tuple[str, int] | None:
    if section is None:
        return None
    return str(section.get("host", DEFAULT_METRICS_HOST)), int(section["port"])


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
            if key in ssl_options:
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


__all__ = [
    "DEFAULT_METRICS_HOST",
    "SCHEMA",
    "URL_VARIABLE",
    "ServerConfig",
    "ServiceEntry",
    "connection_config",
    "import_controller",
    "load",
    "read_sections",
]
