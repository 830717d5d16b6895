"""The ``tavrida2`` command: run servers from config files, call and cast, check files.

::

    tavrida2 run CONFIG                      serve the services of an INI config file
    tavrida2 run CONFIG... --workers N       N supervised processes per config
    tavrida2 run CONFIG --reload             restart it when a controller file changes
    tavrida2 run CONFIG --metrics-port PORT  also serve Prometheus metrics (tavrida2[metrics])
    tavrida2 call SERVICE.METHOD k=v ...     call and print the answer as JSON
    tavrida2 cast SERVICE.METHOD k=v ...     send a request nobody answers
    tavrida2 ds check FILE                   check a .ds file, list services and exchanges
    tavrida2 dlq list CONFIG                 the dead letters of a server, and why
    tavrida2 dlq replay CONFIG [--limit N]   publish them again where they were going
    tavrida2 topology CONFIG... [--ds FILE...] [--format text|dot|mermaid|svg]
                                             a picture of the system of the files
    tavrida2 dashboard [--config CONFIG...]  a live web page of the system
    tavrida2 spec CONFIG [--format F]        a server's AsyncAPI 3.0 document (or Markdown)
    tavrida2 peers [--ds FILE] [--url URL]   the running servers, as they announce themselves
    tavrida2 trace CORRELATION_ID [--db URL] a chain of calls from a trace database

Exit codes: 0 done; 1 the call failed (a remote error, no answer in time, the
broker unreachable: the reason on stderr); 2 a user error (a bad file, a bad
argument), one paragraph on stderr and no traceback. A supervisor of workers
also exits 3 (a worker could not start) or 4 (a worker had to be killed while
stopping): see :mod:`tavrida2.workers.state`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from tavrida2 import configfile, entry_point, exceptions, tracing
from tavrida2.config import DEFAULT_URL, ConnectionConfig
from tavrida2.discovery.dsfile import DSFile
from tavrida2.discovery.local import LocalDiscovery
from tavrida2.liveness import DEFAULT_ANNOUNCE_PERIOD

WORKER_VARIABLE = "TAVRIDA2_WORKER"  # set by a supervisor (tavrida2.workers.link)
EXIT_FAILED = 1
EXIT_USAGE = 2
#: The formats of ``tavrida2 spec`` (:data:`tavrida2.spec.FORMATS`, kept here so that
#: building the parser imports no more than it needs).
SPEC_FORMATS = ("asyncapi-json", "asyncapi-yaml", "markdown")

_EPILOG = """\
examples:
  tavrida2 run samples/deploy/hello.ini
  tavrida2 run samples/deploy/hello.ini samples/deploy/world.ini --workers 3
  tavrida2 run samples/deploy/hello.ini --metrics-port 9100
  tavrida2 call test_hello.hello param=123 --ds samples/deploy/services.ds
  tavrida2 cast test_hello.hello param='"text"' --exchange hello_exchange
  tavrida2 ds check samples/deploy/services.ds
  tavrida2 dlq list samples/deploy/hello.ini
  tavrida2 topology samples/deploy/hello.ini
  tavrida2 spec samples/deploy/hello.ini --format asyncapi-yaml -o hello.asyncapi.yaml

