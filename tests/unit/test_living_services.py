"""Periodic and cron tasks, lifecycle hooks, broadcast and info(), on the memory broker.

The schedule is driven by a fake clock (:class:`Scheduler.tick` with times of the
test's choosing); servers run on ``memory://`` with both engines.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from typing import Any

import pytest

from tavrida2 import client, config, discovery, dispatcher, exceptions, server, service
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.schedule import TaskInfo
from tavrida2.scheduler import Entry, Scheduler

BROKER = "living"
START = 1_000_000.0


def wait_for(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def periodic_task(period: float, timeout: float = 5.0, start_after: float = 0.0, **kw: Any):
    return TaskInfo(
        "job",
        period,
        None,
        timeout,
        start_after,
        kw.get("single", False),
        kw.get("is_coroutine", False),
    )


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the schedule, on a fake clock ---------------------------------------------------


def test_a_periodic_task_runs_after_start_after_then_every_period_skipping_missed_times():
    runs: list[float] = []
    clock = Clock()
    entry = Entry("svc.job", periodic_task(10, start_after=5), lambda: runs.append(clock.now))
    scheduler = Scheduler([entry], clock=clock)
    assert scheduler.tick() == pytest.approx(1.0)  # nothing due: it looks again within 1 s
    clock.now = START + 5
    scheduler.tick()
    wait_for(lambda: runs, "the first run")
    assert runs == [START + 5]
    clock.now = START + 14.9
    scheduler.tick()
    clock.now = START + 15
    wait_for(lambda: entry.running is None or entry.running.done(), "the run to end")
    scheduler.tick()
    wait_for(lambda: len(runs) == 2, "the second run")
    clock.now = START + 47  # 25, 35 and 45 were missed: one run now, the next at 55
    wait_for(lambda: entry.running is not None and entry.running.done(), "the run to end")
    scheduler.tick()
    wait_for(lambda: len(runs) == 3, "the third run")
    assert entry.next_at == START + 55
    scheduler.stop(1)


def test_a_cron_task_runs_when_its_spec_matches_in_local_time():
    local = datetime.datetime(2026, 11, 30, 3, 59, 30).astimezone()
    clock = Clock(local.timestamp())
    runs: list[float] = []
    task = TaskInfo("report", None, "0 4 * * *", 60, 0, False, False)
    entry = Entry("svc.report", task, lambda: runs.append(clock.now))
    scheduler = Scheduler([entry], clock=clock)
    assert entry.next_at == pytest.approx(local.replace(hour=4, minute=0, second=0).timestamp())
    clock.now = entry.next_at - 0.001
    scheduler.tick()
    time.sleep(0.05)
    assert runs == []
    clock.now = entry.next_at
    scheduler.tick()
    wait_for(lambda: runs, "the 04:00 run")
    tomorrow = local.replace(hour=4, minute=0, second=0) + datetime.timedelta(days=1)
    assert entry.next_at == pytest.approx(tomorrow.timestamp())
    scheduler.stop(1)


def test_runs_never_overlap_and_a_slow_sync_run_is_reported_once(caplog):
    release = threading.Event()
    runs: list[int] = []

    def slow() -> None:
        runs.append(1)
        release.wait(5)

    clock = Clock()
    entry = Entry("svc.slow", periodic_task(1, timeout=1.5), slow)
    scheduler = Scheduler([entry], clock=clock)
    scheduler.tick()
    wait_for(lambda: runs, "the first run")
    with caplog.at_level(logging.WARNING, "tavrida2.scheduler"):
        for step in (1, 2, 3):
            clock.now = START + step
            scheduler.tick()
    assert runs == [1]  # three starts fell during the run: skipped
    assert caplog.text.count("runs never overlap") == 3
    assert caplog.text.count("still running") == 1  # past its 1.5 s timeout, reported once
    assert "cannot be cancelled" in caplog.text
    release.set()
    wait_for(lambda: entry.running is not None and entry.running.done(), "the slow run to end")
    clock.now = START + 4
    scheduler.tick()
    wait_for(lambda: len(runs) == 2, "the next run")
    scheduler.stop(1)


def test_a_failing_run_is_logged_with_its_traceback_and_the_schedule_goes_on(caplog):
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise RuntimeError("database gone")

    clock = Clock()
    entry = Entry("svc.flaky", periodic_task(1), failing)
    scheduler = Scheduler([entry], clock=clock)
    with caplog.at_level(logging.ERROR, "tavrida2.scheduler"):
        scheduler.tick()
        wait_for(lambda: entry.running is not None and entry.running.done(), "the first run")
        clock.now = START + 1
        scheduler.tick()
        wait_for(lambda: len(calls) == 2 and entry.running.done(), "the second run")
    failures = [r for r in caplog.records if "svc.flaky failed" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].exc_info and "database gone" in str(failures[0].exc_info[1])
    scheduler.stop(1)


def test_an_async_run_past_its_timeout_is_cancelled(caplog):
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> None:
        clock = Clock()
        task = periodic_task(10, timeout=2, is_coroutine=True)
        entry = Entry("svc.hang", task, hang)
        scheduler = Scheduler([entry], clock=clock, loop=asyncio.get_running_loop())
        scheduler.tick()
        await asyncio.sleep(0.01)
        clock.now = START + 2.5
        with caplog.at_level(logging.ERROR, "tavrida2.scheduler"):
            scheduler.tick()
        await asyncio.wait_for(cancelled.wait(), 5)
        await asyncio.sleep(0)
        assert entry.running.done() and not entry.running.cancelled()  # ended quietly
        clock.now = START + 10
        scheduler.tick()
        assert entry.running is not None and not entry.running.done()  # the next run started
        await scheduler.stop_async(0.1)

    asyncio.run(scenario())
    assert "svc.hang: still running 2.5 s after it started (timeout 2 s); cancelled" in caplog.text


def test_a_single_task_runs_only_where_its_lease_is_held():
    runs: list[str] = []
    holder: dict[str, str] = {}

    def scheduler_of(process: str) -> tuple[Scheduler, Entry]:
        def claim(name: str) -> bool:
            return holder.setdefault(name, process) == process

        entry = Entry(
            "svc.report",
            periodic_task(1, single=True),
            lambda: runs.append(process),
            lease="q.lease.svc.report",
        )
        return Scheduler([entry], clock=Clock(), claim=claim), entry

    (one, first), (two, second) = scheduler_of("one"), scheduler_of("two")
    for _ in range(3):
        for scheduler, entry in ((one, first), (two, second)):
            scheduler.tick(entry.next_at)
            wait_for(lambda entry=entry: entry.running.done(), "the run")
    assert runs == ["one", "one", "one"]
    assert (first.runs, second.runs) == (3, 0)
    holder.clear()  # the first process went away: its lease is free
    two.tick(second.next_at)
    wait_for(lambda: second.running is not None and second.running.done(), "the run")
    assert runs[-1] == "two"


# -- bad declarations ------------------------------------------------------------------


@pytest.mark.parametrize("period", [0, -1, float("inf"), "5", True])
def test_a_period_that_is_not_positive_is_refused_naming_the_method(period):
    with pytest.raises(exceptions.ConfigError, match=r"refresh: period="):

        class Controller(service.ServiceController):
            @dispatcher.periodic(period)
            def refresh(self, proxy): ...


@pytest.mark.parametrize("spec", ["*/15 * *", "61 * * * *", "every day", ""])
def test_a_cron_spec_that_does_not_parse_is_refused_naming_the_method(spec):
    with pytest.raises(exceptions.ConfigError, match=r"report: the cron spec"):

        class Controller(service.ServiceController):
            @dispatcher.cron(spec)
            def report(self, proxy): ...


def test_a_task_that_needs_more_than_a_proxy_is_refused():
    with pytest.raises(exceptions.ConfigError, match=r"refresh: .*called as \(self, proxy\)"):

        class Controller(service.ServiceController):
            @dispatcher.periodic(5)
            def refresh(self, proxy, table): ...


def test_an_unknown_hook_is_refused():
    with pytest.raises(exceptions.ConfigError, match=r"unknown hook 'pre_strat'.*pre_start"):
        dispatcher.on("pre_strat")


def test_async_hooks_and_tasks_need_the_async_engine():
    @dispatcher.rpc_service("living_async_only")
    class Controller(service.ServiceController):
        @dispatcher.periodic(5)
        async def refresh(self, proxy): ...

    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")
    with pytest.raises(exceptions.IncompatibleHandler, match="refresh"):
        server.Server(conf, "q", "ex", Controller)


# -- servers on the memory broker ------------------------------------------------------


def memory(async_engine: bool) -> config.ConnectionConfig:
    return config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=async_engine)


def living_service(events: list[str], async_engine: bool) -> type[service.ServiceController]:
    @dispatcher.rpc_service("living")
    class Living(service.ServiceController):
        @dispatcher.on("pre_start")
        def open_pool(self, proxy):
            events.append("pre_start")
            proxy.living.note(what="sent by pre_start").cast()

        @dispatcher.on("post_start")
        def started(self):
            events.append("post_start")

        @dispatcher.on("pre_stop")
        def close_pool(self, proxy):
            events.append("pre_stop")

        @dispatcher.rpc_method(method="note")
        def note(self, request, proxy, what):
            events.append(f"note: {what}")

        @dispatcher.periodic(0.05)
        def tick(self, proxy):
            events.append("tick")
            proxy.living.note(what="sent by tick").cast()

        @dispatcher.broadcast_method(method="drop_cache")
        def drop_cache(self, request, proxy, key):
            events.append(f"drop {key}")

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("living", "living_exchange")
    Living.set_discovery(disc)
    return Living


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_hooks_in_order_tasks_on_schedule_and_sends_from_both(async_engine):
    events: list[str] = []
    srv = server.Server(
        memory(async_engine), "living_q", "living_exchange", living_service(events, async_engine)
    )
    threads = server.run_servers([srv])
    wait_for(lambda: events.count("note: sent by tick") >= 2, "two ticks handled")
    srv.stop()
    threads[0].join(10)
    assert not threads[0].is_alive()
    assert events[:2] == ["pre_start", "post_start"]
    assert "note: sent by pre_start" in events  # the proxy works in pre_start
    assert events[-1] == "pre_stop"
    assert events.count("tick") >= 2


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_a_failing_pre_start_stops_the_server_with_a_clear_error(async_engine):
    @dispatcher.rpc_service("living_broken")
    class Broken(service.ServiceController):
        @dispatcher.on("pre_start")
        def open_pool(self):
            raise ConnectionRefusedError("database at db:5432 refused")

        @dispatcher.rpc_method(method="work")
        def work(self, request, proxy): ...

    srv = server.Server(memory(async_engine), "broken_q", "broken_ex", Broken)
    with pytest.raises(
        exceptions.HookFailed, match=r"pre_start hook Broken.open_pool failed.*refused"
    ):
        srv.run()
    assert MemoryBroker.get(BROKER).consumer_count("broken_q") == 0


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_a_broadcast_reaches_every_instance_and_a_cast_one(async_engine):
    events: list[list[str]] = [[], []]
    servers = []
    for index in range(2):
        cls = living_service(events[index], async_engine)
        servers.append(server.Server(memory(async_engine), "living_q", "living_exchange", cls))
    # both instances serve the same class (the second definition replaced the first)
    threads = server.run_servers(servers)
    try:
        disc = discovery.LocalDiscovery()
        disc.register_remote_service("living", "living_exchange")
        with client.RPCClient(memory(False), disc, source="ops", service="living") as cli:
            cli.drop_cache(key="users").broadcast()
            cli.note(what="once").cast()
        wait_for(
            lambda: (
                sum(e.count("drop users") for e in (events[0], events[1])) == 2
                and sum("note: once" in e for e in events) == 1
            ),
            "the broadcast and the cast",
        )
        time.sleep(0.1)
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(10)
    everything = events[0] + events[1]
    assert everything.count("drop users") == 2
    assert everything.count("note: once") == 1


def test_info_answers_the_structure_of_the_server():
    events: list[str] = []
    srv = server.Server(memory(False), "living_q", "living_exchange", living_service(events, False))
    threads = server.run_servers([srv])
    try:
        disc = discovery.LocalDiscovery()
        disc.register_remote_service("living", "living_exchange")
        with client.RPCClient(memory(False), disc, source="ops", service="living") as cli:
            info = cli.info().call(timeout=5).payload
    finally:
        srv.stop()
        threads[0].join(10)
    assert info["queue"] == "living_q" and info["engine"] == "sync"
    (controller,) = info["controllers"]
    assert controller["service"] == "living"
    assert controller["broadcasts"] == ["living.drop_cache"]
    assert controller["tasks"] == [
        {"method": "tick", "schedule": "every 0.05 s", "timeout": 0.05, "single": False}
    ]
    assert controller["hooks"] == {
        "pre_start": ["open_pool"],
        "post_start": ["started"],
        "pre_stop": ["close_pool"],
    }
    assert {h["entry_point"] for h in controller["handlers"]} == {"living.note"}
    assert "tavrida2.broadcast.living" in info["exchanges"]
