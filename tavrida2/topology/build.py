"""Build the :class:`~tavrida2.topology.model.SystemGraph` of config files and ``.ds`` files.

Nothing is sent to a broker: a config's part is what its server would
declare (:meth:`tavrida2.server.Server.topology`), plus who its controllers
call; a ``.ds`` file adds the services it names and their exchanges.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tavrida2 import configfile, exceptions
from tavrida2.discovery.dsfile import DSFile, FileBasedDiscoveryService
from tavrida2.drivers.topology import HEARTBEAT_EXCHANGE
from tavrida2.messages import broadcast_exchange
from tavrida2.topology.calls import code_calls, declared_calls
from tavrida2.topology.model import (
    BROADCAST,
    BY_METHOD,
    DEAD_LETTER,
    DEAD_LETTERS,
    HEARTBEAT,
    INSTANCE,
    METHOD,
    NOTIFICATIONS,
    OTHER_METHODS,
    RETRY,
    RPC,
    SERVER,
    BindingEdge,
    ExchangeBindingEdge,
    ExchangeNode,
    QueueNode,
    ServiceNode,
    SubscriptionEdge,
    SystemGraph,
)

if TYPE_CHECKING:
    from tavrida2.configfile import ServerConfig
    from tavrida2.server import Server

#: How the graph names the queue each running instance gets for broadcasts.
INSTANCE_QUEUE_SUFFIX = ".broadcast.<instance>"


class GraphSourceError(Exception):
    """A config or .ds file the graph cannot be built from; the message names the file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        shown = reason if path in reason else f"{path}: {reason}"
        super().__init__(shown)


def build_graph(
    configs: Iterable[str],
    ds_files: Iterable[str] = (),
    *,
    on_error: Callable[[GraphSourceError], None] | None = None,
) -> SystemGraph:
    """The graph of the servers of ``configs`` and the services of ``ds_files``.

    A file that does not load raises :class:`GraphSourceError`; with
    ``on_error``, that is called instead and the other files are read.
    """
    graph = SystemGraph()
    sources = [(path, add_config) for path in configs]
    sources += [(path, _add_ds_path) for path in ds_files]
    for path, add in sources:
        graph.sources.append(path)
        try:
            add(graph, path)
        except GraphSourceError as exc:
            if on_error is None:
                raise
            on_error(exc)
    graph.calls = [call for call in graph.calls if call.callee in graph.services]
    return graph


def _add_ds_path(graph: SystemGraph, path: str) -> None:
    add_ds_file(graph, _read_ds(path))


def _read_ds(path: str) -> DSFile:
    try:
        return DSFile(path)
    except exceptions.ConfigError as exc:
        raise GraphSourceError(path, _reason(exc)) from None


def _reason(exc: exceptions.ConfigError) -> str:
    return str(exc._kwargs.get("reason", exc))


def add_ds_file(graph: SystemGraph, ds: DSFile) -> None:
    """The services of ``ds``, their exchanges and notification exchanges."""
    for entry in ds.entries.values():
        graph.add_service(
            ServiceNode(entry.service, entry.exchange, entry.notifications, None, _shown(ds.path))
        )
        graph.add_exchange(ExchangeNode(entry.exchange, "topic", RPC))
        if entry.notifications:
            graph.add_exchange(ExchangeNode(entry.notifications, "topic", NOTIFICATIONS))


