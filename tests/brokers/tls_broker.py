"""The session fixture ``tls_broker``: a RabbitMQ node of the tests' own with a TLS listener.

It makes a throwaway CA, a server certificate for ``localhost``/``127.0.0.1`` and
a client certificate (``openssl``), then starts ``t2tls_<pid>@localhost`` on free
ports (files under pytest's temp folder) and stops it at the end of the session.
It is imported into tests/conftest.py so that every module shares one node: a
session fixture imported into two test modules would be two fixtures, two nodes
of the same name, and the second would never answer.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tavrida2.config import ConnectionConfig
from tests.brokers.certs import PKI, make_pki
from tests.brokers.rabbit_node import RabbitNode, TLSListener, free_ports


@dataclass
class TLSBroker:
    node: RabbitNode
    pki: PKI

    @property
    def tls_port(self) -> int:
        assert self.node.tls is not None
        return self.node.tls.port

    def config(self, async_engine: bool = False, **ssl_options: Any) -> ConnectionConfig:
        """A config for the TLS listener; by default the test CA and the client's certificate."""
        options: dict[str, Any] = {
            "ca_certs": str(self.pki.ca),
            "certfile": str(self.pki.client_cert),
            "keyfile": str(self.pki.client_key),
        }
        options.update(ssl_options)
        return ConnectionConfig(
            "localhost",
            port=self.tls_port,
            ssl=True,
            ssl_options={k: v for k, v in options.items() if v is not None},
            async_engine=async_engine,
            connection_name=f"t2tls-{uuid.uuid4().hex}",
            # what a production config has: several attempts, a real delay
            connection_attempts=5,
            retry_delay=1.0,
            socket_timeout=5,
        )

    def connections(self) -> list[dict[str, Any]]:
        return self.node.ctl_json(
            "list_connections", "ssl", "peer_cert_subject", "client_properties"
        )


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSBroker]:
    folder = tmp_path_factory.mktemp("tls-broker")
    pki = make_pki(folder / "pki")
    amqp_port, tls_port = free_ports(2)
    node = RabbitNode(
        f"t2tls_{os.getpid()}",
        amqp_port,
        folder / "nodes",
        tls=TLSListener(tls_port, pki.ca, pki.server_cert, pki.server_key),
    )
    node.start()
    try:
        yield TLSBroker(node, pki)
    finally:
        node.stop()  # its files stay in pytest's temp folder (the last few runs)
