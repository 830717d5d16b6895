"""A chain of 3 calls on the real RabbitMQ, traced to SQLite and to the local PostgreSQL,
then found whole by ``trace_command`` (what ``tavrida2 trace CORRELATION_ID --db URL`` runs).

The client calls ``t2_alpha.first``, which calls ``t2_beta.second`` with
``call(wait=True)``, which calls ``t2_gamma.third`` the same way: three servers on
one engine (sync or async), one TraceStore with a SqlSink shared by them and the
client. PostgreSQL is the machine's own (``$TAVRIDA2_TRACE_PG_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``), in a table of the test's own that
is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tavrida2 import client, discovery, dispatcher, server, service
from tavrida2.cli import main as cli_main
from tavrida2.tracing import SqlSink, TraceStore, read_chain, trace_command
from tavrida2.tracing.database import trace_table
from tests.integration.conftest import ENGINES, WAIT, Names, Servers, amqp_config

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

PG_URL = os.environ.get("TAVRIDA2_TRACE_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SOURCE = "trace_it_client"


@dispatcher.rpc_service("t2_gamma")
class Gamma(service.ServiceController):
    @dispatcher.rpc_method(service="t2_gamma", method="third")
    def third(self, request, proxy, n, token=None):
        return {"n": n + 1}


@dispatcher.rpc_service("t2_beta")
class Beta(service.ServiceController):
    @dispatcher.rpc_method(service="t2_beta", method="second")
    def second(self, request, proxy, n):
        answer = proxy.t2_gamma.third(n=n + 1, token="tok-secret").call(wait=True, timeout=WAIT)
        return {"n": answer.payload["n"]}


@dispatcher.rpc_service("t2_alpha")
class Alpha(service.ServiceController):
    @dispatcher.rpc_method(service="t2_alpha", method="first")
    def first(self, request, proxy, n):
        answer = proxy.t2_beta.second(n=n + 1).call(wait=True, timeout=WAIT)
        return {"n": answer.payload["n"]}


REQUESTS = [
    (SOURCE, "t2_alpha.first"),
    ("t2_alpha.first", "t2_beta.second"),
    ("t2_beta.second", "t2_gamma.third"),
]
ANSWERS = [
    ("t2_gamma.third", "t2_beta.second"),
    ("t2_beta.second", "t2_alpha.first"),
    ("t2_alpha.first", SOURCE),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def trace_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(url, table)`` of an empty trace table; a PostgreSQL one is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trace.db'}", "tavrida2_trace"
        return
    table = f"t2trace_{uuid.uuid4().hex[:12]}"
    yield PG_URL, table
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            trace_table(table).drop(connection, checkfirst=True)
    finally:
        engine.dispose()


def discovery_of(exchanges: dict[str, str], *services: str) -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    for name in services:
        disc.register_remote_service(name, exchanges[name])
    return disc


@pytest.mark.parametrize("async_engine", ENGINES)
def test_a_chain_of_three_calls_is_found_whole_by_trace(
    async_engine: bool, trace_db: tuple[str, str], names: Names, servers: Servers
) -> None:
    url, table = trace_db
    store = TraceStore(sinks=[SqlSink(url, table=table)])
    exchanges = {name: names.exchange(name) for name in ("t2_alpha", "t2_beta", "t2_gamma")}
    Alpha.set_discovery(discovery_of(exchanges, "t2_beta"))
    Beta.set_discovery(discovery_of(exchanges, "t2_gamma"))
    Gamma.set_discovery(discovery_of(exchanges))
    try:
        servers.start(
            *(
                server.Server(
                    amqp_config(async_engine),
                    names.queue(cls.service_name),
                    exchanges[cls.service_name],
                    [cls],
                    tracer=store,
                )
                for cls in (Alpha, Beta, Gamma)
            )
        )
        disc = discovery_of(exchanges, "t2_alpha")
        with client.RPCClient(amqp_config(False), disc, source=SOURCE, tracer=store) as cli:
            answer = cli.t2_alpha.first(n=1).call(timeout=WAIT)
        assert answer.payload == {"n": 4}
        assert store.flush(WAIT)

        out, err = io.StringIO(), io.StringIO()
        code = trace_command(answer.correlation_id, url, out, err=err, table=table)
        records = read_chain(answer.correlation_id, url, table=table)
    finally:
        store.close()

    assert (code, err.getvalue()) == (0, "")
    # the command line prints the same chain
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert cli_main(["trace", answer.correlation_id, "--db", url, "--table", table]) == 0
    assert printed.getvalue() == out.getvalue()
    # every request (sent and received) and every answer, in order
    assert [(r.source, r.destination) for r in records if r.direction == "sent"] == [
        *REQUESTS,
        *ANSWERS,
    ]
    received_requests = [
        (r.source, r.destination)
        for r in records
        if r.direction == "received" and r.message_type == "request"
    ]
    assert received_requests == REQUESTS
    assert [r.at for r in records] == sorted(r.at for r in records)
    for received in (r for r in records if r.direction == "received"):
        sent = next(r for r in records if r.message_id == received.message_id and r is not received)
        assert sent.direction == "sent" and sent.at <= received.at
    assert {r.correlation_id for r in records} == {answer.correlation_id}
    assert all("tok-secret" not in r.payload_preview for r in records)

    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith(
        f"correlation id {answer.correlation_id}: {len(records)} message(s), 3 request(s)"
    )
    rows = lines[3:]
    assert len(rows) == len(records) >= 9
    for row, record in zip(rows, records, strict=True):
        assert f"{record.source} -> {record.destination}" in row
        assert record.request_id in row
    assert "tok-secret" not in text and '"token":"***"' in text
