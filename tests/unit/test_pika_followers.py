"""Threads sharing a sync connection: followers woken one by one, requests handed over."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tavrida2.drivers.base import DIRECT_REPLY_TO
from tavrida2.drivers.pika_sync.followers import Follower, Followers
from tavrida2.messages import AMQPMessage
from tests.threads import in_threads
from tests.unit.pika_fakes import make_driver


class Flag:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


def asleep(follower: Follower, followers: Followers) -> threading.Thread:
    """A thread that sleeps on ``follower`` once (at most 5 s)."""

    def sleep() -> None:
        follower.sleep(5)

    followers.join(follower)
    thread = threading.Thread(target=sleep)
    thread.start()
    return thread


def test_a_turn_wakes_only_the_followers_whose_condition_holds() -> None:
    followers = Followers()
    flags = [Flag() for _ in range(3)]
    members = [Follower(flag) for flag in flags]
    threads = [asleep(member, followers) for member in members]
    flags[1].value = True
    followers.wake_finished()
    threads[1].join(2)
    assert not threads[1].is_alive()
    assert threads[0].is_alive() and threads[2].is_alive()
    assert [m.signalled for m in members] == [False, True, False]
    followers.wake_finished()  # a second turn rings nobody twice
    for member, flag in zip(members, flags, strict=True):
        flag.value = True
        followers.leave(member)
    followers.hand_over()  # nobody is left: nothing to do
    for member in (members[0], members[2]):
        member.ring()
    for thread in threads:
        thread.join(2)


def test_a_leader_leaving_wakes_the_finished_and_one_successor() -> None:
    followers = Followers()
    finished, waiting_a, waiting_b = Flag(), Flag(), Flag()
    finished.value = True
    members = [Follower(finished), Follower(waiting_a), Follower(waiting_b)]
    threads = [asleep(member, followers) for member in members]
    followers.hand_over()
    threads[0].join(2)
    threads[1].join(2)
    assert not threads[0].is_alive() and not threads[1].is_alive()
    assert threads[2].is_alive()  # one successor is enough
    followers.hand_over()  # the successor was rung and has not led yet: no one more
    assert not members[2].signalled
    members[2].ring()
    threads[2].join(2)


def test_a_ring_after_a_timed_out_sleep_is_dropped_by_rearm() -> None:
    followers = Followers()
    member = Follower(Flag())
    followers.join(member)
    member.sleep(0.01)  # times out
    followers.hand_over()  # rings it now, while it is awake
    assert member.signalled
    followers.rearm(member)
    assert not member.signalled
    started = time.monotonic()
    member.sleep(0.05)  # the stale ring does not cut this sleep short
    assert time.monotonic() - started >= 0.04


def request(correlation_id: str) -> AMQPMessage:
    return AMQPMessage(b"{}", {"message_id": correlation_id}, DIRECT_REPLY_TO, correlation_id)


def consuming(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[AMQPMessage]]:
    driver, _broker = make_driver(monkeypatch, attach=False, retry_delay=0.01)
    driver.connect()
    answers: list[AMQPMessage] = []
    driver.consume_replies(answers.append, lambda c, e: None)
    return driver, answers


def test_a_request_is_handed_to_the_thread_servicing_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver, _answers = consuming(monkeypatch)
    call_channel = driver._call_channel
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with driver._lock:
            holding.set()
            release.wait(5)
            driver._connection.process_data_events(0)  # a turn: handed requests go out

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(2)
    started = time.monotonic()
    driver.publish("ex", "rk", request("c-1"))  # returns at once: handed over
    assert time.monotonic() - started < 0.5
    assert call_channel.published == []
    assert driver._connection.threadsafe_callbacks  # the holder was woken to send it
    release.set()
    holder.join(2)
    assert [p.properties.correlation_id for p in call_channel.published] == ["c-1"]
    driver.close()


def test_a_holder_that_does_not_service_sends_what_was_handed_when_it_releases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver, _answers = consuming(monkeypatch)
    call_channel = driver._call_channel
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        driver._with_connection(lambda: (holding.set(), release.wait(5)))

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(2)
    for n in range(3):
        driver.publish("ex", "rk", request(f"c-{n}"))
    assert call_channel.published == []
    release.set()
    holder.join(2)
    assert [p.properties.correlation_id for p in call_channel.published] == ["c-0", "c-1", "c-2"]
    driver.close()


def test_sixteen_threads_share_one_driver_and_each_gets_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver, answers = consuming(monkeypatch)

    def calls(n: int) -> None:
        for i in range(20):
            correlation_id = f"c-{n}-{i}"
            driver.publish("ex", "rk", request(correlation_id))
            driver.wait(lambda cid=correlation_id: any(a.correlation_id == cid for a in answers), 5)
            assert any(a.correlation_id == correlation_id for a in answers)

    assert in_threads(calls, 16, 30) == []
    assert len(answers) == 16 * 20
    driver.close()
