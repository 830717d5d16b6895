"""The graph as SVG: drawn by Graphviz's ``dot`` when it is installed, else by :mod:`.layout`."""

from __future__ import annotations

import logging
import shutil
import subprocess

from tavrida2.topology.dot import render_dot
from tavrida2.topology.layout import render_svg_layout
from tavrida2.topology.model import SystemGraph

log = logging.getLogger(__name__)
_DOT_SECONDS = 30


def graphviz() -> str | None:
    """The path of Graphviz's ``dot`` program, None when it is not installed."""
    return shutil.which("dot")


def render_svg(graph: SystemGraph, *, use_graphviz: bool | None = None) -> str:
    """An SVG document of ``graph``.

    ``use_graphviz``: None (default) uses ``dot`` when installed; False always
    the pure-Python layout; True requires ``dot`` (RuntimeError without it).
    """
    program = graphviz() if use_graphviz is not False else None
    if use_graphviz and program is None:
        raise RuntimeError("Graphviz's dot is not installed (Debian: apt-get install graphviz)")
    if program is None:
        return render_svg_layout(graph)
    try:
        done = subprocess.run(
            [program, "-Tsvg"],
            input=render_dot(graph),
            capture_output=True,
            text=True,
            timeout=_DOT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    else:
        if done.returncode == 0:
            return done.stdout
        failure = done.stderr.strip() or f"exit code {done.returncode}"
    if use_graphviz:
        raise RuntimeError(f"dot -Tsvg failed: {failure}")
    log.warning("dot -Tsvg failed (%s); drawing the picture without Graphviz", failure)
    return render_svg_layout(graph)


__all__ = ["graphviz", "render_svg"]
