"""One place that turns pika / aiormq exceptions into tavrida2's.

::

    pika / aiormq error                          tavrida2 error
    -------------------------------------------  ------------------------------------
    ProbableAuthenticationError, ACCESS_REFUSED   ConnectionFailed (no retry)
    TLS handshake refused (certificate checks)    ConnectionFailed (no retry)
    AMQPConnectionError, socket errors            ConnectionFailed / ConnectionClosed
    channel closed 404 NOT_FOUND (exchange)       ExchangeNotFound
    channel closed 404 NOT_FOUND (queue)          QueueNotFound
    channel closed 406 PRECONDITION_FAILED        PreconditionFailed
    UnroutableError / DeliveryError (returned)    UnroutableMessage
    NackError                                     PublishNacked
"""

from __future__ import annotations

import re
import ssl

from tavrida2 import exceptions

_NOT_FOUND_KIND = re.compile(r"no (exchange|queue) '([^']*)'")
# RabbitMQ's 404 for a durable classic queue whose node is down
_HOME_NODE_DOWN = re.compile(r"home node '([^']*)' of durable queue '([^']*)'")


def is_auth_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the credentials (or vhost access) were refused."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        word in text
        for word in ("authentication", "access_refused", "access refused", "not_allowed", "vhost")
    )


#: What OpenSSL says when a TLS handshake fails on a certificate (either side's
#: check) or meets a plain AMQP port: asking again gets the same answer.
_TLS_REFUSALS = (
    "certificate verify failed",
    "alert bad certificate",
    "alert unknown ca",
    "alert certificate required",
    "alert handshake failure",
    "wrong version number",
)


def is_tls_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a TLS handshake that failed for good (not a network error).

    pika raises the ``ssl`` error itself, aiormq wraps its text in an
    ``AMQPConnectionError``: both are read as text.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    text = str(exc).lower()
    return ("ssl" in text or "tls" in text) and any(word in text for word in _TLS_REFUSALS)


def from_channel_close(code: int, text: str, what: str = "") -> exceptions.DriverError:
    """The tavrida2 error for a channel closed by the broker with ``code`` and ``text``."""
    if code == 404:
        down = _HOME_NODE_DOWN.search(text)
        if down:
            return exceptions.QueueUnavailable(
                queue=down.group(2), reason=f"its node {down.group(1)} is down or unreachable"
            )
        match = _NOT_FOUND_KIND.search(text)
        if match and match.group(1) == "queue":
            return exceptions.QueueNotFound(queue=match.group(2))
        return exceptions.ExchangeNotFound(exchange=match.group(2) if match else what)
    if code == 406:
        return exceptions.PreconditionFailed(what="entity", name=what, reason=text)
    if code == 403:
        return exceptions.DriverError(reason=f"access refused: {text}")
    return exceptions.DriverError(reason=f"channel closed by the broker ({code}): {text}")


__all__ = ["from_channel_close", "is_auth_error", "is_tls_refused"]
