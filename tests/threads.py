"""Run a piece of test work in many threads at once and collect what they raised."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_threads(work: Callable[[int], object], count: int, timeout: float) -> list[BaseException]:
    """Run ``work(n)`` for n in ``range(count)``, each in a thread; what they raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # the caller asserts on it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        errors.append(TimeoutError(f"threads still running after {timeout} s"))
    return errors
