"""Built-in pipeline steps: validate headers, build messages, log (masking secrets).

:class:`LoggingMiddleware` holds the one masking implementation of tavrida2:
the engine's error logs, the AMQP logging steps here and the message logging
middlewares of :mod:`tavrida2.middleware.log_messages` all use it.

The AMQP logging steps log every message a process receives (the
preprocessor's first step) and sends (the postprocessor's last) as Tavrida
1.0 did: at DEBUG, on the ``tavrida.steps`` logger (:data:`AMQP_LOGGER`), as
``Incoming AMQP message with headers '...' and body '...'``, a sensitive
header's value shown as ``<authorization>``. They are in the pipeline only
where that logger is enabled for DEBUG when the server or client is made, so
they cost nothing otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from tavrida2.controller import AbstractController
from tavrida2.masking import mask_url_passwords
from tavrida2.messages import AMQPMessage, IncomingMessageFactory, Message

_factory = IncomingMessageFactory()

_MASK = "***"
#: The logger of the AMQP logging steps: Tavrida 1.0's, so 1.0 logging configs still apply.
AMQP_LOGGER = "tavrida.steps"


class ValidateMessageMiddleware(AbstractController):
    """Checks the Tavrida headers of an incoming AMQP message."""

    def process(self, ampq_message: AMQPMessage) -> AMQPMessage:
        ampq_message.validate()
        return ampq_message


class CreateMessageMiddleware(AbstractController):
    """Builds the typed incoming message from a validated AMQP message."""

    def process(self, message_body: AMQPMessage) -> Message:
        return _factory.create(message_body)


class CreateAMQPMiddleware(AbstractController):
    """Builds the wire form of an outgoing message."""

    def process(self, message: Message) -> AMQPMessage:
        return AMQPMessage.create_from_message(message)


class LoggingMiddleware(AbstractController):
    """Base of the logging steps: hides secrets in what they log.

    The values of sensitive headers (``authorization``, ``proxy-authorization``
    and ``sensitive_headers``, compared case-insensitively) become ``***``, in
    headers and, at any depth, in payloads; so does the password of any URL in
    a value (``amqp://user:***@host``). ``logger`` is a logger or its name
    (default ``tavrida2.messages``).
    """

    SENSITIVE_HEADERS: tuple[str, ...] = ("authorization", "proxy-authorization")
    MASK = _MASK

    def __init__(
        self,
        sensitive_headers: Iterable[str] = (),
        logger: logging.Logger | str | None = None,
    ) -> None:
        if isinstance(sensitive_headers, str):
            raise TypeError("sensitive_headers must be a list of header names, not a str")
        self.sensitive = frozenset(h.lower() for h in (*self.SENSITIVE_HEADERS, *sensitive_headers))
        if logger is None or isinstance(logger, str):
            logger = logging.getLogger(logger or "tavrida2.messages")
        self.log = logger

    def mask(self, headers: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``headers`` with sensitive values and URL passwords masked."""
        return self.mask_value(headers)  # type: ignore[no-any-return]

    def mask_value(self, value: Any) -> Any:
        """A copy of ``value`` (a payload, headers, a string...) with its secrets masked."""
        if isinstance(value, str):
            return mask_url_passwords(value)
        if isinstance(value, dict):
            return {
                k: self.placeholder(k)
                if isinstance(k, str) and k.lower() in self.sensitive
                else self.mask_value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.mask_value(v) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.mask_body(value)
        return value

    def placeholder(self, name: str) -> str:
        """What the value of the sensitive header or key ``name`` is shown as (``MASK``)."""
        return self.MASK

    def mask_body(self, body: bytes | bytearray | str) -> Any:
        """A raw body, masked: its JSON parsed and masked, or its text with URLs masked."""
        try:
            text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
        except UnicodeDecodeError:
            return repr(body)
        try:
            return self.mask_value(json.loads(text))
        except (ValueError, RecursionError):
            return mask_url_passwords(text)


def describe(value: Any, limit: int = 300) -> str:
    """``repr`` of what a handler or middleware returned, secrets masked, bounded.

    For error messages that are logged and sent to a caller.
    """
    if isinstance(value, Message):
        masker = _default_masker
        text = (
            f"{type(value).__name__}(headers={masker.mask(value.headers)!r}, "
            f"payload={masker.mask_value(value.payload)!r})"
        )
    else:
        text = mask_url_passwords(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LogAMQPMessageMiddleware(LoggingMiddleware):
    """Logs the headers and body of an AMQP message at DEBUG, as Tavrida 1.0 did.

    ``direction`` Incoming or Outgoing AMQP message with headers '...' and body
    '...', on the ``tavrida.steps`` logger unless ``logger`` says otherwise.
    The value of a sensitive header (or payload key) reads ``<name>``, with
    the name in lower case (``<authorization>``); passwords in URLs read
    ``***``. Returns the message unchanged.
    """

    direction: ClassVar[str] = "AMQP"

    def __init__(
        self,
        sensitive_headers: Iterable[str] = (),
        logger: logging.Logger | str | None = None,
    ) -> None:
        super().__init__(sensitive_headers, logger or AMQP_LOGGER)

    def placeholder(self, name: str) -> str:
        return f"<{name.lower()}>"

    def process(self, message: AMQPMessage) -> AMQPMessage:
        if self.log.isEnabledFor(logging.DEBUG):
            body = self.mask_body(message.body)
            self.log.debug(
                "%s AMQP message with headers '%s' and body '%s'",
                self.direction,
                self.mask(message.headers),
                body if isinstance(body, str) else _json_text(body),
            )
        return message


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


class LogIncomingAMQPMessageMiddleware(LogAMQPMessageMiddleware):
    """Logs each AMQP message received (the preprocessor's first step)."""

    direction = "Incoming"


class LogOutgoingAMQPMessageMiddleware(LogAMQPMessageMiddleware):
    """Logs each AMQP message sent (the postprocessor's last step)."""

    direction = "Outgoing"


def amqp_logging_enabled() -> bool:
    """Whether the AMQP logging steps belong in a pipeline made now."""
    return logging.getLogger(AMQP_LOGGER).isEnabledFor(logging.DEBUG)


_default_masker = LoggingMiddleware()

__all__ = [
    "AMQP_LOGGER",
    "CreateAMQPMiddleware",
    "CreateMessageMiddleware",
    "LogAMQPMessageMiddleware",
    "LogIncomingAMQPMessageMiddleware",
    "LogOutgoingAMQPMessageMiddleware",
    "LoggingMiddleware",
    "ValidateMessageMiddleware",
    "amqp_logging_enabled",
    "describe",
    "mask_url_passwords",
]
