"""Row 9: a failing cast handler and Tavrida 1.0's nackable errors.

1.0 acknowledged a cast whose handler raised, and requeued it (for ever)
when the exception was one of its nackable ones (``NackableException``,
``BaseNackableException``). tavrida2 retries every failing cast and
dead-letters it after ``max_attempts``; a nackable error is requeued as in
1.0, at once, but counted: after ``max_attempts`` it is dead-lettered too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tavrida2 import dispatcher, exceptions, service
from tests.compat.memory_rig import Rig

QUEUE, EXCHANGE = "r_worker_queue", "r_worker_exchange"


class TryLater(exceptions.BaseNackableException):
    _msg_template = "try later: %(why)s"


class TryLaterToo(RuntimeError, exceptions.NackableException):
    """A 1.0 user's nackable error that is no Tavrida error."""


class Hopeless(exceptions.BaseAckableException):
    _msg_template = "never: %(why)s"


RAISED = {
    "nackable": lambda: TryLater(why="db down"),
    "nackable_marker": lambda: TryLaterToo("db down"),
    "plain": lambda: ValueError("bug"),
    "ackable": lambda: Hopeless(why="bad input"),
}


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest) -> Any:
    made = Rig(request.param)
    yield made
    made.stop()


def worker(
    runs: list[int], kind: str, times: list[float] | None = None
) -> type[service.ServiceController]:
    @dispatcher.rpc_service("r_worker")
    class Worker(service.ServiceController):
        @dispatcher.rpc_method(service="r_worker", method="work")
        def work(self, request, proxy, n):
            runs.append(n)
            if times is not None:
                times.append(time.monotonic())
            raise RAISED[kind]()

    return Worker


def dead_letters(rig: Rig) -> list[Any]:
    return rig.broker.messages_in(f"{QUEUE}.dlq")


@pytest.mark.parametrize("kind", ["nackable", "nackable_marker"])
def test_row_09a_a_nackable_error_is_requeued_at_once_then_dead_lettered(
    rig: Rig, kind: str
) -> None:
    runs: list[int] = []
    times: list[float] = []
    rig.serve(QUEUE, EXCHANGE, worker(runs, kind, times))

    rig.run(lambda cli: cli.r_worker.work(n=1).cast())

    assert runs == [1, 1, 1]  # max_attempts (3) deliveries, none waiting in the retry queue
    assert times[-1] - times[0] < 0.9  # at once: no retry delay
    [dead] = dead_letters(rig)
    assert dead.headers["x-tavrida2-attempt"] == 3
    assert "db down" in dead.headers["x-tavrida2-reason"]
    assert rig.broker.messages_in(f"{QUEUE}.retry") == []


def test_row_09b_kept_a_plain_error_is_retried_later_not_acknowledged(rig: Rig) -> None:
    runs: list[int] = []
    times: list[float] = []
    rig.serve(QUEUE, EXCHANGE, worker(runs, "plain", times))

    rig.run(lambda cli: cli.r_worker.work(n=2).cast())

    if rig.is_async:  # the async rig waits for the retries: 1 s, then 2 s later
        assert runs == [2, 2, 2]
        assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9
        [dead] = dead_letters(rig)
        assert dead.headers["x-tavrida2-attempt"] == 3
    else:  # the sync rig returns with the retry waiting for its time
        assert runs == [2]
        [waiting] = rig.broker.messages_in(f"{QUEUE}.retry")
        assert waiting.headers["x-tavrida2-attempt"] == 2
        assert waiting.properties["expiration"] == "1000"


def test_row_09c_kept_an_ackable_error_is_dead_lettered_at_once(rig: Rig) -> None:
    runs: list[int] = []
    rig.serve(QUEUE, EXCHANGE, worker(runs, "ackable"))

    rig.run(lambda cli: cli.r_worker.work(n=3).cast())

    assert runs == [3]
    [dead] = dead_letters(rig)
    assert dead.headers["x-tavrida2-error-class"] == f"{__name__}.Hopeless"


def test_row_09d_kept_without_dead_letters_a_nackable_error_is_rejected(
    rig: Rig,
) -> None:
    runs: list[int] = []
    rig.serve(QUEUE, EXCHANGE, worker(runs, "nackable"), dead_letters=False)

    rig.run(lambda cli: cli.r_worker.work(n=4).cast())

    assert runs == [4]
    assert rig.broker.messages_in(QUEUE) == []
