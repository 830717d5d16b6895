"""What a handler sent, held until the broker confirmed it.

A delivery is acknowledged only after what its handler sent was confirmed.
Most sends raise at once when they fail (a sync ``cast()`` waits for its
confirmation; an ``await``\\ ed send too); some return before it: a
``cast_async()`` handle, and on the async engine every send a handler does not
await (it is published in a task of its own). The publishers :func:`track`
those; the controller runs the handler inside :func:`tracking` and, once the
handler returned, waits for all of them (:func:`first_failure`,
:func:`first_failure_async`) before it answers. A send that failed or was not
confirmed fails the handler: a call's caller gets an Error, a cast or
notification is retried or dead-lettered; it is never acknowledged as handled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tavrida2 import exceptions

_sent: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "tavrida2_sent", default=None
)


def track(handle: Any) -> Any:
    """Hold ``handle`` (a ``PendingPublish`` or a future) for the handler running now."""
    sent = _sent.get()
    if sent is not None:
        sent.append(handle)
    return handle


@contextmanager
def tracking() -> Iterator[list[Any]]:
    """Collect what :func:`track` gets while the block runs (the handler's sends).

    The list is shared with the handler's executor thread and the tasks it
    starts (they copy the context).
    """
    sent: list[Any] = []
    token = _sent.set(sent)
    try:
        yield sent
    finally:
        _sent.reset(token)


def _not_confirmed(error: BaseException) -> exceptions.DriverError:
    if isinstance(error, exceptions.DriverError):
        return error
    return exceptions.DriverError(reason=f"a message sent was not confirmed ({error!r})")


def first_failure(sent: list[Any]) -> exceptions.DriverError | None:
    """Wait for every handle in ``sent``; the first failure, or None if all were confirmed.

    Each wait is bounded by its publish: ``PendingPublish.result()`` by its
    driver's ``publish_timeout``, a future by the publish it runs.
    """
    failure: exceptions.DriverError | None = None
    for handle in sent:
        try:
            handle.result()
        except Exception as exc:
            failure = failure or _not_confirmed(exc)
    return failure


async def first_failure_async(sent: list[Any]) -> exceptions.DriverError | None:
    """:func:`first_failure` for asyncio futures and tasks (each bounded by its publish)."""
    awaitables = [
        asyncio.wrap_future(h) if isinstance(h, concurrent.futures.Future) else h for h in sent
    ]
    for result in await asyncio.gather(*awaitables, return_exceptions=True):
        if isinstance(result, Exception):
            return _not_confirmed(result)
    return None


__all__ = ["first_failure", "first_failure_async", "track", "tracking"]
