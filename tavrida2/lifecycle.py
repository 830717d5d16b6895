"""What a server does around consuming: hooks, scheduled tasks, announcements.

A :class:`Lifecycle` belongs to one run of a :class:`~tavrida2.server.Server`
on one driver. It calls the controllers' hooks (``pre_start``, ``post_start``,
``pre_stop``; :mod:`tavrida2.schedule`) with a proxy of each controller, and
builds the :class:`~tavrida2.scheduler.Scheduler` of their periodic and cron
tasks, plus the server's own announcements (:mod:`tavrida2.liveness`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from tavrida2 import confirmations, exceptions
from tavrida2.drivers.base import AsyncDriver, SyncDriver
from tavrida2.entry_point import EntryPoint
from tavrida2.liveness import HEARTBEAT_EXCHANGE, AnnouncedServer, announcement
from tavrida2.messages import new_id
from tavrida2.proxies import RPCProxy
from tavrida2.schedule import TaskInfo
from tavrida2.scheduler import Entry, Scheduler

if TYPE_CHECKING:
    from tavrida2.service import ServiceController

log = logging.getLogger("tavrida2.server")


class LivingServer(AnnouncedServer, Protocol):
    """What a :class:`Lifecycle` takes from its server: the announced facts and the controllers."""

    @property
    def services(self) -> list[ServiceController]: ...


def proxy_of(controller: ServiceController, method: str) -> RPCProxy:
    """A proxy for what a controller sends outside a handler (a hook, a task run).

    Its messages come from ``<service>.<method>`` (so a notification it
    publishes can be subscribed to like any other) and start a chain of their
    own (a new correlation id).
    """
    return RPCProxy(
        controller.postprocessor, EntryPoint(controller.service_name, method), {}, new_id()
    )


def _run_task(controller: ServiceController, name: str) -> Any:
    """One run of a task (sync engine, or a plain task on the async one).

    What it sends is confirmed before the run counts as done, as for a
    handler: a send that was refused fails the run (logged by the scheduler).
    """
    with confirmations.tracking() as sent:
        result = getattr(controller, name)(proxy_of(controller, name))
    failure = confirmations.first_failure(sent) if sent else None
    if failure is not None:
        raise failure
    return result


async def _run_async_task(controller: ServiceController, name: str) -> Any:
    """One run of an ``async def`` task; as :func:`_run_task`."""
    with confirmations.tracking() as sent:
        result = await getattr(controller, name)(proxy_of(controller, name))
    failure = await confirmations.first_failure_async(sent) if sent else None
    if failure is not None:
        raise failure
    return result


class Lifecycle:
    """Hooks, tasks and announcements of one server run (see the module docstring)."""

    def __init__(self, server: LivingServer, driver: SyncDriver | AsyncDriver) -> None:
        self._server = server
        self._driver = driver
        self.scheduler: Scheduler | None = None

    # -- hooks -----------------------------------------------------------------------

    def _hooks(self, name: str) -> list[tuple[ServiceController, Callable[..., Any], bool]]:
        found = []
        for controller in self._server.services:
            for hook in type(controller).get_dispatcher().hooks[name]:
                method = getattr(controller, hook.name)
                call = (
                    functools.partial(method, proxy_of(controller, hook.name))
                    if hook.takes_proxy
                    else method
                )
                found.append((controller, call, hook.is_coroutine))
        return found

    def call_hooks(self, name: str) -> None:
        """Call the ``name`` hooks in order (sync engine); see :meth:`_failed`."""
        for controller, call, _ in self._hooks(name):
            try:
                call()
            except Exception as exc:
                self._failed(name, controller, call, exc)

    async def call_hooks_async(self, name: str) -> None:
        """Call or await the ``name`` hooks in order (async engine)."""
        for controller, call, is_coroutine in self._hooks(name):
            try:
                if is_coroutine:
                    await call()
                else:
                    call()
            except Exception as exc:
                self._failed(name, controller, call, exc)

    def _failed(self, name: str, controller: ServiceController, call: Any, exc: Exception) -> None:
        """A failing ``pre_start``/``post_start`` stops the server; ``pre_stop`` is logged."""
        func = getattr(call, "func", call)
        handler = f"{type(controller).__name__}.{getattr(func, '__name__', '?')}"
        if name == "pre_stop":
            log.exception("the pre_stop hook %s failed; stopping anyway", handler)
            return
        raise exceptions.HookFailed(hook=name, handler=handler, error=repr(exc)) from exc

    # -- tasks and announcements -------------------------------------------------------

    def build_scheduler(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        run_sync: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
    ) -> Scheduler:
        """The scheduler of the controllers' tasks and the server's announcements."""
        server = self._server
        entries = []
        for controller in server.services:
            for task in type(controller).get_dispatcher().tasks:
                label = f"{controller.service_name}.{task.name}"
                runner = _run_async_task if task.is_coroutine else _run_task
                run = functools.partial(runner, controller, task.name)
                lease = f"{server.queue_name}.lease.{label}" if task.single else None
                entries.append(Entry(label, task, run, lease))
        period = server.announce_period
        if period is not None:
            announce = TaskInfo("announce", period, None, period, 0.0, False, loop is not None)
            entries.append(Entry("liveness", announce, self._announce))
        claim = self._driver.claim
        self.scheduler = Scheduler(entries, claim=claim, loop=loop, run_sync=run_sync)
        return self.scheduler

    def _announce(self, state: str = "alive") -> Any:
        message = announcement(self._server, state)
        return self._driver.publish(HEARTBEAT_EXCHANGE, "", message, False)

    def farewell(self) -> Any:
        """The last announcement: this server is stopping (an awaitable on the async engine)."""
        if self._server.announce_period is None:
            return None
        try:
            return self._announce("stopping")
        except exceptions.TavridaError as exc:
            log.info("could not announce the stop: %s", exc)
            return None


__all__ = ["Lifecycle", "proxy_of"]
