"""Fault (6): a 5 MB payload, called and cast, on each engine.

``engine`` pairs the server's engine with the client of the same kind. Two
calls send a 5 MB string each and get it back (checked whole); two casts send
one each, and the handler records its length and SHA-256 (checked).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from tavrida2 import server
from tests.integration.conftest import ENGINES, Names, Servers, amqp_config, wait_until
from tests.integration.faults.conftest import Figures
from tests.integration.faults.support import (
    Tally,
    async_client,
    dead_lettered,
    duplicated,
    fresh_tally,
    payload,
    settled,
    sync_client,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

SIZE = 5 * 1024 * 1024
CALL_TIMEOUT = 60.0


@pytest.mark.parametrize("engine", ENGINES)
def test_five_megabyte_payload_called_and_cast(
    engine: bool, names: Names, servers: Servers, figures: Figures
) -> None:
    ledger = fresh_tally()
    exchange, queue = names.exchange("tally"), names.queue("tally")
    servers.start(
        server.Server(amqp_config(engine, names.connection("server")), queue, exchange, [Tally])
    )
    conf = amqp_config(engine, names.connection("client"))
    data = {n: payload(SIZE, seed=n) for n in range(4)}  # 0, 1 called; 2, 3 cast
    answers: dict[int, dict[str, Any]] = {}
    started = time.monotonic()
    if engine:

        async def scenario() -> None:
            async with async_client(conf, exchange) as cli:
                for n in (0, 1):
                    answer = await cli.tally.big(n=n, data=data[n]).call(timeout=CALL_TIMEOUT)
                    answers[n] = answer.payload
                for n in (2, 3):
                    await cli.tally.big(n=n, data=data[n]).cast()

        asyncio.run(scenario())
    else:
        with sync_client(conf, exchange) as cli:
            for n in (0, 1):
                answers[n] = cli.tally.big(n=n, data=data[n]).call(timeout=CALL_TIMEOUT).payload
            for n in (2, 3):
                cli.tally.big(n=n, data=data[n]).cast()
    sent_in = time.monotonic() - started
    expected = {(n, SIZE, hashlib.sha256(data[n].encode()).hexdigest()) for n in range(4)}
    wait_until(lambda: ledger.handled("big") >= expected, "the 5 MB casts handled", timeout=60)
    wait_until(lambda: settled(queue), "the queue drained")
    seconds = time.monotonic() - started

    counts = ledger.counts("big")
    handled = {n for n, _, _ in counts}
    returned = [n for n in (0, 1) if answers.get(n) == {"n": n, "data": data[n]}]
    lost = len({2, 3} - handled) + (2 - len(answers))
    figures.record(
        test="(6) 5 MB payload: 2 calls, 2 casts",
        engine="async" if engine else "sync",
        sent=4,
        handled=len(handled),
        dead_lettered=dead_lettered(queue),
        duplicated=duplicated(counts),
        lost=lost,
        calls_returned=len(answers),
        calls_raised=0,
        seconds=seconds,
        notes=f"{SIZE} characters each; calls answered and casts confirmed in {sent_in:.1f} s",
    )

    assert lost == 0
    assert returned == [0, 1], "an answer differs from what was sent"
    assert set(counts) == expected, "a cast arrived altered"
