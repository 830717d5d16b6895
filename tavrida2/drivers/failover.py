"""The order in which a driver tries its broker addresses (``ConnectionConfig.hosts``).

Each attempt to connect is one round over every address: the first that
answers is used, and a round in which none answers fails with
:class:`NoBrokerAnswered`, which names each address and what went wrong
there. Rounds are retried as single connections are (``connection_attempts``
at start, ``reconnect_attempts`` after a loss, ``retry_delay`` growing between
them), so an address is never tried faster than that. With ``shuffle_hosts``
each driver takes its own random order, spreading clients over the nodes; a
round after a lost connection starts with the address after the lost one.
Refused credentials end the round at once: the nodes of a cluster share them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tavrida2.brokers import netloc
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.errors import is_auth_error


class NoBrokerAnswered(ConnectionError):
    """No address of a round answered; ``errors`` holds what each one did."""

    def __init__(self, errors: list[tuple[tuple[str, int], BaseException]]) -> None:
        self.errors = errors
        tried = "; ".join(f"{netloc(address)} ({str(exc) or repr(exc)})" for address, exc in errors)
        super().__init__(f"none of the {len(errors)} broker addresses answered: {tried}")


class Failover:
    """A driver's broker addresses in the order to try them (see the module docstring)."""

    def __init__(
        self,
        config: ConnectionConfig,
        shuffle: Callable[[list[tuple[str, int]]], Any] = random.shuffle,
    ) -> None:
        self.order = list(config.hosts)
        if config.shuffle_hosts and len(self.order) > 1:
            shuffle(self.order)
        #: The address of the open (or last) connection.
        self.current: tuple[str, int] | None = None

    def round(self) -> list[tuple[str, int]]:
        """The addresses to try now: after the current one, which comes last."""
        if self.current is None:
            return list(self.order)
        start = (self.order.index(self.current) + 1) % len(self.order)
        return self.order[start:] + self.order[:start]

    def attempt(
        self, open_one: Callable[[tuple[str, int]], Any], errors: tuple[type[BaseException], ...]
    ) -> Any:
        """``open_one(address)`` for each address of a round; what the first gives.

        With one address its error is raised as it is; with several,
        :class:`NoBrokerAnswered` once all failed.
        """
        failed: list[tuple[tuple[str, int], BaseException]] = []
        for address in self.round():
            try:
                opened = open_one(address)
            except errors as exc:
                if len(self.order) == 1 or is_auth_error(exc):
                    raise
                failed.append((address, exc))
                continue
            self.current = address
            return opened
        raise NoBrokerAnswered(failed)

    async def attempt_async(
        self, open_one: Callable[[tuple[str, int]], Any], errors: tuple[type[BaseException], ...]
    ) -> Any:
        """:meth:`attempt` for a coroutine ``open_one``."""
        failed: list[tuple[tuple[str, int], BaseException]] = []
        for address in self.round():
            try:
                opened = await open_one(address)
            except errors as exc:
                if len(self.order) == 1 or is_auth_error(exc):
                    raise
                failed.append((address, exc))
                continue
            self.current = address
            return opened
        raise NoBrokerAnswered(failed)


__all__ = ["Failover", "NoBrokerAnswered"]
