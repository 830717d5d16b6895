"""Fault (8): the broker closes the server's consumer channel; the connection stays up.

A test hook makes the broker close the consumer channel of a running server:
it acknowledges a delivery tag the channel never had (``basic_ack(10**9)``),
from the thread that owns the channel (pika: a thread-safe callback of the
connection, run by the server's run loop; aio: a coroutine on the server's
event loop). RabbitMQ closes that channel (406 PRECONDITION_FAILED, unknown
delivery tag) and only that channel.

The server notices within about a second, logs why, opens a new channel and
consumes again: ``rabbitmqctl`` shows the same connection (same pid) with a
new consumer channel on the queue. In the first test the channel is closed
while the server is idle, then 1,000 casts and 100 waiting calls are sent. In
the second, the 1,000 casts go in five bursts of 200 while the 100 calls flow,
and the channel is closed in the middle of each burst (a backlog on the
server, deliveries in flight, handlers finishing as it closes). Either way
every confirmed cast is handled (lost = 0; those delivered on a closed channel
and not acknowledged are delivered again: duplicated, allowed and counted),
every call returns, and the server keeps its connection. ``engine`` pairs the
server's engine with the client of the same kind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable

import pika.exceptions
import pytest

from tavrida2 import server
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.pika_sync import PikaDriver
from tests.integration.conftest import (
    ENGINES,
    Names,
    Servers,
    amqp_config,
    connection_pids,
    queue_info,
    rabbitmqctl,
    wait_until,
)
from tests.integration.faults.conftest import Figures
from tests.integration.faults.support import (
    CallStream,
    CastStream,
    Ledger,
    Tally,
    async_client,
    consumers_of,
    dead_lettered,
    duplicated,
    fresh_tally,
    settled,
    sync_client,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]

CASTS = 1000
CALLS = 100
#: How long the server may take to consume again on a new channel (it looks every second).
RECOVERY = 5.0
#: Mid-stream, the casts go in bursts; the channel is closed once this many of a burst
#: were handled.
BURST = 200
CLOSE_AFTER = 20


def _engine_id(engine: bool) -> str:
    return "async" if engine else "sync"


# -- rabbitmqctl: consumer channels and their connection --------------------------------


def consumer_channels(queue: str) -> list[str]:
    """Pids of the channels consuming ``queue``."""
    found = []
    for line in rabbitmqctl("list_consumers", "-q", "queue_name", "channel_pid").splitlines():
        name, _, channel_pid = line.partition("\t")
        if name == queue:
            found.append(channel_pid)
    return found


def connection_of(channel_pid: str) -> str | None:
    """The pid of the connection ``channel_pid`` belongs to (None: no such channel)."""
    for line in rabbitmqctl("list_channels", "-q", "pid", "connection").splitlines():
        pid, _, connection = line.partition("\t")
        if pid == channel_pid:
            return connection
    return None


def one_connection(connection_name: str) -> str:
    pids = wait_until(lambda: connection_pids(connection_name), f"connection {connection_name}")
    assert len(pids) == 1, pids
    return pids[0]  # type: ignore[no-any-return]


# -- the hook ---------------------------------------------------------------------------

UNKNOWN_TAG = 10**9


def close_consumer_channel(srv: server.Server) -> None:
    """Make the broker close ``srv``'s consumer channel: ack a tag it never delivered.

    Done from the thread that owns the channel; returns once the ack was written.
    """
    driver = srv.driver
    if isinstance(driver, AioDriver):
        loop = srv._loop
        assert loop is not None

        async def ack_unknown() -> None:
            await driver._consume.basic_ack(UNKNOWN_TAG, wait=False)

        asyncio.run_coroutine_threadsafe(ack_unknown(), loop).result(10)
        return
    assert isinstance(driver, PikaDriver)
    written = threading.Event()

    def ack_unknown_now() -> None:
        # the ack is flushed before it returns: the broker's Close may come back
        # within that flush, which raises here, in the server's thread (the close
        # itself is what the hook is for, the server sees it as it would any other)
        try:
            driver._consume_channel.basic_ack(UNKNOWN_TAG)
        except pika.exceptions.ChannelClosedByBroker:
            pass
        finally:
            written.set()

    driver._connection.add_callback_threadsafe(ack_unknown_now)
    assert written.wait(10), "the server's run loop did not run the hook"


class ChannelSwap:
    """The server's connection and consumer channels: the first one, and each that replaced it.

    :meth:`close_and_wait` runs the hook and observes; :attr:`failure` says what went
    wrong (the test records its figures first, then asserts with :meth:`check`).
    """

    def __init__(self, srv: server.Server, servers: Servers, connection_name: str) -> None:
        self.srv = srv
        self.thread = next(thread for known, thread in servers.running if known is srv)
        self.queue = srv.queue_name
        self.connection_name = connection_name
        self.connection = one_connection(connection_name)
        channels = wait_until(lambda: consumer_channels(self.queue), "the server's consumer")
        assert len(channels) == 1, channels
        assert connection_of(channels[0]) == self.connection
        self.channels: list[str] = channels
        self.recoveries: list[float] = []
        self.failure = ""

    @property
    def current(self) -> str:
        return self.channels[-1]

    @property
    def server_died(self) -> bool:
        return not self.thread.is_alive()

    def close_and_wait(self) -> bool:
        """Run the hook; wait until a new consumer channel on the same connection consumes.

        False (and :attr:`failure` set) if the server died, no new consumer came or
        the connection was replaced.
        """
        old, new = self.current, ""
        closed_at = time.monotonic()
        close_consumer_channel(self.srv)

        def swapped() -> bool:
            nonlocal new
            if self.server_died:
                return True
            channels = consumer_channels(self.queue)
            if len(channels) == 1 and channels[0] != old:
                new = channels[0]
                return True
            return False

        with contextlib.suppress(AssertionError):
            wait_until(swapped, "a new consumer channel", timeout=RECOVERY + 5)
        self.recoveries.append(time.monotonic() - closed_at)
        if new:
            self.channels.append(new)
        if self.server_died:
            self.failure = (
                "the server stopped: its run() raised when the broker closed the consumer "
                "channel (see the thread's exception)"
            )
        elif not new:
            self.failure = f"no new consumer channel within {RECOVERY + 5:g} s"
        else:
            self._check_connection()
        return not self.failure

    def _check_connection(self) -> None:
        """The server's connection is still the first one (a replaced one has a new pid)."""
        connections = connection_pids(self.connection_name)
        if connections != [self.connection]:
            self.failure = (
                f"the server's connection was replaced ({self.connection} -> {connections}): "
                "closing the consumer channel cost the whole connection"
            )

    def verify_channels(self) -> None:
        """The current consumer channel is on the first connection; the others are closed."""
        if self.failure:
            return
        self._check_connection()
        open_channels = dict(
            line.partition("\t")[::2]
            for line in rabbitmqctl("list_channels", "-q", "pid", "connection").splitlines()
        )
        if open_channels.get(self.current) != self.connection:
            self.failure = "the consumer channel is not on the server's connection"
        elif any(channel in open_channels for channel in self.channels[:-1]):
            self.failure = "a consumer channel the broker closed is still open"

    def summary(self) -> str:
        closes = len(self.recoveries)
        if self.failure:
            return f"channel closed {closes} time(s): {self.failure}"
        return (
            f"channel closed {closes} time(s); consuming again on a new channel, same "
            f"connection, {max(self.recoveries):.1f} s after the close at most"
        )

    def check(self) -> None:
        self.verify_channels()
        assert not self.failure, self.failure
        assert max(self.recoveries) <= RECOVERY, f"consuming again took {self.recoveries} s"


