"""Throwaway certificates for TLS tests, made with the ``openssl`` command.

:func:`make_pki` writes, in a folder: a CA (``ca.pem``/``ca.key``), a server
certificate signed by it for ``localhost`` and ``127.0.0.1`` (``server.pem``/
``server.key``), a client certificate (``client.pem``/``client.key``), and a
second, unrelated CA with its own server certificate (``other-ca.pem``,
``other-server.pem``/``.key``) for the wrong-CA cases. Keys are EC P-256
(fast to make), certificates valid for two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


class CertError(RuntimeError):
    """``openssl`` is missing or refused to make a certificate."""


@dataclass(frozen=True)
class PKI:
    """The files :func:`make_pki` wrote in ``folder``."""

    folder: Path

    def file(self, name: str) -> Path:
        return self.folder / name

    @property
    def ca(self) -> Path:
        return self.file("ca.pem")

    @property
    def server_cert(self) -> Path:
        return self.file("server.pem")

    @property
    def server_key(self) -> Path:
        return self.file("server.key")

    @property
    def client_cert(self) -> Path:
        return self.file("client.pem")

    @property
    def client_key(self) -> Path:
        return self.file("client.key")

    @property
    def other_ca(self) -> Path:
        """A CA that signed none of the broker's certificates."""
        return self.file("other-ca.pem")

    @property
    def other_key(self) -> Path:
        """The key of a certificate of the other CA: it matches no certificate here."""
        return self.file("other-server.key")


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertError("the openssl command is not installed (Debian: apt-get install openssl)")
    done = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise CertError(f"openssl {' '.join(args)}: {done.stderr.strip()}")


def _key(folder: Path, name: str) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", f"{name}.key", cwd=folder)  # fmt: skip


def _ca(folder: Path, name: str, common_name: str) -> None:
    _key(folder, name)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.pem", "-days", DAYS,
        "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip


def _leaf(folder: Path, name: str, ca: str, common_name: str, extensions: list[str]) -> None:
    _key(folder, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={common_name}", cwd=folder)  # fmt: skip
    (folder / f"{name}.ext").write_text(
        "\n".join(
            [
                "basicConstraints = critical,CA:FALSE",
                "keyUsage = critical,digitalSignature,keyEncipherment",
                "subjectKeyIdentifier = hash",
                "authorityKeyIdentifier = keyid,issuer",
                *extensions,
            ]
        )
        + "\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", DAYS, "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_pki(folder: Path) -> PKI:
    """Write the CAs, certificates and keys in ``folder`` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    server_ext = ["subjectAltName = DNS:localhost,IP:127.0.0.1", "extendedKeyUsage = serverAuth"]
    _ca(folder, "ca", "tavrida2 test CA")
    _leaf(folder, "server", "ca", "localhost", server_ext)
    _leaf(folder, "client", "ca", "tavrida2-test-client", ["extendedKeyUsage = clientAuth"])
    _ca(folder, "other-ca", "tavrida2 unrelated test CA")
    _leaf(folder, "other-server", "other-ca", "localhost", server_ext)
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return PKI(folder)
