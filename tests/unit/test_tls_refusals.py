"""A TLS handshake refused for good is told apart from a network error, and not retried."""

from __future__ import annotations

import ssl

import aiormq.exceptions
import pytest

from tavrida2.config import ConnectionConfig
from tavrida2.drivers.errors import is_tls_refused
from tavrida2.drivers.shared import connection_failed, retry_policy

VERIFY = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"


@pytest.mark.parametrize(
    "error",
    [
        ssl.SSLCertVerificationError(1, VERIFY),
        aiormq.exceptions.AMQPConnectionError(1, VERIFY),  # how aiormq wraps it
        ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"),
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ],
    ids=["pika", "aiormq", "client certificate refused", "plain port"],
)
def test_refused_handshakes_are_not_retried(error: Exception) -> None:
    assert is_tls_refused(error)
    retry = retry_policy(ConnectionConfig(), "amqps://h", (OSError, Exception))["retry"]
    assert not retry.predicate(error)
    message = str(connection_failed(error, "amqps://h"))
    assert "TLS handshake failed" in message and "not retried" in message


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),  # a broker going away
        aiormq.exceptions.AMQPConnectionError("Server connection unexpectedly closed"),
    ],
)
def test_network_errors_are_still_retried(error: Exception) -> None:
    assert not is_tls_refused(error)
    retry = retry_policy(ConnectionConfig(), "amqp://h", (OSError, Exception))["retry"]
    assert retry.predicate(error)
