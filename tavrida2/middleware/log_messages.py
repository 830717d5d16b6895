"""Middlewares that log each message a controller gets or answers, secrets masked.

(Not named ``logging.py``: that would shadow the standard library's module as
an attribute of :mod:`tavrida2.middleware`.)

Example::

    class World(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            self.add_incoming_middleware(LogIncomingMiddleware(sensitive_headers=["x-api-key"]))
            self.add_outgoing_middleware(LogOutgoingMiddleware())

logs, at INFO on the ``tavrida2.messages`` logger, one line per message::

    incoming request client_app -> world.hello message_id=... request_id=...
    correlation_id=... headers={'x-api-key': '***'} payload={'name': 'Bob'}

(the payload only where the logger is enabled for DEBUG, by default).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import ClassVar

from tavrida2.messages import Message
from tavrida2.middleware.base import Middleware
from tavrida2.steps import LoggingMiddleware

#: Headers shown as fields of the line rather than in its ``headers=``.
_SHOWN_APART = frozenset(
    ("message_type", "source", "destination", "message_id", "request_id", "correlation_id")
)


class LogMessagesMiddleware(LoggingMiddleware, Middleware):
    """Logs one line per message and returns the message unchanged.

    Arguments:
        logger: a logger or its name (default ``tavrida2.messages``).
        level: the level of the line (default INFO).
        payload_level: the payload is in the line where the logger is enabled
            for this level (default DEBUG); ``None``: never.
        sensitive_headers: names of headers (and payload keys) whose values
            are masked, on top of ``authorization`` and ``proxy-authorization``.

    Passwords in URLs (``amqp://user:***@host``) are masked in every value.
    Use :class:`LogIncomingMiddleware` or :class:`LogOutgoingMiddleware`.
    """

    direction: ClassVar[str] = "message"

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        level: int = logging.INFO,
        payload_level: int | None = logging.DEBUG,
        sensitive_headers: Iterable[str] = (),
    ) -> None:
        super().__init__(sensitive_headers, logger)
        self.level = level
        self.payload_level = payload_level

    def process(self, message: Message) -> Message:
        """Log ``message`` (if the logger is enabled for ``level``) and return it."""
        if not self.log.isEnabledFor(self.level):
            return message
        headers = self.mask({k: v for k, v in message.headers.items() if k not in _SHOWN_APART})
        line = "%s %s %s -> %s message_id=%s request_id=%s correlation_id=%s headers=%s"
        args: list[object] = [
            self.direction,
            message.message_type,
            message.headers.get("source") or "-",
            message.headers.get("destination") or "-",
            message.message_id,
            message.request_id,
            message.correlation_id,
            headers,
        ]
        if self.payload_level is not None and self.log.isEnabledFor(self.payload_level):
            line += " payload=%s"
            try:
                args.append(self.mask_value(message.payload))
            except RecursionError:  # logging must not fail the message
                args.append("<nested too deep to log>")
        self.log.log(self.level, line, *args)
        return message


class LogIncomingMiddleware(LogMessagesMiddleware):
    """Logs each message before its handler runs (``add_incoming_middleware``).

    See :class:`LogMessagesMiddleware` for the arguments.
    """

    direction = "incoming"


class LogOutgoingMiddleware(LogMessagesMiddleware):
    """Logs each answer of a request handler (``add_outgoing_middleware``).

    See :class:`LogMessagesMiddleware` for the arguments.
    """

    direction = "outgoing"


__all__ = ["LogIncomingMiddleware", "LogMessagesMiddleware", "LogOutgoingMiddleware"]
