"""Support of the connection-settings tests: a throwaway CA and a TLS server that records.

:func:`make_pki` makes a CA, a server certificate for :data:`BROKER_NAME` and a
client certificate with ``openssl``; :class:`TlsServer` accepts one TLS
connection (the client must show a certificate of that CA) and records the
server name the client asked for (SNI), the client certificate's names and the
first bytes sent, then hangs up; :func:`tls_config` is a config with every
``ssl_options`` key set.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tavrida2.config import ConnectionConfig, Credentials

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
BROKER_NAME = "broker.test"  # the name in the server certificate; 127.0.0.1 is not in it


@dataclass
class Pki:
    """The files of :func:`make_pki`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"openssl {args}: {done.stderr}"


def _issue(folder: Path, name: str, subject: str, usage: str, san: str | None) -> None:
    """``name.pem`` and ``name.key``: a certificate of the test CA."""
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if san:
        extensions.append(f"subjectAltName={san}")
    (folder / f"{name}.ext").write_text("\n".join(extensions) + "\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={subject}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.pem",
        cwd=folder,
    )  # fmt: skip


def make_pki(folder: Path) -> Pki:
    """A CA, a server and a client certificate in ``folder``."""
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", "/CN=tavrida2 test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.pem",
        cwd=folder,
    )  # fmt: skip
    _issue(folder, "server", BROKER_NAME, "serverAuth", f"DNS:{BROKER_NAME}")
    _issue(folder, "client", "tavrida2 client", "clientAuth", None)
    return Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )


def tls_config(pki: Pki, port: int = 5671, **overrides: Any) -> ConnectionConfig:
    """A TLS config for 127.0.0.1 with every ``ssl_options`` key set."""
    ssl_options = {
        "ca_certs": str(pki.ca),
        "certfile": str(pki.client_cert),
        "keyfile": str(pki.client_key),
        "server_hostname": BROKER_NAME,
    }
    return ConnectionConfig(
        "127.0.0.1",
        credentials=Credentials("ann", "s3cret/:@"),
        port=port,
        virtual_host="/apps",
        ssl=True,
        ssl_options=overrides.pop("ssl_options", ssl_options),
        **overrides,
    )


def subjects(context: ssl.SSLContext) -> list[str]:
    """The common names of the CAs the context trusts."""
    return [
        pair[1]
        for cert in context.get_ca_certs()
        for rdn in cert["subject"]
        for pair in rdn
        if pair[0] == "commonName"
    ]


def assert_verifies(context: ssl.SSLContext) -> None:
    """The context checks the broker's certificate (against the test CA) and name."""
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert "tavrida2 test CA" in subjects(context)


@dataclass
class TlsServer:
    """Accepts one TLS connection, requiring a client certificate of the test CA."""

    pki: Pki
    port: int = 0
    server_names: list[str | None] = field(default_factory=list)
    client_names: list[str] = field(default_factory=list)
    received: bytes = b""
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self._context.load_verify_locations(self.pki.ca)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.sni_callback = lambda _obj, name, _ctx: self.server_names.append(name)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self._listener.accept()
            sock.settimeout(10)
            with self._context.wrap_socket(sock, server_side=True) as tls:
                peer = tls.getpeercert() or {}
                self.client_names = [pair[1] for rdn in peer.get("subject", ()) for pair in rdn]
                # the client's AMQP protocol header; then the "broker" hangs up
                while len(self.received) < len(AMQP_HEADER):
                    chunk = tls.recv(len(AMQP_HEADER) - len(self.received))
                    if not chunk:
                        break
                    self.received += chunk
        except OSError as exc:  # ssl.SSLError included
            self.error = exc
        finally:
            self._listener.close()

    def join(self) -> None:
        """Wait for the connection to be over."""
        self._thread.join(15)
        assert not self._thread.is_alive()
