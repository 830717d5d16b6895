"""Tracing on the memory broker: TraceStore, SqlSink (SQLite file; an unreachable
PostgreSQL port), read_chain and trace_command.

The chain under test: the client calls ``t_alpha.first``, which calls
``t_beta.second`` (``call(wait=True)``), which calls ``t_gamma.third`` the same
way; every server and the client share one TraceStore. ``rig`` runs it on the
sync engine (servers started, delivered to by the waiting client) and on the
async engine (servers served in tasks of the test's event loop).
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tavrida2 import client, config, discovery, dispatcher, messages, server, service
from tavrida2.tracing import (
    SqlSink,
    TraceDatabaseError,
    TraceRecord,
    TraceStore,
    make_tracer,
    read_chain,
    trace_command,
)

BROKER = "tracing"
SOURCE = "client_app"
SERVICES = {"t_alpha": "first", "t_beta": "second", "t_gamma": "third"}
UNREACHABLE_PG = "postgresql://tracer:hunter2@127.0.0.1:1/trace"
TRACE_LOGGER = "tavrida2.tracing"


def discovery_of(*services: str) -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    for name in services:
        disc.register_remote_service(name, f"{name}_exchange")
    return disc


def chain_services() -> list[type[service.ServiceController]]:
    """``t_alpha.first(n)`` -> ``t_beta.second(n+1)`` -> ``t_gamma.third(n+2)``; all wait."""

    @dispatcher.rpc_service("t_gamma")
    class Gamma(service.ServiceController):
        @dispatcher.rpc_method(method="third")
        def third(self, request, proxy, n, password=None):
            return {"n": n + 1, "dsn": "postgresql://app:letmein@db/app"}

    @dispatcher.rpc_service("t_beta")
    class Beta(service.ServiceController):
        @dispatcher.rpc_method(method="second")
        def second(self, request, proxy, n):
            answer = proxy.t_gamma.third(n=n + 1, password="hunter2").call(wait=True, timeout=5)
            return {"n": answer.payload["n"]}

    @dispatcher.rpc_service("t_alpha")
    class Alpha(service.ServiceController):
        @dispatcher.rpc_method(method="first")
        def first(self, request, proxy, n):
            answer = proxy.t_beta.second(n=n + 1).call(wait=True, timeout=5)
            return {"n": answer.payload["n"]}

    Alpha.set_discovery(discovery_of("t_beta"))
    Beta.set_discovery(discovery_of("t_gamma"))
    Gamma.set_discovery(discovery_of())
    return [Alpha, Beta, Gamma]


class Rig:
    """The three servers and a client on one engine, all traced by ``store``."""

    def __init__(self, engine: str, store: TraceStore) -> None:
        self.engine = engine
        self.store = store
        self.classes = chain_services()
        self.sync_servers: list[server.Server] = []

    @property
    def is_async(self) -> bool:
        return self.engine == "async"

    def config(self) -> config.ConnectionConfig:
        return config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=self.is_async)

    def make_servers(self) -> list[server.Server]:
        return [
            server.Server(
                self.config(),
                f"{cls.service_name}_queue",
                f"{cls.service_name}_exchange",
                [cls],
                tracer=self.store,
            )
            for cls in self.classes
        ]

    def run(self, action: Callable[[Any], Any], **client_options: Any) -> Any:
        """``action(client)`` (awaited if it gives an awaitable) with the servers serving."""
        options = {"source": SOURCE, "tracer": self.store, **client_options}
        if self.is_async:
            return asyncio.run(self._run_async(action, options))
        if not self.sync_servers:
            self.sync_servers = self.make_servers()
            for srv in self.sync_servers:
                srv.start()
        with client.RPCClient(self.config(), discovery_of("t_alpha"), **options) as cli:
            return action(cli)

    async def _run_async(self, action: Callable[[Any], Any], options: dict[str, Any]) -> Any:
        servers = self.make_servers()
        tasks = [asyncio.ensure_future(srv.serve()) for srv in servers]
        try:
            deadline = time.monotonic() + 5
            while not all(srv.started.is_set() for srv in servers):
                assert time.monotonic() < deadline, "servers did not start"
                await asyncio.sleep(0.005)
            disc = discovery_of("t_alpha")
            async with client.AsyncRPCClient(self.config(), disc, **options) as cli:
                result = action(cli)
                return await result if inspect.isawaitable(result) else result
        finally:
            for srv in servers:
                srv.stop()
            await asyncio.gather(*tasks)

    def call_chain(self, n: int = 1, **client_options: Any) -> messages.IncomingResponse:
        answer = self.run(lambda cli: cli.t_alpha.first(n=n).call(timeout=5), **client_options)
        assert answer.payload == {"n": n + 3}
        return answer  # type: ignore[no-any-return]

    def stop(self) -> None:
        for srv in self.sync_servers:
            srv.stop()
            if srv.driver is not None:
                srv.driver.close()


@pytest.fixture
def store() -> Iterator[TraceStore]:
    made = TraceStore()
    yield made
    made.close()


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest, store: TraceStore) -> Iterator[Rig]:
    running = Rig(request.param, store)
    yield running
    running.stop()


@pytest.fixture
def sync_rig(store: TraceStore) -> Iterator[Rig]:
    running = Rig("sync", store)
    yield running
    running.stop()


def hops(records: list[TraceRecord]) -> list[tuple[str, str, str, str]]:
    return [(r.direction, r.message_type, r.source, r.destination) for r in records]


def without_received_answers(records: list[TraceRecord]) -> list[TraceRecord]:
    """``records`` less the answers a waiting caller received.

    Those are not traced yet (they come back through :mod:`tavrida2.calls`, not
    the preprocessor); once they are, the tests that list a whole chain ignore them.
    """
    return [r for r in records if r.direction == "sent" or r.message_type == "request"]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return result


REQUESTS = [
    (SOURCE, "t_alpha.first"),
    ("t_alpha.first", "t_beta.second"),
    ("t_beta.second", "t_gamma.third"),
]
ANSWERS = [
    ("t_gamma.third", "t_beta.second"),
    ("t_beta.second", "t_alpha.first"),
    ("t_alpha.first", SOURCE),
]


def assert_whole_chain(records: list[TraceRecord]) -> None:
    """Every request sent and received, every answer sent, in the order they happened."""
    sent = [(r.source, r.destination) for r in records if r.direction == "sent"]
    assert sent == [*REQUESTS, *ANSWERS]
    received = [
        (r.source, r.destination)
        for r in records
        if r.direction == "received" and r.message_type == "request"
    ]
    assert received == REQUESTS
    at = {(r.direction, r.message_type, r.request_id): r.at for r in records}
    for r in records:
        if r.message_type == "request" and r.direction == "received":
            assert at[("sent", "request", r.request_id)] <= r.at
        if r.message_type == "response":
            assert at[("received", "request", r.request_id)] <= r.at
    assert [r.message_type for r in records if r.direction == "sent"] == ["request"] * 3 + [
        "response"
    ] * 3


# -- the store ------------------------------------------------------------------------


def test_a_chain_of_three_calls_is_traced_whole_in_one_store(rig: Rig) -> None:
    answer = rig.call_chain()

    chain = rig.store.chain(answer.correlation_id)

    assert_whole_chain(chain)
    assert {r.correlation_id for r in chain} == {answer.correlation_id}
    assert [r.at for r in chain] == sorted(r.at for r in chain)
    request_ids = [r.request_id for r in chain if r.direction == "sent"]
    assert request_ids[3:] == request_ids[:3][::-1]  # each answer carries its request's id
    for r in chain:
        received = r.direction == "received"
        assert (r.exchange is None, r.routing_key is None) == (received, received)
    first = chain[0]
    assert (first.exchange, first.routing_key) == ("t_alpha_exchange", "t_alpha.first")
    assert first.payload_preview == '{"n":1}'
    assert first.headers["message_type"] == "request"


def test_service_is_the_recording_sides_service(sync_rig: Rig) -> None:
    answer = sync_rig.call_chain()

    chain = sync_rig.store.chain(answer.correlation_id)

    for r in chain:
        ours = r.source if r.direction == "sent" else r.destination
        assert r.service == ours.partition(".")[0]
    assert [(r.direction, r.message_type, r.service) for r in without_received_answers(chain)] == [
        ("sent", "request", SOURCE),
        ("received", "request", "t_alpha"),
        ("sent", "request", "t_alpha"),
        ("received", "request", "t_beta"),
        ("sent", "request", "t_beta"),
        ("received", "request", "t_gamma"),
        ("sent", "response", "t_gamma"),
        ("sent", "response", "t_beta"),
        ("sent", "response", "t_alpha"),
    ]


def test_a_received_notification_has_no_service_but_its_publisher_as_source(
    store: TraceStore,
) -> None:
    note = messages.IncomingNotification(
        {"source": "weather.changed", "correlation_id": "c1", "request_id": "r1"}, {}, {"t": 1}
    )

    store.received(note)

    (record,) = store.all()
    assert (record.service, record.source, record.destination) == ("", "weather.changed", "")
    assert store.query(service="") == [record]


def test_query_by_service_type_correlation_id_direction_and_limit(sync_rig: Rig) -> None:
    first = sync_rig.call_chain(1)
    second = sync_rig.call_chain(10)
    store = sync_rig.store

    assert hops(store.query(correlation_id=first.correlation_id)) == hops(
        store.chain(first.correlation_id)
    )
    assert {r.correlation_id for r in store.query(correlation_id=second.correlation_id)} == {
        second.correlation_id
    }
    beta = store.query(service="t_beta", correlation_id=first.correlation_id)
    assert hops(without_received_answers(beta)) == [
        ("received", "request", "t_alpha.first", "t_beta.second"),
        ("sent", "request", "t_beta.second", "t_gamma.third"),
        ("sent", "response", "t_beta.second", "t_alpha.first"),
    ]
    responses = store.query(message_type="response", direction="sent")
    assert len(responses) == 6
    assert {r.message_type for r in responses} == {"response"}
    assert store.query(message_type=messages.MessageType.RESPONSE, direction="sent") == responses
    assert (
        hops(store.query(service="t_beta", message_type="request", direction="sent"))
        == [("sent", "request", "t_beta.second", "t_gamma.third")] * 2
    )
    assert store.query(message_type="response", direction="sent", limit=2) == responses[-2:]
    assert store.query(limit=0) == []
    assert store.query(service="nobody") == []
    assert len(store) == len(store.all())
    assert len(without_received_answers(store.all())) == 18
    assert store.all(limit=3) == store.all()[-3:]


def test_the_store_keeps_only_the_last_size_messages(rig: Rig) -> None:
    small = TraceStore(size=4)
    rig.store.add_sink(_Forward(small))

    answer = rig.call_chain()

    assert small.size == 4
    assert len(small) == 4
    assert hops(small.all()) == hops(rig.store.chain(answer.correlation_id)[-4:])
    small.clear()
    assert len(small) == 0 and small.all() == []


class _Forward:
    """A sink that records into another store (to see what a sink is given)."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def put(self, entry: Any) -> None:
        self.store._add(entry)

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def close(self, timeout: float = 5.0) -> None:
        pass


