"""ServiceController: incoming middlewares -> handler -> answer -> outgoing middlewares.

The controller owns the last stages of the pipeline for one service. It runs
the same steps on both engines; only the handler call differs (called directly
on the sync engine, awaited or run in an executor on the async one).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from tavrida2 import confirmations, exceptions
from tavrida2.controller import AbstractController
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.discovery.local import LocalDiscovery
from tavrida2.dispatcher import Dispatcher, HandlerInfo
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import (
    Error,
    Incoming,
    IncomingRequestCall,
    Message,
    Response,
)
from tavrida2.middleware.base import Middleware
from tavrida2.postprocessor import PostProcessor
from tavrida2.proxies import RPCProxy
from tavrida2.steps import describe

log = logging.getLogger(__name__)

Prepared = tuple[Callable[..., Any], Message, dict[str, Any], HandlerInfo]
RunSync = Callable[[Callable[[], Any]], Awaitable[Any]]

_classes_with_discovery: weakref.WeakSet[type[ServiceController]] = weakref.WeakSet()


class ServiceController(AbstractController):
    """Base class of service controllers.

    Decorate subclasses with :func:`tavrida2.dispatcher.rpc_service` and their
    handlers with ``rpc_method``, ``rpc_response_method``, ``rpc_error_method``
    or ``subscription_method``. A handler receives ``(message, proxy, **payload)``
    and may return a dict (sent as the Response), a ``Response``, an ``Error`` or
    ``None``; an exception becomes an ``Error`` for the caller. ``None`` or ``{}``
    answers a caller that waits (direct reply-to: ``RPCClient.call()``,
    ``call(wait=True)``) with an empty Response, and sends nothing for a
    Tavrida 1.0-style call whose answer would go to the calling service's
    response handler, as Tavrida 1.0 did.

    Set ``strict_parameters = True`` on a controller to reject payload keys that
    its handlers do not take, instead of dropping them.

    A handler declared with ``schema=`` gets only payloads that its JSON Schema
    accepts (checked after the incoming middlewares): a request that fails it
    is answered with a ``ValidationError`` (code 1044) naming the field, a cast
    or notification is rejected (dead-lettered where the queue has a DLX).
    """

    service_name: ClassVar[str] = ""
    strict_parameters: ClassVar[bool] = False
    _dispatcher: ClassVar[Dispatcher | None] = None
    _discovery: ClassVar[AbstractDiscovery | None] = None

    def __init__(self, postprocessor: PostProcessor) -> None:
        self.postprocessor = postprocessor
        self._incoming_middlewares: list[Middleware] = []
        self._outgoing_middlewares: list[Middleware] = []
        self._heartbeat: Callable[[], None] | None = None
        #: The structure of the server running this controller (set by the server).
        self._describe_server: Callable[[], dict[str, Any]] | None = None

    @classmethod
    def get_discovery(cls) -> AbstractDiscovery:
        """The class's discovery; an empty ``LocalDiscovery`` if none was set."""
        if cls._discovery is None:
            cls.set_discovery(LocalDiscovery())
        assert cls._discovery is not None
        return cls._discovery

    @classmethod
    def set_discovery(cls, discovery: AbstractDiscovery) -> None:
        """Bind ``discovery`` to this class (before the server starts)."""
        if not isinstance(discovery, AbstractDiscovery):
            raise TypeError(f"discovery must be an AbstractDiscovery, got {discovery!r}")
        cls._discovery = discovery
        _classes_with_discovery.add(cls)

    @staticmethod
    def reset_all_discovery() -> None:
        """Unbind the discovery of every controller class (for tests)."""
        for cls in list(_classes_with_discovery):
            cls._discovery = None
        _classes_with_discovery.clear()

    @classmethod
    def get_dispatcher(cls) -> Dispatcher:
        if "_dispatcher" not in cls.__dict__ or cls._dispatcher is None:
            cls._dispatcher = Dispatcher()
        return cls._dispatcher

    def add_incoming_middleware(self, middleware: Middleware) -> None:
        """Append a middleware run before handlers, in the order added."""
        self._incoming_middlewares.append(middleware)

    def add_outgoing_middleware(self, middleware: Middleware) -> None:
        """Append a middleware run on the answers of request handlers."""
        self._outgoing_middlewares.append(middleware)

    def _tavrida2_info(self, request: Message, proxy: RPCProxy) -> dict[str, Any]:
        """The built-in ``<service>.info``: the structure of the server running this."""
        return self._describe_server() if self._describe_server is not None else {}

    def send_heartbeat(self) -> None:
        """Let the broker know the connection is alive during a long handler."""
        if self._heartbeat is not None:
            self._heartbeat()

    # -- the pipeline --------------------------------------------------------

    def process(self, method: str, message: Message, proxy: RPCProxy) -> None:
        """Run middlewares, the handler ``method`` and the answer steps for ``message``."""
        self.handle(type(self).get_dispatcher().get_info_by_name(method), message, proxy)

    def handle(self, info: HandlerInfo, message: Message, proxy: RPCProxy) -> None:
        """:meth:`process` for a handler already looked up (the sync engine's entry)."""
        prepared = self._prepare(info, message)
        if prepared is None:
            return
        handler, checked, kwargs, info = prepared
        if checked is not message:
            proxy, message = self._proxy_for(checked), checked
        if info.is_coroutine:
            incompatible = exceptions.IncompatibleHandler(
                handler=info.name, reason="an async def handler needs async_engine=True"
            )
            self._after(message, incompatible)
            raise incompatible
        error: Exception | None = None
        started = time.monotonic() if info.timeout is not None else 0.0
        with confirmations.tracking() as sent:
            try:
                result = handler(message, proxy, **kwargs)
            except Exception as exc:
                error = exc
        if info.timeout is not None and error is None:
            error = self._overran(info, time.monotonic() - started)
        failure = confirmations.first_failure(sent) if sent and error is None else None
        if self._failed(info.name, message, error, failure):
            return
        try:
            self._finish(message, result)
        except Exception as exc:  # the answer could not be made (not JSON, say)
            self._after(message, exc)
            raise
        self._after(message, None)

    async def handle_async(
        self, info: HandlerInfo, message: Message, proxy: RPCProxy, run_sync: RunSync
    ) -> None:
        """As :meth:`handle`; awaits ``async def`` handlers, runs others with ``run_sync``.

        The answer is published by awaiting it here, not in a task of its own.
        """
        prepared = self._prepare(info, message)
        if prepared is None:
            return
        handler, checked, kwargs, info = prepared
        if checked is not message:
            proxy, message = self._proxy_for(checked), checked
        error: Exception | None = None
        with confirmations.tracking() as sent:
            try:
                if info.is_coroutine:
                    call = handler(message, proxy, **kwargs)
                else:
                    call = run_sync(functools.partial(handler, message, proxy, **kwargs))
                if info.timeout is None:
                    result = await call
                else:
                    result = await self._within(info, call)
            except Exception as exc:
                error = exc
            except BaseException as exc:  # cancelled (a stopping server): not handled
                self._after(message, exc)
                raise
        failure = await confirmations.first_failure_async(sent) if sent and error is None else None
        if self._failed(info.name, message, error, failure):
            return
        try:
            if isinstance(message, IncomingRequestCall):
                answer = self._answer(message, result)
                if answer is not None:
                    try:
                        await self.postprocessor.send(answer)
                    except exceptions.TavridaError as exc:
                        self._log_unsent(message, exc)
            else:
                self._check_cast_result(result)
        except BaseException as exc:  # the answer could not be made, or cancelled
            self._after(message, exc)
            raise
        self._after(message, None)

    def _overran(self, info: HandlerInfo, elapsed: float) -> Exception | None:
        """The sync engine's check of ``rpc_method(timeout=...)``, once the handler returned.

        A plain handler cannot be interrupted: it ran to its end, and if that
        took longer than its timeout, its result is dropped and it counts as
        failed with ``HandlerTimeout``, as on the async engine.
        """
        assert info.timeout is not None
        if elapsed <= info.timeout:
            return None
        log.warning(
            "%s.%s took %.3f s, past its timeout of %g s: its result is dropped",
            self.service_name,
            info.name,
            elapsed,
            info.timeout,
        )
        return exceptions.HandlerTimeout(
            handler=f"{self.service_name}.{info.name}", timeout=info.timeout
        )

    async def _within(self, info: HandlerInfo, call: Awaitable[Any]) -> Any:
        """Await ``call`` for at most the handler's timeout; past it, ``HandlerTimeout``.

        An ``async def`` handler is cancelled; a plain one, running in the
        executor, cannot be stopped: it runs on, and its result is dropped.
        """
        assert info.timeout is not None
        try:
            async with asyncio.timeout(info.timeout) as budget:
                return await call
        except TimeoutError:
            if not budget.expired():
                raise  # the handler's own TimeoutError
        log.warning(
            "%s.%s did not finish within its timeout of %g s: %s",
            self.service_name,
            info.name,
            info.timeout,
            "cancelled" if info.is_coroutine else "its thread runs on, its result dropped",
        )
        raise exceptions.HandlerTimeout(
            handler=f"{self.service_name}.{info.name}", timeout=info.timeout
        )

    def _failed(
        self,
        handler: str,
        message: Message,
        error: Exception | None,
        unconfirmed: Exception | None,
    ) -> bool:
        """Whether the handler failed: it raised ``error``, or a message it sent was
        not confirmed (``unconfirmed``). A failure is answered or raised by ``_fail``."""
        if error is None and unconfirmed is None:
            return False
        if error is None:
            log.error(
                "%s.%s: a message it sent was not confirmed (%s); the handler counts as failed",
                self.service_name,
                handler,
                unconfirmed,
            )
        failure = error or unconfirmed
        assert failure is not None
        self._after(message, failure)
        self._fail(handler, message, failure)
        return True

    def _after(
        self, message: Message, error: BaseException | None, passed: int | None = None
    ) -> None:
        """Tell the incoming middlewares how the handler ended (see ``Middleware.handled``).

        ``passed``: only the first ones (those a failing middleware came after).
        """
        if not self._incoming_middlewares:
            return
        told = self._incoming_middlewares if passed is None else self._incoming_middlewares[:passed]
        for middleware in reversed(told):
            try:
                if error is None:
                    middleware.handled(message)
                else:
                    middleware.failed(message, error)
            except Exception:
                log.exception(
                    "%s: middleware %r failed after the handler", self.service_name, middleware
                )

    def _proxy_for(self, message: Message) -> RPCProxy:
        """The proxy of a handler whose message an incoming middleware replaced.

        What the handler sends carries on the chain of the message it got: its
        context (with this hop's payload), correlation id and user headers.
        """
        return RPCProxy(
            self.postprocessor,
            Dispatcher.proxy_source(message, self.service_name),
            message.context,
            message.correlation_id,
            message.headers,
        )

    def _prepare(self, info: HandlerInfo, message: Message) -> Prepared | None:
        checked: Message | None = None
        try:
            checked = (
                self._run_incoming_middlewares(message) if self._incoming_middlewares else message
            )
            if checked is None:
                return None
            if info.validator is not None:
                info.validate(checked.payload)
            checked.update_context(checked.payload)
            kwargs = info.select(checked.payload, self.strict_parameters)
            return getattr(self, info.name), checked, kwargs, info
        except Exception as exc:
            if checked is not None:
                self._after(checked, exc)
            self._fail(info.name, message, exc)
            return None

    def _run_incoming_middlewares(self, message: Message) -> Message | None:
        """The message for the handler, or None if a middleware stopped it.

        The middlewares that let it through before one stopped it (or raised)
        are told so (``Middleware.stopped``, ``Middleware.failed``).
        """
        result: Any = message
        passed = 0
        try:
            for middleware in self._incoming_middlewares:
                result = middleware.process(result)
                if isinstance(result, Response | Error):
                    break
                if not (isinstance(result, Message) and isinstance(result, Incoming)):
                    raise exceptions.IncorrectMessage(message=describe(result))
                passed += 1
            else:
                return result  # type: ignore[no-any-return]
        except Exception as exc:
            self._after(message, exc, passed)
            raise
        self._stopped(passed, message, result)
        if isinstance(message, IncomingRequestCall):
            self._publish_answer(message, result)
        return None

    def _stopped(self, passed: int, message: Message, answer: Response | Error) -> None:
        """Tell the first ``passed`` incoming middlewares that a later one stopped ``message``."""
        for middleware in reversed(self._incoming_middlewares[:passed]):
            try:
                middleware.stopped(message, answer)
            except Exception:
                log.exception(
                    "%s: middleware %r failed after a middleware stopped the message",
                    self.service_name,
                    middleware,
                )

    def _fail(self, handler: str, message: Message, exc: Exception) -> None:
        """A step failed: answer the caller with an Error, or raise ``HandlerFailed``."""
        if isinstance(message, IncomingRequestCall):
            log.error(
                "%s.%s failed on request %s: %s: %s",
                self.service_name,
                handler,
                message.request_id,
                type(exc).__name__,
                mask_url_passwords(str(exc)),
                exc_info=not isinstance(
                    exc, exceptions.AckableException | exceptions.HandlerTimeout
                ),
            )
            self._send_answer(message, Error.create_by_request(message, exc))
            return
        raise exceptions.HandlerFailed(
            handler=f"{self.service_name}.{handler}", error=mask_url_passwords(repr(exc))
        ) from exc

    def _finish(self, message: Message, result: Any) -> None:
        """Turn a handler's result into the answer of a call and send it."""
        if isinstance(message, IncomingRequestCall):
            answer = self._answer(message, result)
            if answer is not None:
                self._publish_answer(message, answer)
        else:
            self._check_cast_result(result)

    def _check_cast_result(self, result: Any) -> None:
        if result is not None and not isinstance(result, dict | Response | Error):
            log.error(
                "%s: %s", self.service_name, exceptions.WrongResponse(response=describe(result))
            )

    def _answer(self, message: IncomingRequestCall, result: Any) -> Response | Error | None:
        """The answer to ``message`` for ``result``, through the outgoing middlewares.

        None: nothing to send. A handler that returns ``None`` or ``{}`` to a
        Tavrida 1.0-style call (no direct reply-to: the answer would go to the
        calling service's response handler) sends nothing, as in 1.0, where such
        a call is a continuation that expects no answer; a caller that waits
        for the answer (direct reply-to) gets an empty Response instead of
        waiting for its timeout.
        """
        if result is None or (isinstance(result, dict) and not result):
            if not message.amqp_reply_to:
                return None
            answer: Response | Error = Response.create_by_request(message, {})
        elif isinstance(result, dict):
            answer = Response.create_by_request(message, result)
        elif isinstance(result, Response | Error):
            answer = result
        else:
            error = exceptions.WrongResponse(response=describe(result))
            log.error("%s: %s", self.service_name, error)
            answer = Error.create_by_request(message, error)
        return (
            self._run_outgoing_middlewares(message, answer)
            if self._outgoing_middlewares
            else answer
        )

    def _send_answer(self, request: IncomingRequestCall, answer: Response | Error) -> None:
        self._publish_answer(request, self._run_outgoing_middlewares(request, answer))

    def _run_outgoing_middlewares(
        self, request: IncomingRequestCall, answer: Response | Error
    ) -> Response | Error:
        result: Any = answer
        try:
            for middleware in self._outgoing_middlewares:
                result = middleware.process(result)
                if not isinstance(result, Response | Error):
                    raise exceptions.IncorrectOutgoingMessage(message=describe(result))
        except Exception as exc:
            log.error(
                "%s: outgoing middleware failed: %s: %s",
                self.service_name,
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, exceptions.TavridaError),
            )
            result = Error.create_by_request(request, exc)
        return result  # type: ignore[no-any-return]

    def _publish_answer(self, request: Message, answer: Response | Error) -> None:
        try:
            self.postprocessor.process(answer)
        except exceptions.TavridaError as exc:
            self._log_unsent(request, exc)

    def _log_unsent(self, request: Message, exc: Exception) -> None:
        log.error(
            "%s: the answer to request %s (%s) could not be sent: %s",
            self.service_name,
            request.request_id,
            request.headers.get("source"),
            exc,
        )


__all__ = ["ServiceController"]
