"""Throttle: say something at most once per interval (a failure logged once a minute)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    """``due()`` is true at most once per ``interval`` seconds of ``clock``.

    The first call is due. Thread-safe.
    """

    __slots__ = ("_clock", "_last", "_lock", "interval")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            return True


__all__ = ["Throttle"]