def request_to(destination: str, **payload: Any) -> messages.Request:
    return messages.Request({"source": "tester", "destination": destination}, None, payload)


def test_the_store_is_bounded_and_thread_safe_under_concurrent_writers_and_readers() -> None:
    store = TraceStore(size=100)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(500):
                store.sent(request_to(f"svc{worker}.m", i=i), "x", f"svc{worker}.m")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(200):
                assert len(store.query(service="tester")) <= 100
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(store) == 100
    assert all(r.direction == "sent" for r in store.all())


def test_secrets_are_masked_in_headers_and_payload_like_the_logs() -> None:
    store = TraceStore(sensitive_headers=["X-Api-Key"], preview_chars=500)
    rig = Rig("sync", store)
    headers = {
        "authorization": "Bearer abc",
        "password": "pw-one",
        "x-api-key": "key-one",
        "tenant": "t1",
    }

    try:
        answer = rig.call_chain(headers=headers)
    finally:
        rig.stop()

    chain = store.chain(answer.correlation_id)
    text = repr(chain)
    for secret in ("Bearer abc", "pw-one", "key-one", "hunter2", "letmein"):
        assert secret not in text
    for record in chain:  # user headers travel on with the chain, masked at every hop
        assert record.headers["authorization"] == "***"
        assert record.headers["password"] == "***"
        assert record.headers["x-api-key"] == "***"
        assert record.headers["tenant"] == "t1"
    to_gamma = [r for r in chain if r.destination == "t_gamma.third"]
    assert {r.payload_preview for r in to_gamma} == {'{"n":3,"password":"***"}'}
    from_gamma = next(r for r in chain if r.source == "t_gamma.third")
    assert from_gamma.payload_preview == '{"n":4,"dsn":"postgresql://app:***@db/app"}'


