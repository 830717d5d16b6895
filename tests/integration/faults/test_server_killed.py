"""Fault (3): the server process killed with SIGKILL mid-stream, then restarted.

The server runs in a child process (``server_proc.py``) and appends each
handled ``n`` to a file (flushed and fsynced) before its handler returns, so
before the delivery is acknowledged. It is killed while casts are being sent
and handled; the broker requeues what it had delivered and not seen
acknowledged, and the restarted server handles it: every confirmed cast is
handled (lost = 0); those handled but not acknowledged before the kill are
handled again (duplicated, allowed and counted). ``engine`` is the server's
engine, and the client of the same kind sends (``RPCClient`` / ``AsyncRPCClient``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import ENGINES, Names, amqp_config, wait_until
from tests.integration.faults.conftest import Figures
from tests.integration.faults.support import (
    CastStream,
    ServerProcess,
    consumers_of,
    dead_lettered,
    duplicated,
    settled,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(150)]

CASTS = 3000


@pytest.mark.parametrize("engine", ENGINES)
def test_server_killed_mid_stream_and_restarted(
    engine: bool,
    names: Names,
    tmp_path: Path,
    server_processes: list[ServerProcess],
    figures: Figures,
) -> None:
    exchange, queue = names.exchange("tally"), names.queue("tally")
    srv = ServerProcess(engine, queue, exchange, tmp_path, names.connection("server"), sleep=0.001)
    server_processes.append(srv)
    srv.start()
    casts = CastStream(engine, amqp_config(engine, names.connection("casts")), exchange, CASTS, 50)
    started = time.monotonic()
    casts.start()
    wait_until(
        lambda: len(casts.confirmed) >= CASTS // 2 and len(srv.handled()) >= 300,
        "the stream under way",
        timeout=60,
    )
    srv.kill()
    killed_at = time.monotonic()
    handled_before = len(srv.handled())
    wait_until(lambda: consumers_of(queue) == 0, "the broker to see the server gone")
    srv.start()
    restarted = time.monotonic() - killed_at
    casts.finish(90)
    srv.wait_for(casts.confirmed, timeout=60, what="every confirmed cast handled")
    wait_until(lambda: settled(queue), "the queue drained")
    srv.stop()
    seconds = time.monotonic() - started

    counts = srv.counts()
    lost = len(casts.confirmed - set(counts))
    figures.record(
        test="(3) server SIGKILLed mid-stream, restarted",
        engine="async" if engine else "sync",
        sent=len(casts.confirmed),
        handled=len(counts),
        dead_lettered=dead_lettered(queue),
        duplicated=duplicated(counts),
        lost=lost,
        seconds=seconds,
        notes=f"killed after {handled_before} handled; consuming again {restarted:.1f} s later",
    )

    assert lost == 0
    assert casts.confirmed == set(range(CASTS))
    assert set(counts) == set(range(CASTS)), "handled something never sent"
    assert srv.starts == 2
