"""Periodic and cron tasks and lifecycle hooks of a controller: the decorators.

``@dispatcher.periodic(period, timeout=..., start_after=0)`` and
``@dispatcher.cron("*/15 * * * *", timeout=...)`` mark controller methods that a
server runs on a schedule, called as ``handler(self, proxy)``;
``@dispatcher.on("pre_start" | "post_start" | "pre_stop")`` marks methods the
server calls when it starts and stops, as ``hook(self, proxy)`` or
``hook(self)``. Everything is checked here, when the class is defined: a
period that is not positive, a cron spec that does not parse, a method that
cannot be called with a proxy alone, an unknown hook name raise
``ConfigError`` naming the method. :mod:`tavrida2.scheduler` runs the tasks.

``single=True`` makes a task run in one server process only, when several
consume the same queue: a run goes ahead only in the process holding the
task's lease, an exclusive queue on the broker that its connection keeps (see
:meth:`tavrida2.drivers.base.SyncDriver.claim`).
"""

from __future__ import annotations

import datetime
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cronsim import CronSim, CronSimError

from tavrida2 import exceptions

F = TypeVar("F", bound=Callable[..., Any])

#: The lifecycle hooks, in the order a server calls them.
HOOKS = ("pre_start", "post_start", "pre_stop")
#: Seconds a cron run may take unless told otherwise.
DEFAULT_CRON_TIMEOUT = 60.0

_TASK_ATTR = "_tavrida_task"
_HOOK_ATTR = "_tavrida_hooks"


@dataclass(frozen=True)
class TaskInfo:
    """A periodic or cron task of a controller."""

    name: str
    #: Seconds between starts (periodic), or None.
    period: float | None
    #: The cron spec, or None.
    cron: str | None
    #: Seconds a run may take: then it is cancelled (async def) or reported.
    timeout: float
    #: Seconds after the server started before the first run (periodic).
    start_after: float
    #: Runs in one server process only (a lease on the broker).
    single: bool
    is_coroutine: bool

    def next_after(self, now: float, first: bool, started: float) -> float:
        """The epoch time of the run after ``now`` (``first``: the server's first).

        A periodic task runs ``start_after`` seconds after ``started`` (the
        server's start), then every ``period`` seconds after that, skipping the
        times it missed; a cron task at the next time its spec matches, in
        local time.
        """
        if self.period is not None:
            origin = started + self.start_after
            if first and now <= origin:
                return origin
            missed = math.floor((now - origin) / self.period) + 1
            return origin + max(1, missed) * self.period
        assert self.cron is not None
        local = datetime.datetime.fromtimestamp(now).astimezone()
        return next(CronSim(self.cron, local)).timestamp()

    def describe(self) -> dict[str, Any]:
        """The task as ``info()`` shows it."""
        when = f"every {self.period:g} s" if self.period is not None else f"cron {self.cron}"
        return {
            "method": self.name,
            "schedule": when,
            "timeout": self.timeout,
            "single": self.single,
        }


@dataclass(frozen=True)
class HookInfo:
    """A lifecycle hook of a controller: its method, and whether it takes the proxy."""

    name: str
    takes_proxy: bool
    is_coroutine: bool