The broker is --url, else $TAVRIDA2_URL, else amqp://guest:guest@localhost:5672/%2F.
Values of key=value are JSON where they parse as JSON (5, true, [1,2], {"a":1},
"quoted text"), plain text otherwise.
"""


class UsageError(Exception):
    """A mistake of the person at the keyboard: reported in one paragraph, exit code 2."""


def _version() -> str:
    try:
        return importlib.metadata.version("tavrida2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tavrida2",
        description="Run tavrida2 services, call them, and check their files.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tavrida2 {_version()}")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log on stderr (default: INFO for `run`, WARNING otherwise)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_run_command(commands)

    for name, handler in (("call", _call), ("cast", _cast)):
        sub = commands.add_parser(
            name,
            help=_doc(handler).splitlines()[0],
            description=_doc(handler),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("target", metavar="SERVICE.METHOD", help="what to call")
        sub.add_argument("params", metavar="KEY=VALUE", nargs="*", help="the payload")
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--ds", metavar="FILE", help="find the service's exchange in a .ds file")
        where.add_argument("--exchange", metavar="NAME", help="the service's exchange")
        sub.add_argument("--url", help="the broker (default: $TAVRIDA2_URL or localhost)")
        sub.add_argument(
            "--source", default="tavrida2_cli", help="the source entry point (default tavrida2_cli)"
        )
        sub.add_argument("--context", metavar="JSON", help="the request's context, a JSON object")
        if name == "call":
            sub.add_argument(
                "--timeout", type=float, default=30.0, help="seconds to wait (default 30)"
            )
        sub.set_defaults(handler=handler)

    ds = commands.add_parser("ds", help="work with .ds discovery files")
    ds_commands = ds.add_subparsers(dest="ds_command", metavar="ACTION", required=True)
    check = ds_commands.add_parser(
        "check", help="check a .ds file and list its services", description=_doc(_ds_check)
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_ds_check)

    dlq = commands.add_parser("dlq", help="inspect and replay a server's dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    listing = dlq_commands.add_parser(
        "list", help=_doc(_dlq_list).splitlines()[0], description=_doc(_dlq_list)
    )
    listing.add_argument("config", metavar="CONFIG")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.set_defaults(handler=_dlq_list)
    replay = dlq_commands.add_parser(
        "replay", help=_doc(_dlq_replay).splitlines()[0], description=_doc(_dlq_replay)
    )
    replay.add_argument("config", metavar="CONFIG")
    replay.add_argument("--limit", type=int, help="at most this many (default: all)")
    replay.set_defaults(handler=_dlq_replay)

    peers = commands.add_parser(
        "peers", help=_doc(_peers).splitlines()[0], description=_doc(_peers)
    )
    peers.add_argument("--ds", metavar="FILE", help="only the services of this .ds file")
    peers.add_argument("--url", help="the broker (default: $TAVRIDA2_URL or localhost)")
    peers.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_ANNOUNCE_PERIOD * 2.2,
        help=f"seconds to listen (default {DEFAULT_ANNOUNCE_PERIOD * 2.2:g}: two announcements)",
    )
    peers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    peers.set_defaults(handler=_peers)

    trace = commands.add_parser(
        "trace", help=_doc(_trace).splitlines()[0], description=_doc(_trace)
    )
    trace.add_argument("correlation_id", metavar="CORRELATION_ID", help="the chain to show")
    trace.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get("TAVRIDA2_TRACE_DB") or tracing.DEFAULT_DB_URL,
        help="the trace database, a SQLAlchemy URL "
        "(default: $TAVRIDA2_TRACE_DB or sqlite:///tavrida2-trace.db)",
    )
    trace.add_argument("--table", default=tracing.DEFAULT_TABLE, help="its table")
    trace.set_defaults(handler=_trace)

    _add_topology_parser(commands)
    _add_dashboard_parser(commands)
    _add_spec_parser(commands)
    return parser


def _add_topology_parser(commands: Any) -> None:
    topology = commands.add_parser(
        "topology",
        help="draw the services, exchanges, queues and bindings of config and .ds files",
        description=_doc(_topology),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    topology.add_argument("config", metavar="CONFIG", nargs="*", help="a server's INI config file")
    topology.add_argument(
        "--ds", metavar="FILE", nargs="+", default=[], help="also the services of .ds files"
    )
    topology.add_argument(
        "--format",
        choices=["text", "dot", "mermaid", "svg"],
        default="text",
        help="text (default), Graphviz dot, Mermaid or SVG (drawn by Graphviz's dot when "
        "installed, else by tavrida2)",
    )
    topology.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    topology.set_defaults(handler=_topology)


def _add_dashboard_parser(commands: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help=_doc(_dashboard).splitlines()[0],
        description=_doc(_dashboard),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dashboard.add_argument(
        "--config", metavar="CONFIG", nargs="+", default=[], help="servers' INI config files"
    )
    dashboard.add_argument("--ds", metavar="FILE", nargs="+", default=[], help=".ds files")
    dashboard.add_argument("--url", help="the broker (default: $TAVRIDA2_URL or localhost)")
    dashboard.add_argument(
        "--management-url",
        metavar="URL",
        help="RabbitMQ's management HTTP API (default: http://guest:guest@<broker host>:15672)",
    )
    dashboard.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get("TAVRIDA2_TRACE_DB"),
        help="the trace database, a SQLAlchemy URL (default: $TAVRIDA2_TRACE_DB, else none)",
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1)"
    )
    dashboard.add_argument("--port", type=int, default=8765, help="port to bind (default 8765)")
    dashboard.add_argument(
        "--allow-replay",
        action="store_true",
        help="let the page replay dead letters (read-only without it)",
    )
    dashboard.set_defaults(handler=_dashboard)


def _add_spec_parser(commands: Any) -> None:
    spec = commands.add_parser(
        "spec",
        help="print the AsyncAPI 3.0 document (or a Markdown page) of a server",
        description=_doc(_spec),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    spec.add_argument("config", metavar="CONFIG")
    spec.add_argument(
        "--format",
        choices=SPEC_FORMATS,
        default=SPEC_FORMATS[0],
        help=f"what to write (default {SPEC_FORMATS[0]})",
    )
    spec.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    spec.add_argument(
        "--api-version",
        metavar="VERSION",
        help="the API's version in the AsyncAPI document's info (default 1.0.0)",
    )
    spec.set_defaults(handler=_spec)


def _doc(func: Any) -> str:
    return inspect.cleandoc(func.__doc__ or "")


def _add_run_command(commands: Any) -> None:
    run = commands.add_parser("run", help=_doc(_run).splitlines()[0], description=_doc(_run))
    run.add_argument("config", metavar="CONFIG", nargs="+", help="a server's INI config file")
    run.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="processes per config, competing on its queue, under a supervisor that "
        "restarts them (default 1: one config is served in this process)",
    )
    run.add_argument(
        "--otel",
        action="store_true",
        help="trace every message with OpenTelemetry (the tavrida2[otel] extra; the spans go "
        "to the global TracerProvider, e.g. set up by opentelemetry-instrument)",
    )
    run.add_argument(
        "--reload",
        action="store_true",
        help="serve in a child process and start it again when a .py, .ini or .ds file "
        "of the config's folder (or its services folder) changes; needs tavrida2[reload]",
    )
    run.add_argument(
        "--reload-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="with --reload, also watch DIR (may be given again)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (needs the `metrics` "
        "extra; 0: any free port); with several workers, worker i (0, 1, ...) gets PORT+i",
    )
    run.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="the address the metrics listen on (default: [metrics] host, else 127.0.0.1)",
    )
    run.set_defaults(handler=_run)


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a whole number of processes"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count}: expected 1 or more worker processes per config")
    return count


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port}: expected a port number from 0 to 65535")
    return port


def _run(args: argparse.Namespace) -> int:
    """Serve the services of CONFIG until SIGINT or SIGTERM.

    With several configs or --workers N, a supervisor runs N processes per config,
    restarts one that exits (with a growing delay), and on SIGINT/SIGTERM stops
    them all; exit code 3 if a worker could not start 5 times in a row, 4 if one
    had to be killed while stopping. SIGUSR1 prints the state of every worker.
    """
    from tavrida2.server import CLIServer
    from tavrida2.workers import launch
    from tavrida2.workers.link import SupervisorLink

    if args.reload:
        return _run_reloading(args)
    if args.reload_dir:
        raise UsageError("--reload-dir is for --reload")
    if len(args.config) > 1 or args.workers > 1:
        return launch.run(
            args.config,
            args.workers,
            args.log_level,
            otel=args.otel,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    link = SupervisorLink.from_environment()
    srv = CLIServer(
        args.config[0],
        otel=args.otel,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    metrics = ""
    if srv.metrics_endpoint is not None:
        host, port = srv.metrics_endpoint
        metrics = f"; metrics on {host}:{port or '(any free port)'}"
    if link is not None:
        link.attach(srv)
    print(
        f"tavrida2: serving {', '.join(c.service_name for c in srv.file_config.controllers)} "
        f"on queue {srv.queue_name} ({srv.file_config.connection.to_url()}){metrics}; "
        "Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    srv.run()
    return 0


def _run_reloading(args: argparse.Namespace) -> int:
    """``run --reload``: the same command without it, in a child process (:mod:`.reloader`)."""
    from tavrida2 import reloader

    for path in args.config:
        # a bad file is reported at once; a controller that does not import is the
        # child's error: the watcher waits for it to be fixed
        configfile.check_file(path)
    command = [sys.executable, "-m", "tavrida2"]
    if args.log_level:
        command += ["--log-level", args.log_level]
    command += ["run", *args.config, "--workers", str(args.workers)]
    if args.otel:
        command.append("--otel")
    if args.metrics_port is not None:
        command += ["--metrics-port", str(args.metrics_port)]
    if args.metrics_host is not None:
        command += ["--metrics-host", args.metrics_host]
    watcher = reloader.Reloader(
        command,
        reloader.watched_paths(args.config, args.reload_dir),
        reloader.stop_timeout_of(args.config),
    )
    return watcher.run()


def _call(args: argparse.Namespace) -> int:
    """Call SERVICE.METHOD with the KEY=VALUE payload and print the answer as JSON.

    The answer's payload goes to stdout; a remote error goes to stderr with
    exit code 1.
    """
    from tavrida2.client import RPCClient

    service, method, payload, context, disc, conf = _request_parts(args)
    if not args.timeout > 0:
        raise UsageError(f"--timeout {args.timeout}: expected a positive number of seconds")
    with RPCClient(conf, disc, source=args.source, context=context) as cli:
        answer = getattr(cli[service], method)(**payload).call(timeout=args.timeout)
    print(json.dumps(answer.payload, ensure_ascii=False, indent=2, sort_keys=True))
    return 0


def _cast(args: argparse.Namespace) -> int:
    """Send SERVICE.METHOD the KEY=VALUE payload as a request nobody answers (confirmed)."""
    from tavrida2.client import RPCClient

    service, method, payload, context, disc, conf = _request_parts(args)
    with RPCClient(conf, disc, source=args.source, context=context) as cli:
        getattr(cli[service], method)(**payload).cast()
    print(f"tavrida2: sent {service}.{method}", file=sys.stderr)
    return 0


def _peers(args: argparse.Namespace) -> int:
    """List the running server instances: services, host, pid, version, last seen.

    Servers announce themselves every few seconds (``announce_period``);
    this listens for ``--wait`` seconds and prints those heard, with how long
    ago each was last seen. A server that stopped or was killed is not heard.
    """
    from tavrida2.drivers import create_sync_driver
    from tavrida2.liveness import listen

    if not args.wait > 0:
        raise UsageError(f"--wait {args.wait}: expected a positive number of seconds")
    services = list(DSFile(args.ds).services) if args.ds else None
    url = args.url or os.environ.get(configfile.URL_VARIABLE) or DEFAULT_URL
    driver = create_sync_driver(ConnectionConfig.from_url(url, connection_attempts=1))
    driver.connect()
    try:
        found = listen(driver, args.wait, services)
    finally:
        driver.close()
    now = time.time()
    if args.json:
        rows = [dict(vars(peer), last_seen=round(peer.age(now), 1)) for peer in found]
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not found:
        print(f"tavrida2: no server announced itself in {args.wait:g} s", file=sys.stderr)
        return 1
    header = ("SERVICES", "HOST", "PID", "VERSION", "ENGINE", "UP", "LAST SEEN", "INSTANCE")
    table = [header] + [
        (
            ",".join(peer.services),
            peer.host,
            str(peer.pid),
            peer.version,
            peer.engine,
            f"{now - peer.started_at:.0f} s",
            f"{peer.age(now):.1f} s ago",
            peer.instance,
        )
        for peer in found
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _trace(args: argparse.Namespace) -> int:
    """Print the chain of calls CORRELATION_ID from the database a trace SqlSink writes to.

    Exit code 1 if it holds no message of that chain, 2 if it cannot be read.
    """
    return tracing.trace_command(
        args.correlation_id, args.db, sys.stdout, err=sys.stderr, table=args.table
    )


def _request_parts(
    args: argparse.Namespace,
) -> tuple[str, str, dict[str, Any], dict[str, Any] | None, LocalDiscovery, ConnectionConfig]:
    try:
        target = entry_point.parse(args.target)
    except exceptions.WrongEntryPointFormat:
        target = None
    if target is None or not target.method:
        raise UsageError(f"{args.target!r}: expected SERVICE.METHOD, e.g. test_hello.hello")
    payload = parse_params(args.params)
    context = None
    if args.context:
        try:
            context = json.loads(args.context)
        except ValueError as exc:
            raise UsageError(f"--context: not JSON ({exc})") from None
        if not isinstance(context, dict):
            raise UsageError('--context: expected a JSON object, e.g. \'{"user": "ann"}\'')
    disc = LocalDiscovery()
    if args.ds:
        disc.register_remote_service(target.service, DSFile(args.ds).get(target.service).exchange)
    elif args.exchange:
        disc.register_remote_service(target.service, args.exchange)
    else:
        raise UsageError(
            f"where is {target.service!r}? give --ds FILE (a .ds discovery file) or "
            "--exchange NAME (the service's exchange)"
        )
    url = args.url or os.environ.get(configfile.URL_VARIABLE) or DEFAULT_URL
    conf = ConnectionConfig.from_url(url, connection_attempts=1)
    return target.service, target.method, payload, context, disc, conf


def parse_params(params: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=text"]`` -> ``{"a": 1, "b": "text"}`` (JSON values, else text)."""
    payload: dict[str, Any] = {}
    for param in params:
        key, sep, raw = param.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"{param!r}: expected KEY=VALUE with KEY a name, e.g. param=123")
        try:
            payload[key] = json.loads(raw)
        except ValueError:
            payload[key] = raw
    return payload


