"""The dashboard's Starlette application: the page, its static files and its JSON API.

::

    GET  /                                   the page (static/index.html)
    GET  /api/state                          everything the page polls for
    GET  /api/topology.svg                   the picture of the system
    GET  /api/queues/{name}                  one queue: its counts and consumers
    GET  /api/deadletters/{queue}            the letters of a dead-letter queue
    GET  /api/deadletters/{queue}/{id}       one letter, by message id
    POST /api/deadletters/{queue}/replay     replay them (403 without --allow-replay)
    GET  /api/traces[?limit=N]               the newest messages of the trace database
    GET  /api/traces/{correlation_id}        one chain of calls

Unknown queues and letters are 404, with a message; a broker or database
that cannot be reached is 502 (the page says why and shows the rest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tavrida2 import dlq, exceptions
from tavrida2.dashboard import traces
from tavrida2.dashboard.instances import InstanceListener
from tavrida2.dashboard.management import (
    ManagementAPI,
    ManagementUnavailable,
    QueueStats,
    default_url,
)
from tavrida2.dashboard.system import SystemView, load_system
from tavrida2.masking import mask_url_passwords
from tavrida2.tracing.records import DEFAULT_TABLE

STATIC = os.path.join(os.path.dirname(__file__), "static")
#: Seconds between the page's polls of /api/state.
DEFAULT_REFRESH = 2.0
#: Letters a dead-letter queue's browser lists at most.
LETTERS_SHOWN = 100


@dataclass
class DashboardSettings:
    """What ``tavrida2 dashboard`` was asked to show, and whether it may replay."""

    configs: list[str] = field(default_factory=list)
    ds_files: list[str] = field(default_factory=list)
    #: The broker; None: $TAVRIDA2_URL, else the first config's connection.
    url: str | None = None
    #: The management API; None: http://<user>:<password>@<broker host>:15672/.
    management_url: str | None = None
    #: The trace database's SQLAlchemy URL; None: no traces view.
    trace_db: str | None = None
    trace_table: str = DEFAULT_TABLE
    allow_replay: bool = False
    #: Hosts the page may be asked for by (the Host header): DNS rebinding stays out.
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost"])
    refresh_seconds: float = DEFAULT_REFRESH


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": mask_url_passwords(message)}, status_code=status)


class Dashboard:
    """The state behind the page: the files' system, the management API, the instances."""

    def __init__(self, settings: DashboardSettings, system: SystemView | None = None) -> None:
        self.settings = settings
        self.system = system or load_system(settings.configs, settings.ds_files, settings.url)
        connection = self.system.connection
        self.management = ManagementAPI(
            settings.management_url or default_url(connection), connection.virtual_host
        )
        self.instances = InstanceListener(connection)

    # -- /api/state ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the page shows, in one JSON object (blocking: run it in a thread)."""
        graph = self.system.graph
        stats: dict[str, QueueStats] = {}
        consumers: list[dict[str, Any]] = []
        management_error = None
        try:
            stats = self.management.queues()
            consumers = self.management.consumers()
        except ManagementUnavailable as exc:
            management_error = str(exc)
        queues = [self._queue_row(name, stats) for name in graph.queues]
        peers = [peer for peer in self.instances.peers() if self._ours(peer)]
        known = set(graph.queues)
        return {
            "sources": graph.sources,
            "errors": [dataclasses.asdict(error) for error in self.system.errors],
            "broker": self.system.connection.to_url(),
            "allow_replay": self.settings.allow_replay,
            "refresh_seconds": self.settings.refresh_seconds,
            "management": {
                "url": self.management.shown_url,
                "ok": management_error is None,
                "error": management_error,
            },
            "services": [dataclasses.asdict(service) for service in graph.services.values()],
            "queues": queues,
            "instances": {
                "announced": peers,
                "error": self.instances.error,
                "consumers": [row for row in consumers if row["queue"] in known],
            },
            "dead_letters": [row for row in queues if row["kind"] == "dead-letters"],
            "traces": {"enabled": self.settings.trace_db is not None},
        }

    def _ours(self, peer: dict[str, Any]) -> bool:
        """An instance of this system: on one of its queues, else running one of its services.

        The announcements of every server on the broker's vhost arrive here.
        """
        graph = self.system.graph
        if self.system.server_queues:
            return peer["queue"] in graph.queues
        if graph.services:
            return bool(set(peer["services"]) & set(graph.services))
        return True

    def _queue_row(self, name: str, stats: dict[str, QueueStats]) -> dict[str, Any]:
        queue = self.system.graph.queues[name]
        row: dict[str, Any] = {
            "name": name,
            "kind": queue.kind,
            "of_queue": queue.of_queue,
            "services": [s.name for s in self.system.graph.services_on(name)],
            "found": name in stats,
        }
        counted = stats.get(name)
        numbers = dataclasses.asdict(counted) if counted is not None else {}
        for key in ("messages", "ready", "unacknowledged", "consumers"):
            row[key] = numbers.get(key)
        for key in ("publish_rate", "deliver_rate", "ack_rate"):
            row[key] = numbers.get(key)
        return row

    # -- handlers -----------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return FileResponse(os.path.join(STATIC, "index.html"))

    async def get_state(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.state))

    async def topology_svg(self, request: Request) -> Response:
        return Response(self.system.svg, media_type="image/svg+xml")

    async def queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.system.graph.queues:
            return _error(404, f"no queue {name!r} in the topology of {self._sources()}")
        try:
            stats = await run_in_threadpool(self.management.queues)
            consumers = await run_in_threadpool(self.management.consumers)
        except ManagementUnavailable as exc:
            return _error(502, f"RabbitMQ's management API does not answer: {exc}")
        row = self._queue_row(name, stats)
        row["consumer_list"] = [c for c in consumers if c["queue"] == name]
        return JSONResponse(row)

    def _sources(self) -> str:
        return ", ".join(self.system.graph.sources) or "no files"

    def _dead_letter_queue(self, request: Request) -> str | JSONResponse:
        queue = str(request.path_params["queue"])
        if queue not in self.system.dead_letter_queues:
            return _error(
                404, f"no dead-letter queue {queue!r} in the topology of {self._sources()}"
            )
        return queue

    def _peek(self, queue: str) -> tuple[int, list[dict[str, Any]]]:
        total, letters = dlq.peek(self.system.connection, queue, LETTERS_SHOWN)
        rows = []
        for letter in letters:
            row = dataclasses.asdict(letter)
            row["reason"] = mask_url_passwords(letter.reason)
            row["code"] = str(letter.code)
            rows.append(row)
        return total, rows

    async def dead_letters(self, request: Request) -> Response:
        queue = self._dead_letter_queue(request)
        if isinstance(queue, JSONResponse):
            return queue
        try:
            total, rows = await run_in_threadpool(self._peek, queue)
        except exceptions.QueueNotFound:
            return _error(404, f"dead-letter queue {queue!r} is not on the broker (yet)")
        except exceptions.TavridaError as exc:
            return _error(502, f"cannot read {queue!r}: {exc}")
        return JSONResponse({"queue": queue, "total": total, "letters": rows})

    async def dead_letter(self, request: Request) -> Response:
        queue = self._dead_letter_queue(request)
        if isinstance(queue, JSONResponse):
            return queue
        message_id = request.path_params["message_id"]
        try:
            _, rows = await run_in_threadpool(self._peek, queue)
        except exceptions.QueueNotFound:
            return _error(404, f"dead-letter queue {queue!r} is not on the broker (yet)")
        except exceptions.TavridaError as exc:
            return _error(502, f"cannot read {queue!r}: {exc}")
        for row in rows:
            if row["message_id"] == message_id:
                return JSONResponse(row)
        return _error(
            404,
            f"no dead letter with message id {message_id!r} in {queue!r} (first {LETTERS_SHOWN})",
        )

    async def replay(self, request: Request) -> Response:
        if not self.settings.allow_replay:
            return _error(
                403, "replay is off: the dashboard is read-only unless started with --allow-replay"
            )
        queue = self._dead_letter_queue(request)
        if isinstance(queue, JSONResponse):
            return queue
        # a JSON body cannot come from another site's plain form (no CORS preflight passed)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, 'expected a JSON body {"confirm": true}')
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("confirm") is not True:
            return _error(400, 'expected a JSON body {"confirm": true}')
        try:
            replayed = await run_in_threadpool(dlq.replay, self.system.connection, queue, None)
        except exceptions.QueueNotFound:
            return _error(404, f"dead-letter queue {queue!r} is not on the broker (yet)")
        except exceptions.TavridaError as exc:
            return _error(502, f"replay of {queue!r} stopped: {exc}")
        return JSONResponse({"queue": queue, "replayed": replayed})

    async def recent_traces(self, request: Request) -> Response:
        database = self.settings.trace_db
        if database is None:
            return _error(404, "no trace database: start the dashboard with --db URL")
        try:
            limit = max(1, min(500, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return _error(400, "limit: expected a whole number")
        from tavrida2.tracing.database import TraceDatabaseError

        try:
            records = await run_in_threadpool(
                traces.recent, database, limit, self.settings.trace_table
            )
        except TraceDatabaseError as exc:
            return _error(502, f"cannot read the trace database {exc}")
        return JSONResponse({"records": [traces.to_json(r) for r in records]})

    async def trace_chain(self, request: Request) -> Response:
        database = self.settings.trace_db
        if database is None:
            return _error(404, "no trace database: start the dashboard with --db URL")
        from tavrida2.tracing.command import format_chain
        from tavrida2.tracing.database import TraceDatabaseError, read_chain

        correlation_id = request.path_params["correlation_id"]
        try:
            records = await run_in_threadpool(
                lambda: read_chain(correlation_id, database, table=self.settings.trace_table)
            )
        except TraceDatabaseError as exc:
            return _error(502, f"cannot read the trace database {exc}")
        if not records:
            return _error(404, f"no message with correlation id {correlation_id!r}")
        return JSONResponse(
            {
                "correlation_id": correlation_id,
                "records": [traces.to_json(r) for r in records],
                "chain": format_chain(records),
            }
        )

    # -- the application ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.instances.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.instances.stop)


def create_app(settings: DashboardSettings, system: SystemView | None = None) -> Starlette:
    """The dashboard's ASGI application (serve it with uvicorn)."""
    dashboard = Dashboard(settings, system)
    routes = [
        Route("/", dashboard.page),
        Route("/api/state", dashboard.get_state),
        Route("/api/topology.svg", dashboard.topology_svg),
        Route("/api/queues/{name:path}", dashboard.queue),
        Route("/api/deadletters/{queue}/replay", dashboard.replay, methods=["POST"]),
        Route("/api/deadletters/{queue}/{message_id}", dashboard.dead_letter),
        Route("/api/deadletters/{queue}", dashboard.dead_letters),
        Route("/api/traces", dashboard.recent_traces),
        Route("/api/traces/{correlation_id}", dashboard.trace_chain),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=dashboard.lifespan)
    app.state.dashboard = dashboard
    return app


__all__ = ["DEFAULT_REFRESH", "Dashboard", "DashboardSettings", "create_app"]
