"""Tavrida 1.0's TLS settings on tavrida2's TLS context.

Tavrida 1.0 handed ``ssl_options`` (and the ``[ssl]`` section of its config
files) to pika 0.10, which passed them to ``ssl.wrap_socket``. tavrida2 builds
one ``ssl.SSLContext`` for both engines (:meth:`ConnectionConfig._ssl_context
<tavrida2.config.ConnectionConfig>`); this module maps those ``wrap_socket``
arguments onto it:

``cert_reqs``
    0 (``CERT_NONE``): the broker's certificate is not checked, as ``verify =
    false``; 1 (``CERT_OPTIONAL``, which a client treats as required) and 2
    (``CERT_REQUIRED``): it is checked, tavrida2's default.
``ssl_version``
    2 (``PROTOCOL_SSLv23``) and 16 (``PROTOCOL_TLS_CLIENT``): the newest version
    both sides know, tavrida2's default; 5 (``PROTOCOL_TLSv1_2``): TLS 1.2 only.
    0, 1, 3 and 4 (SSL 2, SSL 3, TLS 1.0, TLS 1.1) are ignored with a logged
    note: Python 3's ``ssl`` refuses SSL 2 and 3, and TLS 1.0 and 1.1 are
    deprecated (RFC 8996) and refused by current OpenSSL builds, so the
    connection negotiates TLS 1.2 or newer instead.
``ciphers``
    ``SSLContext.set_ciphers`` (OpenSSL cipher list; TLS 1.3 suites are not
    affected).
``suppress_ragged_eofs``
    true is what both engines do; false is ignored with a logged note: an
    unexpected end of the TLS stream ends the connection either way, and the
    driver reconnects.
``server_side``
    false (a client); true is refused.

An empty value (1.0's example config file leaves them ``""``) is no value.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from tavrida2 import exceptions

#: The ``ssl_options`` keys of Tavrida 1.0 (``ssl.wrap_socket`` arguments) this module maps.
LEGACY_SSL_OPTIONS = ("cert_reqs", "ssl_version", "suppress_ragged_eofs", "ciphers", "server_side")

_CERT_REQS_VERIFY = {0: False, 1: True, 2: True}
_NEGOTIATE = (2, 16)  # PROTOCOL_SSLv23 / PROTOCOL_TLS, PROTOCOL_TLS_CLIENT
_TLS_1_2 = 5  # PROTOCOL_TLSv1_2
_REFUSED_VERSIONS = {0: "SSL 2", 1: "SSL 3", 3: "TLS 1.0", 4: "TLS 1.1"}


def _fail(key: str, value: Any, expected: str) -> exceptions.ConfigError:
    return exceptions.ConfigError(reason=f"ssl_options {key}={value!r}: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify(options: Mapping[str, Any]) -> bool:
    """Whether the broker's certificate is checked: ``verify``, else ``cert_reqs``, else true."""
    given = options.get("verify")
    if given is not None and not isinstance(given, bool):
        raise _fail("verify", given, "true or false")
    cert_reqs = options.get("cert_reqs")
    if cert_reqs is None:
        return True if given is None else given
    if not _is_int(cert_reqs) or cert_reqs not in _CERT_REQS_VERIFY:
        raise _fail("cert_reqs", cert_reqs, "0 (CERT_NONE), 1 (CERT_OPTIONAL) or 2 (CERT_REQUIRED)")
    from_reqs = _CERT_REQS_VERIFY[cert_reqs]
    if given is not None and given != from_reqs:
        raise exceptions.ConfigError(
            reason=f"ssl_options verify={given!r} and cert_reqs={cert_reqs!r} disagree; "
            "give one of them"
        )
    return from_reqs


def apply(context: ssl.SSLContext, options: Mapping[str, Any]) -> None:
    """Set ``ssl_version`` and ``ciphers`` on ``context``; check ``server_side``."""
    version = options.get("ssl_version")
    if version is not None:
        if not _is_int(version) or version not in (*_NEGOTIATE, _TLS_1_2, *_REFUSED_VERSIONS):
            raise _fail(
                "ssl_version",
                version,
                "2 (negotiate the newest version) or 5 (TLS 1.2 only); "
                "leave it out for the default",
            )
        if version == _TLS_1_2:
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    ciphers = options.get("ciphers")
    if ciphers is not None:
        if not isinstance(ciphers, str):
            raise _fail("ciphers", ciphers, "an OpenSSL cipher list, e.g. 'ECDHE+AESGCM'")
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise _fail(
                "ciphers", ciphers, "an OpenSSL cipher list naming ciphers this OpenSSL has"
            ) from None
    server_side = options.get("server_side")
    if server_side is not None and server_side is not False:
        raise _fail("server_side", server_side, "false: tavrida2 connects as a client")
    ragged = options.get("suppress_ragged_eofs")
    if ragged is not None and not isinstance(ragged, bool):
        raise _fail("suppress_ragged_eofs", ragged, "true or false")


def ignored(options: Mapping[str, Any]) -> list[str]:
    """A note for each of 1.0's settings in ``options`` that tavrida2 accepts but ignores."""
    notes = []
    version = options.get("ssl_version")
    if _is_int(version) and version in _REFUSED_VERSIONS:
        notes.append(
            f"ssl_options ssl_version={version} ({_REFUSED_VERSIONS[version]}) is ignored: "
            "Python 3 and current OpenSSL refuse SSL 2/3 and TLS 1.0/1.1 (RFC 8996); "
            "the connection negotiates TLS 1.2 or newer"
        )
    if options.get("suppress_ragged_eofs") is False:
        notes.append(
            "ssl_options suppress_ragged_eofs=false is ignored: an unexpected end of the "
            "TLS stream ends the connection either way, and the driver reconnects"
        )
    return notes


__all__ = ["LEGACY_SSL_OPTIONS", "apply", "ignored", "verify"]
