"""TLS against a real RabbitMQ TLS listener whose certificates the test made.

The session fixture ``tls_broker`` makes a throwaway CA, a server certificate
for ``localhost``/``127.0.0.1`` and a client certificate (``openssl``), then
starts a RabbitMQ node of its own (``t2tls_<pid>@localhost``, free ports, files
under pytest's temp folder) with a plain listener and a TLS listener
(``verify_peer``, ``fail_if_no_peer_cert = false``), and stops it at the end.
A missing ``rabbitmq-server`` or ``openssl`` is an error of these tests, not a skip.

Both engines serve a call over TLS with the broker's certificate verified and
the client's presented; the broker shows the connections as TLS with the
client's certificate. A wrong CA or server name fails at once, without retries,
naming the verification; TLS files that are missing or do not fit are a
``ConfigError`` when the config is made.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tavrida2 import client, discovery, dispatcher, exceptions, server, service
from tavrida2.config import ConnectionConfig
from tests.brokers.tls_broker import TLSBroker
from tests.integration.conftest import ENGINES, Servers

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

CLIENT_CN = "tavrida2-test-client"


@dispatcher.rpc_service("t2tls_echo")
class Echo(service.ServiceController):
    """Answers what it is sent; plain ``def``: it runs on both engines."""

    @dispatcher.rpc_method(service="t2tls_echo", method="echo")
    def echo(self, request, proxy, text):
        return {"text": text}


def echo_discovery(exchange: str) -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("t2tls_echo", exchange)
    return disc


def make_server(conf: ConnectionConfig, tag: str) -> server.Server:
    return server.Server(conf, f"t2tls-q-{tag}", f"t2tls-x-{tag}", [Echo], dead_letters=False)


def connection_of(broker: TLSBroker, conf: ConnectionConfig) -> dict[str, Any]:
    """The broker's row of the connection ``conf`` opened (by its connection name)."""
    assert conf.connection_name
    [found] = [row for row in broker.connections() if named(row, conf.connection_name)]
    return found


def named(row: dict[str, Any], connection_name: str) -> bool:
    return connection_name in json.dumps(row["client_properties"])


# -- both engines and a client, verified both ways --------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_serves_a_client_over_tls(
    tls_broker: TLSBroker, servers: Servers, engine: bool
) -> None:
    tag = uuid.uuid4().hex
    server_conf = tls_broker.config(async_engine=engine)
    srv = make_server(server_conf, tag)
    servers.start(srv)
    client_conf = tls_broker.config()
    with client.RPCClient(client_conf, echo_discovery(srv.exchange_name), source="t2tls") as cli:
        answer = cli.t2tls_echo.echo(text="over TLS").call(timeout=10)
        assert answer.payload == {"text": "over TLS"}
        cli.t2tls_echo.echo(text="a cast").cast()
        # the broker saw TLS connections presenting the test client's certificate
        for conf in (server_conf, client_conf):
            row = connection_of(tls_broker, conf)
            assert row["ssl"] is True
            assert f"CN={CLIENT_CN}" in row["peer_cert_subject"]


def test_the_async_client_calls_over_tls(tls_broker: TLSBroker, servers: Servers) -> None:
    tag = uuid.uuid4().hex
    srv = make_server(tls_broker.config(async_engine=True), tag)
    servers.start(srv)
    conf = tls_broker.config(async_engine=True)

    async def calls() -> list[Any]:
        async with client.AsyncRPCClient(
            conf, echo_discovery(srv.exchange_name), source="t2tls"
        ) as cli:
            answers = await asyncio.gather(
                *(cli.t2tls_echo.echo(text=str(n)).call(timeout=10) for n in range(20))
            )
            assert connection_of(tls_broker, conf)["ssl"] is True
            return [answer.payload["text"] for answer in answers]

    assert asyncio.run(calls()) == [str(n) for n in range(20)]


def test_verify_false_still_encrypts(tls_broker: TLSBroker, servers: Servers) -> None:
    srv = make_server(tls_broker.config(), uuid.uuid4().hex)
    servers.start(srv)
    # the broker's certificate is of a CA the client does not know: accepted unchecked
    conf = tls_broker.config(ca_certs=str(tls_broker.pki.other_ca), verify=False)
    with client.RPCClient(conf, echo_discovery(srv.exchange_name), source="t2tls") as cli:
        assert cli.t2tls_echo.echo(text="x").call(timeout=10).payload == {"text": "x"}
        assert connection_of(tls_broker, conf)["ssl"] is True


# -- what fails, fails at once and says why ---------------------------------------------

WRONG = {
    "wrong CA": ({"ca_certs": "other_ca"}, "certificate verify failed"),
    "wrong name": ({"server_hostname": "not-the-broker.example"}, "Hostname mismatch"),
}


def wrong_config(broker: TLSBroker, case: str, async_engine: bool) -> tuple[ConnectionConfig, str]:
    options, words = WRONG[case]
    options = {
        key: str(getattr(broker.pki, value)) if key == "ca_certs" else value
        for key, value in options.items()
    }
    return broker.config(async_engine=async_engine, **options), words


@pytest.mark.parametrize("case", list(WRONG))
@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_refused_by_tls_verification_fails_fast(
    tls_broker: TLSBroker, engine: bool, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    conf, words = wrong_config(tls_broker, case, engine)
    srv = make_server(conf, uuid.uuid4().hex)
    started = time.monotonic()
    with pytest.raises(exceptions.ConnectionFailed) as caught:
        srv.run()
    seconds = time.monotonic() - started
    message = str(caught.value)
    assert words in message and "TLS handshake failed" in message and "not retried" in message
    # 5 attempts 1 s apart would take 4 s and more
    assert seconds < 2.0, f"{seconds:.1f} s: retried?"
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    assert connection_of_none(tls_broker, conf)


@pytest.mark.parametrize("case", list(WRONG))
def test_a_client_refused_by_tls_verification_fails_fast(tls_broker: TLSBroker, case: str) -> None:
    conf, words = wrong_config(tls_broker, case, False)
    started = time.monotonic()
    with (
        client.RPCClient(conf, echo_discovery("t2tls-x"), source="t2tls") as cli,
        pytest.raises(exceptions.ConnectionFailed, match=words),
    ):
        cli.t2tls_echo.echo(text="x").call(timeout=10)
    assert time.monotonic() - started < 2.0


def connection_of_none(broker: TLSBroker, conf: ConnectionConfig) -> bool:
    assert conf.connection_name
    return not any(named(row, conf.connection_name) for row in broker.connections())


# -- bad TLS files: refused before any connection ----------------------------------------


def test_tls_files_that_are_missing_or_do_not_fit_are_config_errors(
    tls_broker: TLSBroker, tmp_path: Path
) -> None:
    pki = tls_broker.pki
    with pytest.raises(exceptions.ConfigError, match=r"certfile='.*/nowhere.pem': the file does"):
        tls_broker.config(certfile=str(tmp_path / "nowhere.pem"))
    with pytest.raises(exceptions.ConfigError, match="the key does not match the certificate"):
        tls_broker.config(keyfile=str(pki.other_key))
    with pytest.raises(exceptions.ConfigError, match=r"ca_certs=.*: not a PEM file"):
        tls_broker.config(ca_certs=str(pki.client_key))