def test_the_preview_is_cut_and_the_message_is_left_as_it_was() -> None:
    store = TraceStore(preview_chars=20)
    message = request_to("svc.m", text="x" * 100, password="pw")
    message.headers["authorization"] = "Bearer abc"

    store.sent(message, "x", "svc.m")
    message.payload["text"] = "changed after sending"

    (record,) = store.all()
    assert record.payload_preview == '{"text":"xxxxxxxx...'
    assert len(record.payload_preview) == 20
    assert message.payload["password"] == "pw"
    assert message.headers["authorization"] == "Bearer abc"
    assert TraceStore(preview_chars=0)._masker.preview({"a": 1}) == ""


def test_a_failing_sink_does_not_fail_the_messages_and_is_logged_once(
    sync_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(_Forward):
        def put(self, entry: Any) -> None:
            raise RuntimeError("sink is broken")

    sync_rig.store.add_sink(Broken(TraceStore()))

    with caplog.at_level(logging.WARNING, logger=TRACE_LOGGER):
        sync_rig.call_chain()
        sync_rig.call_chain()

    warnings = [r for r in caplog.records if r.name == TRACE_LOGGER]
    assert len(warnings) == 1
    assert "sink is broken" in warnings[0].getMessage()


# -- the SQL sink ---------------------------------------------------------------------


def sqlite_url(tmp_path: Path, name: str = "trace.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def test_sql_sink_writes_every_message_to_a_sqlite_file(rig: Rig, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sink = SqlSink(url)
    rig.store.add_sink(sink)

    answer = rig.call_chain()
    assert rig.store.flush(10)

    from_db = read_chain(answer.correlation_id, url)
    in_memory = rig.store.chain(answer.correlation_id)
    assert from_db == in_memory
    assert_whole_chain(from_db)
    assert sink.stats().written == len(rig.store) and sink.stats().lost == 0
    engine = sa.create_engine(url)
    try:
        indexes = sa.inspect(engine).get_indexes("tavrida2_trace")
    finally:
        engine.dispose()
    assert [ix["column_names"] for ix in indexes] == [["correlation_id"]]


def test_sql_sink_table_name_and_close_writes_what_is_left(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sink = SqlSink(url, table="ops_trace")
    store = TraceStore(sinks=[sink])
    for i in range(50):
        headers = {"source": "tester", "destination": "svc.m", "correlation_id": "chain-1"}
        store.sent(messages.Request(headers, None, {"i": i}), "x", "svc.m")

    store.close()

    records = read_chain("chain-1", url, table="ops_trace")
    assert [r.payload_preview for r in records] == [f'{{"i":{i}}}' for i in range(50)]
    assert sink.stats().written == 50
    assert sink.flush(0.1)  # closed, nothing waiting
    store.sent(request_to("svc.m"), "x", "svc.m")
    assert sink.stats().lost == 1  # after close: counted, not written


def test_records_that_find_the_queue_full_are_dropped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=TRACE_LOGGER)
    sink = SqlSink(sqlite_url(tmp_path), queue_size=5, batch_size=5)
    store = TraceStore(sinks=[sink])

    for i in range(3000):
        store.sent(request_to("svc.m", i=i), "x", "svc.m")
    assert store.flush(10)
    wait_for(lambda: sink_warnings(caplog), "the report")
    store.close()

    stats = sink.stats()
    assert stats.lost > 0
    assert stats.written + stats.lost == 3000
    # one report a minute, and (if more were lost after it) one at close
    first, *at_close = sink_warnings(caplog)
    assert "queue of 5 was full" in first and len(at_close) <= 1
    reported = re.findall(r"(\d+) record\(s\) lost", "\n".join([first, *at_close]))
    assert sum(int(n) for n in reported) == stats.lost


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sink_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == TRACE_LOGGER and r.levelno >= logging.WARNING
    ]


def test_an_unreachable_database_is_logged_once_a_minute_and_the_server_keeps_serving(
    sync_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TRACE_LOGGER)
    clock = FakeClock()
    sink = SqlSink(UNREACHABLE_PG, queue_size=3, batch_size=2, retry_interval=1.0, clock=clock)
    sync_rig.store.add_sink(sink)

    started = time.monotonic()
    sync_rig.call_chain(1)
    wait_for(lambda: sink.stats().failures >= 1, "the first failed write")
    sync_rig.call_chain(2)  # while the database is down: served all the same
    assert time.monotonic() - started < 5
    time.sleep(0.6)  # the writer looks again (every 0.25 s) but the clock says not yet

    assert sink.stats().failures == 1
    assert len(sink_warnings(caplog)) == 1
    first = sink_warnings(caplog)[0]
    assert "postgresql://tracer:***@127.0.0.1:1/trace" in first
    assert "cannot write to the database" in first and "OperationalError" in first
    assert "once a minute" in first

    clock.advance(30)  # time to retry, not to log again
    wait_for(lambda: sink.stats().failures >= 2, "a retry")
    sync_rig.call_chain(3)
    assert len(sink_warnings(caplog)) == 1

    clock.advance(31)  # a minute after the first report
    wait_for(
        lambda: len(sink_warnings(caplog)) >= 2 and sink.stats().failures >= 3,
        "the third failure and the second report",
    )
    stats = sink.stats()
    assert stats.failing and stats.failures == 3 and stats.written == 0
    reports = "\n".join(sink_warnings(caplog))
    reported = [int(n) for n in re.findall(r"(\d+) lost since the last report", reports)]
    assert reported[1] > 0 and sum(reported) == stats.lost
    assert stats.lost + stats.waiting == len(sync_rig.store)  # every one of the 3 chains
    assert not any("hunter2" in r.getMessage() for r in caplog.records)

    sink.close(0.5)
    final = sink_warnings(caplog)[-1]
    assert "closed" in final and "hunter2" not in final


def test_writing_resumes_when_the_database_is_back(
    sync_rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TRACE_LOGGER)
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'not-yet' / 'trace.db'}"  # its folder is missing at first
    sink = SqlSink(url, clock=clock)
    sync_rig.store.add_sink(sink)

    answer = sync_rig.call_chain()
    wait_for(lambda: sink.stats().failing, "the failure")
    assert not sync_rig.store.flush(0.3)

    (tmp_path / "not-yet").mkdir()
    clock.advance(1)
    assert sync_rig.store.flush(10)

    assert_whole_chain(read_chain(answer.correlation_id, url))
    stats = sink.stats()
    assert (stats.written, stats.lost, stats.waiting) == (len(sync_rig.store), 0, 0)
    assert (stats.failing, stats.failures) == (False, 1)
    assert "writing again" in sink_warnings(caplog)[-1]


