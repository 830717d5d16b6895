"""Fault (2): connections lost in the middle of things, for each engine.

- The server's connection is closed by the broker (``rabbitmqctl
  close_connection``) during a stream of casts and calls: the server
  reconnects; every confirmed cast is handled (lost = 0, duplicates allowed and
  counted), every call returns or raises.
- The client's connection is closed by the broker with calls pending, on
  ``RPCClient`` (engine ``sync``) and ``AsyncRPCClient`` (``async``): each
  pending call returns or raises at once (none waits for its timeout), and the
  client's next call reconnects.
- The network between the server and the broker stalls (a TCP proxy stops
  forwarding, every socket stays open) with ``heartbeat_interval=2``: the broker
  drops the server within about two heartbeat intervals, tavrida2 notices
  (through its AMQP library's heartbeat check), and once the network forwards
  again the server reconnects and handles everything (lost = 0).

In each, ``engine`` pairs the server's engine with the client of the same
kind (``sync``: sync engine and ``RPCClient``; ``async``: async engine and
``AsyncRPCClient``). Casts and calls are counted as in ``test_broker_restart``:
a cast is sent once confirmed, one that raised is sent again; a call is tried
once and returns or raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from tavrida2 import server
from tests.integration.conftest import (
    ENGINES,
    Names,
    Servers,
    amqp_config,
    close_connection,
    connection_pids,
    wait_until,
)
from tests.integration.faults.conftest import Figures
from tests.integration.faults.stall_proxy import StallingProxy
from tests.integration.faults.support import (
    CALL_ERRORS,
    CallStream,
    CastStream,
    Tally,
    async_client,
    consumers_of,
    dead_lettered,
    duplicated,
    fresh_tally,
    settled,
    sync_client,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(150)]

CASTS = 3000
CALLS = 300
PENDING_CALLS = 30
HEARTBEAT = 2


def _engine_id(engine: bool) -> str:
    return "async" if engine else "sync"


def _one_connection(connection_name: str) -> str:
    pids = wait_until(lambda: connection_pids(connection_name), f"connection {connection_name}")
    assert len(pids) == 1, pids
    return pids[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine", ENGINES)
def test_server_connection_closed_by_the_broker_mid_stream(
    engine: bool, names: Names, servers: Servers, figures: Figures
) -> None:
    ledger = fresh_tally(note_seconds=0.001)  # the backlog outlasts the closing
    exchange, queue, server_name = names.exchange("tally"), names.queue("tally"), names.connection()
    srv = server.Server(amqp_config(engine, server_name, retry_delay=0.1), queue, exchange, [Tally])
    servers.start(srv)
    old_pid = _one_connection(server_name)
    casts = CastStream(engine, amqp_config(engine, names.connection("casts")), exchange, CASTS, 50)
    calls = CallStream(engine, amqp_config(engine, names.connection("calls")), exchange, CALLS, 10)
    started = time.monotonic()
    casts.start()
    calls.start()
    # mid-stream on both sides: the clients are still sending, the server handling
    wait_until(
        lambda: len(casts.confirmed) >= CASTS // 3 and len(ledger.handled("note")) >= 200,
        "the stream under way",
        timeout=60,
    )
    backlog = len(casts.confirmed) - len(ledger.handled("note"))
    close_connection(old_pid, "fault test")
    casts.finish(90)
    calls.finish(90)
    ledger.wait_for("note", casts.confirmed, timeout=60, what="every confirmed cast handled")
    wait_until(lambda: settled(queue), "the queue drained")
    new_pid = _one_connection(server_name)
    seconds = time.monotonic() - started

    note_counts, echo_counts = ledger.counts("note"), ledger.counts("echo")
    cast_lost = len(casts.confirmed - set(note_counts))
    call_lost = CALLS - len(calls.returned) - len(calls.failed)
    dead = dead_lettered(queue)
    figures.record(
        test="(2) server connection closed by the broker: casts",
        engine=_engine_id(engine),
        sent=len(casts.confirmed),
        handled=len(note_counts),
        dead_lettered=dead,
        duplicated=duplicated(note_counts),
        lost=cast_lost,
        seconds=seconds,
        notes=f"closed with {backlog} confirmed casts not yet handled; "
        f"{sum(casts.raised.values())} publish attempts raised",
    )
    figures.record(
        test="(2) server connection closed by the broker: calls",
        engine=_engine_id(engine),
        sent=CALLS,
        handled=len(echo_counts),
        dead_lettered=dead,
        duplicated=duplicated(echo_counts),
        lost=call_lost,
        calls_returned=len(calls.returned),
        calls_raised=len(calls.failed),
        seconds=seconds,
        notes=f"raised: {dict(calls.raised)}; longest call {calls.longest:.1f} s",
    )

    assert cast_lost == 0
    assert casts.confirmed == set(range(CASTS))
    assert casts.unexpected == []
    assert call_lost == 0
    assert calls.wrong_answers == []
    assert calls.unexpected == []
    assert new_pid != old_pid
    assert consumers_of(queue) == 1
    assert dead == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_client_connection_closed_with_calls_pending(
    engine: bool, names: Names, servers: Servers, figures: Figures
) -> None:
    """Calls pending when the broker closes the client's connection end at once.

    The server (sync engine: one request at a time, 0.1 s each) holds the
    requests; once 5 are handled the client's connection is closed. Every call
    then has returned or raised within a few seconds (their timeout is 60 s).
    """
    ledger = fresh_tally()
    exchange, queue, client_name = names.exchange("tally"), names.queue("tally"), names.connection()
    servers.start(
        server.Server(amqp_config(False, names.connection("server")), queue, exchange, [Tally])
    )
    conf = amqp_config(engine, client_name)
    outcomes: dict[int, str] = {}
    raised: list[BaseException] = []

    def closing() -> float:
        """Close the client's connection (from the broker); when the closing began."""
        pid = _one_connection(client_name)
        before = time.monotonic()
        close_connection(pid, "fault test")
        return before

    def settle(n: int, answer: Any, error: BaseException | None) -> None:
        if error is None:
            assert answer.payload == {"n": n}
            outcomes[n] = "returned"
        else:
            outcomes[n] = "raised"
            raised.append(error)

    started = time.monotonic()
    if engine:

        async def scenario() -> tuple[float, Any]:
            async with async_client(conf, exchange) as cli:
                pending = [
                    asyncio.ensure_future(cli.tally.echo(n=n, seconds=0.1).call(timeout=60))
                    for n in range(PENDING_CALLS)
                ]
                await asyncio.to_thread(
                    wait_until, lambda: len(ledger.handled("echo")) >= 5, "5 calls handled"
                )
                closed_at = await asyncio.to_thread(closing)
                results = await asyncio.wait_for(
                    asyncio.gather(*pending, return_exceptions=True), timeout=30
                )
                ended = time.monotonic() - closed_at
                for n, result in enumerate(results):
                    failed = isinstance(result, BaseException)
                    settle(n, None if failed else result, result if failed else None)
                after = await cli.tally.echo(n=-1).call(timeout=20)
                return ended, after

        ended, after = asyncio.run(scenario())
    else:
        with sync_client(conf, exchange) as cli:
            handles = [
                cli.tally.echo(n=n, seconds=0.1).call_async(timeout=60)
                for n in range(PENDING_CALLS)
            ]
            wait_until(lambda: len(ledger.handled("echo")) >= 5, "5 calls handled")
            closed_at = closing()
            for n, handle in enumerate(handles):
                try:
                    answer = handle.result()
                except Exception as exc:
                    settle(n, None, exc)
                else:
                    settle(n, answer, None)
            ended = time.monotonic() - closed_at
            after = cli.tally.echo(n=-1).call(timeout=20)
    wait_until(lambda: settled(queue), "the server done with every request", timeout=30)
    seconds = time.monotonic() - started

    echo_counts = ledger.counts("echo")
    returned = sum(1 for o in outcomes.values() if o == "returned")
    lost = PENDING_CALLS - len(outcomes)
    figures.record(
        test="(2) client connection closed with calls pending",
        engine=_engine_id(engine),
        sent=PENDING_CALLS,
        handled=len([n for n in echo_counts if n >= 0]),
        dead_lettered=dead_lettered(queue),
        duplicated=duplicated(echo_counts),
        lost=lost,
        calls_returned=returned,
        calls_raised=len(raised),
        seconds=seconds,
        notes=f"all {PENDING_CALLS} ended {ended:.1f} s after close_connection "
        f"(call timeout 60 s); raised: {sorted({type(e).__name__ for e in raised})}; "
        "the next call reconnected",
    )

    assert lost == 0
    assert raised, "no call was pending when the connection closed"
    assert all(isinstance(e, CALL_ERRORS) for e in raised), raised
    assert ended < 5, f"pending calls took {ended:.1f} s to end after the connection closed"
    assert after.payload == {"n": -1}


