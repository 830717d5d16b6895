"""A picture of the graph as SVG without Graphviz: columns of boxes joined by curves.

Left to right: the exchanges requests and notifications go to, the exchanges
routing methods to queues of their own, the queues, the services consuming
them, and the dead-letter exchanges and queues. Arrows going back to an
earlier column (a service publishing) or within one (a service calling
another) bend around the right of the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from tavrida2.topology.edges import EXCHANGE, QUEUE, SERVICE, Edge, Node, nodes_and_edges
from tavrida2.topology.model import (
    BY_METHOD,
    DEAD_LETTER,
    DEAD_LETTERS,
    OTHER_METHODS,
    SystemGraph,
)

_ROW = 48
_HEIGHT = 30
_GAP = 110
_BEND = 24  # px between arrows bending back around a column
_MARGIN = 20
_CHAR = 7.0  # px per character of an 12 px sans-serif label, roughly
_FILL = {SERVICE: "#dbeafe", EXCHANGE: "#fef3c7", QUEUE: "#dcfce7"}
_DEAD_FILL = "#fee2e2"
_STROKE = {
    "binding": "#374151",
    "alternate": "#6b7280",
    "consumes": "#6b7280",
    "publishes": "#b45309",
    "call": "#1d4ed8",
    "dead-letter": "#b91c1c",
    "retry": "#6b7280",
}


@dataclass
class _Box:
    node: Node
    x: float
    y: float
    width: float


#: Left to right; an empty column takes no room.
_COLUMNS = 6


def _column(node: Node) -> int:
    if node.kind == EXCHANGE:
        if node.role in (BY_METHOD, OTHER_METHODS):
            return 1
        return 4 if node.role == DEAD_LETTER else 0
    if node.kind == QUEUE:
        return 5 if node.role == DEAD_LETTERS else 2
    return 3


def _order(columns: list[list[Node]], edges: list[Edge]) -> None:
    """Fewer crossings: each column sorted by the mean row of its neighbours to the left.

    Then the first column by its neighbours in the second (one pass each way).
    """
    neighbours: dict[str, set[str]] = {}
    for edge in edges:
        neighbours.setdefault(edge.source, set()).add(edge.target)
        neighbours.setdefault(edge.target, set()).add(edge.source)
    row: dict[str, int] = {node.key: index for index, node in enumerate(columns[0])}

    def key(node: Node) -> float:
        known = [row[other] for other in neighbours.get(node.key, ()) if other in row]
        return sum(known) / len(known) if known else float("inf")

    for column in columns[1:]:
        column.sort(key=key)  # stable: those without placed neighbours keep their order
        row.update({node.key: index for index, node in enumerate(column)})
    first = {node.key for node in columns[0]}
    row = {k: v for k, v in row.items() if k not in first}
    columns[0].sort(key=key)


def _bends_back(edge: Edge, column_of: dict[str, int]) -> bool:
    return column_of[edge.target] <= column_of[edge.source]


def _place(nodes: list[Node], edges: list[Edge]) -> tuple[dict[str, _Box], float, float]:
    columns: list[list[Node]] = [[] for _ in range(_COLUMNS)]
    for node in nodes:
        columns[_column(node)].append(node)
    _order(columns, edges)
    column_of = {node.key: _column(node) for node in nodes}
    # room right of each column for the arrows that bend back from it
    bends = [0] * len(columns)
    for edge in edges:
        if _bends_back(edge, column_of):
            bends[column_of[edge.source]] += 1
    boxes: dict[str, _Box] = {}
    x = float(_MARGIN)
    tallest = 0
    for number, column in enumerate(columns):
        if not column:
            continue
        width = max(len(node.label) for node in column) * _CHAR + 24
        for index, node in enumerate(column):
            boxes[node.key] = _Box(node, x, _MARGIN + index * _ROW, width)
        tallest = max(tallest, len(column))
        x += width + _GAP + _BEND * bends[number]
    return boxes, x - _GAP + _MARGIN, _MARGIN * 2 + tallest * _ROW


def _shape(box: _Box) -> str:
    node = box.node
    fill = _DEAD_FILL if node.role in (DEAD_LETTER, DEAD_LETTERS) else _FILL[node.kind]
    x, y, w, h = box.x, box.y, box.width, _HEIGHT
    if node.kind == EXCHANGE:
        points = [
            (x, y + h / 2), (x + 10, y), (x + w - 10, y),
            (x + w, y + h / 2), (x + w - 10, y + h), (x + 10, y + h),
        ]  # fmt: skip
        outline = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        return f'<polygon points="{outline}" fill="{fill}" stroke="#92400e"/>'
    radius = 14 if node.kind == SERVICE else 4
    stroke = "#1e40af" if node.kind == SERVICE else "#166534"
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" rx="{radius}" '
        f'fill="{fill}" stroke="{stroke}"/>'
    )


def _curve(edge: Edge, boxes: dict[str, _Box], back: int) -> str:
    """The arrow of ``edge``; ``back``: how many arrows bent back before it (spaced apart)."""
    source, target = boxes[edge.source], boxes[edge.target]
    y1, y2 = source.y + _HEIGHT / 2, target.y + _HEIGHT / 2
    if target.x > source.x + source.width:
        x1, x2 = source.x + source.width, target.x
        bend = (x2 - x1) / 2
        controls = f"{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f}"
        path = f"M{x1:.1f},{y1:.1f} C{controls} {x2:.1f},{y2:.1f}"
        middle = ((x1 + x2) / 2, (y1 + y2) / 2)
    else:  # back or within a column: around the right of both boxes
        x1, x2 = source.x + source.width, target.x + target.width
        out = max(x1, x2) + 30 + _BEND * back
        path = f"M{x1:.1f},{y1:.1f} C{out:.1f},{y1:.1f} {out:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        middle = (out - 8, (y1 + y2) / 2)
    color = _STROKE[edge.style]
    dashed = ("alternate", "consumes", "dead-letter", "retry")
    dashes = ' stroke-dasharray="4 3"' if edge.style in dashed else ""
    text = ""
    if edge.label:
        text = (
            f'<text x="{middle[0]:.1f}" y="{middle[1] - 3:.1f}" font-size="9" '
            f'text-anchor="middle" fill="{color}">{escape(edge.label)}</text>'
        )
    return (
        f'<g class="edge {edge.style}"><path d="{path}" fill="none" stroke="{color}"{dashes} '
        f'marker-end="url(#arrow)"/>{text}</g>'
    )


def render_svg_layout(graph: SystemGraph) -> str:
    """A standalone SVG document of ``graph`` (every node's name is a ``<text>`` in it)."""
    nodes, edges = nodes_and_edges(graph)
    boxes, width, height = _place(nodes, edges)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif">',
        "<title>tavrida2 topology</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#374151"/></marker></defs>',
    ]
    column_of = {node.key: _column(node) for node in nodes}
    back = [0] * _COLUMNS
    for edge in edges:
        source_column = column_of[edge.source]
        parts.append(_curve(edge, boxes, back[source_column]))
        if _bends_back(edge, column_of):
            back[source_column] += 1
    for box in boxes.values():
        node = box.node
        parts.append(
            f'<g class="node {node.kind}" data-name={quoteattr(node.label)} '
            f"data-role={quoteattr(node.role)}><title>{escape(node.role)}: {escape(node.label)}"
            f"</title>{_shape(box)}"
            f'<text x="{box.x + box.width / 2:.1f}" y="{box.y + _HEIGHT / 2 + 4:.1f}" '
            f'font-size="12" text-anchor="middle">{escape(node.label)}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


__all__ = ["render_svg_layout"]