def _ds_check(args: argparse.Namespace) -> int:
    """Check a .ds discovery file and list its services, exchanges and notification exchanges."""
    ds = DSFile(args.file)
    if not ds.services:
        raise UsageError(f"{args.file}: no services (expected [service] sections with 'exchange')")
    width = max(len(name) for name in ds.services)
    print(f"{args.file}: {len(ds.services)} service(s)")
    for entry in ds.entries.values():
        notes = f"  notifications: {entry.notifications}" if entry.notifications else ""
        print(f"  {entry.service:<{width}}  exchange: {entry.exchange}{notes}")
    return 0


def _topology(args: argparse.Namespace) -> int:
    """Draw the system of the CONFIG files and --ds files (nothing is sent to a broker).

    The services, the exchanges and queues their servers declare (dead-letter and
    retry queues, broadcast fanouts), the bindings (rpc ``service.#``, one per
    subscribed notification), and who calls whom (from the controllers'
    response and error handlers and their ``proxy.<service>.<method>(...)``
    calls). --format: text, dot (Graphviz), mermaid, or svg.

    examples:
      tavrida2 topology samples/deploy/hello.ini samples/deploy/world.ini
      tavrida2 topology samples/agents/*.ini --format svg -o agents.svg
      tavrida2 topology --ds samples/tutorial/services.ds --format mermaid
    """
    from tavrida2 import topology

    if not args.config and not args.ds:
        raise UsageError("nothing to draw: give CONFIG files, --ds FILE..., or both")
    try:
        graph = topology.build_graph(args.config, args.ds)
        drawn = topology.RENDERERS[args.format](graph)
    except topology.GraphSourceError as exc:
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:  # Graphviz failed
        raise UsageError(str(exc)) from None
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as stream:
                stream.write(drawn)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(drawn)
    return 0