@pytest.mark.parametrize("engine", ENGINES)
def test_network_stall_detected_then_reconnected(
    engine: bool,
    names: Names,
    servers: Servers,
    stalling_proxy: StallingProxy,
    figures: Figures,
    tavrida2_log: list[logging.LogRecord],
) -> None:
    """The server's network stalls (heartbeat 2 s), is noticed, comes back; nothing lost.

    The broker drops the server after about two heartbeat intervals (its
    consumer is gone, its unacknowledged casts go back to the queue). tavrida2
    notices through its AMQP library's heartbeat check: pika closes a
    connection after one to two checks ``heartbeat + 5`` s apart, aiormq after
    ``3 * (heartbeat + 1)`` s without a frame; both bounds are checked. Then the
    network forwards again and the server reconnects.
    """
    ledger = fresh_tally(note_seconds=0.001)
    exchange, queue = names.exchange("tally"), names.queue("tally")
    conf = amqp_config(
        engine,
        names.connection("server"),
        port=stalling_proxy.port,
        heartbeat_interval=HEARTBEAT,
        retry_delay=0.2,
    )
    servers.start(server.Server(conf, queue, exchange, [Tally]))
    casts = CastStream(engine, amqp_config(engine, names.connection("casts")), exchange, CASTS, 50)
    started = time.monotonic()
    casts.start()
    wait_until(lambda: len(ledger.handled("note")) >= 300, "the stream under way", timeout=60)
    stalled_at, stalled_wall = time.monotonic(), time.time()
    stalling_proxy.stall()

    wait_until(lambda: consumers_of(queue) == 0, "the broker to drop the server", timeout=30)
    broker_noticed = time.monotonic() - stalled_at

    def tavrida2_noticed() -> float | None:
        for record in list(tavrida2_log):
            if record.created >= stalled_wall and "lost" in record.getMessage():
                return record.created - stalled_wall
        return None

    library_bound = 2 * (HEARTBEAT + 5) if not engine else 3 * (HEARTBEAT + 1) + HEARTBEAT
    noticed = wait_until(tavrida2_noticed, "tavrida2 to notice the stall", timeout=40)
    handled_during = len(ledger.handled("note"))
    stalling_proxy.resume()
    resumed = time.monotonic()
    wait_until(lambda: consumers_of(queue) == 1, "the server back", timeout=60)
    reconnected = time.monotonic() - resumed
    casts.finish(90)
    ledger.wait_for("note", casts.confirmed, timeout=60, what="every confirmed cast handled")
    wait_until(lambda: settled(queue), "the queue drained")
    seconds = time.monotonic() - started

    counts = ledger.counts("note")
    lost = len(casts.confirmed - set(counts))
    figures.record(
        test="(2) network stall (heartbeat 2 s), then reconnect",
        engine=_engine_id(engine),
        sent=len(casts.confirmed),
        handled=len(counts),
        dead_lettered=dead_lettered(queue),
        duplicated=duplicated(counts),
        lost=lost,
        seconds=seconds,
        notes=f"broker dropped the server after {broker_noticed:.1f} s, tavrida2 noticed after "
        f"{noticed:.1f} s (library bound {library_bound} s); reconnected "
        f"{reconnected:.1f} s after the network resumed; {handled_during} handled before",
    )

    assert lost == 0
    assert casts.confirmed == set(range(CASTS))
    # the 2 s heartbeat was negotiated: with the broker's default (60 s) both would take
    # minutes; the slack is for rabbitmqctl polling and a loaded machine
    assert broker_noticed <= 2 * HEARTBEAT + 10, f"the broker took {broker_noticed:.1f} s"
    assert noticed <= library_bound + 10, f"tavrida2 took {noticed:.1f} s to notice the stall"
    assert consumers_of(queue) == 1
