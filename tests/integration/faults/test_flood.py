"""Fault (5): a flood of 50,000 casts to a slow server.

The server (a child process, ``server_proc.py``, prefetch 10) sleeps 0.2 ms in
each handler and appends each ``n`` to a file; the client, in this process,
sends in windows of 500, each window's confirmations awaited before the next
(``RPCClient.cast_async``; ``AsyncRPCClient.cast`` gathered). ``engine`` is the
server's engine and the client's kind. The broker queues what
the server has not taken yet. Every cast is confirmed and handled (lost = 0);
the client's memory stays flat (its resident size grows by less than
``RSS_GROWTH_MB``), no window waits long for its confirmations, and the whole
flood is done within ``FLOOD_SECONDS``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ENGINES, Names, amqp_config, wait_until
from tests.integration.faults.conftest import Figures
from tests.integration.faults.support import (
    CastStream,
    ServerProcess,
    dead_lettered,
    duplicated,
    settled,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(150)]

CASTS = 50_000
WINDOW = 500
FLOOD_SECONDS = 90.0
RSS_GROWTH_MB = 100.0
WINDOW_SECONDS = 10.0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize("engine", ENGINES)
def test_flood_of_casts_to_a_slow_server(
    engine: bool,
    names: Names,
    tmp_path: Path,
    server_processes: list[ServerProcess],
    figures: Figures,
) -> None:
    exchange, queue = names.exchange("tally"), names.queue("tally")
    srv = ServerProcess(
        engine,
        queue,
        exchange,
        tmp_path,
        names.connection("server"),
        sleep=0.0002,
        fsync=False,
        prefetch=10,
    )
    server_processes.append(srv)
    srv.start()
    rss_before = _rss_mb()
    casts = CastStream(
        engine,
        amqp_config(engine, names.connection("casts")),
        exchange,
        CASTS,
        WINDOW,
        deadline=FLOOD_SECONDS,
    )
    started = time.monotonic()
    casts.start()
    casts.finish(FLOOD_SECONDS + 10)
    sent_in = time.monotonic() - started
    rss_after = _rss_mb()
    backlog_at_end_of_sending = CASTS - len(srv.handled())
    srv.wait_for(casts.confirmed, FLOOD_SECONDS - sent_in, "every cast of the flood handled")
    seconds = time.monotonic() - started
    wait_until(lambda: settled(queue), "the queue drained")

    counts = srv.counts()
    lost = len(casts.confirmed - set(counts))
    windows = casts.window_seconds
    longest = max(windows)
    figures.record(
        test="(5) flood of 50,000 casts to a slow server",
        engine="async" if engine else "sync",
        sent=len(casts.confirmed),
        handled=len(counts),
        dead_lettered=dead_lettered(queue),
        duplicated=duplicated(counts),
        lost=lost,
        seconds=seconds,
        notes=f"sent in {sent_in:.1f} s ({CASTS / sent_in:.0f}/s), {backlog_at_end_of_sending} "
        f"queued then; window of {WINDOW} confirmed in {statistics.median(windows) * 1000:.0f} ms "
        f"(median), {longest * 1000:.0f} ms (max); client RSS {rss_before:.0f} -> "
        f"{rss_after:.0f} MB; handled at {CASTS / seconds:.0f}/s",
    )

    assert lost == 0
    assert casts.confirmed == set(range(CASTS))
    assert sum(casts.raised.values()) == 0, dict(casts.raised)
    assert seconds < FLOOD_SECONDS
    assert longest < WINDOW_SECONDS, f"a window waited {longest:.1f} s for its confirmations"
    assert rss_after - rss_before < RSS_GROWTH_MB
