"""The graph's nodes and edges in the one form every picture draws (DOT, Mermaid, SVG)."""

from __future__ import annotations

from dataclasses import dataclass

from tavrida2.topology.model import METHOD, SystemGraph

SERVICE = "service"
EXCHANGE = "exchange"
QUEUE = "queue"


@dataclass(frozen=True)
class Node:
    """A box of the picture: ``key`` is unique, ``label`` is the thing's name."""

    key: str
    kind: str  # SERVICE, EXCHANGE or QUEUE
    label: str
    #: The exchange's or queue's own kind (rpc, dead-letters...), the service's "service".
    role: str


@dataclass(frozen=True)
class Edge:
    """An arrow; ``style``: binding, alternate, consumes, publishes, call, dead-letter, retry."""

    source: str
    target: str
    label: str
    style: str


def nodes_and_edges(graph: SystemGraph) -> tuple[list[Node], list[Edge]]:
    """Every service, exchange and queue of ``graph`` and the arrows between them."""
    nodes = [Node(f"s:{name}", SERVICE, name, SERVICE) for name in graph.services]
    nodes += [Node(f"e:{name}", EXCHANGE, name, ex.kind) for name, ex in graph.exchanges.items()]
    nodes += [Node(f"q:{name}", QUEUE, name, queue.kind) for name, queue in graph.queues.items()]
    edges: list[Edge] = []
    for binding in graph.bindings:
        edges.append(
            Edge(f"e:{binding.exchange}", f"q:{binding.queue}", binding.routing_key, "binding")
        )
    for link in graph.exchange_bindings:
        edges.append(Edge(f"e:{link.source}", f"e:{link.destination}", link.routing_key, "binding"))
    for exchange in graph.exchanges.values():
        if exchange.alternate and exchange.alternate in graph.exchanges:
            edges.append(
                Edge(f"e:{exchange.name}", f"e:{exchange.alternate}", "others", "alternate")
            )
    for queue in graph.queues_of(METHOD):
        for service in graph.services_on(queue.name):
            edges.append(Edge(f"q:{queue.name}", f"s:{service.name}", "", "consumes"))
    for service in graph.services.values():
        if service.queue is not None and service.queue in graph.queues:
            edges.append(Edge(f"q:{service.queue}", f"s:{service.name}", "", "consumes"))
        elif service.exchange in graph.exchanges:
            edges.append(Edge(f"e:{service.exchange}", f"s:{service.name}", "requests", "consumes"))
        if service.notifications and service.notifications in graph.exchanges:
            edges.append(Edge(f"s:{service.name}", f"e:{service.notifications}", "", "publishes"))
    for queue in graph.queues.values():
        dead_letter_exchange = queue.dead_letter_exchange
        if dead_letter_exchange:
            if dead_letter_exchange in graph.exchanges:
                edges.append(
                    Edge(f"q:{queue.name}", f"e:{dead_letter_exchange}", "rejected", "dead-letter")
                )
        elif dead_letter_exchange == "" and queue.of_queue in graph.queues:
            edges.append(Edge(f"q:{queue.name}", f"q:{queue.of_queue}", "after delay", "retry"))
    for call in graph.calls:
        edges.append(
            Edge(f"s:{call.caller}", f"s:{call.callee}", f"{call.method} ({call.how})", "call")
        )
    return nodes, edges


__all__ = ["EXCHANGE", "QUEUE", "SERVICE", "Edge", "Node", "nodes_and_edges"]
