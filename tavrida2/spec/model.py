"""What a server takes and sends, read from a loaded config file (pure: no I/O).

The contract of a server is the list of messages its handlers take — requests
(calls and casts), broadcasts, answers to its own calls, notifications it
subscribes to — each with the exchange and routing key it arrives by and the
JSON Schema of its payload, and the notifications its services publish. The
documents (:mod:`tavrida2.spec.asyncapi`, :mod:`tavrida2.spec.markdown`) are
written from it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tavrida2 import exceptions
from tavrida2.configfile import ServerConfig, ServiceEntry
from tavrida2.dispatcher import HandlerInfo
from tavrida2.drivers.topology import ExchangeSpec
from tavrida2.messages import MessageType, broadcast_exchange
from tavrida2.spec import schemas

Kind = Literal["request", "broadcast", "response", "error", "notification"]
#: The order handlers are listed in, per service.
KINDS: tuple[Kind, ...] = ("request", "broadcast", "response", "error", "notification")
#: The name of the built-in ``<service>.info`` handler (``tavrida2.router``).
BUILTIN_INFO = "info"
_INFO_TEXT = "Built in: the structure of the server that answers."
_INFO_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "description": "No parameters.",
    "properties": {},
}
_INFO_ANSWER: dict[str, Any] = {
    "type": "object",
    "description": "The server's structure: instance, host, pid, version, started_at, "
    "engine, queue, exchange, exchanges, queues and its controllers with their handlers, "
    "schemas, subscriptions, broadcasts, tasks and hooks.",
}


@dataclass(frozen=True)
class Exchange:
    """An exchange as the server declares it."""

    name: str
    type: str
    durable: bool

    @classmethod
    def of(cls, spec: ExchangeSpec) -> Exchange:
        return cls(spec.name, spec.type, spec.durable)


@dataclass(frozen=True)
class Handler:
    """A kind of message a handler of the server takes, and where it arrives."""

    kind: Kind
    #: The service of the controller whose handler takes it.
    service: str
    #: ``service.method``: the destination of a request or broadcast, the
    #: source of an answer or notification.
    entry_point: str
    #: ``module.Class.method`` of the handler, or ``None`` for the built-in ``info``.
    handler: str | None
    #: The handler's docstring ("" without one).
    doc: str
    exchange: Exchange
    #: The routing key it arrives with; ``{method}`` stands for any method of the
    #: service (answers come back to the method that called).
    routing_key: str
    #: JSON Schema of the payload (None for an error: its payload is the Error's).
    payload: dict[str, Any] | None
    #: Whether ``payload`` is the handler's ``schema=`` (else derived from its parameters).
    declared: bool
    #: JSON Schema of the payload of the answer to a call (requests only).
    answer: dict[str, Any] | None = None


@dataclass(frozen=True)
class Publication:
    """The notifications a service publishes (what its handlers publish is not declared)."""

    service: str
    exchange: Exchange


@dataclass(frozen=True)
class Broker:
    """Where the server connects: one URL per broker address, passwords masked."""

    urls: tuple[str, ...]
    addresses: tuple[tuple[str, int], ...]
    virtual_host: str
    username: str
    tls: bool
    client_certificate: bool
    #: The in-process broker (``memory://``), not RabbitMQ.
    memory: bool
    #: Whether casts, notifications and 1.0-style answers are sent persistent.
    persistent: bool


@dataclass(frozen=True)
class ServerContract:
    """The contract of the server of one config file."""

    path: str
    queue: str
    exchange: str
    services: tuple[str, ...]
    broker: Broker
    handlers: tuple[Handler, ...]
    publications: tuple[Publication, ...]

    def of(self, service: str, kind: Kind) -> list[Handler]:
        """The handlers of ``service`` that take messages of ``kind``."""
        return [h for h in self.handlers if h.service == service and h.kind == kind]


def describe_config(loaded: ServerConfig) -> ServerContract:
    """The contract of the server that ``loaded`` describes.

    Reads the controller classes and the discovery of each service entry; changes
    nothing (the classes are not bound to the discovery).
    """
    handlers: list[Handler] = []
    publications: list[Publication] = []
    for entry in loaded.services:
        handlers.extend(_handlers(entry, loaded.exchange_name, loaded.path))
        try:
            notifications = entry.discovery.get_local_publisher(entry.name)
        except exceptions.UnableToDiscover:
            continue
        publications.append(Publication(entry.name, Exchange.of(ExchangeSpec(notifications))))
    conf = loaded.connection
    options = conf.ssl_options or {}
    broker = Broker(
        urls=(conf.to_url(),)
        if conf.driver == "memory"
        else tuple(conf.address_url(address) for address in conf.hosts),
        addresses=tuple(conf.hosts),
        virtual_host=conf.virtual_host,
        username=conf.credentials.username,
        tls=conf.ssl,
        client_certificate=bool(options.get("certfile")),
        memory=conf.driver == "memory",
        persistent=conf.persistent,
    )
    return ServerContract(
        path=loaded.path,
        queue=loaded.queue_name,
        exchange=loaded.exchange_name,
        services=tuple(entry.name for entry in loaded.services),
        broker=broker,
        handlers=tuple(handlers),
        publications=tuple(publications),
    )


def _publisher_exchange(entry: ServiceEntry, info: HandlerInfo, path: str) -> str:
    """The notification exchange of the publisher a subscription handler listens to."""
    publisher = info.entry_point.partition(".")[0]
    try:
        return entry.discovery.get_remote_publisher(publisher)
    except exceptions.UnableToDiscover:
        cls = entry.controller
        raise exceptions.ConfigError(
            reason=f"{path}: handler {cls.__module__}.{cls.__qualname__}.{info.name} of "
            f"{entry.name!r} subscribes to {info.entry_point}, but the service's entry in "
            f'[server] services has no "subscriptions": [{json.dumps(publisher)}]'
        ) from None


def _handlers(entry: ServiceEntry, exchange_name: str, path: str) -> Iterator[Handler]:
    cls = entry.controller
    dispatcher = cls.get_dispatcher()
    own = Exchange.of(ExchangeSpec(exchange_name))
    broadcasts = list(dispatcher.iter_broadcasts())
    found: list[Handler] = []
    for info in dispatcher.iter_handlers():
        if info in broadcasts:
            kind: Kind = "broadcast"
            service = info.entry_point.partition(".")[0]
            exchange = Exchange.of(ExchangeSpec(broadcast_exchange(service), "fanout"))
            routing_key = info.entry_point
        elif info.message_type is MessageType.REQUEST:
            kind, exchange, routing_key = "request", own, info.entry_point
        elif info.message_type is MessageType.NOTIFICATION:
            kind, routing_key = "notification", info.entry_point
            exchange = Exchange.of(ExchangeSpec(_publisher_exchange(entry, info, path)))
        else:
            kind = "response" if info.message_type is MessageType.RESPONSE else "error"
            exchange, routing_key = own, f"{cls.service_name}.{{method}}"
        found.append(_handler(entry, info, kind, exchange, routing_key))
    builtin = f"{cls.service_name}.{BUILTIN_INFO}"
    if not any(h.kind == "request" and h.entry_point == builtin for h in found):
        found.append(
            Handler(
                "request",
                cls.service_name,
                builtin,
                None,
                _INFO_TEXT,
                own,
                builtin,
                _INFO_PARAMETERS,
                False,
                _INFO_ANSWER,
            )
        )
    # the built-in info after the service's own requests
    yield from sorted(found, key=lambda h: (KINDS.index(h.kind), h.handler is None, h.entry_point))


def _handler(
    entry: ServiceEntry, info: HandlerInfo, kind: Kind, exchange: Exchange, routing_key: str
) -> Handler:
    cls = entry.controller
    function = getattr(cls, info.name)
    where = f"{cls.__module__}.{cls.__qualname__}.{info.name}"
    payload: dict[str, Any] | None = None
    declared = False
    if kind != "error":
        payload, declared = schemas.payload_schema(function, info, cls.strict_parameters, where)
    return Handler(
        kind=kind,
        service=cls.service_name,
        entry_point=info.entry_point,
        handler=where,
        doc=inspect.getdoc(function) or "",
        exchange=exchange,
        routing_key=routing_key,
        payload=payload,
        declared=declared,
        answer=dict(schemas.ANY_OBJECT) if kind == "request" else None,
    )


__all__ = [
    "BUILTIN_INFO",
    "KINDS",
    "Broker",
    "Exchange",
    "Handler",
    "Kind",
    "Publication",
    "ServerContract",
    "describe_config",
]
