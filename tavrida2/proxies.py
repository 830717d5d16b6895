"""Proxies: ``proxy.<service>.<method>(**payload).call()|cast()|transfer()`` and ``publish()``.

A handler gets an :class:`RPCProxy` whose source is the entry point being
handled and whose context and correlation id are the incoming message's, so a
chain of calls keeps one correlation id and a growing context.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from tavrida2 import entry_point, exceptions, outcomes
from tavrida2.calls import DEFAULT_CALL_TIMEOUT, check_timeout, mark_waiting
from tavrida2.entry_point import EntryPoint
from tavrida2.messages import BROADCAST_HEADER, RESERVED_HEADERS, Message, Notification, Request

if TYPE_CHECKING:
    from tavrida2.postprocessor import PostProcessor


def _user_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if k not in RESERVED_HEADERS}


class _Origin:
    """What every level of a proxy shares: where requests come from, and their chain.

    ``wait`` is what ``call()`` does by default: wait for the answer (a
    script's client) or send it to the ``rpc_response_method`` of the source
    (a handler, as in Tavrida 1.0); ``timeout`` the default wait in seconds.
    """

    __slots__ = (
        "context",
        "correlation_id",
        "headers",
        "postprocessor",
        "source",
        "timeout",
        "wait",
    )

    def __init__(
        self,
        postprocessor: PostProcessor,
        source: EntryPoint | str,
        context: dict[str, Any] | None,
        correlation_id: str,
        headers: dict[str, Any] | None,
        wait: bool = False,
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.postprocessor = postprocessor
        self.source = source
        self.context = context
        self.correlation_id = correlation_id
        self.headers = headers
        self.wait = wait
        self.timeout = timeout


class RCPCallProxy:
    """One prepared request: send it with :meth:`call`, :meth:`cast` or :meth:`transfer`."""

    __slots__ = ("_kwargs", "_method", "_origin", "_service")

    def __init__(
        self,
        postprocessor: PostProcessor,
        service_name: str,
        method_name: str,
        source: EntryPoint | str,
        context: dict[str, Any] | None,
        correlation_id: str,
        headers: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        self._origin = _Origin(postprocessor, source, context, correlation_id, headers)
        self._service = service_name
        self._method = method_name
        self._kwargs = kwargs

    @classmethod
    def _of(
        cls, origin: _Origin, service: str, method: str, kwargs: dict[str, Any]
    ) -> RCPCallProxy:
        proxy = cls.__new__(cls)
        proxy._origin, proxy._service, proxy._method, proxy._kwargs = (
            origin,
            service,
            method,
            kwargs,
        )
        return proxy

    def _make_request(
        self,
        context: dict[str, Any] | str | None,
        correlation_id: str,
        reply_to: EntryPoint | str | None,
        source: EntryPoint | str,
    ) -> Request:
        origin = self._origin
        source = source or origin.source
        headers = _user_headers(origin.headers)
        headers["correlation_id"] = correlation_id or origin.correlation_id
        headers["reply_to"] = str(source if reply_to is None else reply_to)
        headers["source"] = str(source)
        headers["destination"] = f"{self._service}.{self._method}"
        context = context if isinstance(context, dict) and context else origin.context
        return Request(headers, context or {}, self._kwargs)

    def call(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        reply_to: EntryPoint | str = "",
        source: EntryPoint | str = "",
        *,
        wait: bool | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send a request and get its answer, or have it sent to ``reply_to``.

        ``wait=True`` (a client's default) waits at most ``timeout`` seconds
        and returns the ``IncomingResponse``; an Error answer raises
        ``RemoteError``, no answer in time ``CallTimeout``. On the async
        engine and the async client it returns an awaitable instead.

        ``wait=False`` (a handler's default, as in Tavrida 1.0) returns once
        the request is sent: its answer reaches the ``rpc_response_method``
        (or ``rpc_error_method``) of ``reply_to`` (default: the source).
        """
        origin = self._origin
        request = self._make_request(context, correlation_id, reply_to or None, source)
        if not (origin.wait if wait is None else wait):
            return origin.postprocessor.process(request)
        seconds = check_timeout(timeout, origin.timeout)
        mark_waiting(request, seconds)
        return origin.postprocessor.call(request, seconds)

    def try_call(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        source: EntryPoint | str = "",
        *,
        timeout: float | None = None,
    ) -> Any:
        """Wait for the answer like ``call(wait=True)``, but return ``(ok, (code, result))``.

        ``(True, (0, payload))`` for a Response; ``(True, (code, error_payload))``
        for an Error answer; ``(False, (code, {"class", "message", "code"}))``
        when no answer came: a timeout (1058), a lost connection (1052), a
        request nobody takes (1042)... (see :mod:`tavrida2.outcomes`). Never
        raises for those; a bad ``timeout`` or payload still raises. On the
        async client and engine it returns an awaitable of the outcome.
        """
        origin = self._origin
        seconds = check_timeout(timeout, origin.timeout)
        request = self._make_request(context, correlation_id, None, source)
        mark_waiting(request, seconds)
        try:
            answer = origin.postprocessor.call(request, seconds)
        except outcomes.FAILURES as error:
            return outcomes.failed(error)
        if inspect.isawaitable(answer):
            return outcomes.awaited(answer)
        return outcomes.answered(answer)

    def call_async(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        source: EntryPoint | str = "",
        *,
        timeout: float | None = None,
    ) -> Any:
        """Send a request whose answer is waited for later.

        Returns a handle: on a sync client or engine a ``PendingCall`` whose
        ``result()`` waits (until ``timeout`` after sending) and returns the
        ``IncomingResponse``; on the async ones an ``asyncio`` future of it.
        Many calls can be in flight on one connection.
        """
        origin = self._origin
        seconds = check_timeout(timeout, origin.timeout)
        request = self._make_request(context, correlation_id, None, source)
        mark_waiting(request, seconds)
        return origin.postprocessor.start_call(request, seconds)

    def cast(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        source: EntryPoint | str = "",
    ) -> Any:
        """Send a request nobody waits an answer for."""
        request = self._make_request(context, correlation_id, entry_point.NULL, source)
        return self._origin.postprocessor.process(request)

    def broadcast(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        source: EntryPoint | str = "",
    ) -> Any:
        """Send the request to every running instance of the service; nobody answers.

        Its ``broadcast_method`` handler runs once in each server of the service
        (a request reaches one of them). Returns like :meth:`cast`; raises
        ``UnroutableMessage`` when no instance is running, ``ExchangeNotFound``
        when none ever ran (the service's fanout exchange was never declared).
        """
        request = self._make_request(context, correlation_id, entry_point.NULL, source)
        request.headers[BROADCAST_HEADER] = True
        return self._origin.postprocessor.process(request)

    def cast_async(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        source: EntryPoint | str = "",
    ) -> Any:
        """:meth:`cast` without waiting for the broker's confirmation.

        Returns a handle: on a sync client or engine a ``PendingPublish``
        whose ``result()`` waits for the confirmation (and raises what
        ``cast()`` would have raised); on the async ones an asyncio future.
        Many casts can be in flight on one connection.
        """
        request = self._make_request(context, correlation_id, entry_point.NULL, source)
        return self._origin.postprocessor.process_async(request)

    def transfer(
        self,
        request: Message,
        context: dict[str, Any] | str = "",
        reply_to: EntryPoint | str = "",
        source: EntryPoint | str = "",
    ) -> Any:
        """Call on behalf of ``request``: its correlation id, its context merged in."""
        merged: dict[str, Any] = dict(context) if isinstance(context, dict) else {}
        merged.update(request.context)
        message = self._make_request(merged, request.correlation_id, reply_to or None, source)
        return self._origin.postprocessor.process(message)


class RPCMethodProxy:
    """``proxy.<service>.<method>``: call it with the payload."""

    __slots__ = ("_method", "_origin", "_service")

    def __init__(
        self,
        postprocessor: PostProcessor,
        service_name: str,
        method_name: str,
        source: EntryPoint | str,
        context: dict[str, Any] | None = None,
        correlation_id: str = "",
        headers: dict[str, Any] | None = None,
    ) -> None:
        self._origin = _Origin(postprocessor, source, context, correlation_id, headers)
        self._service = service_name
        self._method = method_name

    def __call__(self, **kwargs: Any) -> RCPCallProxy:
        return RCPCallProxy._of(self._origin, self._service, self._method, kwargs)


class RPCServiceProxy:
    """``proxy.<service>``: its attributes are the service's methods."""

    __slots__ = ("_name", "_origin")

    def __init__(
        self,
        postprocessor: PostProcessor,
        name: str,
        source: EntryPoint | str,
        context: dict[str, Any] | None = None,
        correlation_id: str = "",
        headers: dict[str, Any] | None = None,
    ) -> None:
        self._origin = _Origin(postprocessor, source, context, correlation_id, headers)
        self._name = name

    @classmethod
    def _of(cls, origin: _Origin, name: str) -> RPCServiceProxy:
        proxy = cls.__new__(cls)
        proxy._origin, proxy._name = origin, name
        return proxy

    def __getattr__(self, item: str) -> RPCMethodProxy:
        if item.startswith("__"):
            raise AttributeError(item)
        method = RPCMethodProxy.__new__(RPCMethodProxy)
        method._origin, method._service, method._method = self._origin, self._name, item
        return method


class RPCProxy:
    """Calls remote services and publishes notifications on behalf of a handler or script.

    ``proxy.<service>`` fails at once with ``UnableToDiscover`` if discovery does
    not know the service. ``wait`` and ``timeout`` are the defaults of
    ``call()`` (see :meth:`RCPCallProxy.call`).
    """

    def __init__(
        self,
        postprocessor: PostProcessor,
        source: EntryPoint | str,
        context: dict[str, Any] | None = None,
        correlation_id: str = "",
        headers: dict[str, Any] | None = None,
        *,
        wait: bool = False,
        timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._origin = _Origin(
            postprocessor, source, context, correlation_id, headers, wait, timeout
        )

    def __getattr__(self, item: str) -> RPCServiceProxy:
        if item.startswith("_"):
            raise AttributeError(item)
        return self[item]

    def __getitem__(self, name: str) -> RPCServiceProxy:
        """``proxy["x"]`` is ``proxy.x``, for names that are not identifiers or clash."""
        self._origin.postprocessor.discovery_service.get_remote(name)
        return RPCServiceProxy._of(self._origin, name)

    def add_headers(self, headers: dict[str, Any]) -> None:
        """Add user headers to what this proxy sends; Tavrida's own headers are refused."""
        forbidden = sorted(set(headers) & RESERVED_HEADERS)
        if forbidden:
            raise exceptions.ForbiddenHeaders(headers=", ".join(forbidden))
        merged = _user_headers(self._origin.headers)
        merged.update(headers)
        self._origin.headers = merged

    def publish(self, correlation_id: str = "", **kwargs: Any) -> Any:
        """Publish a notification with payload ``kwargs`` from this proxy's source."""
        origin = self._origin
        headers = _user_headers(origin.headers)
        headers["correlation_id"] = correlation_id or origin.correlation_id
        headers["source"] = str(origin.source)
        notification = Notification(headers, origin.context or {}, kwargs)
        return origin.postprocessor.process(notification)


__all__ = ["RCPCallProxy", "RPCCallProxy", "RPCMethodProxy", "RPCProxy", "RPCServiceProxy"]

RPCCallProxy = RCPCallProxy
