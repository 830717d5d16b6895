"""``tavrida2 run CONFIG [CONFIG ...] --workers N``: check every config, then supervise.

Every config is loaded and checked in the supervisor before any process starts
(a bad file is a ``ConfigError`` naming the file: exit code 2, nothing spawned);
then each config gets ``workers`` processes of ``python -m tavrida2 run CONFIG``,
all consuming from the config's queue, each on its own connection.
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
    configs: Sequence[str], workers: int, log_level: str | None = None, otel: bool = False
) -> list[WorkerSpec]:
    """``workers`` specs per config, named ``CONFIG#1`` .. ``CONFIG#N``; configs checked first.

    ``otel``: each worker runs with ``--otel``.
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: expected 1 or more")
    loaded = [check_config(path, otel) for path in configs]
    command = [sys.executable, "-m", "tavrida2"]
    if log_level:
        command += ["--log-level", log_level]
    seen: Counter[str] = Counter()
    specs = []
    for path, config in zip(configs, loaded, strict=True):
        for slot in range(workers):
            seen[path] += 1
            specs.append(
                WorkerSpec(
                    name=f"{path}#{seen[path]}",
                    argv=[*command, "run", os.path.abspath(path), *(["--otel"] if otel else [])],
                    stop_timeout=config.stop_timeout,
                    slot=slot,
                )
            )
    return specs


def run(
    configs: Sequence[str],
    workers: int,
    log_level: str | None = None,
    policy: RestartPolicy | None = None,
    otel: bool = False,
) -> int:
    """Check the configs, then supervise their workers until SIGTERM/SIGINT; the exit code."""
    specs = worker_specs(configs, workers, log_level, otel)
    print(
        f"tavrida2: {workers} worker process(es) for each of {', '.join(configs)}; "
        "Ctrl-C stops them all",
        file=sys.stderr,
        flush=True,
    )
    return Supervisor(specs, policy).run()


__all__ = ["check_config", "run", "worker_specs"]
