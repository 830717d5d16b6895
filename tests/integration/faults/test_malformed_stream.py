"""Fault (4): malformed messages mixed into a stream of good casts, on each engine.

2,000 good casts and 200 bad ones (50 each: a body that is not JSON, a missing
``message_type`` header, an unknown method, a payload without the handler's
parameter), published with plain pika (confirmed), interleaved. Every good one is
handled, every bad one ends in the dead-letter queue with its reason, none is lost
and the server never stops.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pika
import pytest

from tavrida2 import server
from tests.integration.conftest import ENGINES, Names, Servers, amqp_config, pika_params, wait_until
from tests.integration.faults.support import (
    Tally,
    dead_lettered,
    duplicated,
    fresh_tally,
    tally_discovery,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

GOOD = 2000
BAD_EACH = 50


def _headers(n: int, destination: str = "tally.note", **changes: Any) -> dict[str, Any]:
    headers = {
        "correlation_id": f"c{n}",
        "request_id": f"r{n}",
        "message_id": f"m{n}",
        "message_type": "request",
        "source": "faults",
        "destination": destination,
        "reply_to": "",
    }
    headers.update(changes)
    return {k: v for k, v in headers.items() if v is not None}


def _bad(kind: str, n: int) -> tuple[str, dict[str, Any], bytes]:
    good_body = json.dumps({"context": {}, "payload": {"n": n}}).encode()
    if kind == "not-json":
        return "tally.note", _headers(n), b"{not json"
    if kind == "no-message-type":
        return "tally.note", _headers(n, message_type=None), good_body
    if kind == "unknown-method":
        return "tally.nope", _headers(n, destination="tally.nope"), good_body
    body = json.dumps({"context": {}, "payload": {"m": n}}).encode()  # no "n"
    return "tally.note", _headers(n), body


@pytest.mark.parametrize("engine", ENGINES)
def test_malformed_messages_in_a_stream_of_good_ones(
    engine: bool, names: Names, servers: Servers, figures: Any
) -> None:
    ledger = fresh_tally()
    exchange, queue = names.exchange("malformed"), names.queue("malformed")
    Tally.set_discovery(tally_discovery(exchange))
    servers.start(
        server.Server(amqp_config(engine, names.connection("srv")), queue, exchange, [Tally])
    )
    kinds = ("not-json", "no-message-type", "unknown-method", "missing-parameter")
    started = time.monotonic()
    connection = pika.BlockingConnection(pika_params())
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        bad_sent = 0
        for n in range(GOOD):
            body = json.dumps({"context": {}, "payload": {"n": n}}).encode()
            channel.basic_publish(
                exchange, "tally.note", body, pika.BasicProperties(headers=_headers(n)), True
            )
            if n % 10 == 5 and bad_sent < BAD_EACH * len(kinds):
                key, headers, bad_body = _bad(kinds[bad_sent % len(kinds)], 100_000 + bad_sent)
                channel.basic_publish(
                    exchange, key, bad_body, pika.BasicProperties(headers=headers), True
                )
                bad_sent += 1
    finally:
        connection.close()
    assert bad_sent == BAD_EACH * len(kinds)

    ledger.wait_for("note", range(GOOD), timeout=90, what="every good cast handled")
    wait_until(lambda: dead_lettered(queue) == bad_sent, f"{bad_sent} dead letters", 60)
    counts = ledger.counts("note")
    handled = len(set(counts) & set(range(GOOD)))
    letters = dead_lettered(queue)
    lost = GOOD + bad_sent - handled - letters
    figures.record(
        test="malformed messages mixed in",
        engine="async" if engine else "sync",
        sent=GOOD + bad_sent,
        handled=handled,
        dead_lettered=letters,
        duplicated=duplicated(counts),
        lost=lost,
        seconds=time.monotonic() - started,
        notes=f"{bad_sent} bad of 4 kinds among {GOOD} good casts",
    )
    assert lost == 0
    assert handled == GOOD and letters == bad_sent
    assert not any(n >= 100_000 for n in counts)  # no bad one reached the handler
