"""De-duplication of incoming messages by ``message_id``, in bounded memory.

Delivery is at least once: a cast whose acknowledgement was lost (the
connection dropped after the handler ran) is delivered again, with the same
``message_id``. A handler that is not idempotent (it charges a card, sends a
mail) can have :class:`DeduplicationMiddleware` drop the second copy.

Example::

    @dispatcher.rpc_service("billing")
    class Billing(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            self.add_incoming_middleware(DeduplicationMiddleware(capacity=50_000, ttl=3600))
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tavrida2 import exceptions
from tavrida2.messages import Error, IncomingRequestCall, Message, attempt_in
from tavrida2.middleware.base import Middleware

log = logging.getLogger(__name__)


class DuplicateMessage(exceptions.BaseAckableException):
    """The answer to a request that :class:`DeduplicationMiddleware` let through before."""

    _msg_template = (
        "Duplicate of message %(message_id)s (request %(request_id)s): "
        "it was handled already and is not run again"
    )
    _service_error_code = 1048


class _Entry:
    """What is known of one ``message_id``: the attempt let through, when, and its outcome."""

    __slots__ = ("at", "attempt", "done")

    def __init__(self, attempt: int, at: float) -> None:
        self.attempt = attempt
        self.at = at
        self.done = False


class DeduplicationMiddleware(Middleware):
    """An incoming middleware that lets each ``message_id`` through once.

    Arguments:
        capacity: how many ids it remembers; past that, the oldest is forgotten
            (and a copy of it arriving later runs again).
        ttl: seconds after which an id is forgotten (``None``: only by capacity).
        calls: whether requests whose caller waits for the answer are
            de-duplicated too (default); ``False`` lets them all through.
        clock: the monotonic clock ``ttl`` is measured with (for tests).

    **A duplicate** is a message whose id was let through before (and is still
    remembered). It is not passed on and is logged at INFO on the
    ``tavrida2.middleware.dedup`` logger with its id:

    - a cast, notification, response or error is dropped: the delivery is
      acknowledged, no handler runs;
    - a request whose caller waits (``IncomingRequestCall``) does not run its
      handler again either, and its caller is answered with a
      :class:`DuplicateMessage` Error (code 1048): the first copy already got
      an answer (a pipeline step cannot leave a caller unanswered), and a
      caller whose first answer was lost learns at once that its request did
      run, instead of waiting for its timeout.

    **When an id counts as seen.** From the moment it is let through; the
    controller then tells the middleware how the handler ended
    (:meth:`handled`, :meth:`failed`). A failed cast's id is forgotten, so
    its retry, a redelivery or a replay of its dead letter runs again; a
    handled one stays a duplicate, whatever its ``x-tavrida2-attempt`` (a
    retry caused by another controller of the same delivery). A request's id
    is kept after a failure: its caller was answered with the Error. While the
    outcome is unknown (the handler still runs), a higher attempt is let
    through. :meth:`forget` lets an id through again by hand.

    Thread-safe. The memory is per instance, so per process: copies handled by
    another server process, or arriving after a restart, are not recognised.
    Give each controller an instance of its own: a notification that two
    controllers subscribe to reaches both with the same id.
    """

    def __init__(
        self,
        capacity: int = 10_000,
        ttl: float | None = None,
        calls: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if ttl is not None and (
            not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0
        ):
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self.capacity = capacity
        self.ttl = None if ttl is None else float(ttl)
        self.calls = calls
        self._clock = clock
        self._lock = threading.Lock()
        #: id -> entry, oldest first (the order in which they were let through).
        self._seen: OrderedDict[str, _Entry] = OrderedDict()

    def process(self, message: Message) -> Message:
        """Return ``message`` if it is new; for a duplicate, an Error that stops it."""
        if not self.calls and isinstance(message, IncomingRequestCall):
            return message
        message_id = message.message_id
        attempt = attempt_in(message.headers)
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._seen.get(message_id)
            if entry is None or (not entry.done and attempt > entry.attempt):
                self._seen.pop(message_id, None)
                self._seen[message_id] = _Entry(attempt, now)
                while len(self._seen) > self.capacity:
                    self._seen.popitem(last=False)
                return message
        is_call = isinstance(message, IncomingRequestCall)
        log.info(
            "duplicate %s dropped (%s): message_id=%s attempt=%s %s -> %s request_id=%s",
            message.message_type or "message",
            "answered with DuplicateMessage" if is_call else "not handled again",
            message_id,
            attempt,
            message.headers.get("source") or "-",
            message.headers.get("destination") or "-",
            message.request_id,
        )
        error = DuplicateMessage(message_id=message_id, request_id=message.request_id)
        # for anything but a call, the controller only acknowledges it
        return Error.create_by_request(message, error)

    def handled(self, message: Message) -> None:
        """``message``'s handler succeeded: no copy of it runs again, whatever its attempt."""
        with self._lock:
            entry = self._seen.get(message.message_id)
            if entry is not None:
                entry.done = True

    def failed(self, message: Message, error: BaseException | None = None) -> None:
        """``message``'s handler raised: a cast's copies may run again (it is forgotten).

        A request's id is kept: its caller was answered with an Error, and a
        request is answered once.
        """
        if isinstance(message, IncomingRequestCall):
            self.handled(message)
        else:
            self.forget(message.message_id)

    def forget(self, message_id: str) -> bool:
        """Let the next copy of ``message_id`` through; False if it was not remembered."""
        with self._lock:
            return self._seen.pop(message_id, None) is not None

    def clear(self) -> None:
        """Forget every id."""
        with self._lock:
            self._seen.clear()

    def __contains__(self, message_id: Any) -> bool:
        """Whether a copy of ``message_id`` arriving now would be a duplicate (attempt aside)."""
        with self._lock:
            self._expire(self._clock())
            return message_id in self._seen

    def __len__(self) -> int:
        """How many ids are remembered (expired ones included until the next message)."""
        with self._lock:
            return len(self._seen)

    def _expire(self, now: float) -> None:
        """Forget the ids let through more than ``ttl`` seconds ago (the lock is held)."""
        if self.ttl is None:
            return
        seen = self._seen
        while seen:
            oldest = next(iter(seen.values()))
            if now - oldest.at < self.ttl:
                break
            seen.popitem(last=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(capacity={self.capacity}, ttl={self.ttl}, "
            f"calls={self.calls}, remembered={len(self)})"
        )


__all__ = ["DeduplicationMiddleware", "DuplicateMessage"]