def _shown(path: str) -> str:
    """``path`` relative to the working directory when it is under it (shorter to read)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def add_config(graph: SystemGraph, path: str) -> None:
    """The server of the config file ``path``: its services, declarations and calls."""
    from tavrida2.server import Server, file_server_arguments

    try:
        loaded = configfile.load(path)
        loaded.bind_discovery()
        server = Server(**file_server_arguments(loaded))
    except exceptions.ConfigError as exc:
        raise GraphSourceError(path, _reason(exc)) from None
    except exceptions.TavridaError as exc:
        raise GraphSourceError(path, str(exc)) from None
    _add_services(graph, loaded)
    _add_declarations(graph, loaded, server)


def _add_services(graph: SystemGraph, loaded: ServerConfig) -> None:
    """The services of a loaded config, what they subscribe to and whom they call."""
    for entry in loaded.services:
        discovery = entry.discovery
        if isinstance(discovery, FileBasedDiscoveryService):
            add_ds_file(graph, discovery.ds_file)
            notifications = discovery.ds_file.get(entry.name).notifications
        else:  # pragma: no cover - configfile always gives a .ds file's discovery
            notifications = None
        graph.add_service(
            ServiceNode(
                entry.name, loaded.exchange_name, notifications, loaded.queue_name, loaded.path
            )
        )
        dispatcher = entry.controller.get_dispatcher()
        for publisher in dispatcher.get_publishers():
            graph.add_subscription(
                SubscriptionEdge(entry.name, publisher.service, publisher.method or "")
            )
        for call in (*declared_calls(entry.controller), *code_calls(entry.controller)):
            graph.add_call(call)


def _add_declarations(graph: SystemGraph, loaded: ServerConfig, server: Server) -> None:
    """What the server of a loaded config declares: exchanges, queues, bindings."""
    policy = loaded.dead_letters
    dead_letter_exchange = policy.exchange if policy is not None else None
    instance_queue = server.broadcast_queue
    shown_instance_queue = loaded.queue_name + INSTANCE_QUEUE_SUFFIX
    topology = server.topology()
    routing = {link.destination for link in topology.exchange_bindings}
    alternates = {exchange.alternate for exchange in topology.exchanges if exchange.alternate}
    for exchange in topology.exchanges:
        kind = _exchange_kind(exchange.name, dead_letter_exchange)
        if exchange.name in routing:
            kind = BY_METHOD
        elif exchange.name in alternates:
            kind = OTHER_METHODS
        graph.add_exchange(
            ExchangeNode(exchange.name, exchange.type, kind, exchange.durable, exchange.alternate)
        )
    own = {method_queue.name: method_queue for method_queue in topology.method_queues}
    for queue in topology.queues:
        name, arguments, of = queue.name, queue.arguments, loaded.queue_name
        if name == instance_queue:
            name = shown_instance_queue
            graph.queues[name] = QueueNode(name, INSTANCE, (), of, durable=False)
        elif name in own:
            entry_point, prefetch = own[name].entry_point, own[name].prefetch
            graph.queues[name] = QueueNode(name, METHOD, arguments, of, True, entry_point, prefetch)
        elif policy is not None and name == policy.queue:
            graph.queues[name] = QueueNode(name, DEAD_LETTERS, arguments, of)
        elif policy is not None and name == policy.retry_queue:
            graph.queues[name] = QueueNode(name, RETRY, arguments, of)
        else:
            graph.queues[name] = QueueNode(name, SERVER, arguments)
    for binding in topology.bindings:
        queue_name = shown_instance_queue if binding.queue == instance_queue else binding.queue
        graph.add_binding(BindingEdge(binding.exchange, queue_name, binding.routing_key))
    for link in topology.exchange_bindings:
        edge = ExchangeBindingEdge(link.source, link.destination, link.routing_key)
        if edge not in graph.exchange_bindings:
            graph.exchange_bindings.append(edge)
    for gone in topology.unbindings:
        removed = BindingEdge(gone.exchange, gone.queue, gone.routing_key)
        if removed not in graph.unbindings:
            graph.unbindings.append(removed)


def _exchange_kind(name: str, dead_letter_exchange: str | None) -> str:
    if name == HEARTBEAT_EXCHANGE:
        return HEARTBEAT
    if name.startswith(broadcast_exchange("")):
        return BROADCAST
    if name == dead_letter_exchange:
        return DEAD_LETTER
    return RPC


__all__ = ["INSTANCE_QUEUE_SUFFIX", "GraphSourceError", "add_config", "add_ds_file", "build_graph"]
