"""``try_call``'s outcome: ``(ok, (code, result))`` instead of an answer or an exception.

For callers that prefer checking a value to catching exceptions (rabibridge's
``try_remote_call``):

- a Response came: ``(True, (0, payload))`` (:data:`OK` is 0);
- an Error came (the handler failed, the payload did not fit...):
  ``(True, (error_code, {"class", "message", "code"}))``, its code e.g. 1041;
- no answer came: ``(False, (code, {"class", "message", "code"}))`` with the
  local error's code: 1058 no answer in time (``CallTimeout``), 1052 / 1051
  the connection was lost / could not be opened (``ConnectionClosed`` /
  ``ConnectionFailed``), 1042 nobody takes the request
  (``UnroutableMessage``), another broker error's code (1051-1062).

``ok`` says whether an answer came back; ``code == 0`` whether it is a
result. A failure's ``result`` has the shape of an Error's payload whichever
side it happened on. Programmer errors (a bad ``timeout``, a payload that
cannot be serialized, an unknown service) still raise.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from tavrida2 import exceptions
from tavrida2.messages import IncomingResponse, fqcn

#: The code of a call that got a Response.
OK = 0

#: ``(ok, (code, result))``
Outcome = tuple[bool, tuple[int, Any]]

#: What a call may end with that is not the caller's mistake.
FAILURES: tuple[type[Exception], ...] = (
    exceptions.RemoteError,
    exceptions.CallTimeout,
    exceptions.DriverError,
    exceptions.MalformedBody,
)


def answered(response: IncomingResponse) -> Outcome:
    """The outcome of a call answered by ``response``."""
    return True, (OK, response.payload)


def failed(error: Exception) -> Outcome:
    """The outcome of a call that ended with ``error`` (one of :data:`FAILURES`)."""
    if isinstance(error, exceptions.RemoteError):
        details = {
            "class": error.remote_class,
            "message": error.remote_message,
            "code": error.remote_code,
        }
        return True, (error.remote_code, details)
    code = exceptions.error_code(error)
    return False, (code, {"class": fqcn(error), "message": str(error), "code": code})


async def awaited(answer: Awaitable[IncomingResponse]) -> Outcome:
    """The outcome of an async call."""
    try:
        response = await answer
    except FAILURES as error:
        return failed(error)
    return answered(response)


__all__ = ["FAILURES", "OK", "Outcome", "answered", "awaited", "failed"]
