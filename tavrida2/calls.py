"""Calls whose caller waits for the answer: RabbitMQ direct reply-to, matched by correlation id.

A waiting request carries the AMQP properties ``reply_to`` =
``amq.rabbitmq.reply-to``, ``correlation_id`` = its ``request_id`` and
``expiration`` = the caller's timeout, and the ``deadline`` header (epoch
milliseconds): the broker drops it if it waits in a queue for longer, and a
tavrida2 server that takes it after the deadline does not run it.

:class:`SyncCalls` waits by servicing a sync driver's connection (several
threads may wait at once); :class:`AsyncCalls` keeps one future per call on an
async driver. Both fail every waiting call at once with ``ConnectionClosed``
when the channel their answers come back on is lost, and a call whose request
the broker returned with ``UnroutableMessage``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from tavrida2 import exceptions
from tavrida2.drivers.base import DIRECT_REPLY_TO, AsyncDriver, SyncDriver
from tavrida2.messages import (
    DEADLINE_HEADER,
    AMQPMessage,
    IncomingError,
    IncomingResponse,
    Request,
)
from tavrida2.steps import LogIncomingAMQPMessageMiddleware, amqp_logging_enabled

if TYPE_CHECKING:
    from tavrida2.postprocessor import Tracer

log = logging.getLogger(__name__)

#: Seconds a caller waits for an answer unless told otherwise.
DEFAULT_CALL_TIMEOUT = 30.0
#: Seconds a thread waits past a call's own timeout for the event loop to end it.
_LOOP_GRACE = 10.0
#: Calls pending before the first sweep for abandoned handles (see ``SyncCalls``).
_SWEEP_AT = 64


def check_timeout(timeout: float | None, default: float) -> float:
    """``timeout`` (or ``default``) as a positive, finite number of seconds."""
    value = default if timeout is None else timeout
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"timeout must be a number of seconds, got {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def mark_waiting(request: Request, timeout: float) -> None:
    """Make ``request`` one whose caller waits ``timeout`` seconds on direct reply-to."""
    milliseconds = max(1, int(timeout * 1000))
    request.amqp_reply_to = DIRECT_REPLY_TO
    request.amqp_correlation_id = request.request_id
    request.amqp_expiration = str(milliseconds)
    request.headers[DEADLINE_HEADER] = int(time.time() * 1000) + milliseconds


def decode_answer(
    answer: AMQPMessage,
    tracer: Tracer | None = None,
    log_step: LogIncomingAMQPMessageMiddleware | None = None,
) -> IncomingResponse:
    """The Response in ``answer``; raise ``RemoteError`` for an Error answer.

    ``tracer`` is told of the answer (:mod:`tavrida2.tracing`); ``log_step``
    logs it as every message received is (:mod:`tavrida2.steps`).
    """
    if log_step is not None:
        log_step.process(answer)
    headers = answer.headers
    data = answer.body_deserialize()
    kind = headers.get("message_type")
    if kind == "response":
        response = IncomingResponse(dict(headers), data["context"], data["payload"])
        if tracer is not None:
            tracer.received(response)
        return response
    if kind == "error":
        error = IncomingError(dict(headers), data["context"], data["payload"])
        if tracer is not None:
            tracer.received(error)
        raise error.to_exception()
    raise exceptions.UnsuitableFieldValue(field="message_type", value=kind)


class PendingCall:
    """A request on its way; :meth:`result` waits for its answer.

    Returned by ``call_async()`` on a sync client. Its answer is matched by
    correlation id; ``result()`` raises ``CallTimeout``, ``RemoteError`` or
    the transport error that ended the wait.
    """

    __slots__ = ("_calls", "answer", "deadline", "destination", "error", "request_id", "timeout")

    def __init__(self, calls: SyncCalls, request_id: str, destination: str, timeout: float) -> None:
        self._calls = calls
        self.request_id = request_id
        self.destination = destination
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.answer: AMQPMessage | None = None
        self.error: Exception | None = None

    def done(self) -> bool:
        return self.answer is not None or self.error is not None

    def result(self) -> IncomingResponse:
        """Wait (until the call's own deadline) and return the Response."""
        return self._calls.wait(self)


class SyncCalls:
    """Waiting calls over a :class:`SyncDriver` (a script's client, or a sync server).

    A ``call_async()`` handle whose ``result()`` is never asked for is not
    kept forever: once the pending calls outgrow twice what the last sweep
    left (64 at first), those past their deadline end with ``CallTimeout``
    and are forgotten.
    """

    def __init__(self, driver: SyncDriver) -> None:
        self._driver = driver
        self._pending: dict[str, PendingCall] = {}
        self._consuming = False
        self._lock = threading.Lock()
        self._sweep_at = _SWEEP_AT
        #: Told of each answer (set by the server or client that owns it).
        self.tracer: Tracer | None = None
        self._log_step = LogIncomingAMQPMessageMiddleware() if amqp_logging_enabled() else None

    def start(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> PendingCall:
        """Publish a waiting request (see :func:`mark_waiting`); returns its handle."""
        if not self._consuming:
            with self._lock:
                if not self._consuming:
                    self._driver.consume_replies(self._on_answer, self._on_failure)
                    self._consuming = True
        correlation_id = message.correlation_id or ""
        pending = PendingCall(self, correlation_id, routing_key, timeout)
        self._pending[correlation_id] = pending
        if len(self._pending) > self._sweep_at:
            self._sweep()
        try:
            self._driver.publish(exchange, routing_key, message, True)
        except BaseException:
            self._pending.pop(correlation_id, None)
            raise
        return pending

    def request(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> IncomingResponse:
        """Publish a waiting request and return its Response (or raise)."""
        return self.wait(self.start(exchange, routing_key, message, timeout))

    def wait(self, pending: PendingCall) -> IncomingResponse:
        if not pending.done():
            self._driver.wait(pending.done, pending.deadline - time.monotonic())
        self._pending.pop(pending.request_id, None)
        if pending.error is not None:
            raise pending.error
        if pending.answer is None:
            pending.error = exceptions.CallTimeout(
                entry_point=pending.destination, timeout=pending.timeout
            )
            raise pending.error
        return decode_answer(pending.answer, self.tracer, self._log_step)

    def _sweep(self) -> None:
        """End and forget the calls past their deadline that nobody waits for."""
        now = time.monotonic()
        for correlation_id, pending in list(self._pending.items()):
            if pending.deadline >= now or self._pending.pop(correlation_id, None) is None:
                continue
            if not pending.done():
                pending.error = exceptions.CallTimeout(
                    entry_point=pending.destination, timeout=pending.timeout
                )
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._pending))

    def _on_answer(self, answer: AMQPMessage) -> None:
        pending = self._pending.pop(answer.correlation_id or "", None)
        if pending is None:
            log.info("answer %s came after its caller stopped waiting", answer.correlation_id)
            return
        pending.answer = answer

    def _on_failure(self, correlation_id: str | None, error: Exception) -> None:
        if correlation_id is not None:
            failed = [self._pending.pop(correlation_id)] if correlation_id in self._pending else []
        else:
            failed = list(self._pending.values())
            self._pending.clear()
        for pending in failed:
            pending.error = error

    def fail_all(self, error: Exception) -> None:
        """End every waiting call with ``error`` (the client is closing)."""
        self._on_failure(None, error)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class AsyncCalls:
    """Waiting calls over an :class:`AsyncDriver`: one future per call, in ``loop``."""

    def __init__(self, driver: AsyncDriver, loop: asyncio.AbstractEventLoop) -> None:
        self._driver = driver
        self._loop = loop
        self._pending: dict[str, asyncio.Future[AMQPMessage]] = {}
        self._consuming: asyncio.Future[None] | None = None
        #: Told of each answer (set by the server or client that owns it).
        self.tracer: Tracer | None = None
        self._log_step = LogIncomingAMQPMessageMiddleware() if amqp_logging_enabled() else None

    async def _start_consuming(self) -> None:
        if self._consuming is None:
            self._consuming = self._loop.create_future()
            try:
                await self._driver.consume_replies(self._on_answer, self._on_failure)
            except BaseException as exc:
                self._consuming.set_exception(exc)
                self._consuming.exception()  # retrieved: the first caller raises it
                self._consuming = None
                raise
            self._consuming.set_result(None)
        else:
            await self._consuming

    async def call(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> IncomingResponse:
        """Publish a waiting request and return its Response (or raise)."""
        if self._consuming is None or not self._consuming.done():
            await self._start_consuming()
        correlation_id = message.correlation_id or ""
        future = self._loop.create_future()
        self._pending[correlation_id] = future
        timer = self._loop.call_later(timeout, self._expire, correlation_id, routing_key, timeout)
        try:
            await self._driver.publish(exchange, routing_key, message, True)
            answer = await future
        finally:
            timer.cancel()
            self._pending.pop(correlation_id, None)
        return decode_answer(answer, self.tracer, self._log_step)

    def request(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> Awaitable[IncomingResponse] | IncomingResponse:
        """In the loop's thread an awaitable of :meth:`call`; in any other thread
        (a plain handler run in an executor) the answer itself."""
        coro = self.call(exchange, routing_key, message, timeout)
        if _in_loop(self._loop):
            return coro
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            # the call ends itself after ``timeout``; the grace covers a loop
            # that stopped running (a server stopping) and never ends it
            return future.result(timeout + _LOOP_GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise exceptions.CallTimeout(entry_point=routing_key, timeout=timeout) from None

    def start(
        self, exchange: str, routing_key: str, message: AMQPMessage, timeout: float
    ) -> asyncio.Future[IncomingResponse] | concurrent.futures.Future[IncomingResponse]:
        """:meth:`call` running on its own: an asyncio future in the loop's thread,
        a ``concurrent.futures.Future`` in any other."""
        coro = self.call(exchange, routing_key, message, timeout)
        if _in_loop(self._loop):
            return asyncio.ensure_future(coro)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _expire(self, correlation_id: str, destination: str, timeout: float) -> None:
        future = self._pending.pop(correlation_id, None)
        if future is not None and not future.done():
            future.set_exception(exceptions.CallTimeout(entry_point=destination, timeout=timeout))

    def _on_answer(self, answer: AMQPMessage) -> None:
        future = self._pending.pop(answer.correlation_id or "", None)
        if future is None or future.done():
            log.info("answer %s came after its caller stopped waiting", answer.correlation_id)
            return
        future.set_result(answer)

    def _on_failure(self, correlation_id: str | None, error: Exception) -> None:
        if correlation_id is not None:
            futures = [f for f in (self._pending.pop(correlation_id, None),) if f is not None]
        else:
            futures = list(self._pending.values())
            self._pending.clear()
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def fail_all(self, error: Exception) -> None:
        """End every waiting call with ``error`` (the client is closing)."""
        self._on_failure(None, error)


__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "AsyncCalls",
    "PendingCall",
    "SyncCalls",
    "check_timeout",
    "decode_answer",
    "mark_waiting",
]
