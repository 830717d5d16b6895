"""Middlewares: user steps before and after handlers (``middleware.Middleware``).

Built in: :class:`LogIncomingMiddleware` and :class:`LogOutgoingMiddleware`,
which log each message with its secrets masked; :class:`DeduplicationMiddleware`,
which lets each ``message_id`` through once (for handlers that are not idempotent).
"""

from tavrida2.middleware.base import Middleware
from tavrida2.middleware.dedup import DeduplicationMiddleware, DuplicateMessage
from tavrida2.middleware.log_messages import (
    LogIncomingMiddleware,
    LogMessagesMiddleware,
    LogOutgoingMiddleware,
)

__all__ = [
    "DeduplicationMiddleware",
    "DuplicateMessage",
    "LogIncomingMiddleware",
    "LogMessagesMiddleware",
    "LogOutgoingMiddleware",
    "Middleware",
]
