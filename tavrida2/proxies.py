"""Proxies: ``proxy.<service>.<method>(**payload).call()|cast()|transfer()`` and ``publish()``.

A handler gets an :class:`RPCProxy` whose source is the entry point being
handled and whose context and correlation id are the incoming message's, so a
chain of calls keeps one correlation id and a growing context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tavrida2 import entry_point, exceptions
from tavrida2.entry_point import EntryPoint
from tavrida2.messages import RESERVED_HEADERS, Message, Notification, Request

if TYPE_CHECKING:
    from tavrida2.postprocessor import PostProcessor


def _user_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if k not in RESERVED_HEADERS}


class RCPCallProxy:
    """One prepared request: send it with :meth:`call`, :meth:`cast` or :meth:`transfer`."""

    __slots__ = (
        "_context",
        "_correlation_id",
        "_headers",
        "_kwargs",
        "_method",
        "_pp",
        "_service",
        "_source",
    )

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
        self._pp = postprocessor
        self._service = service_name
        self._method = method_name
        self._source = source
        self._context = context
        self._correlation_id = correlation_id
        self._headers = headers
        self._kwargs = kwargs

    def _make_request(
        self,
        context: dict[str, Any] | str | None,
        correlation_id: str,
        reply_to: EntryPoint | str | None,
        source: EntryPoint | str,
    ) -> Request:
        source = source or self._source
        headers = _user_headers(self._headers)
        headers["correlation_id"] = correlation_id or self._correlation_id
        headers["reply_to"] = str(source if reply_to is None else reply_to)
        headers["source"] = str(source)
        headers["destination"] = f"{self._service}.{self._method}"
        return Request(headers, (context or self._context) or {}, self._kwargs)  # type: ignore[arg-type]

    def call(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        reply_to: EntryPoint | str = "",
        source: EntryPoint | str = "",
    ) -> Any:
        """Send a request whose answer goes to ``reply_to`` (default: the source).

        The answer reaches that service's ``rpc_response_method`` (or
        ``rpc_error_method``) for this remote entry point.
        """
        request = self._make_request(context, correlation_id, reply_to or None, source)
        return self._pp.process(request)

    def cast(
        self,
        correlation_id: str = "",
        context: dict[str, Any] | str = "",
        source: EntryPoint | str = "",
    ) -> Any:
        """Send a request nobody waits an answer for."""
        request = self._make_request(context, correlation_id, entry_point.NULL, source)
        return self._pp.process(request)

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
        return self._pp.process(message)


class RPCMethodProxy:
    """``proxy.<service>.<method>``: call it with the payload."""

    __slots__ = ("_context", "_correlation_id", "_headers", "_method", "_pp", "_service", "_source")

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
        self._pp = postprocessor
        self._service = service_name
        self._method = method_name
        self._source = source
        self._context = context
        self._correlation_id = correlation_id
        self._headers = headers

    def __call__(self, **kwargs: Any) -> RCPCallProxy:
        return RCPCallProxy(
            self._pp,
            self._service,
            self._method,
            self._source,
            self._context,
            self._correlation_id,
            self._headers,
            kwargs,
        )


class RPCServiceProxy:
    """``proxy.<service>``: its attributes are the service's methods."""

    __slots__ = ("_context", "_correlation_id", "_headers", "_name", "_pp", "_source")

    def __init__(
        self,
        postprocessor: PostProcessor,
        name: str,
        source: EntryPoint | str,
        context: dict[str, Any] | None = None,
        correlation_id: str = "",
        headers: dict[str, Any] | None = None,
    ) -> None:
        self._pp = postprocessor
        self._name = name
        self._source = source
        self._context = context
        self._correlation_id = correlation_id
        self._headers = headers

    def __getattr__(self, item: str) -> RPCMethodProxy:
        if item.startswith("__"):
            raise AttributeError(item)
        return RPCMethodProxy(
            self._pp,
            self._name,
            item,
            self._source,
            self._context,
            self._correlation_id,
            self._headers,
        )


class RPCProxy:
    """Calls remote services and publishes notifications on behalf of a handler or script.

    ``proxy.<service>`` fails at once with ``UnableToDiscover`` if discovery does
    not know the service.
    """

    def __init__(
        self,
        postprocessor: PostProcessor,
        source: EntryPoint | str,
        context: dict[str, Any] | None = None,
        correlation_id: str = "",
        headers: dict[str, Any] | None = None,
    ) -> None:
        self._postprocessor = postprocessor
        self._source = source
        self._context = context
        self._correlation_id = correlation_id
        self._headers = headers

    def __getattr__(self, item: str) -> RPCServiceProxy:
        if item.startswith("_"):
            raise AttributeError(item)
        return self.service(item)

    def service(self, name: str) -> RPCServiceProxy:
        """``proxy.service("x")`` is ``proxy.x``, for names that are not identifiers."""
        self._postprocessor.discovery_service.get_remote(name)
        return RPCServiceProxy(
            self._postprocessor,
            name,
            self._source,
            self._context,
            self._correlation_id,
            self._headers,
        )

    def add_headers(self, headers: dict[str, Any]) -> None:
        """Add user headers to what this proxy sends; Tavrida's own headers are refused."""
        forbidden = sorted(set(headers) & RESERVED_HEADERS)
        if forbidden:
            raise exceptions.ForbiddenHeaders(headers=", ".join(forbidden))
        merged = _user_headers(self._headers)
        merged.update(headers)
        self._headers = merged

    def publish(self, correlation_id: str = "", **kwargs: Any) -> Any:
        """Publish a notification with payload ``kwargs`` from this proxy's source."""
        headers = _user_headers(self._headers)
        headers["correlation_id"] = correlation_id or self._correlation_id
        headers["source"] = str(self._source)
        notification = Notification(headers, self._context or {}, kwargs)
        return self._postprocessor.process(notification)


__all__ = ["RCPCallProxy", "RPCCallProxy", "RPCMethodProxy", "RPCProxy", "RPCServiceProxy"]

RPCCallProxy = RCPCallProxy
