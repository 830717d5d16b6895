"""The graph of a tavrida2 system: services, exchanges, queues, bindings and calls (pure data).

:mod:`tavrida2.topology.build` makes it from config and ``.ds`` files; the
renderers (:mod:`~tavrida2.topology.text`, :mod:`~tavrida2.topology.dot`,
:mod:`~tavrida2.topology.mermaid`, :mod:`~tavrida2.topology.svg`) draw it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: What an exchange carries.
RPC = "rpc"  # requests, responses and errors of a service (topic)
NOTIFICATIONS = "notifications"  # a service's notifications (topic)
BROADCAST = "broadcast"  # requests to every instance of a service (fanout)
DEAD_LETTER = "dead-letter"  # a server queue's rejected messages (direct)
HEARTBEAT = "heartbeat"  # the servers' announcements (fanout)
BY_METHOD = "by-method"  # routes a service's requests to its methods' own queues (topic)
OTHER_METHODS = "other-methods"  # takes what the by-method exchange does not (fanout)

#: What a queue holds.
SERVER = "server"
DEAD_LETTERS = "dead-letters"
RETRY = "retry"
INSTANCE = "instance"  # one per running instance, auto-delete (broadcasts)
METHOD = "method"  # a method's own queue (rpc_method(prefetch=N))

#: How a call is known.
ANSWERED = "answered"  # the caller declares a response or error handler for it
CODE = "code"  # the controller's source calls proxy.<service>.<method>(...)


@dataclass(frozen=True)
class ServiceNode:
    """A service: where its requests go and, if served by a known config, its queue."""

    name: str
    exchange: str
    notifications: str | None = None
    #: The server queue of the config that runs it; None when only a .ds file names it.
    queue: str | None = None
    #: The config file (or .ds file) it comes from.
    source: str = ""


@dataclass(frozen=True)
class ExchangeNode:
    """An exchange and what it carries (:data:`RPC`, :data:`NOTIFICATIONS`...)."""

    name: str
    type: str = "topic"
    kind: str = RPC
    durable: bool = True
    #: Where it sends what none of its bindings takes (``alternate-exchange``).
    alternate: str | None = None


@dataclass(frozen=True)
class QueueNode:
    """A queue, what it holds (:data:`SERVER`, :data:`DEAD_LETTERS`...) and its arguments."""

    name: str
    kind: str = SERVER
    arguments: tuple[tuple[str, Any], ...] = ()
    #: The queue whose dead letters or retries this one holds, for those kinds.
    of_queue: str | None = None
    durable: bool = True
    #: For a method's own queue: its ``service.method`` and its consumer's prefetch.
    entry_point: str | None = None
    prefetch: int | None = None

    @property
    def dead_letter_exchange(self) -> str | None:
        """Where the broker moves a message rejected from this queue ("" the default exchange)."""
        value = dict(self.arguments).get("x-dead-letter-exchange")
        return None if value is None else str(value)


@dataclass(frozen=True)
class BindingEdge:
    """``exchange`` routes ``routing_key`` to ``queue``."""

    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class ExchangeBindingEdge:
    """``source`` routes ``routing_key`` on to the exchange ``destination``."""

    source: str
    destination: str
    routing_key: str


@dataclass(frozen=True)
class CallEdge:
    """``caller`` sends requests to ``callee.method`` (``how``: call, cast, broadcast)."""

    caller: str
    callee: str
    method: str
    how: str
    known_by: str = ANSWERED


@dataclass(frozen=True)
class SubscriptionEdge:
    """``subscriber`` takes the notifications of ``publisher.method``."""

    subscriber: str
    publisher: str
    method: str


@dataclass
class SystemGraph:
    """Everything :func:`tavrida2.topology.build.build_graph` found, each once, in order."""

    services: dict[str, ServiceNode] = field(default_factory=dict)
    exchanges: dict[str, ExchangeNode] = field(default_factory=dict)
    queues: dict[str, QueueNode] = field(default_factory=dict)
    bindings: list[BindingEdge] = field(default_factory=list)
    exchange_bindings: list[ExchangeBindingEdge] = field(default_factory=list)
    #: Bindings the servers remove (a server queue's ``service.#`` once its methods
    #: have queues of their own).
    unbindings: list[BindingEdge] = field(default_factory=list)
    calls: list[CallEdge] = field(default_factory=list)
    subscriptions: list[SubscriptionEdge] = field(default_factory=list)
    #: The files it was built from, in order.
    sources: list[str] = field(default_factory=list)

    def add_exchange(self, exchange: ExchangeNode) -> None:
        """Add ``exchange``; a more specific kind wins over :data:`RPC` (the default guess)."""
        known = self.exchanges.get(exchange.name)
        if known is None or (known.kind == RPC and exchange.kind != RPC):
            self.exchanges[exchange.name] = exchange

    def add_service(self, service: ServiceNode) -> None:
        """Add ``service``; one a config runs wins over one only a .ds file names."""
        known = self.services.get(service.name)
        if known is None or (known.queue is None and service.queue is not None):
            self.services[service.name] = service

    def add_binding(self, binding: BindingEdge) -> None:
        if binding not in self.bindings:
            self.bindings.append(binding)

    def add_call(self, call: CallEdge) -> None:
        if not any(
            (c.caller, c.callee, c.method, c.how)
            == (call.caller, call.callee, call.method, call.how)
            for c in self.calls
        ):
            self.calls.append(call)

    def add_subscription(self, subscription: SubscriptionEdge) -> None:
        if subscription not in self.subscriptions:
            self.subscriptions.append(subscription)

    def queues_of(self, kind: str) -> list[QueueNode]:
        return [queue for queue in self.queues.values() if queue.kind == kind]

    def services_on(self, queue: str) -> list[ServiceNode]:
        """The services a server queue, or a method's own queue, feeds."""
        known = self.queues.get(queue)
        if known is not None and known.entry_point is not None:
            service = self.services.get(known.entry_point.partition(".")[0])
            return [] if service is None else [service]
        return [service for service in self.services.values() if service.queue == queue]


__all__ = [
    "ANSWERED",
    "BROADCAST",
    "BY_METHOD",
    "CODE",
    "DEAD_LETTER",
    "DEAD_LETTERS",
    "HEARTBEAT",
    "INSTANCE",
    "METHOD",
    "NOTIFICATIONS",
    "OTHER_METHODS",
    "RETRY",
    "RPC",
    "SERVER",
    "BindingEdge",
    "CallEdge",
    "ExchangeBindingEdge",
    "ExchangeNode",
    "QueueNode",
    "ServiceNode",
    "SubscriptionEdge",
    "SystemGraph",
]
