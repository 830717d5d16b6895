"""The graph in Graphviz's DOT language (``dot -Tsvg`` draws it)."""

from __future__ import annotations

from tavrida2.topology.edges import EXCHANGE, QUEUE, SERVICE, nodes_and_edges
from tavrida2.topology.model import SystemGraph

_SHAPES = {
    SERVICE: 'shape=box, style="rounded,filled", fillcolor="#dbeafe"',
    EXCHANGE: 'shape=hexagon, style=filled, fillcolor="#fef3c7"',
    QUEUE: 'shape=cylinder, style=filled, fillcolor="#dcfce7"',
}
_DEAD = 'style=filled, fillcolor="#fee2e2"'
_EDGES = {
    "binding": "",
    "alternate": 'color="#6b7280", style=dotted',
    "consumes": "style=dashed",
    "publishes": 'color="#b45309"',
    "call": 'color="#1d4ed8", penwidth=2',
    "dead-letter": 'color="#b91c1c", style=dotted',
    "retry": 'color="#6b7280", style=dotted',
}


def quote(text: str) -> str:
    """``text`` as a DOT string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(graph: SystemGraph) -> str:
    """A ``digraph`` of every service, exchange and queue of ``graph``, left to right."""
    nodes, edges = nodes_and_edges(graph)
    lines = [
        "digraph tavrida2 {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for node in nodes:
        attributes = _SHAPES[node.kind]
        if node.role in ("dead-letter", "dead-letters"):
            attributes = f"{attributes.split(', style')[0]}, {_DEAD}"
        lines.append(
            f"  {quote(node.key)} [label={quote(node.label)}, tooltip={quote(node.role)}, "
            f"{attributes}];"
        )
    for edge in edges:
        settings = [f"label={quote(edge.label)}"] if edge.label else []
        if _EDGES[edge.style]:
            settings.append(_EDGES[edge.style])
        lines.append(f"  {quote(edge.source)} -> {quote(edge.target)} [{', '.join(settings)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["quote", "render_dot"]
