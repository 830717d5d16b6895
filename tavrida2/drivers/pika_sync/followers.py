"""Threads waiting on a sync connection that another thread services.

One thread at a time services a pika connection (the leader, see
``PikaConnection.wait``); the others are followers, each asleep on a lock of
its own. After each turn the leader wakes exactly the followers whose
condition became true, and when it leaves it wakes one more to take over: no
thread is woken to find that nothing changed for it, however many wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Follower:
    """A thread asleep until its ``done()`` holds or it is asked to lead."""

    __slots__ = ("_bell", "done", "signalled")

    def __init__(self, done: Callable[[], bool]) -> None:
        self.done = done
        self.signalled = False
        self._bell = threading.Lock()
        self._bell.acquire()

    def sleep(self, seconds: float) -> None:
        """Block until woken or ``seconds`` passed."""
        self._bell.acquire(timeout=seconds)

    def clear(self) -> None:
        self._bell.acquire(blocking=False)

    def ring(self) -> None:
        """Wake it (at most once until it slept again; the caller holds the followers' lock)."""
        if not self.signalled:
            self.signalled = True
            self._bell.release()


class Followers:
    """The threads waiting for a connection that another thread services."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sleeping: list[Follower] = []

    def __bool__(self) -> bool:
        return bool(self._sleeping)

    def join(self, follower: Follower) -> None:
        """Count ``follower`` in; from now on a leader that leaves wakes it or another."""
        with self._lock:
            self._sleeping.append(follower)

    def rearm(self, follower: Follower) -> None:
        """After a sleep: ready to be woken again (a ring after a timed-out sleep is dropped)."""
        with self._lock:
            if follower.signalled:
                follower.signalled = False
                follower.clear()

    def leave(self, follower: Follower) -> None:
        with self._lock:
            if follower in self._sleeping:
                self._sleeping.remove(follower)

    def wake_finished(self) -> None:
        """Wake the followers whose condition holds (after a turn of servicing)."""
        with self._lock:
            for follower in self._sleeping:
                if not follower.signalled and follower.done():
                    follower.ring()

    def hand_over(self) -> None:
        """The leader left: wake the finished followers and one more to lead."""
        with self._lock:
            successor = None
            for follower in self._sleeping:
                if follower.done():
                    follower.ring()
                elif follower.signalled:
                    successor = follower  # woken already: it takes over
                elif successor is None:
                    successor = follower
            if successor is not None:
                successor.ring()


__all__ = ["Follower", "Followers"]
