"""A failed span: its status, ``error.type`` and the exception, secrets masked."""

from __future__ import annotations

import traceback

from opentelemetry.trace import Span, Status, StatusCode

from tavrida2.exceptions import HandlerFailed
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import fqcn
from tavrida2.otel.attributes import ERROR_TYPE


def mark_failed(span: Span, error: BaseException) -> None:
    """Record ``error`` on ``span`` and set its status to ERROR.

    A failed cast's ``HandlerFailed`` is recorded as the handler's own
    exception. URL passwords are masked in the message and the stack trace,
    as in tavrida2's logs.
    """
    if isinstance(error, HandlerFailed) and error.__cause__ is not None:
        error = error.__cause__
    message = mask_url_passwords(str(error))
    stacktrace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    span.record_exception(
        error,
        {"exception.message": message, "exception.stacktrace": mask_url_passwords(stacktrace)},
    )
    span.set_attribute(ERROR_TYPE, fqcn(error))
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))


__all__ = ["mark_failed"]
