"""What the dashboard knows from files: the system's graph, its picture, the broker to ask."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from tavrida2 import configfile
from tavrida2.config import DEFAULT_URL, ConnectionConfig
from tavrida2.masking import mask_url_passwords
from tavrida2.topology import GraphSourceError, SystemGraph, build_graph, render_svg
from tavrida2.topology.model import DEAD_LETTERS, SERVER


@dataclass(frozen=True)
class SourceError:
    """A config or .ds file that did not load, and why (secrets masked)."""

    path: str
    error: str


@dataclass
class SystemView:
    """The graph of the files that loaded, the errors of those that did not, and the broker."""

    graph: SystemGraph
    connection: ConnectionConfig
    errors: list[SourceError] = field(default_factory=list)
    svg: str = ""

    @property
    def server_queues(self) -> list[str]:
        return [queue.name for queue in self.graph.queues_of(SERVER)]

    @property
    def dead_letter_queues(self) -> list[str]:
        return [queue.name for queue in self.graph.queues_of(DEAD_LETTERS)]


def load_system(
    configs: Sequence[str], ds_files: Sequence[str] = (), url: str | None = None
) -> SystemView:
    """Read every file, keeping going past one that does not load (its error is kept).

    The broker is ``url``, else ``$TAVRIDA2_URL``, else the first config's
    connection that loaded, else ``amqp://guest:guest@localhost:5672/%2F``.
    """
    errors: list[SourceError] = []

    def keep(exc: GraphSourceError) -> None:
        errors.append(SourceError(exc.path, mask_url_passwords(str(exc))))

    graph = build_graph(configs, ds_files, on_error=keep)
    failed = {error.path for error in errors}
    loaded = [path for path in configs if path not in failed]
    # read again for its connection only: the controllers are imported already
    connection = configfile.load(loaded[0]).connection if loaded else None
    chosen = url or os.environ.get(configfile.URL_VARIABLE)
    if chosen or connection is None:
        connection = ConnectionConfig.from_url(chosen or DEFAULT_URL, connection_attempts=1)
    svg = render_svg(graph)
    return SystemView(graph, connection, errors, svg[svg.find("<svg") :])


__all__ = ["SourceError", "SystemView", "load_system"]
