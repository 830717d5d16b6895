"""What a server declares on the broker (pure: no I/O).

One durable topic exchange and one durable queue per server (with its
dead-letter exchange and queue and its retry queue, see :mod:`tavrida2.deadletter`); the queue is
bound with ``<service>.#`` for each service the server runs; every exchange
that the services' discovery names is declared; subscriptions bind the queue
to each remote publisher's exchange with the ``service.method`` it publishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tavrida2.messages import broadcast_exchange
from tavrida2.queuetypes import CLASSIC, queue_type_arguments

#: The fanout exchange of the servers' announcements (see :mod:`tavrida2.liveness`).
HEARTBEAT_EXCHANGE = "tavrida2.heartbeat"

if TYPE_CHECKING:
    from tavrida2.deadletter import DeadLetterPolicy
    from tavrida2.service import ServiceController


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str = "topic"
    durable: bool = True


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool = True
    arguments: tuple[tuple[str, Any], ...] = ()
    #: Deleted by the broker when its last consumer goes (an instance's broadcasts).
    auto_delete: bool = False


@dataclass(frozen=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str


@dataclass
class Topology:
    """Exchanges, queues and bindings, each once, in declaration order."""

    exchanges: list[ExchangeSpec] = field(default_factory=list)
    queues: list[QueueSpec] = field(default_factory=list)
    bindings: list[BindingSpec] = field(default_factory=list)

    def add(self, item: ExchangeSpec | QueueSpec | BindingSpec) -> None:
        if isinstance(item, ExchangeSpec):
            _append_new(self.exchanges, item)
        elif isinstance(item, QueueSpec):
            _append_new(self.queues, item)
        else:
            _append_new(self.bindings, item)


def _append_new(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)


def server_topology(
    queue_name: str,
    exchange_name: str,
    service_classes: Iterable[type[ServiceController]],
    dead_letters: DeadLetterPolicy | None = None,
    broadcast_queue: str | None = None,
    *,
    announces: bool = False,
    queue_type: str = CLASSIC,
) -> Topology:
    """The topology of a server running ``service_classes``.

    With ``dead_letters``, the server queue names its dead-letter exchange,
    declared after it with the dead-letter queue and the retry queue. With
    ``broadcast_queue``, that queue (this instance's, auto-delete) is bound to
    the fanout exchange ``tavrida2.broadcast.<service>`` of each service whose
    broadcasts the classes take. ``announces``: the fanout exchange of the
    servers' announcements (:mod:`tavrida2.liveness`). ``queue_type``: the
    server queue's and its dead-letter queue's (:mod:`tavrida2.queuetypes`); the
    others stay classic.
    """
    service_classes = list(service_classes)
    topology = Topology()
    topology.add(ExchangeSpec(exchange_name))
    arguments = queue_type_arguments(queue_type)
    if dead_letters is not None:
        arguments.update(dead_letters.queue_arguments(queue_name, queue_type))
    # the server queue first: a changed queue type is reported for it, not its dead letters
    topology.add(QueueSpec(queue_name, arguments=tuple(arguments.items())))
    if dead_letters is not None:
        for item in dead_letters.declarations(queue_name, queue_type):
            topology.add(item)
    for cls in service_classes:
        discovery = cls.get_discovery()
        dispatcher = cls.get_dispatcher()
        for service in (cls.service_name, *dispatcher.get_request_entry_services()):
            topology.add(BindingSpec(queue_name, exchange_name, f"{service}.#"))
        for names in discovery.get_all_exchanges().values():
            for name in names:
                topology.add(ExchangeSpec(name))
        for publisher in dispatcher.get_publishers():
            exchange = discovery.get_remote_publisher(publisher.service)
            topology.add(ExchangeSpec(exchange))
            topology.add(BindingSpec(queue_name, exchange, publisher.to_routing_key()))
    if broadcast_queue is not None:
        topology.add(QueueSpec(broadcast_queue, durable=False, auto_delete=True))
        for cls in service_classes:
            for service in cls.get_dispatcher().get_broadcast_services():
                exchange = broadcast_exchange(service)
                topology.add(ExchangeSpec(exchange, "fanout"))
                topology.add(BindingSpec(broadcast_queue, exchange, ""))
    if announces:
        topology.add(ExchangeSpec(HEARTBEAT_EXCHANGE, "fanout"))
    return topology


__all__ = ["BindingSpec", "ExchangeSpec", "QueueSpec", "Topology", "server_topology"]
