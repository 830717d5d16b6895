"""Pictures of a tavrida2 system: ``tavrida2 topology CONFIG... [--ds FILE...] --format F``.

:func:`build_graph` reads config and ``.ds`` files into a :class:`SystemGraph`
(services, exchanges, queues, bindings, who calls whom); :data:`RENDERERS`
turn it into text, Graphviz DOT, Mermaid or SVG.
"""

from __future__ import annotations

from collections.abc import Callable

from tavrida2.topology.build import GraphSourceError, build_graph
from tavrida2.topology.dot import render_dot
from tavrida2.topology.mermaid import render_mermaid
from tavrida2.topology.model import SystemGraph
from tavrida2.topology.svg import render_svg
from tavrida2.topology.text import render_text


def _svg(graph: SystemGraph) -> str:
    return render_svg(graph)


#: ``--format`` -> the function drawing a graph in it.
RENDERERS: dict[str, Callable[[SystemGraph], str]] = {
    "text": render_text,
    "dot": render_dot,
    "mermaid": render_mermaid,
    "svg": _svg,
}

__all__ = [
    "RENDERERS",
    "GraphSourceError",
    "SystemGraph",
    "build_graph",
    "render_dot",
    "render_mermaid",
    "render_svg",
    "render_text",
]