def _spec(args: argparse.Namespace) -> int:
    """Print the contract of the server of CONFIG: an AsyncAPI 3.0.0 document or Markdown.

    Channels are the routing keys of its exchanges (requests, subscriptions,
    broadcasts, answers, its notifications), operations its handlers, messages
    the Tavrida headers and body with each handler's schema= (or one derived from
    its parameters). Nothing is sent; the config is checked as `run` checks it.
    """
    from tavrida2 import spec
    from tavrida2.server import Server, file_server_arguments

    loaded = configfile.load(args.config)
    try:  # the checks of `run` (engine, settings): no document of a server that would not start
        Server(**file_server_arguments(loaded))
    except exceptions.TavridaError as exc:
        reason = exc._kwargs.get("reason", exc) if isinstance(exc, exceptions.ConfigError) else exc
        raise UsageError(f"{args.config}: {reason}") from None
    text = spec.render(loaded, args.format, version=args.api_version or spec.DEFAULT_VERSION)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
    except OSError as exc:
        raise UsageError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
    print(f"tavrida2: wrote {args.output}", file=sys.stderr)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """Serve a web page of the system: topology, queues, instances, dead letters, traces.

    The picture and the queues of the --config and --ds files; each queue's
    depth, consumers and rates (RabbitMQ's management API); the running
    instances (their announcements); the dead letters, with a replay button
    when --allow-replay is given; recent messages of the trace database
    (--db). It binds 127.0.0.1:8765 unless told otherwise; Ctrl-C stops it.

    examples:
      tavrida2 dashboard --config samples/agents/*.ini
      tavrida2 dashboard --config samples/deploy/*.ini --allow-replay --db sqlite:///trace.db
    """
    from tavrida2.dashboard.command import serve

    return serve(args)


