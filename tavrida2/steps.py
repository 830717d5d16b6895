"""Built-in pipeline steps: validate headers, build messages, log (masking secrets)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from tavrida2.controller import AbstractController
from tavrida2.messages import AMQPMessage, IncomingMessageFactory, Message

_factory = IncomingMessageFactory()


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
    """Base of the logging steps: hides the values of sensitive headers."""

    SENSITIVE_HEADERS: tuple[str, ...] = ("authorization", "proxy-authorization")
    MASK = "***"

    def __init__(self, sensitive_headers: Iterable[str] = (), logger: logging.Logger | None = None):
        self.sensitive = frozenset(h.lower() for h in (*self.SENSITIVE_HEADERS, *sensitive_headers))
        self.log = logger or logging.getLogger("tavrida2.messages")

    def mask(self, headers: dict[str, Any]) -> dict[str, Any]:
        return {k: self.MASK if k.lower() in self.sensitive else v for k, v in headers.items()}


class LogIncomingAMQPMessageMiddleware(LoggingMiddleware):
    """Logs headers and body of incoming AMQP messages at DEBUG; returns the message."""

    def process(self, message: AMQPMessage) -> AMQPMessage:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("in  headers=%s body=%r", self.mask(message.headers), message.body)
        return message


class LogOutgoingAMQPMessageMiddleware(LoggingMiddleware):
    """Logs headers and body of outgoing AMQP messages at DEBUG; returns the message."""

    def process(self, message: AMQPMessage) -> AMQPMessage:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("out headers=%s body=%r", self.mask(message.headers), message.body)
        return message


__all__ = [
    "CreateAMQPMiddleware",
    "CreateMessageMiddleware",
    "LogIncomingAMQPMessageMiddleware",
    "LogOutgoingAMQPMessageMiddleware",
    "LoggingMiddleware",
    "ValidateMessageMiddleware",
]
