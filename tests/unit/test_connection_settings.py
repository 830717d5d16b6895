"""Every connection setting reaches both engines, or is refused with a clear error.

``ConnectionConfig.to_pika_params`` (sync engine) and ``to_aio_params`` (async
engine) are read here the way pika, aio-pika and aiormq read them. The TLS
tests run a throwaway CA (made with ``openssl``) and a local TLS server that
records what the client sent: no broker is needed.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aiormq
import pika
import pika.exceptions
import pytest

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tests.unit.tls_support import (
    AMQP_HEADER,
    BROKER_NAME,
    Pki,
    TlsServer,
    assert_verifies,
    make_pki,
    tls_config,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- the parameters ----------------------------------------------------------------------


def test_pika_params_carry_every_setting(pki: Pki) -> None:
    conf = tls_config(
        pki,
        heartbeat_interval=7,
        channel_max=50,
        frame_max=65536,
        locale="fr_FR",
        connection_name="billing",
    )
    params = conf.to_pika_params()
    assert (params.host, params.port, params.virtual_host) == ("127.0.0.1", 5671, "/apps")
    assert (params.credentials.username, params.credentials.password) == ("ann", "s3cret/:@")
    assert (params.heartbeat, params.channel_max, params.frame_max) == (7, 50, 65536)
    assert params.locale == "fr_FR"
    assert params.client_properties == {"connection_name": "billing"}
    assert params.ssl_options.server_hostname == BROKER_NAME
    assert_verifies(params.ssl_options.context)


def test_aio_params_carry_every_setting(pki: Pki) -> None:
    conf = tls_config(pki, heartbeat_interval=7.9, connection_name="billing", locale="en_US")
    url, kwargs = conf.to_aio_params()
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "amqps",
        "127.0.0.1",
        5671,
        "/%2Fapps",
    )
    assert parse_qs(parts.query) == {"name": ["billing"], "heartbeat": ["7"]}
    assert list(kwargs) == ["ssl_context"]
    context = kwargs["ssl_context"]
    assert_verifies(context)
    assert context.server_name == BROKER_NAME

    async def read_back() -> None:
        # what aio-pika hands to aiormq, and what aiormq makes of it
        connection = aio_pika.Connection(aio_pika.connection.make_url(url), **kwargs)
        assert connection.kwargs["context"] is context
        underlay = aiormq.Connection(connection.url, **connection.kwargs)
        assert underlay.ssl_context is context
        assert (underlay.url.user, underlay.url.password) == ("ann", "s3cret/:@")
        assert underlay.vhost == "/apps"
        assert underlay.heartbeat_timeout == 7
        assert underlay._client_properties()["connection_name"] == "billing"
        assert isinstance(underlay._transport_factory, aiormq.connection.TLSTransportFactory)

    asyncio.run(read_back())


def test_without_optional_settings_both_engines_use_their_defaults() -> None:
    conf = ConnectionConfig("rabbit")
    params = conf.to_pika_params()
    assert params.ssl_options is None
    assert params.client_properties == {"connection_name": "tavrida2"}
    assert params.locale == "en_US"
    url, kwargs = conf.to_aio_params()
    assert url == "amqp://guest:guest@rabbit:5672/%2F?name=tavrida2"
    assert kwargs == {}


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("channel_max", 50, "channel_max cannot be set on the async engine"),
        ("frame_max", 65536, "frame_max cannot be set on the async engine"),
        ("locale", "fr_FR", "locale='fr_FR' cannot be set on the async engine"),
        ("heartbeat_interval", 65535, "heartbeat_interval=65535 cannot be set on the async engine"),
    ],
)
def test_the_async_engine_refuses_what_aiormq_cannot_honour(
    setting: str, value: Any, message: str
) -> None:
    conf = ConnectionConfig("rabbit", **{setting: value})
    with pytest.raises(exceptions.ConfigError, match=message):
        conf.to_aio_params()
    assert getattr(conf.to_pika_params(), setting.removesuffix("_interval")) == value


def test_heartbeats_beyond_amqp_are_refused_when_the_config_is_made() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"heartbeat_interval=65536: .* 0 to 65535"):
        ConnectionConfig("rabbit", heartbeat_interval=65536)


def test_a_value_pika_refuses_is_a_config_error() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"the sync engine .* channel_max"):
        ConnectionConfig("rabbit", channel_max=0).to_pika_params()


@pytest.mark.parametrize(
    ("ssl_options", "message"),
    [
        ({"ssl_options": 0}, "unknown ssl_options 'ssl_options'; known: ca_certs, certfile"),
        ({"keyfile": "client.key"}, "ssl_options keyfile needs certfile"),
        ({"ca_certs": "/nonexistent/ca.pem"}, "ca_certs='/nonexistent/ca.pem': the file does not"),
        ({"verify": "no"}, "ssl_options verify='no': expected true or false"),
    ],
)
@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_bad_ssl_options_are_refused_when_the_config_is_made(
    async_engine: bool, ssl_options: dict[str, Any], message: str
) -> None:
    with pytest.raises(exceptions.ConfigError, match=message):
        ConnectionConfig("rabbit", ssl=True, ssl_options=ssl_options, async_engine=async_engine)


def test_tls_files_that_do_not_fit_are_refused_naming_them(pki: Pki) -> None:
    def refused(**ssl_options: str) -> str:
        with pytest.raises(exceptions.ConfigError) as caught:
            ConnectionConfig("rabbit", ssl=True, ssl_options=ssl_options)
        return str(caught.value)

    mismatch = refused(certfile=str(pki.client_cert), keyfile=str(pki.server_key))
    assert "the key does not match the certificate" in mismatch
    assert str(pki.client_cert) in mismatch and str(pki.server_key) in mismatch
    assert "client.key" in refused(certfile=str(pki.client_cert), keyfile="/nonexistent/client.key")
    # a key where the CA should be: no certificate in it
    assert "not a PEM file of certificates" in refused(ca_certs=str(pki.client_key))
    assert "not a PEM certificate and its key" in refused(certfile=str(pki.ca))


def test_ssl_options_wait_for_ssl() -> None:
    # TAVRIDA2_URL may turn TLS on later: the options are kept, checked only then
    conf = ConnectionConfig("rabbit", ssl_options={"ca_certs": "/nonexistent/ca.pem"})
    assert conf.to_pika_params().ssl_options is None


def test_verify_false_encrypts_without_checking_the_broker(pki: Pki) -> None:
    conf = ConnectionConfig("rabbit", ssl=True, ssl_options={"verify": False})
    context = conf.to_pika_params().ssl_options.context
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    _, kwargs = ConnectionConfig(
        "rabbit", ssl=True, ssl_options={"verify": True, "ca_certs": str(pki.ca)}
    ).to_aio_params()
    assert_verifies(kwargs["ssl_context"])


# -- the TLS handshake -------------------------------------------------------------------


def connect_sync(conf: ConnectionConfig) -> None:
    # pika raises a failed TLS handshake as the ssl error itself
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(conf.to_pika_params())


def connect_async(conf: ConnectionConfig) -> None:
    url, kwargs = conf.to_aio_params()

    async def attempt() -> None:
        connection = aio_pika.Connection(aio_pika.connection.make_url(url), **kwargs)
        with pytest.raises((aiormq.exceptions.AMQPError, OSError, EOFError)):
            await connection.connect(timeout=10)

    asyncio.run(attempt())


CONNECT = {"sync": connect_sync, "async": connect_async}


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_tls_reaches_the_broker_with_every_ssl_option(pki: Pki, engine: str) -> None:
    server = TlsServer(pki)
    CONNECT[engine](tls_config(pki, port=server.port, connection_attempts=1, socket_timeout=5))
    server.join()
    assert server.error is None
    assert server.server_names == [BROKER_NAME]  # SNI: server_hostname, not 127.0.0.1
    assert server.client_names == ["tavrida2 client"]  # certfile and keyfile
    assert server.received == AMQP_HEADER  # the AMQP handshake went on inside TLS


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_tls_checks_the_broker_certificate_against_the_host(pki: Pki, engine: str) -> None:
    ssl_options = {
        "ca_certs": str(pki.ca),
        "certfile": str(pki.client_cert),
        "keyfile": str(pki.client_key),
    }
    server = TlsServer(pki)
    conf = tls_config(
        pki, port=server.port, connection_attempts=1, socket_timeout=5, ssl_options=ssl_options
    )
    CONNECT[engine](conf)
    server.join()
    assert server.received == b""  # 127.0.0.1 is not the certificate's name
    assert isinstance(server.error, ssl.SSLError)