def _dead_letter_queue(args: argparse.Namespace) -> tuple[ConnectionConfig, str]:
    loaded = configfile.load(args.config)
    if loaded.dead_letters is None:
        raise UsageError(f"{args.config}: dead letters are turned off ([server] dead_letters)")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: expected 1 or more")
    return loaded.connection, loaded.dead_letters.queue


def _dlq_list(args: argparse.Namespace) -> int:
    """List the dead letters of the server of CONFIG: why each is there, where it was going.

    The messages stay in the dead-letter queue.
    """
    from tavrida2 import dlq

    conf, queue = _dead_letter_queue(args)
    total, letters = dlq.peek(conf, queue, args.limit)
    print(f"{queue}: {total} dead letter(s)" + (f", the first {len(letters)}:" if letters else ""))
    for letter in letters:
        print(
            f"- {letter.when}  {letter.message_type} {letter.destination or '-'}  "
            f"(from {letter.exchange or '(default)'} / {letter.routing_key}, "
            f"attempt {letter.attempts}, code {letter.code})\n"
            f"    message_id {letter.message_id}: {letter.reason}"
        )
    return 0


def _dlq_replay(args: argparse.Namespace) -> int:
    """Publish the dead letters of the server of CONFIG again, where they were first sent.

    Each is taken off the dead-letter queue only once the broker confirmed its
    copy; the retry count starts again.
    """
    from tavrida2 import dlq

    conf, queue = _dead_letter_queue(args)
    replayed = dlq.replay(conf, queue, args.limit)
    print(f"{queue}: replayed {replayed} dead letter(s)")
    return 0


