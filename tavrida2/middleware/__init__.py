"""Middlewares: user steps before and after handlers (``middleware.Middleware``)."""

from tavrida2.middleware.base import Middleware

__all__ = ["Middleware"]
