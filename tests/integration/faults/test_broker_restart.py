"""Fault (1): the broker restarted (``rabbitmqctl stop_app`` / ``start_app``) during
5,000 casts and during 1,000 calls, for each engine.

``engine``: ``sync`` is servers on the sync engine and ``RPCClient`` senders;
``async`` servers on the async engine and ``AsyncRPCClient`` senders. Both
streams run at once through one restart, each to a server of its own (the
casts' handler takes 2 ms, so a backlog waits in the queue when the broker
stops); each stream gives a row of figures.

How they are counted:

- **Casts.** A cast is *sent* once the broker confirmed it. A cast that raised
  (``ConnectionFailed``, ``ConnectionClosed``, ``PublishTimeout``: the broker was
  away) was never accepted: not sent, not lost; it is counted in the notes and
  sent again until confirmed. Casts are persistent and the queue durable, so
  every confirmed cast is handled after the restart: *lost* = confirmed but
  never handled, must be 0. Handled more than once = *duplicated* (allowed:
  delivery is at least once; a cast whose confirmation was lost is sent again).
- **Calls.** Each call is tried once and returns (its answer checked) or raises,
  within its timeout: *lost* = calls that did neither, must be 0. Requests are
  transient: one queued when the broker stopped is gone, and its caller got
  ``ConnectionClosed`` at once, as the broker closed the connection.

The sequence: both streams start; once a fifth of each is done the broker is
stopped; the streams go on up to half, then wait until the broker is down; the
test waits until each stream had a publish or call raise while it was down,
starts the broker, lets the streams finish and waits for every confirmed cast
to be handled. The broker is started again whatever happens.
"""

from __future__ import annotations

import time

import pytest

from tavrida2 import server
from tests.integration.conftest import ENGINES, Names, Servers, amqp_config, wait_until
from tests.integration.faults.conftest import BROKER_WAIT, Figures
from tests.integration.faults.support import (
    CallStream,
    CastStream,
    Tally,
    consumers_of,
    dead_lettered,
    duplicated,
    fresh_tally,
    restored_broker,
    start_app,
    stop_app,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(BROKER_WAIT + 180)]

CASTS = 5000
CALLS = 1000
CALL_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 2.0


@pytest.mark.usefixtures("broker_to_myself")
@pytest.mark.parametrize("engine", ENGINES)
def test_broker_restarted_during_casts_and_calls(
    engine: bool, names: Names, servers: Servers, figures: Figures
) -> None:
    ledger = fresh_tally(note_seconds=0.002)  # the backlog of casts outlasts the restart
    # casts and calls go to servers of their own: calls do not wait behind the casts' backlog
    exchange, queue = names.exchange("casts"), names.queue("casts")
    calls_exchange, calls_queue = names.exchange("calls"), names.queue("calls")
    servers.start(
        server.Server(
            amqp_config(engine, names.connection("server"), retry_delay=0.1),
            queue,
            exchange,
            [Tally],
        ),
        server.Server(
            amqp_config(engine, names.connection("server"), retry_delay=0.1),
            calls_queue,
            calls_exchange,
            [Tally],
        ),
    )

    def client_config(label: str):
        return amqp_config(
            engine, names.connection(label), retry_delay=0.1, publish_timeout=PUBLISH_TIMEOUT
        )

    casts = CastStream(engine, client_config("casts"), exchange, CASTS, 50, gate_at=CASTS // 2)
    calls = CallStream(
        engine,
        client_config("calls"),
        calls_exchange,
        CALLS,
        20,
        gate_at=CALLS // 2,
        call_timeout=CALL_TIMEOUT,
    )
    started = time.monotonic()
    with restored_broker():
        casts.start()
        calls.start()
        wait_until(
            lambda: casts.tried >= CASTS // 5 and calls.tried >= CALLS // 5,
            "a fifth of the casts and calls sent",
            timeout=60,
        )
        backlog = len(casts.confirmed) - len(ledger.handled("note"))
        tried_before = (casts.tried, calls.tried)
        stop_app()
        down = time.monotonic()
        casts.gate.set()
        calls.gate.set()
        wait_until(
            lambda: casts.raised_since(down) and calls.raised_since(down),
            "a cast and a call to raise while the broker is down",
            timeout=30,
        )
        start_app()
        downtime = time.monotonic() - down
    casts.finish(120)
    calls.finish(120)
    ledger.wait_for("note", casts.confirmed, timeout=60, what="every confirmed cast handled")
    for name in (queue, calls_queue):
        wait_until(lambda name=name: consumers_of(name) == 1, f"a server consuming {name} again")
    seconds = time.monotonic() - started

    note_counts = ledger.counts("note")
    echo_counts = ledger.counts("echo")
    cast_lost = len(casts.confirmed - set(note_counts))
    call_lost = CALLS - len(calls.returned) - len(calls.failed)
    dead = dead_lettered(queue) + dead_lettered(calls_queue)
    engine_id = "async" if engine else "sync"
    figures.record(
        test="(1) broker restart during casts",
        engine=engine_id,
        sent=len(casts.confirmed),
        handled=len(note_counts),
        dead_lettered=dead,
        duplicated=duplicated(note_counts),
        lost=cast_lost,
        seconds=seconds,
        notes=f"stopped after {tried_before[0]} tried, {backlog} confirmed but not yet handled; "
        f"down {downtime:.1f} s; {sum(casts.raised.values())} publish attempts raised "
        f"({dict(casts.raised)}), sent again"
        + (f"; {len(casts.leaked)} of them a known bug" if casts.leaked else ""),
    )
    figures.record(
        test="(1) broker restart during calls",
        engine=engine_id,
        sent=CALLS,
        handled=len(echo_counts),
        dead_lettered=dead,
        duplicated=duplicated(echo_counts),
        lost=call_lost,
        calls_returned=len(calls.returned),
        calls_raised=len(calls.failed),
        seconds=seconds,
        notes=f"stopped after {tried_before[1]} tried; raised: {dict(calls.raised)}; "
        f"longest call {calls.longest:.1f} s (timeout {CALL_TIMEOUT:.0f} s)",
    )

    never = sorted(casts.confirmed - set(note_counts))
    assert cast_lost == 0, f"confirmed casts never handled: {never[:20]}"
    assert casts.confirmed == set(range(CASTS))
    assert casts.unexpected == [], f"casts raised other than transport errors: {casts.unexpected}"
    assert call_lost == 0
    assert calls.returned | calls.failed == set(range(CALLS))
    assert calls.wrong_answers == []
    assert calls.returned <= set(echo_counts), "an answer to a call never handled"
    assert calls.unexpected == [], f"calls raised other than transport errors: {calls.unexpected}"
    assert calls.longest <= CALL_TIMEOUT + 5, "a call outlived its timeout"
    assert dead == 0
