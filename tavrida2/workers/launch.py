"""``tavrida2 run CONFIG [CONFIG ...] --workers N``: check every config, then supervise.

Every config is loaded and checked in the supervisor before any process starts
(a bad file is a ``ConfigError`` naming the file: exit code 2, nothing spawned);
then each config gets ``workers`` processes of ``python -m tavrida2 run CONFIG``,
all consuming from the config's queue, each on its own connection.

Metrics: each worker is a Prometheus target of its own, on its own port. With
``--metrics-port PORT`` worker i (0, 1, ... over every config, in order) serves
on PORT+i; else a config's ``[metrics] port`` P gives its workers P+slot. The
ports are checked free before any process starts (0 stays 0: any free port).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence

from tavrida2 import configfile, exceptions
from tavrida2.workers.state import RestartPolicy
from tavrida2.workers.supervisor import Supervisor, WorkerSpec


def check_config(path: str, otel: bool = False) -> configfile.ServerConfig:
    """Load ``path`` as ``tavrida2 run`` would, and check that its server can be built.

    ``otel``: as ``tavrida2 run --otel`` would (OpenTelemetry must be installed).
    """
    from tavrida2.server import Server, file_server_arguments

    loaded = configfile.load(path)
    if loaded.connection.driver == "memory":
        raise exceptions.ConfigError(
            reason=f"{path}: the in-memory broker (memory://) lives inside one process; "
            "worker processes need RabbitMQ (an amqp:// address), or run one config "
            "without --workers"
        )
    loaded.bind_discovery()
    # builds nothing on the broker: checks the handlers against the engine, stop_timeout, ...
    arguments = file_server_arguments(loaded)
    arguments["otel"] = arguments["otel"] or otel
    Server(**arguments)
    return loaded


def worker_specs(
    configs: Sequence[str],
    workers: int,
    log_level: str | None = None,
    otel: bool = False,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> list[WorkerSpec]:
    """``workers`` specs per config, named ``CONFIG#1`` .. ``CONFIG#N``; configs checked first.

    ``otel``: each worker runs with ``--otel``. A worker with metrics gets
    ``--metrics-port`` and ``--metrics-host`` of its own (see the module docstring).
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: expected 1 or more")
    loaded = [check_config(path, otel) for path in configs]
    command = [sys.executable, "-m", "tavrida2"]
    if log_level:
        command += ["--log-level", log_level]
    seen: Counter[str] = Counter()
    specs: list[WorkerSpec] = []
    for path, config in zip(configs, loaded, strict=True):
        for slot in range(workers):
            seen[path] += 1
            argv = [*command, "run", os.path.abspath(path), *(["--otel"] if otel else [])]
            endpoint = _worker_metrics(config, len(specs), slot, metrics_port, metrics_host)
            if endpoint is not None:
                argv += ["--metrics-port", str(endpoint[1]), "--metrics-host", endpoint[0]]
            specs.append(
                WorkerSpec(
                    name=f"{path}#{seen[path]}",
                    argv=argv,
                    stop_timeout=config.stop_timeout,
                    slot=slot,
                    metrics=endpoint,
                )
            )
    return specs


def _worker_metrics(
    config: configfile.ServerConfig,
    index: int,
    slot: int,
    port: int | None,
    host: str | None,
) -> tuple[str, int] | None:
    """``(host, port)`` of the metrics of worker ``index`` (``slot`` of its config)."""
    file_host, file_port = config.metrics or (configfile.DEFAULT_METRICS_HOST, None)
    if port is not None:
        chosen = port and port + index
    elif file_port is not None:
        chosen = file_port and file_port + slot
    elif host is not None:
        raise exceptions.ConfigError(
            reason=f"a metrics host ({host}) but no metrics port: give --metrics-port "
            f"or [metrics] port in {config.path}"
        )
    else:
        return None
    if chosen > 65535:
        raise exceptions.ConfigError(
            reason=f"{config.path}: worker {index + 1} would serve metrics on port {chosen}, "
            "past 65535; choose a lower --metrics-port"
        )
    return host or file_host, chosen


def check_metrics_ports(specs: Sequence[WorkerSpec]) -> None:
    """Refuse ports given to two workers, or in use already (a clear error, nothing spawned)."""
    endpoints = [(*spec.metrics, spec.name) for spec in specs if spec.metrics is not None]
    if not endpoints:
        return
    taken: dict[tuple[str, int], str] = {}
    for host, port, name in endpoints:
        if port and (host, port) in taken:
            raise exceptions.ConfigError(
                reason=f"workers {taken[host, port]} and {name} would both serve metrics on "
                f"{host}:{port}; give the configs' [metrics] ports further apart"
            )
        taken[host, port] = name
    try:
        from tavrida2.metrics.exposition import check_ports_free
    except ImportError as exc:
        raise exceptions.ConfigError(reason=str(exc)) from None
    for host, port, _ in endpoints:
        check_ports_free(host, [port])


def run(
    configs: Sequence[str],
    workers: int,
    log_level: str | None = None,
    policy: RestartPolicy | None = None,
    otel: bool = False,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> int:
    """Check the configs, then supervise their workers until SIGTERM/SIGINT; the exit code."""
    specs = worker_specs(
        configs, workers, log_level, otel, metrics_port=metrics_port, metrics_host=metrics_host
    )
    check_metrics_ports(specs)
    print(
        f"tavrida2: {workers} worker process(es) for each of {', '.join(configs)}; "
        "Ctrl-C stops them all",
        file=sys.stderr,
        flush=True,
    )
    return Supervisor(specs, policy).run()


__all__ = ["check_config", "check_metrics_ports", "run", "worker_specs"]
