"""The connection settings reach the broker on both engines; TLS never falls back to plain text.

The broker's view comes from ``rabbitmqctl list_connections``. What aiormq
cannot honour (``channel_max``, ``frame_max``) the async driver refuses when it
is made. The TLS tests also run the drivers against a local TLS server (see
``tests.unit.tls_support``): RabbitMQ here has no TLS listener.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tavrida2 import exceptions
from tavrida2.drivers.aio import AioDriver
from tests.integration.conftest import (
    ENGINES,
    Names,
    amqp_config,
    connection_pids,
    make_driver,
    rabbitmqctl,
    wait_until,
)
from tests.unit.tls_support import AMQP_HEADER, BROKER_NAME, TlsServer, make_pki, tls_config

pytestmark = pytest.mark.rabbitmq


def broker_view(connection_name: str) -> dict[str, Any] | None:
    """``channel_max``, ``frame_max`` and ``timeout`` (the heartbeat) of the named connection."""
    rows = json.loads(
        rabbitmqctl(
            "list_connections",
            "channel_max",
            "frame_max",
            "timeout",
            "client_properties",
            "-q",
            "--formatter",
            "json",
        )
        or "[]"
    )
    wanted = ["connection_name", "longstr", connection_name]
    return next((row for row in rows if wanted in row["client_properties"]), None)


def connected_view(async_engine: bool, connection_name: str, **settings: Any) -> dict[str, Any]:
    """Connect a driver with ``settings``; what the broker saw of its connection."""
    driver = make_driver(async_engine, amqp_config(async_engine, connection_name, **settings))
    try:
        driver.connect()
        view = wait_until(lambda: broker_view(connection_name), f"connection {connection_name}")
    finally:
        driver.close()
    return view  # type: ignore[no-any-return]


@pytest.mark.parametrize("async_engine", ENGINES)
def test_the_broker_sees_the_heartbeat_and_the_connection_name(
    async_engine: bool, names: Names
) -> None:
    # found by the name in its client properties: the name arrived
    view = connected_view(async_engine, names.connection(), heartbeat_interval=7)
    assert view["timeout"] == 7


def test_the_broker_sees_channel_max_and_frame_max_of_the_sync_engine(names: Names) -> None:
    view = connected_view(
        False, names.connection(), channel_max=50, frame_max=65536, heartbeat_interval=7
    )
    assert (view["channel_max"], view["frame_max"], view["timeout"]) == (50, 65536, 7)


@pytest.mark.parametrize(("setting", "value"), [("channel_max", 50), ("frame_max", 65536)])
def test_the_async_driver_refuses_channel_max_and_frame_max(
    setting: str, value: int, names: Names
) -> None:
    name = names.connection()
    config = amqp_config(True, name, heartbeat_interval=7, **{setting: value})

    async def connect() -> None:
        driver = AioDriver(config)  # the driver reads config.to_aio_params() here
        try:
            await driver.connect()
        finally:
            await driver.close()

    with pytest.raises(exceptions.ConfigError, match=f"{setting} cannot be set on the async"):
        asyncio.run(connect())
    assert connection_pids(name) == []


@pytest.mark.parametrize("async_engine", ENGINES)
def test_ssl_against_the_plain_port_fails(async_engine: bool, names: Names) -> None:
    name = names.connection()
    config = amqp_config(async_engine, name, ssl=True, connection_attempts=1, socket_timeout=5)
    assert config.port == 5672
    driver = make_driver(async_engine, config)
    try:
        with pytest.raises(exceptions.ConnectionFailed):
            driver.connect()
    finally:
        driver.close()
    assert connection_pids(name) == []  # no plain-text connection behind its back


@pytest.mark.parametrize("async_engine", ENGINES)
def test_the_driver_brings_every_ssl_option_to_the_server(
    async_engine: bool, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    server = TlsServer(pki)
    config = tls_config(
        pki, port=server.port, connection_attempts=1, socket_timeout=5, async_engine=async_engine
    )
    driver = make_driver(async_engine, config)
    try:
        with pytest.raises(exceptions.ConnectionFailed):  # the server hangs up after the header
            driver.connect()
    finally:
        driver.close()
    server.join()
    assert server.error is None
    assert server.server_names == [BROKER_NAME]
    assert server.client_names == ["tavrida2 client"]
    assert server.received == AMQP_HEADER
