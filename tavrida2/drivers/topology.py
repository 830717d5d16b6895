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
from typing import TYPE_CHECKING, Any, Protocol

from tavrida2.messages import broadcast_exchange
from tavrida2.queuetypes import CLASSIC, queue_type_arguments

#: The fanout exchange of the servers' announcements (see :mod:`tavrida2.liveness`).
HEARTBEAT_EXCHANGE = "tavrida2.heartbeat"

if TYPE_CHECKING:
    from tavrida2.service import ServiceController


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str = "topic"
    durable: bool = True
    #: Where the exchange sends what none of its bindings takes (``alternate-exchange``).
    alternate: str | None = None


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


@dataclass(frozen=True)
class ExchangeBindingSpec:
    """An exchange-to-exchange binding: ``source`` routes ``routing_key`` on to ``destination``."""

    destination: str
    source: str
    routing_key: str


@dataclass(frozen=True)
class UnbindingSpec:
    """A binding a server removes: one its queue no longer has (see :class:`MethodQueue`)."""

    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class MethodQueue:
    """The queue of one method with ``rpc_method(prefetch=N)`` and its consumer's prefetch."""

    name: str
    entry_point: str
    prefetch: int


@dataclass
class Topology:
    """Exchanges, queues and bindings, each once, in declaration order.

    ``unbindings`` are removed after the bindings are made; ``method_queues``
    are the queues of methods with a consumer of their own.
    """

    exchanges: list[ExchangeSpec] = field(default_factory=list)
    queues: list[QueueSpec] = field(default_factory=list)
    bindings: list[BindingSpec] = field(default_factory=list)
    exchange_bindings: list[ExchangeBindingSpec] = field(default_factory=list)
    unbindings: list[UnbindingSpec] = field(default_factory=list)
    method_queues: list[MethodQueue] = field(default_factory=list)

    def add(
        self,
        item: ExchangeSpec
        | QueueSpec
        | BindingSpec
        | ExchangeBindingSpec
        | UnbindingSpec
        | MethodQueue,
    ) -> None:
        if isinstance(item, ExchangeSpec):
            _append_new(self.exchanges, item)
        elif isinstance(item, QueueSpec):
            _append_new(self.queues, item)
        elif isinstance(item, BindingSpec):
            _append_new(self.bindings, item)
        elif isinstance(item, ExchangeBindingSpec):
            _append_new(self.exchange_bindings, item)
        elif isinstance(item, UnbindingSpec):
            _append_new(self.unbindings, item)
        else:
            _append_new(self.method_queues, item)


def _append_new(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)


class DeadLetterDeclarations(Protocol):
    """What a server's topology takes from its dead-letter policy.

    :class:`tavrida2.deadletter.DeadLetterPolicy` is the one there is; the
    topology names only these two methods, so that the policy, which builds
    the specs below, is the only one of the two modules to import the other.
    """

    def queue_arguments(self, queue_name: str, queue_type: str = ...) -> dict[str, Any]: ...

    def declarations(
        self, queue_name: str, queue_type: str = ...
    ) -> list[ExchangeSpec | QueueSpec | BindingSpec]: ...


def server_topology(
    queue_name: str,
    exchange_name: str,
    service_classes: Iterable[type[ServiceController]],
    dead_letters: DeadLetterDeclarations | None = None,
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
    own_queues = _own_queue_methods(service_classes)
    for cls in service_classes:
        discovery = cls.get_discovery()
        dispatcher = cls.get_dispatcher()
        for service in (cls.service_name, *dispatcher.get_request_entry_services()):
            methods = own_queues.get(service)
            if methods:
                split_by_method(topology, queue_name, exchange_name, service, methods, arguments)
            else:
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


def _own_queue_methods(
    service_classes: Iterable[type[ServiceController]],
) -> dict[str, dict[str, int]]:
    """``{service: {method: prefetch}}`` of the methods with a queue of their own."""
    found: dict[str, dict[str, int]] = {}
    for cls in service_classes:
        for info in cls.get_dispatcher().own_queue_methods():
            service, _, method = info.entry_point.partition(".")
            assert info.prefetch is not None
            found.setdefault(service, {})[method] = info.prefetch
    return found


def method_queue_name(queue_name: str, service: str, method: str) -> str:
    """The own queue of ``service.method`` (``rpc_method(prefetch=N)``) of ``queue_name``."""
    return f"{queue_name}.{service}.{method}"


def split_by_method(
    topology: Topology,
    queue_name: str,
    exchange_name: str,
    service: str,
    methods: dict[str, int],
    arguments: dict[str, Any],
) -> None:
    """Route ``service``'s messages to the queues of its own-queue methods, the rest as before.

    A topic binding cannot say "``service.#`` but not ``service.m``", so the
    server exchange hands ``service.#`` on to the topic exchange
    ``<queue>.<service>.by-method``, which binds each method queue with
    ``service.method`` and sends what none of them takes to its alternate
    exchange ``<queue>.<service>.other-methods`` (fanout), bound to the server
    queue. A message (a Tavrida 1.0 caller's too) reaches one queue, once.
    The server queue's own ``service.#`` binding of an earlier run is removed.
    """
    by_method = f"{queue_name}.{service}.by-method"
    others = f"{queue_name}.{service}.other-methods"
    topology.add(ExchangeSpec(others, "fanout"))
    topology.add(ExchangeSpec(by_method, "topic", alternate=others))
    topology.add(BindingSpec(queue_name, others, ""))
    for method, prefetch in methods.items():
        name = method_queue_name(queue_name, service, method)
        topology.add(QueueSpec(name, arguments=tuple(arguments.items())))
        topology.add(BindingSpec(name, by_method, f"{service}.{method}"))
        topology.add(MethodQueue(name, f"{service}.{method}", prefetch))
    topology.add(ExchangeBindingSpec(by_method, exchange_name, f"{service}.#"))
    topology.add(UnbindingSpec(queue_name, exchange_name, f"{service}.#"))


__all__ = [
    "BindingSpec",
    "ExchangeBindingSpec",
    "ExchangeSpec",
    "MethodQueue",
    "QueueSpec",
    "Topology",
    "UnbindingSpec",
    "method_queue_name",
    "server_topology",
    "split_by_method",
]
