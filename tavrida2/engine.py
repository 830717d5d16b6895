"""Engines: run the pipeline for each delivery and decide what the driver does with it.

The sync engine calls everything in the driver's thread; what handlers send is
published (and confirmed) as they send it, or, with ``cast_async()``, confirmed
before the handler counts as done. The async engine runs each delivery in a
task: ``async def`` handlers are awaited, plain ones run in an executor; what
they send is published at once in tasks of its own. On both, a handler whose
sends were not all confirmed has failed (:mod:`tavrida2.confirmations`): its
delivery is never acknowledged as handled.

Dispositions: handled (even if the answer is an Error) -> ACK; a message that
can never be handled is dead-lettered, a cast/notification whose handler
failed retried, then dead-lettered (:mod:`tavrida2.deadletter`: the copy is
published and confirmed, then the original ACKed; on a quorum queue a retry
is a REQUEUE, which RabbitMQ counts); without dead letters, or
if the copy cannot be published -> REJECT (the broker dead-letters it where
the queue has a dead-letter exchange). Every failure is logged with its reason
and what became of the message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
from collections.abc import Callable
from typing import Any, Protocol

from tavrida2 import exceptions
from tavrida2.confirmations import first_failure_async, track, tracking
from tavrida2.deadletter import DeadLetters
from tavrida2.drivers.base import AsyncDriver, Disposition
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import AMQPMessage, attempt_in
from tavrida2.preprocessor import PreProcessor
from tavrida2.steps import LoggingMiddleware

log = logging.getLogger(__name__)

#: Seconds a stopping server waits for the handlers in progress (``stop_timeout``).
DEFAULT_STOP_TIMEOUT = 30.0
_masker = LoggingMiddleware()

PendingPublish = asyncio.Future[Any] | concurrent.futures.Future[Any]

#: The ``reason`` of :meth:`DeliveryEvents.dead_lettered`: no handler could take it.
UNHANDLEABLE = "unhandleable"
#: The ``reason`` of :meth:`DeliveryEvents.dead_lettered`: its handler failed.
FAILED = "failed"


class DeliveryEvents(Protocol):
    """What an engine tells besides the handlers' work, to whoever listens.

    :mod:`tavrida2.metrics` counts these; :mod:`tavrida2.otel` marks the span
    of the delivery in hand as failed. Called only on the paths of failures,
    so an engine without listeners does nothing more.
    """

    def unhandleable(self, error: Exception) -> None:
        """A delivery reached no handler (malformed, unknown service or method, expired)."""

    def failed(self, error: Exception) -> None:
        """A handler of the delivery in hand raised ``error``."""

    def retried(self) -> None:
        """A failed cast or notification was sent for another attempt."""

    def dead_lettered(self, reason: str) -> None:
        """A message was given up on (:data:`UNHANDLEABLE` or :data:`FAILED`): dead-lettered,
        or rejected for the broker to dead-letter."""


class _EveryListener:
    """The :class:`DeliveryEvents` of several listeners, told in their order."""

    def __init__(self, listeners: list[DeliveryEvents]) -> None:
        self._listeners = listeners

    def unhandleable(self, error: Exception) -> None:
        for listener in self._listeners:
            listener.unhandleable(error)

    def failed(self, error: Exception) -> None:
        for listener in self._listeners:
            listener.failed(error)

    def retried(self) -> None:
        for listener in self._listeners:
            listener.retried()

    def dead_lettered(self, reason: str) -> None:
        for listener in self._listeners:
            listener.dead_lettered(reason)


def delivery_events(*listeners: DeliveryEvents | None) -> DeliveryEvents | None:
    """One :class:`DeliveryEvents` telling each of ``listeners`` (None: there are none)."""
    present = [listener for listener in listeners if listener is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else _EveryListener(present)


def _unhandleable(
    preprocessor: PreProcessor, amqp_message: AMQPMessage, error: Exception
) -> Disposition:
    """Log a message that cannot be handled and answer its caller if it has one.

    ACK when the caller was sent an Error; REJECT when there is no caller to
    tell or the Error could not be sent. An expired request is only logged
    and acknowledged: nobody waits for it.
    """
    headers = amqp_message.headers if isinstance(amqp_message.headers, dict) else {}
    if isinstance(error, exceptions.RequestExpired):
        log.warning(
            "not run: %s (its caller stopped waiting); source=%s", error, headers.get("source")
        )
        return Disposition.ACK
    log.error(
        "cannot handle message %s (code %s): %s; headers=%s",
        headers.get("message_id", "?"),
        exceptions.error_code(error),
        error,
        _masker.mask(headers),
        exc_info=not isinstance(error, exceptions.TavridaError),
    )
    try:
        preprocessor.reply_error(amqp_message, error)
    except LookupError:
        return Disposition.REJECT
    except exceptions.TavridaError as exc:
        log.error("could not answer the caller: %s", exc)
        return Disposition.REJECT
    return Disposition.ACK


class SyncEngine:
    """Handles deliveries of a sync driver, one at a time.

    With ``dead_letters`` (and the ``publish`` of the driver), what cannot be
    handled is dead-lettered and failing casts are retried (see
    :mod:`tavrida2.deadletter`); without, they are rejected.
    """

    def __init__(
        self,
        preprocessor: PreProcessor,
        dead_letters: DeadLetters | None = None,
        publish: Callable[[str, str, AMQPMessage, bool], Any] | None = None,
        events: DeliveryEvents | None = None,
    ) -> None:
        self._preprocessor = preprocessor
        self._dead_letters = dead_letters if publish is not None else None
        self._publish = publish
        self._events = events

    def on_delivery(self, amqp_message: AMQPMessage) -> Disposition:
        try:
            jobs = self._preprocessor.prepare(amqp_message)
        except Exception as error:
            if self._events is not None:
                self._events.unhandleable(error)
            disposition = _unhandleable(self._preprocessor, amqp_message, error)
            if disposition is Disposition.REJECT:
                letter = _dead_letter(self._dead_letters, amqp_message, error)
                return self._resend(letter, UNHANDLEABLE)
            return disposition
        failure: Exception | None = None
        for controller, info, message, proxy in jobs:
            try:
                controller.handle(info, message, proxy)
            except Exception as exc:
                failure = exc
        if failure is None:
            return Disposition.ACK
        if self._events is not None:
            self._events.failed(failure)
        return self._resend(_after_failure(self._dead_letters, amqp_message, failure), FAILED)

    def _resend(self, resend: Resend | Disposition | None, reason: str) -> Disposition:
        """Publish the dead letter or retry instead of the delivery: ACK once confirmed."""
        if resend is None or isinstance(resend, Disposition):
            return _disposed(self._events, resend, reason)
        assert self._publish is not None
        exchange, routing_key, copy, what = resend
        try:
            self._publish(exchange, routing_key, copy, True)
        except exceptions.TavridaError as exc:
            return _disposed(self._events, _not_sent(what, exc), reason)
        return _disposed(self._events, what, reason)


#: What to publish instead of a delivery: exchange, routing key, the copy, what it is.
Resend = tuple[str, str, AMQPMessage, str]


def _dead_letter(
    dead_letters: DeadLetters | None, amqp_message: AMQPMessage, error: Exception
) -> Resend | None:
    """The dead letter of a message that cannot be handled (None: reject it)."""
    if dead_letters is None:
        return None
    return (*dead_letters.unhandleable(amqp_message, error), "dead-lettered")


def _after_failure(
    dead_letters: DeadLetters | None, amqp_message: AMQPMessage, failure: Exception
) -> Resend | Disposition | None:
    """Log a failed cast or notification; its retry or dead letter (None: reject it).

    ``Disposition.REQUEUE``: back to its quorum queue, which counts the attempt.
    """
    if dead_letters is None:
        _log_failure(failure, "message rejected")
        return None
    outcome = dead_letters.after_failure(amqp_message, failure)
    if outcome is None:
        _log_failure(
            failure,
            f"returned to the quorum queue (attempt {attempt_in(amqp_message.headers) + 1} "
            f"of {dead_letters.last_attempt})",
        )
        return Disposition.REQUEUE
    exchange, routing_key, copy, retried = outcome
    if retried:
        when = (
            f"retried in {int(copy.expiration) / 1000:g} s"
            if copy.expiration is not None
            else "requeued at once (a nackable error)"
        )
        fate = f"{when} (attempt {attempt_in(copy.headers)} of {dead_letters.last_attempt})"
    else:
        fate = f"message rejected: dead-lettered to {dead_letters.policy.queue}"
    _log_failure(failure, fate)
    return exchange, routing_key, copy, "retried" if retried else "dead-lettered"


def _disposed(
    events: DeliveryEvents | None, outcome: Disposition | str | None, reason: str
) -> Disposition:
    """The disposition of a message given up on or retried (``outcome``: what was
    published instead, a disposition, or None: reject); ``events`` are told which."""
    if events is not None:
        if outcome == "retried" or outcome is Disposition.REQUEUE:
            events.retried()
        else:
            events.dead_lettered(reason)
    if outcome is None:
        return Disposition.REJECT
    return outcome if isinstance(outcome, Disposition) else Disposition.ACK


def _not_sent(what: str, exc: Exception) -> Disposition:
    log.error(
        "could not be %s (%s); rejected: the broker dead-letters it to the queue's "
        "dead-letter exchange",
        what,
        exc,
    )
    return Disposition.REJECT


def _log_failure(exc: Exception, fate: str) -> None:
    cause = exc.__cause__ if isinstance(exc, exceptions.HandlerFailed) else exc
    log.error("%s; %s", mask_url_passwords(str(exc)), fate, exc_info=cause)


class AsyncOutbox:
    """The async engine's publisher: publishes in a task and tracks it for the delivery.

    Returns an awaitable (from the event loop's thread) or a
    ``concurrent.futures.Future`` (from an executor thread): a handler may wait
    on it to learn whether its message was confirmed.
    """

    def __init__(self, driver: AsyncDriver, loop: asyncio.AbstractEventLoop) -> None:
        self._driver = driver
        self._loop = loop

    async def send(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> None:
        """Publish in the caller's task (the engine's answers)."""
        await self._driver.publish(exchange, routing_key, message, mandatory)

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> PendingPublish:
        coro = self._driver.publish(exchange, routing_key, message, mandatory)
        future: PendingPublish
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            future = self._loop.create_task(coro)
        else:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        track(future)
        return future


class AsyncEngine:
    """Handles deliveries of an async driver; each in its own task."""

    def __init__(
        self,
        preprocessor: PreProcessor,
        loop: asyncio.AbstractEventLoop,
        executor: concurrent.futures.Executor | None = None,
        dead_letters: DeadLetters | None = None,
        driver: AsyncDriver | None = None,
        events: DeliveryEvents | None = None,
    ) -> None:
        self._preprocessor = preprocessor
        self._loop = loop
        self._executor = executor
        self._dead_letters = dead_letters if driver is not None else None
        self._driver = driver
        self._events = events

    async def run_sync(self, func: Callable[[], Any]) -> Any:
        context = contextvars.copy_context()
        return await self._loop.run_in_executor(self._executor, context.run, func)

    async def on_delivery(self, amqp_message: AMQPMessage) -> Disposition:
        try:
            jobs = self._preprocessor.prepare(amqp_message)
        except Exception as error:
            if self._events is not None:
                self._events.unhandleable(error)
            with tracking() as sent:  # the Error for the caller, published in a task
                disposition = _unhandleable(self._preprocessor, amqp_message, error)
            if disposition is Disposition.ACK and sent:
                unsent = await first_failure_async(sent)
                if unsent is not None:
                    log.error("could not answer the caller: %s", unsent)
                    disposition = Disposition.REJECT
            if disposition is Disposition.REJECT:
                letter = _dead_letter(self._dead_letters, amqp_message, error)
                return await self._resend(letter, UNHANDLEABLE)
            return disposition
        failure: Exception | None = None
        # answers the controllers publish without awaiting (an Error for a request
        # a middleware turned down): settled only once they were sent
        with tracking() as answers:
            for controller, info, message, proxy in jobs:
                try:
                    await controller.handle_async(info, message, proxy, self.run_sync)
                except Exception as exc:
                    failure = exc
        if answers:
            unsent = await first_failure_async(answers)
            if unsent is not None:
                log.error(
                    "the answer to %s could not be sent: %s",
                    amqp_message.headers.get("message_id", "?"),
                    unsent,
                )
        if failure is None:
            return Disposition.ACK
        if self._events is not None:
            self._events.failed(failure)
        resend = _after_failure(self._dead_letters, amqp_message, failure)
        return await self._resend(resend, FAILED)

    async def _resend(self, resend: Resend | Disposition | None, reason: str) -> Disposition:
        """As :meth:`SyncEngine._resend`, through the async driver."""
        if resend is None or isinstance(resend, Disposition):
            return _disposed(self._events, resend, reason)
        assert self._driver is not None
        exchange, routing_key, copy, what = resend
        try:
            await self._driver.publish(exchange, routing_key, copy, True)
        except exceptions.TavridaError as exc:
            return _disposed(self._events, _not_sent(what, exc), reason)
        return _disposed(self._events, what, reason)


__all__ = [
    "DEFAULT_STOP_TIMEOUT",
    "FAILED",
    "UNHANDLEABLE",
    "AsyncEngine",
    "AsyncOutbox",
    "DeliveryEvents",
    "SyncEngine",
    "delivery_events",
]
