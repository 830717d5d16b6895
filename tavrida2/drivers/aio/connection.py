"""The async driver's connection: open, lose, reconnect with backoff, close.

Each concern of the driver (publishing, consuming, direct replies) sets up
its channels on a new connection in ``_attach`` and forgets them in
``_detach``; these cooperative methods run in the order of the driver's bases
(publishing first, so the topology exists before anything consumes).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq.exceptions as aex
import tenacity

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.aio.compat import OwnedConnection, discard, gate
from tavrida2.drivers.base import AsyncDriver, tell_reconnected
from tavrida2.drivers.errors import from_channel_close
from tavrida2.drivers.failover import Failover
from tavrida2.drivers.shared import Declarations, connection_failed, retry_policy

log = logging.getLogger("tavrida2.drivers.aio")

CONNECTION_ERRORS = (
    aex.AMQPConnectionError,
    aex.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
#: What an attempt to connect fails with and is tried again after: also a classic
#: queue of the topology whose node is down (it comes back with the node).
RETRIED_WHEN_CONNECTING = (*CONNECTION_ERRORS, exceptions.QueueUnavailable)


def channel_error(exc: BaseException, name: str) -> exceptions.DriverError:
    """The tavrida2 error of an aiormq channel the broker closed."""
    frame = exc.args[0] if exc.args else None
    code = getattr(frame, "reply_code", None)
    text = getattr(frame, "reply_text", str(exc))
    if code is None:
        code = (
            404
            if isinstance(exc, aex.ChannelNotFoundEntity)
            else (406 if isinstance(exc, aex.ChannelPreconditionFailed) else 0)
        )
    return from_channel_close(int(code), str(text), name)


class AioConnection(AsyncDriver):
    """One aio-pika connection, kept up (the base of :class:`~tavrida2.drivers.aio.AioDriver`)."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._failover = Failover(config)
        self._params = {address: config.to_aio_params(address) for address in config.hosts}
        self._target = config.to_url()
        self._delivery_mode = 2 if config.persistent else 1
        self._connection: Any = None
        #: aio-pika channel objects by role, kept alive while their aiormq channel is used
        self._wrappers: dict[str, Any] = {}
        self._declarations = Declarations()
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._gave_up = asyncio.Event()
        self._failure: exceptions.ConnectionFailed | None = None

    # -- cooperative hooks of the concerns -------------------------------------

    async def _attach(self) -> None:
        """Set up this concern's channels on the new ``self._connection``."""

    def _detach(self, reason: str) -> None:
        """Forget this concern's channels: the connection is gone (``reason``)."""

    async def _channel(self, role: str, confirms: bool) -> Any:
        """A new aiormq channel for ``role``, replacing the one it had."""
        try:
            wrapper = await self._connection.channel(
                publisher_confirms=confirms, on_return_raises=confirms
            )
            self._wrappers[role] = wrapper
            return gate(await wrapper.get_underlay_channel())
        except aex.ChannelInvalidStateError:
            raise
        except RuntimeError as exc:  # aiormq 7: "<Connection ...> closed"
            raise ConnectionError(f"cannot open a channel: {exc}") from None

    # -- connecting --------------------------------------------------------------

    async def connect(self) -> None:
        self._closing = False
        await self._retrying(tenacity.stop_after_attempt(max(1, self.config.connection_attempts)))

    async def _retrying(self, stop: Any) -> None:
        try:
            async for attempt in tenacity.AsyncRetrying(
                stop=stop, **retry_policy(self.config, self._target, RETRIED_WHEN_CONNECTING)
            ):
                with attempt:
                    await self._open()
        except CONNECTION_ERRORS as exc:
            raise connection_failed(exc, self._target) from None

    async def _open(self) -> None:
        await self._drop_connection()
        connection = await self._failover.attempt_async(self._connect_to, CONNECTION_ERRORS)
        if self._closing:  # opened while close() ran: nobody would close it
            await discard(connection, self.config.socket_timeout or 3.0)
            raise ConnectionError("the driver was closed while connecting")
        self._connection = connection
        try:
            await self._attach()
        except BaseException:
            await self._drop_connection()
            raise
        connection.close_callbacks.add(self._on_connection_closed)

    async def _connect_to(self, address: tuple[str, int]) -> OwnedConnection:
        url, kwargs = self._params[address]
        connection = OwnedConnection(aio_pika.connection.make_url(url), **kwargs)
        await connection.connect(timeout=self.config.socket_timeout or None)
        return connection

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._wrappers = {}
        self._detach("the connection was lost")
        if connection is not None:
            connection.close_callbacks.discard(self._on_connection_closed)
            await discard(connection, self.config.socket_timeout or 3.0)

    def _on_connection_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        self._detach(f"the connection was lost ({exc})")
        if self._closing or self._reconnecting is not None:
            return
        log.warning("connection to %s lost (%s); reconnecting", self._target, exc)
        self._reconnecting = asyncio.get_event_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            attempts = self.config.reconnect_attempts
            stop = (
                tenacity.stop_never
                if attempts < 0
                else tenacity.stop_after_attempt(max(1, attempts))
            )
            # close() cancels this task; the check ends it also where a library's
            # wait lost that cancellation (asyncio.wait_for of Python 3.11 can)
            await self._retrying(stop | _WhenClosing(self))
            current = self._failover.current
            log.warning(
                "reconnected to %s",
                self.config.address_url(current) if current is not None else self._target,
            )
            tell_reconnected(self.on_reconnect)
        except exceptions.ConnectionFailed as exc:
            if self._closing:
                return
            log.error("giving up reconnecting: %s", exc)
            self._failure = exc
            self._gave_up.set()
        finally:
            self._reconnecting = None

    async def wait_gave_up(self) -> exceptions.ConnectionFailed:
        """Return once reconnecting failed ``reconnect_attempts`` times in a row.

        Nothing else would tell a consuming server that its connection is gone
        for good: it waits on this to stop with the error.
        """
        await self._gave_up.wait()
        assert self._failure is not None
        return self._failure

    def _is_up(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and self._reconnecting is None

    async def _ensure_connected(self) -> None:
        """Wait (at most ``publish_timeout``) for a usable connection."""
        if self._closing:
            raise exceptions.ConnectionClosed(reason="the driver is closed")
        if self._is_up():
            return
        if self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        try:
            await asyncio.wait_for(asyncio.shield(self._reconnecting), self.config.publish_timeout)
        except TimeoutError:
            raise exceptions.ConnectionFailed(
                target=self._target,
                reason=f"not reachable within publish_timeout={self.config.publish_timeout} s",
            ) from None
        if self._connection is None:
            raise exceptions.ConnectionFailed(target=self._target, reason="reconnecting failed")

    async def _bounded(self, what: str, action: Any) -> Any:
        """Await ``action`` (a channel set-up step) within ``publish_timeout``.

        On a stalled network a channel would open only when a heartbeat check
        gave up on the connection.
        """
        timeout = self.config.publish_timeout
        try:
            async with asyncio.timeout(timeout):
                return await action
        except TimeoutError:
            raise exceptions.ConnectionFailed(
                target=self._target, reason=f"the broker did not {what} within {timeout} s"
            ) from None
        except CONNECTION_ERRORS as exc:
            raise exceptions.ConnectionClosed(reason=f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        self._closing = True
        await self._stop_tasks()
        if self._reconnecting is not None:
            await _cancelled(self._reconnecting, self.config.socket_timeout or 3.0)
        await self._drop_connection()

    async def _stop_tasks(self) -> None:
        """Stop this concern's background tasks (cooperative)."""


class _WhenClosing(tenacity.stop.stop_base):
    """A tenacity stop: the driver is being closed."""

    def __init__(self, driver: AioConnection) -> None:
        self._driver = driver

    def __call__(self, retry_state: Any) -> bool:
        return self._driver._closing


async def _cancelled(task: asyncio.Task[Any], within: float) -> None:
    """Cancel ``task`` and wait, at most ``within`` seconds, for it to end.

    Cancelled again while it runs: a cancellation that comes as a library's
    ``asyncio.wait_for`` ends is lost in Python 3.11. A task still running
    after ``within`` is left to end by itself (the reconnect loop stops at its
    next attempt once the driver is closing).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.1, max(deadline - loop.time(), 0.0)))
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: its failure was logged where it happened


__all__ = ["CONNECTION_ERRORS", "AioConnection", "channel_error"]