def handled_at_least(ledger: Ledger, count: int) -> Callable[[], bool]:
    return lambda: len(ledger.handled("note")) >= count


def logged_recovery(records: list[logging.LogRecord]) -> str:
    """The warning tavrida2 logged about the consumer channel the broker closed."""
    for record in list(records):
        text = record.getMessage()
        if "consumer channel was closed" in text:
            return text
    return ""


def halt(*streams: CastStream | CallStream) -> None:
    """Make streams still running end now (a test that failed early)."""
    for stream in streams:
        stream.deadline = 0
        stream.gate.set()
    for stream in streams:
        if stream.is_alive():
            stream.join(15)


def settle_down(
    casts: CastStream | Bursts, calls: CallStream, ledger: Ledger, queue: str, swap: ChannelSwap
) -> str:
    """Let the streams end and the server handle what was confirmed; "" or what went wrong."""
    streams = [calls] if isinstance(casts, Bursts) else [casts, calls]
    if swap.server_died:
        halt(*streams)
        return swap.failure
    try:
        for stream in streams:
            stream.finish(60)
        ledger.wait_for("note", casts.confirmed, timeout=30, what="every confirmed cast handled")
        wait_until(lambda: settled(queue), "the queue drained")
    except AssertionError as exc:
        halt(*streams)
        return str(exc)
    return ""