def _fail(code: int, message: str) -> NoReturn:
    print(f"tavrida2: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tavrida2`` command."""
    args = build_parser().parse_args(argv)
    level = args.log_level or ("INFO" if args.handler is _run else "WARNING")
    worker = os.environ.get(WORKER_VARIABLE)
    where = f" [{worker.replace('%', '%%')} pid %(process)d]" if worker else ""
    logging.basicConfig(
        level=getattr(logging, level),
        format=f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s",
    )
    if level != "DEBUG":
        # tavrida2 says what went wrong with the connection in its own words; the
        # AMQP libraries would add their tracebacks
        for library in ("pika", "aio_pika", "aiormq"):
            logging.getLogger(library).setLevel(logging.CRITICAL)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        _fail(EXIT_USAGE, f"error: {exc}")
    except exceptions.ConfigError as exc:
        _fail(EXIT_USAGE, f"error: {exc._kwargs.get('reason', exc)}")
    except (
        exceptions.UnableToDiscover,
        exceptions.WrongEntryPointFormat,
        exceptions.IncorrectAMQPConfig,
    ) as exc:
        _fail(EXIT_USAGE, f"error: {exc}")
    except exceptions.RemoteError as exc:
        _fail(
            EXIT_FAILED,
            f"remote error: {exc.remote_class}: {exc.remote_message} (code {exc.code})",
        )
    except (exceptions.TavridaError, TimeoutError) as exc:
        _fail(EXIT_FAILED, f"failed: {exc}")
    except (ValueError, TypeError) as exc:
        _fail(EXIT_USAGE, f"error: {exc}")
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main", "parse_params"]
