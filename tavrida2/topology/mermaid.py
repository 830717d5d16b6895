"""The graph as a Mermaid flowchart, for Markdown docs that render Mermaid."""

from __future__ import annotations

from tavrida2.topology.edges import EXCHANGE, QUEUE, SERVICE, nodes_and_edges
from tavrida2.topology.model import SystemGraph

#: Mermaid's brackets for each kind: stadium, hexagon, cylinder.
_SHAPES = {SERVICE: ("([", "])"), EXCHANGE: ("{{", "}}"), QUEUE: ("[(", ")]")}
_ARROWS = {
    "binding": "-->",
    "alternate": "-.->",
    "consumes": "-.->",
    "publishes": "-->",
    "call": "==>",
    "dead-letter": "-.->",
    "retry": "-.->",
}


def label(text: str) -> str:
    """``text`` as a quoted Mermaid label (quotes and brackets as entity codes)."""
    escaped = text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;")
    return '"' + escaped.replace(">", "#gt;") + '"'


def render_mermaid(graph: SystemGraph) -> str:
    """A ``flowchart LR`` of every service, exchange and queue; ids are s1, e1, q1..."""
    nodes, edges = nodes_and_edges(graph)
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    for node in nodes:
        ids[node.key] = f"{node.kind[0]}{sum(1 for k in ids if k[0] == node.key[0]) + 1}"
        opening, closing = _SHAPES[node.kind]
        lines.append(f"    {ids[node.key]}{opening}{label(node.label)}{closing}")
    for edge in edges:
        text = f"|{label(edge.label)}|" if edge.label else ""
        lines.append(f"    {ids[edge.source]} {_ARROWS[edge.style]}{text} {ids[edge.target]}")
    for kind, color in ((SERVICE, "#dbeafe"), (EXCHANGE, "#fef3c7"), (QUEUE, "#dcfce7")):
        members = [ids[node.key] for node in nodes if node.kind == kind]
        if members:
            lines.append(f"    classDef {kind} fill:{color}")
            lines.append(f"    class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


__all__ = ["label", "render_mermaid"]
