"""Build the :class:`~tavrida2.topology.model.SystemGraph` of config files and ``.ds`` files.

Nothing is sent to a broker: a config's part is what its server would
declare (:meth:`tavrida2.server.Server.topology`), plus who its controllers
call; a ``.ds`` file adds the services it names and their exchanges.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from tavrida2 import configfile, exceptions
from tavrida2.discovery.dsfile import DSFile, FileBasedDiscoveryService
from tavrida2.drivers.topology import HEARTBEAT_EXCHANGE
from tavrida2.messages import broadcast_exchange
from tavrida2.topology.calls import code_calls, declared_calls
from tavrida2.topology.model import (
    BROADCAST,
    DEAD_LETTER,
    DEAD_LETTERS,
    HEARTBEAT,
    INSTANCE,
    NOTIFICATIONS,
    RETRY,
    RPC,
    SERVER,
    BindingEdge,
    ExchangeNode,
    QueueNode,
    ServiceNode,
    SubscriptionEdge,
    SystemGraph,
)

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
    for entry in ds.services.values():
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
    for entry in loaded.services:
        discovery = entry.discovery
        if isinstance(discovery, FileBasedDiscoveryService):
            add_ds_file(graph, discovery.ds_file)
            notifications = discovery.ds_file.get(entry.name).notifications
        else:  # pragma: no cover - configfile always gives a .ds file's discovery
            notifications = None
        graph.add_service(
            ServiceNode(entry.name, loaded.exchange_name, notifications, loaded.queue_name, path)
        )
        dispatcher = entry.controller.get_dispatcher()
        for publisher in dispatcher.get_publishers():
            graph.add_subscription(
                SubscriptionEdge(entry.name, publisher.service, publisher.method or "")
            )
        for call in (*declared_calls(entry.controller), *code_calls(entry.controller)):
            graph.add_call(call)
    policy = loaded.dead_letters
    dead_letter_exchange = policy.exchange if policy is not None else None
    instance_queue = server.broadcast_queue
    shown_instance_queue = loaded.queue_name + INSTANCE_QUEUE_SUFFIX
    topology = server.topology()
    for exchange in topology.exchanges:
        graph.add_exchange(
            ExchangeNode(
                exchange.name,
                exchange.type,
                _exchange_kind(exchange.name, dead_letter_exchange),
                exchange.durable,
            )
        )
    for queue in topology.queues:
        if queue.name == instance_queue:
            graph.queues[shown_instance_queue] = QueueNode(
                shown_instance_queue, INSTANCE, (), loaded.queue_name, durable=False
            )
        elif policy is not None and queue.name == policy.queue:
            graph.queues[queue.name] = QueueNode(
                queue.name, DEAD_LETTERS, queue.arguments, loaded.queue_name
            )
        elif policy is not None and queue.name == policy.retry_queue:
            graph.queues[queue.name] = QueueNode(
                queue.name, RETRY, queue.arguments, loaded.queue_name
            )
        else:
            graph.queues[queue.name] = QueueNode(queue.name, SERVER, queue.arguments)
    for binding in topology.bindings:
        queue_name = shown_instance_queue if binding.queue == instance_queue else binding.queue
        graph.add_binding(BindingEdge(binding.exchange, queue_name, binding.routing_key))


def _exchange_kind(name: str, dead_letter_exchange: str | None) -> str:
    if name == HEARTBEAT_EXCHANGE:
        return HEARTBEAT
    if name.startswith(broadcast_exchange("")):
        return BROADCAST
    if name == dead_letter_exchange:
        return DEAD_LETTER
    return RPC


__all__ = ["INSTANCE_QUEUE_SUFFIX", "GraphSourceError", "add_config", "add_ds_file", "build_graph"]
