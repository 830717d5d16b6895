"""A connection the async driver could not open leaves nothing behind.

aio-pika's own finalizer schedules ``close()`` from whichever thread the
garbage collector runs in; from another thread than the loop's, that made a
``close()`` coroutine never awaited, reported later inside an unrelated test.
The driver's connections are ``OwnedConnection``s, whose finalizer does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
import threading
import warnings
from typing import Any

import aio_pika
import aiormq

from tavrida2.drivers.aio import connection as connection_module
from tavrida2.drivers.aio.compat import OwnedConnection


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def collected_elsewhere(kind: type[aio_pika.Connection]) -> list[Any]:
    """Fail to connect a ``kind`` in a loop's thread, drop it in another; what was unraisable."""
    reported: list[Any] = []
    made: list[aio_pika.Connection] = []
    url = aio_pika.connection.make_url(f"amqp://guest:guest@127.0.0.1:{closed_port()}/")
    # the loop stays open and idle, as a server thread's does after its run
    loop = asyncio.new_event_loop()

    async def attempt() -> None:
        connection = kind(url)
        made.append(connection)
        with contextlib.suppress(aiormq.exceptions.AMQPConnectionError, OSError):
            await connection.connect(timeout=2)

    def drop_them() -> None:
        made.clear()
        gc.collect()

    def run(target: Any) -> None:
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    hook = sys.unraisablehook
    sys.unraisablehook = reported.append
    # a captured log record of the failure would keep the connection alive
    quiet = logging.getLogger("aiormq")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        run(lambda: loop.run_until_complete(attempt()))
        assert len(made) == 1 and not made[0].is_closed
        with warnings.catch_warnings():
            # what made it fail the test it surfaced in: the suite's filterwarnings = error
            warnings.simplefilter("error")
            run(drop_them)
    finally:
        sys.unraisablehook = hook
        quiet.setLevel(level)
        loop.close()
    return [str(report.exc_value) for report in reported]


def test_aio_pikas_own_finalizer_leaves_a_coroutine_never_awaited() -> None:
    # the reason for OwnedConnection: if this stops failing, aio-pika fixed it
    assert collected_elsewhere(aio_pika.Connection) == [
        "coroutine 'Connection.close' was never awaited"
    ]


def test_an_owned_connection_leaves_nothing() -> None:
    assert collected_elsewhere(OwnedConnection) == []


def test_the_driver_opens_owned_connections() -> None:
    assert connection_module.OwnedConnection is OwnedConnection
    assert issubclass(OwnedConnection, aio_pika.Connection)