def _positive(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise exceptions.ConfigError(
            reason=f"{where}: {what}={value!r}, expected a positive number of seconds"
        )
    return float(value)


def _check_takes_proxy(func: Callable[..., Any], where: str) -> None:
    try:
        inspect.signature(func).bind("self", "proxy")
    except TypeError:
        raise exceptions.ConfigError(
            reason=f"{where}: a periodic or cron task is called as (self, proxy); "
            f"it takes {inspect.signature(func)}"
        ) from None


def _where(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def periodic(
    period: float,
    timeout: float | None = None,
    start_after: float = 0,
    *,
    single: bool = False,
) -> Callable[[F], F]:
    """Run the method every ``period`` seconds, as ``method(self, proxy)``.

    A run longer than ``timeout`` (default: the period) is cancelled if it is
    an ``async def`` on the async engine, else reported; runs never overlap (a
    start that falls during a run is skipped); a run that raises is logged
    with its traceback and the schedule goes on. The first run is
    ``start_after`` seconds after the server started. Example::

        @dispatcher.periodic(period=5, timeout=4)
        def refresh(self, proxy): ...
    """

    def decorator(func: F) -> F:
        where = _where(func)
        seconds = _positive(period, "period", where)
        limit = _positive(seconds if timeout is None else timeout, "timeout", where)
        if isinstance(start_after, bool) or not isinstance(start_after, int | float):
            raise exceptions.ConfigError(reason=f"{where}: start_after={start_after!r}")
        if not 0 <= start_after < math.inf:
            raise exceptions.ConfigError(
                reason=f"{where}: start_after={start_after!r}, expected 0 or more seconds"
            )
        _check_takes_proxy(func, where)
        task = TaskInfo(
            func.__name__,
            seconds,
            None,
            limit,
            float(start_after),
            bool(single),
            inspect.iscoroutinefunction(func),
        )
        setattr(func, _TASK_ATTR, task)
        return func

    return decorator


def cron(
    spec: str, timeout: float = DEFAULT_CRON_TIMEOUT, *, single: bool = False
) -> Callable[[F], F]:
    """Run the method when the cron ``spec`` matches (local time), as ``method(self, proxy)``.

    ``spec`` has five fields (minute, hour, day of month, month, day of week),
    parsed by cronsim. Timeouts, overlaps and failures as for :func:`periodic`.
    Example::

        @dispatcher.cron("0 4 * * *", timeout=600, single=True)
        def nightly_report(self, proxy): ...
    """

    def decorator(func: F) -> F:
        where = _where(func)
        if not isinstance(spec, str):
            raise exceptions.ConfigError(reason=f"{where}: a cron spec is a string, got {spec!r}")
        try:
            next(CronSim(spec, datetime.datetime.now()))
        except (CronSimError, StopIteration, ValueError) as exc:
            raise exceptions.ConfigError(
                reason=f"{where}: the cron spec {spec!r} does not parse ({exc})"
            ) from None
        limit = _positive(timeout, "timeout", where)
        _check_takes_proxy(func, where)
        task = TaskInfo(
            func.__name__, None, spec, limit, 0.0, bool(single), inspect.iscoroutinefunction(func)
        )
        setattr(func, _TASK_ATTR, task)
        return func

    return decorator


def on(hook: str) -> Callable[[F], F]:
    """Call the method at a point of the server's life: ``pre_start``, ``post_start``, ``pre_stop``.

    ``pre_start``: connected and the topology declared, before consuming (open a
    database pool here); a failing ``pre_start`` or ``post_start`` stops the
    server with the error (``tavrida2 run`` exits non-zero). ``post_start``:
    consuming. ``pre_stop``: stopping, before the connection closes; a failure
    is logged. Hooks are called in the order of the server's controllers and,
    in a controller, of their definition, as ``hook(self, proxy)`` or
    ``hook(self)``; ``async def`` hooks need the async engine.
    """
    if hook not in HOOKS:
        raise exceptions.ConfigError(
            reason=f"unknown hook {hook!r}: expected one of {', '.join(HOOKS)}"
        )

    def decorator(func: F) -> F:
        where = _where(func)
        signature = inspect.signature(func)
        try:
            signature.bind("self", "proxy")
            takes_proxy = True
        except TypeError:
            try:
                signature.bind("self")
            except TypeError:
                raise exceptions.ConfigError(
                    reason=f"{where}: a hook is called as (self, proxy) or (self); "
                    f"it takes {signature}"
                ) from None
            takes_proxy = False
        hooks = dict(getattr(func, _HOOK_ATTR, {}))
        hooks[hook] = HookInfo(func.__name__, takes_proxy, inspect.iscoroutinefunction(func))
        setattr(func, _HOOK_ATTR, hooks)
        return func

    return decorator


def collect_tasks_and_hooks(cls: type, dispatcher: Any) -> None:
    """Put the tasks and hooks of ``cls`` (and its bases) on its ``dispatcher``, in order."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        members.update(vars(klass))
    for value in members.values():
        func = getattr(value, "__func__", value)
        task: TaskInfo | None = getattr(func, _TASK_ATTR, None)
        if task is not None:
            dispatcher.tasks.append(task)
        for hook, info in getattr(func, _HOOK_ATTR, {}).items():
            dispatcher.hooks[hook].append(info)


__all__ = [
    "DEFAULT_CRON_TIMEOUT",
    "HOOKS",
    "HookInfo",
    "TaskInfo",
    "collect_tasks_and_hooks",
    "cron",
    "on",
    "periodic",
]