class Bursts:
    """Casts ``tally.note(n)`` sent in bursts from the test's thread, on the client of the
    engine's kind (``cast_async()`` each, then every confirmation); as a CastStream counts."""

    def __init__(self, engine: bool, conf: ConnectionConfig, exchange: str) -> None:
        self.engine, self.conf, self.exchange = engine, conf, exchange
        self.confirmed: set[int] = set()
        self.raised: collections.Counter[str] = collections.Counter()
        self.unexpected: list[BaseException] = []

    def send(self, numbers: range) -> None:
        if self.engine:
            asyncio.run(self._send_async(numbers))
            return
        with sync_client(self.conf, self.exchange) as cli:
            handles = [(n, cli.tally.note(n=n).cast_async()) for n in numbers]
            for n, handle in handles:
                try:
                    handle.result()
                except Exception as exc:
                    self._raised(exc)
                else:
                    self.confirmed.add(n)

    async def _send_async(self, numbers: range) -> None:
        async with async_client(self.conf, self.exchange) as cli:
            outcomes = await asyncio.gather(
                *(cli.tally.note(n=n).cast() for n in numbers), return_exceptions=True
            )
        for n, outcome in zip(numbers, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._raised(outcome)
            else:
                self.confirmed.add(n)

    def _raised(self, exc: BaseException) -> None:
        self.raised[type(exc).__name__] += 1
        self.unexpected.append(exc)


@pytest.mark.parametrize("engine", ENGINES)
def test_consumer_channel_closed_then_casts_and_calls(
    engine: bool,
    names: Names,
    servers: Servers,
    figures: Figures,
    tavrida2_log: list[logging.LogRecord],
) -> None:
    ledger = fresh_tally()
    exchange, queue, server_name = names.exchange("tally"), names.queue("tally"), names.connection()
    srv = server.Server(amqp_config(engine, server_name), queue, exchange, [Tally])
    servers.start(srv)
    swap = ChannelSwap(srv, servers, server_name)
    started = time.monotonic()
    assert swap.close_and_wait(), swap.failure
    swap.check()
    logged = wait_until(lambda: logged_recovery(tavrida2_log), "tavrida2 to log the recovery")

    casts = CastStream(engine, amqp_config(engine, names.connection("casts")), exchange, CASTS, 50)
    calls = CallStream(engine, amqp_config(engine, names.connection("calls")), exchange, CALLS, 10)
    casts.start()
    calls.start()
    problem = settle_down(casts, calls, ledger, queue, swap)
    seconds = time.monotonic() - started
    _record(figures, engine, "idle", casts, calls, ledger, queue, swap, seconds, problem)

    assert problem == "", problem
    assert "unknown delivery tag" in logged, logged
    assert_nothing_lost(casts, calls, ledger, queue, server_name, swap)
    # nothing was in flight when the channel closed: nothing to deliver twice
    assert duplicated(ledger.counts("note")) == 0
    assert duplicated(ledger.counts("echo")) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_consumer_channel_closed_mid_stream(
    engine: bool,
    names: Names,
    servers: Servers,
    figures: Figures,
    tavrida2_log: list[logging.LogRecord],
) -> None:
    """The 1,000 casts go in five bursts of 200 while 100 calls flow; in each burst, once
    a few of its casts were handled (5 ms each), the consumer channel is closed: with a
    backlog on the server and deliveries in flight (on the async engine, handlers
    finishing as the broker closes the channel)."""
    ledger = fresh_tally(note_seconds=0.005)
    exchange, queue, server_name = names.exchange("tally"), names.queue("tally"), names.connection()
    srv = server.Server(amqp_config(engine, server_name), queue, exchange, [Tally])
    servers.start(srv)
    swap = ChannelSwap(srv, servers, server_name)
    casts = Bursts(engine, amqp_config(engine, names.connection("casts")), exchange)
    calls = CallStream(engine, amqp_config(engine, names.connection("calls")), exchange, CALLS, 10)
    started = time.monotonic()
    calls.start()
    backlogs = []
    for first in range(0, CASTS, BURST):
        casts.send(range(first, first + BURST))
        if swap.failure:
            continue  # the rest is sent without closing again
        try:
            wait_until(
                handled_at_least(ledger, first + CLOSE_AFTER),
                f"{CLOSE_AFTER} casts of the burst handled",
                timeout=30,
            )
        except AssertionError:
            halt(calls)
            raise
        backlogs.append(len(casts.confirmed) - len(ledger.handled("note")))
        swap.close_and_wait()
    problem = settle_down(casts, calls, ledger, queue, swap)
    seconds = time.monotonic() - started
    logged = logged_recovery(tavrida2_log)
    when = f"mid-stream, {len(backlogs)} closes with {backlogs} casts not yet handled"
    _record(figures, engine, when, casts, calls, ledger, queue, swap, seconds, problem)

    swap.check()
    assert problem == "", problem
    assert "unknown delivery tag" in logged, logged
    assert all(backlogs), f"a close came after every cast was handled: {backlogs}"
    assert_nothing_lost(casts, calls, ledger, queue, server_name, swap)


def assert_nothing_lost(
    casts: CastStream | Bursts,
    calls: CallStream,
    ledger: Ledger,
    queue: str,
    server_name: str,
    swap: ChannelSwap,
) -> None:
    note_counts = ledger.counts("note")
    assert casts.confirmed == set(range(CASTS))
    assert casts.unexpected == [] and sum(casts.raised.values()) == 0, dict(casts.raised)
    assert set(note_counts) == set(range(CASTS)), "a cast lost, or one never sent handled"
    assert calls.unexpected == [], calls.unexpected
    assert calls.wrong_answers == []
    assert calls.returned == set(range(CALLS)), f"raised: {dict(calls.raised)}"
    assert set(ledger.counts("echo")) == set(range(CALLS))
    assert dead_lettered(queue) == 0
    assert consumers_of(queue) == 1
    # still the same connection and the new channel at the end
    assert connection_pids(server_name) == [swap.connection]
    assert consumer_channels(queue) == [swap.current]


def _record(
    figures: Figures,
    engine: bool,
    when: str,
    casts: CastStream | Bursts,
    calls: CallStream,
    ledger: Ledger,
    queue: str,
    swap: ChannelSwap,
    seconds: float,
    problem: str,
) -> None:
    note_counts, echo_counts = ledger.counts("note"), ledger.counts("echo")
    dead = dead_lettered(queue)
    info = queue_info(queue) or {}
    in_queue = int(info.get("messages_ready", 0)) + int(info.get("messages_unacknowledged", 0))
    unhandled = len(casts.confirmed - set(note_counts))
    common = swap.summary()
    if problem and problem != swap.failure:
        common += f"; {problem[:200]}"
    if unhandled:
        common += f"; {unhandled} confirmed casts never handled, {in_queue} left in the queue"
    figures.record(
        test=f"(8) consumer channel closed by the broker ({when}): casts",
        engine=_engine_id(engine),
        sent=len(casts.confirmed),
        handled=len(note_counts),
        dead_lettered=dead,
        duplicated=duplicated(note_counts),
        lost=max(0, unhandled - in_queue),
        seconds=seconds,
        notes=f"{common}; {sum(casts.raised.values())} publish attempts raised",
    )
    figures.record(
        test=f"(8) consumer channel closed by the broker ({when}): calls",
        engine=_engine_id(engine),
        sent=calls.tried,
        handled=len(echo_counts),
        dead_lettered=dead,
        duplicated=duplicated(echo_counts),
        lost=calls.tried - len(calls.returned) - len(calls.failed),
        calls_returned=len(calls.returned),
        calls_raised=len(calls.failed),
        seconds=seconds,
        notes=f"raised: {dict(calls.raised)}; longest call {calls.longest:.1f} s",
    )
