"""Rows 4a-4f on RabbitMQ: a Tavrida 1.0 config file's connection and TLS keys.

The ``[connection]`` tuning keys reach pika and the broker accepts them (a
payload larger than ``frame_max`` crosses in several frames); the ``[ssl]`` keys
of 1.0 (``cert_reqs``, ``ssl_version``, ``ciphers`` ...) give a TLS connection
of the pinned version and cipher on a TLS listener of a RabbitMQ node of the
test's own (``tls_broker`` of tests/integration/test_tls_rabbitmq.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tavrida2 import client, config, configfile, discovery, dispatcher, server, service
from tests.brokers.tls_broker import TLSBroker
from tests.integration.conftest import Names, Servers, pika_params
from tests.integration.test_tls_rabbitmq import named

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]


@dispatcher.rpc_service("t2compat_echo")
class Echo(service.ServiceController):
    @dispatcher.rpc_method(service="t2compat_echo", method="echo")
    def echo(self, request: Any, proxy: Any, text: str) -> dict[str, Any]:
        return {"text": text}


@pytest.fixture
def names() -> Iterator[Names]:
    made = Names()
    yield made
    made.cleanup()


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        running.stop_all()


def read_connection(tmp_path: Path, text: str) -> config.ConnectionConfig:
    path = tmp_path / "hello_config.cfg"
    path.write_text(text)
    return configfile.connection_config(str(path), configfile.read_sections(str(path)), {})


def serve_and_call(conf: config.ConnectionConfig, servers: Servers, names: Names, text: str) -> Any:
    srv = server.Server(conf, names.queue("compat"), names.exchange("compat"), [Echo])
    servers.start(srv)
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("t2compat_echo", srv.exchange_name)
    with client.RPCClient(conf, disc, source="t2compat") as cli:
        return cli.t2compat_echo.echo(text=text).call(timeout=20).payload


def test_row_04a_rabbitmq_1_0_connection_keys_reach_the_broker(
    tmp_path: Path, names: Names, servers: Servers
) -> None:
    # names before servers: the servers stop before their queues are deleted
    params = pika_params()
    conf = read_connection(
        tmp_path,
        f"""\
[connection]
host={params.host}
port={params.port}
username=guest
password=guest
virtual_host="/"
channel_max=64
frame_max=4096
locale=en_US
backpressure_detection=False
async_engine=False
ssl=False
""",
    )
    assert (conf.channel_max, conf.frame_max) == (64, 4096)

    text = "x" * 50_000  # some 13 frames of 4 KiB
    assert serve_and_call(conf, servers, names, text) == {"text": text}


def test_row_04c_rabbitmq_1_0_ssl_keys_pin_tls_1_2_and_the_cipher(
    tls_broker: TLSBroker, tmp_path: Path, servers: Servers
) -> None:
    pki = tls_broker.pki
    connection_name = f"t2compat-{uuid.uuid4().hex}"
    conf = read_connection(
        tmp_path,
        f"""\
[connection]
host=localhost
port={tls_broker.tls_port}
ssl=True
connection_name={connection_name}

[ssl]
keyfile={os.fspath(pki.client_key)}
certfile={os.fspath(pki.client_cert)}
ca_certs={os.fspath(pki.ca)}
server_side=False
cert_reqs=2
ssl_version=5
suppress_ragged_eofs=True
ciphers=ECDHE-ECDSA-AES128-GCM-SHA256
""",
    )
    tag = uuid.uuid4().hex
    srv = server.Server(conf, f"t2compat-q-{tag}", f"t2compat-x-{tag}", [Echo], dead_letters=False)
    servers.start(srv)

    rows = tls_broker.node.ctl_json(
        "list_connections", "ssl", "ssl_protocol", "ssl_cipher", "client_properties"
    )
    [row] = [row for row in rows if named(row, connection_name)]
    assert row["ssl"] is True
    assert str(row["ssl_protocol"]) == "tlsv1.2"
    assert "aes_128_gcm" in str(row["ssl_cipher"])
