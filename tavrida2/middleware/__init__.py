"""Middlewares: user steps before and after handlers (``middleware.Middleware``).

Built in: :class:`LogIncomingMiddleware` and :class:`LogOutgoingMiddleware`,
which log each message with its secrets masked.
"""

from tavrida2.middleware.base import Middleware
from tavrida2.middleware.log_messages import (
    LogIncomingMiddleware,
    LogMessagesMiddleware,
    LogOutgoingMiddleware,
)

__all__ = [
    "LogIncomingMiddleware",
    "LogMessagesMiddleware",
    "LogOutgoingMiddleware",
    "Middleware",
]