def test_a_bad_database_url_is_refused_at_once_with_the_password_masked() -> None:
    with pytest.raises(TraceDatabaseError) as caught:
        SqlSink("nosuchdb+nodriver://user:pw123@host/db")
    assert "pw123" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(TraceDatabaseError, match="not a database URL"):
        SqlSink("just some words")


# -- reading back: read_chain and trace_command --------------------------------------------


def test_trace_command_prints_the_chain_as_an_indented_table(sync_rig: Rig, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sync_rig.store.add_sink(SqlSink(url))
    answer = sync_rig.call_chain()
    sync_rig.call_chain()  # another chain in the same table
    assert sync_rig.store.flush(10)
    out, err = io.StringIO(), io.StringIO()

    code = trace_command(answer.correlation_id, url, out, err=err)

    assert (code, err.getvalue()) == (0, "")
    lines = out.getvalue().splitlines()
    assert re.match(
        rf"correlation id {answer.correlation_id}: (9|12) message\(s\), 3 request\(s\)", lines[0]
    )
    assert "services: client_app, t_alpha, t_beta, t_gamma" in lines[0]
    assert lines[2].split() == [
        "+ms",
        "dir",
        "type",
        "source",
        "->",
        "destination",
        "request_id",
        "payload",
    ]
    rows = [row for row in lines[3:] if row.split()[1:3] != ["recv", "response"]]
    assert len(rows) == 9
    assert [row.split()[1:3] for row in rows] == [
        ["sent", "request"], ["recv", "request"], ["sent", "request"], ["recv", "request"],
        ["sent", "request"], ["recv", "request"],
        ["sent", "response"], ["sent", "response"], ["sent", "response"],
    ]  # fmt: skip
    indent = [row.index(row.split()[3]) for row in rows]
    assert indent[0] + 2 == indent[2] == indent[4] - 2  # each call under its caller
    assert (indent[1], indent[3], indent[5]) == (indent[0], indent[2], indent[4])
    assert indent[6:] == [indent[4], indent[2], indent[0]]  # answers beside their requests
    records = without_received_answers(read_chain(answer.correlation_id, url))
    for row, record in zip(rows, records, strict=True):
        assert record.request_id in row and row.endswith(record.payload_preview)


def test_trace_command_not_found_is_exit_1_with_one_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with SqlSink(url) as sink:
        store = TraceStore(sinks=[sink])
        store.sent(request_to("svc.m"), "x", "svc.m")
    out = io.StringIO()

    code = trace_command("no-such-chain", url, out)

    assert code == 1
    assert out.getvalue().count("\n") == 1
    assert "no message with correlation id 'no-such-chain'" in out.getvalue()


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        (UNREACHABLE_PG, "postgresql://tracer:***@127.0.0.1:1/trace: OperationalError"),
        ("sqlite:///{tmp}/missing.db", "no such file"),
        ("sqlite:///{tmp}/empty.db", "no table 'tavrida2_trace'"),
        ("not a url at all", "not a database URL"),
        ("oracle+nodriver://scott:tiger@h/db", "cannot use this database"),
    ],
)
def test_trace_command_bad_database_is_exit_2_with_a_paragraph_password_masked(
    tmp_path: Path, db: str, expected: str
) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    out, err = io.StringIO(), io.StringIO()

    code = trace_command("c1", db.format(tmp=tmp_path), out, err=err)

    assert code == 2
    assert out.getvalue() == ""
    message = err.getvalue()
    assert message.startswith("tavrida2 trace: cannot read the trace database ")
    assert expected in message
    assert "sqlite:///tavrida2-trace.db or postgresql://" in message
    assert message.count("\n") == 1
    for password in ("hunter2", "tiger"):
        assert password not in message
    assert not (tmp_path / "missing.db").exists()


def test_make_tracer_builds_a_store_and_its_sink_from_settings(tmp_path: Path) -> None:
    plain = make_tracer(10)
    assert (plain.size, plain.sinks) == (10, ())

    url = sqlite_url(tmp_path)
    with make_tracer(5, url, table="t", queue_size=7, sensitive_headers=["x-k"]) as store:
        (sink,) = store.sinks
        assert isinstance(sink, SqlSink) and (sink.url, sink.table) == (url, "t")
        message = request_to("svc.m")
        message.headers["x-k"] = "v"
        store.sent(message, "x", "svc.m")
        assert store.all()[0].headers["x-k"] == "***"
    with pytest.raises(TraceDatabaseError):
        make_tracer(db="bogus")
