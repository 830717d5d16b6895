"""The sync driver's connection: open, lose, reconnect with backoff, take turns on it.

pika's BlockingConnection is not thread-safe: every use of it happens under
one lock. Each concern of the driver (publishing, consuming, direct replies)
sets up its channels on a new connection in ``_attach`` and forgets them in
``_detach``; these cooperative methods run in the order of the driver's bases
(publishing first, so the topology exists before anything consumes).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions as pex
import tenacity
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import SyncDriver, tell_reconnected
from tavrida2.drivers.errors import from_channel_close
from tavrida2.drivers.failover import Failover
from tavrida2.drivers.pika_sync.followers import Follower, Followers
from tavrida2.drivers.shared import Declarations, connection_failed, describe, retry_policy

log = logging.getLogger("tavrida2.drivers.pika_sync")

CONNECTION_ERRORS = (
    pex.AMQPConnectionError,
    AMQPConnectorException,  # e.g. the AMQP handshake timed out (a stalled network)
    pex.ConnectionClosed,
    pex.StreamLostError,
    pex.ChannelWrongStateError,
    pex.ConnectionWrongStateError,
    OSError,
)
#: What an attempt to connect fails with and is tried again after: also a classic
#: queue of the topology whose node is down (it comes back with the node).
RETRIED_WHEN_CONNECTING = (*CONNECTION_ERRORS, exceptions.QueueUnavailable)


def write_frames_at_once(impl: Any) -> None:
    """Make a pika connection write each message's frames in one piece.

    pika queues the method, header and body frames of a message as three
    buffers and sends each with a syscall of its own; joined, a message costs
    one. Only this connection is changed (an instance attribute); the bytes
    on the wire and pika's counters are the same.
    """

    def output_marshaled_frames(marshaled_frames: Any) -> None:
        data = marshaled_frames[0] if len(marshaled_frames) == 1 else b"".join(marshaled_frames)
        impl.bytes_sent += len(data)
        impl.frames_sent += len(marshaled_frames)
        impl._adapter_emit_data(data)

    if callable(getattr(impl, "_output_marshaled_frames", None)) and hasattr(
        impl, "_adapter_emit_data"
    ):
        impl._output_marshaled_frames = output_marshaled_frames


def cut(connection: Any) -> None:
    """Close a pika connection's socket now, without the AMQP closing handshake.

    pika has no public way to abandon a connection whose peer stopped
    answering; its own stream termination (used when a heartbeat check fails)
    is called, then the I/O loop runs once to let the socket close.
    """
    terminate = getattr(getattr(connection, "_impl", None), "_terminate_stream", None)
    if not callable(terminate) or not connection.is_open:
        return
    with contextlib.suppress(Exception):  # it is being thrown away
        terminate(pex.StreamLostError("abandoned: the broker stopped answering"))
        connection.process_data_events(time_limit=0)


def close_reason(channel: Any) -> tuple[int, str]:
    """The reply code and text the broker closed ``channel`` with (pika keeps them on it)."""
    reason = getattr(channel, "_closing_reason", None)
    return int(getattr(reason, "reply_code", 0)), str(getattr(reason, "reply_text", reason))


def closed_by_broker(channel: Any, what: str) -> exceptions.DriverError | None:
    """The error of a channel the broker closed; None if it is open."""
    if channel is None or channel.is_open:
        return None
    return from_channel_close(*close_reason(channel), what)


#: What ``_with_connection(..., queue=False)`` returns when the lock was busy.
NOT_RUN = object()


def nothing() -> None:
    """Wakes a thread blocked in ``process_data_events`` (a thread-safe callback)."""


class PikaConnection(SyncDriver):
    """One pika connection, kept up (the base of the sync driver)."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._delivery_mode = 2 if config.persistent else 1
        self._failover = Failover(config)
        self._params = {address: config.to_pika_params(address) for address in config.hosts}
        for params in self._params.values():
            params.connection_attempts = 1  # the driver retries, over every address
        self._target = config.to_url()
        self._lock = threading.RLock()
        self._connection: Any = None
        self._declarations = Declarations()
        self._stopping = threading.Event()
        self._closed = False
        # Threads taking turns on the connection (see wait()): how many queue
        # for the lock to publish, and those waiting for the leader.
        self._turns = threading.Condition(threading.Lock())
        self._queued = 0
        self._followers = Followers()

    # -- cooperative hooks of the concerns -------------------------------------

    def _attach(self) -> None:
        """Set up this concern's channels on the new ``self._connection`` (lock held)."""

    def _detach(self, error: Exception) -> None:
        """Forget this concern's channels: the connection is gone (lock held)."""

    def _check_channels(self) -> None:
        """After servicing the connection: notice channels the broker closed (lock held)."""

    # -- connecting --------------------------------------------------------------

    def connect(self) -> None:
        """Connect, trying ``connection_attempts`` times ``retry_delay`` apart."""
        self._closed = False
        attempts = max(1, self.config.connection_attempts)
        self._retrying(tenacity.stop_after_attempt(attempts), self._open)

    def _retrying(
        self, stop: Any, action: Callable[[], None], sleep: Callable[[float], Any] = time.sleep
    ) -> None:
        try:
            for attempt in tenacity.Retrying(
                stop=stop,
                sleep=sleep,
                **retry_policy(self.config, self._target, RETRIED_WHEN_CONNECTING),
            ):
                with attempt:
                    action()
        except CONNECTION_ERRORS as exc:
            raise connection_failed(exc, self._target) from None

    def _open(self) -> None:
        with self._lock:
            self._drop_connection()
            connection = self._failover.attempt(
                lambda address: pika.BlockingConnection(self._params[address]),
                CONNECTION_ERRORS,
            )
            write_frames_at_once(connection._impl)
            try:
                self._connection = connection
                self._attach()
            except BaseException:
                self._drop_connection()
                raise

    def _drop_connection(self, graceful: bool = True) -> None:
        """Forget the connection and close it; ``graceful=False`` cuts it at once.

        A graceful close waits for the broker's Close-Ok, which on a stalled
        network never comes: a connection that stopped answering is cut.
        """
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and not graceful:
                cut(connection)
            self._detach(
                exceptions.ConnectionClosed(reason=f"the connection to {self._target} was lost")
            )
            if connection is not None and connection.is_open:
                with contextlib.suppress(Exception):  # it is being thrown away
                    connection.close()

    def _reconnect(self, reason: object) -> None:
        """Reconnect with backoff; gives up quietly when :meth:`stop` or :meth:`close` is called.

        The lock is taken for each attempt only: between attempts other
        threads' publishes fail within their ``publish_timeout`` instead of
        waiting for the whole reconnect.
        """
        if self._closed:
            return
        attempts = self.config.reconnect_attempts
        limit = (
            tenacity.stop_never if attempts < 0 else tenacity.stop_after_attempt(max(1, attempts))
        )

        def stop(state: tenacity.RetryCallState) -> bool:
            return self._stopping.is_set() or self._closed or bool(limit(state))

        log.warning("connection to %s lost (%s); reconnecting", self._target, reason)
        try:
            # stop() wakes the wait between attempts
            self._retrying(stop, self._open, sleep=self._stopping.wait)
        except exceptions.ConnectionFailed:
            if self._stopping.is_set() or self._closed:
                log.info("stopped while reconnecting to %s", self._target)
                return
            raise
        log.warning("reconnected to %s", self._connected_to())
        tell_reconnected(self.on_reconnect)

    def _connected_to(self) -> str:
        """The broker address of the connection (all of them before it is open)."""
        current = self._failover.current
        return self.config.address_url(current) if current is not None else self._target

    def _reconnect_within(self, seconds: float, reason: object) -> None:
        """Reconnect for a publish or a wait, for up to ``seconds``.

        After :meth:`stop` one attempt is made and no more: the thread holds
        the lock, and the stopping server (or its announcer) must not wait
        ``seconds`` for a broker that is away.
        """
        log.warning("connection to %s lost (%s); reconnecting", self._target, reason)
        stopping = self._stopping
        limit = tenacity.stop_after_delay(seconds)

        def stop(state: tenacity.RetryCallState) -> bool:
            return stopping.is_set() or bool(limit(state))

        self._retrying(stop, self._open, sleep=stopping.wait)
        tell_reconnected(self.on_reconnect)

    def _is_open(self) -> bool:
        connection = self._connection
        return connection is not None and bool(connection.is_open)

    def close(self) -> None:
        self._closed = True
        self.stop()
        self._stop_threads()
        with self._lock:
            self._drop_connection()

    def _stop_threads(self) -> None:
        """Stop this concern's helper threads (cooperative)."""

    def stop(self) -> None:
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # closed already: nothing to wake
                connection.add_callback_threadsafe(nothing)

    def abandon(self) -> None:
        """Cut the connection now, from any thread, without waiting for the lock.

        What was delivered and not yet acknowledged goes back to its queue at
        once. For a server whose handler does not return within its
        ``stop_timeout``: the thread running it holds the connection.
        """
        self._stopping.set()
        connection = self._connection
        transport = getattr(getattr(connection, "_impl", None), "_transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- taking turns on the connection ------------------------------------------

    def _with_connection(self, action: Callable[[], Any], queue: bool = True) -> Any:
        """Run ``action`` under the lock, reconnecting once if the connection is gone.

        With ``queue=False`` it runs only if the lock is free at once, and
        returns ``NOT_RUN`` otherwise.
        """
        if self._closed:
            raise exceptions.ConnectionClosed(reason="the driver is closed")
        if queue:
            queued = self._take_lock()
        elif self._lock.acquire(blocking=False):
            queued = False
        else:
            return NOT_RUN
        try:
            if not self._is_open():
                self._reconnect_within(self.config.publish_timeout, "not connected")
            try:
                return action()
            except CONNECTION_ERRORS as exc:
                self._reconnect_within(self.config.publish_timeout, exc)
                return action()
        finally:
            self._release()
            if queued:
                with self._turns:
                    self._queued -= 1
                    self._turns.notify_all()
            if self._followers:
                self._followers.hand_over()

    def _release(self) -> None:
        """Release the lock; then do what other threads left while it was held."""
        self._lock.release()
        while self._left_behind() and self._lock.acquire(blocking=False):
            try:
                self._pick_up()
            finally:
                self._lock.release()

    def _left_behind(self) -> bool:
        """Whether work was left for the lock's holder (:meth:`_pick_up` does it)."""
        return False

    def _pick_up(self) -> None:
        """Do the work other threads left for the lock's holder (lock held)."""

    def _take_lock(self) -> bool:
        """Take the connection's lock; wake a thread blocked servicing it. True if queued."""
        if self._lock.acquire(blocking=False):
            return False
        with self._turns:
            self._queued += 1
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # closed: the holder wakes up by itself
                connection.add_callback_threadsafe(nothing)
        self._lock.acquire()
        return True

    def wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Service the connection until ``done()`` or ``timeout`` (see the base class).

        Leader and followers: the thread that gets the lock services the
        connection (answers for every thread are dispatched by it) and wakes
        the followers whose ``done()`` became true; the others sleep, each on
        a lock of its own, until woken or asked to take over. A thread that
        needs the lock to publish wakes the leader, which then steps aside.
        """
        deadline = time.monotonic() + timeout
        follower: Follower | None = None
        try:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not self._queued and self._lock.acquire(blocking=False):
                    try:
                        self._lead(done, deadline)
                    finally:
                        self._release()
                        self._followers.hand_over()
                    continue
                if follower is None:
                    follower = Follower(done)
                    self._followers.join(follower)
                    continue  # the leader may have left before we joined: try again
                follower.sleep(min(remaining, 0.05))
                self._followers.rearm(follower)
        finally:
            if follower is not None:
                self._followers.leave(follower)

    def _lead(self, done: Callable[[], bool], deadline: float) -> None:
        """Service the connection until ``done()``, the deadline, or a publisher queues."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._service(remaining)
            if self._followers:
                self._followers.wake_finished()
            if self._queued or done():
                return

    def _service(self, seconds: float) -> None:
        if self._closed:
            raise exceptions.ConnectionClosed(reason="the driver is closed")
        if not self._is_open():
            self._reconnect_within(self.config.publish_timeout, "not connected")
        try:
            self._connection.process_data_events(time_limit=min(seconds, 1.0))
        except CONNECTION_ERRORS as exc:
            reason = f"the connection to {self._target} was lost ({describe(exc)})"
            self._drop_connection()
            raise exceptions.ConnectionClosed(reason=reason) from None
        self._check_channels()


__all__ = [
    "CONNECTION_ERRORS",
    "NOT_RUN",
    "PikaConnection",
    "close_reason",
    "closed_by_broker",
    "cut",
    "nothing",
]
