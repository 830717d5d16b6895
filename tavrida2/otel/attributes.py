"""The span attributes: OpenTelemetry's messaging conventions for RabbitMQ, and tavrida2's own.

Names are those of the messaging semantic conventions (``messaging.*``),
written here as strings: the conventions are still marked *development*, and
an instrumentation keeps the names it emits.
"""

from __future__ import annotations

from typing import Any

from tavrida2.config import ConnectionConfig

SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
BODY_SIZE = "messaging.message.body.size"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
#: tavrida2's own: ``request``, ``response``, ``error`` or ``notification``.
MESSAGE_TYPE = "tavrida2.message_type"
#: The entry points of the message (``service.method``, or a script's name).
SOURCE = "tavrida2.source"
TARGET = "tavrida2.destination"
REQUEST_ID = "tavrida2.request_id"

#: What an outgoing message's span does, and what a delivery's span does.
SEND = "send"
PROCESS = "process"


def connection_attributes(config: ConnectionConfig) -> dict[str, Any]:
    """The attributes every span of a server or client shares (made once)."""
    attributes: dict[str, Any] = {SYSTEM: "rabbitmq"}
    if config.driver != "memory":
        attributes[SERVER_ADDRESS] = config.host
        attributes[SERVER_PORT] = config.port
    return attributes


def message_attributes(headers: dict[str, Any]) -> dict[str, Any]:
    """The ids and entry points a message's headers carry (only those of a usable kind)."""
    attributes: dict[str, Any] = {}
    for name, header in (
        (MESSAGE_ID, "message_id"),
        (CONVERSATION_ID, "correlation_id"),
        (REQUEST_ID, "request_id"),
        (MESSAGE_TYPE, "message_type"),
        (SOURCE, "source"),
        (TARGET, "destination"),
    ):
        value = headers.get(header)
        if isinstance(value, str) and value:
            attributes[name] = value
    return attributes


__all__ = [
    "BODY_SIZE",
    "CONVERSATION_ID",
    "DESTINATION",
    "ERROR_TYPE",
    "MESSAGE_ID",
    "MESSAGE_TYPE",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "PROCESS",
    "REQUEST_ID",
    "ROUTING_KEY",
    "SEND",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SOURCE",
    "SYSTEM",
    "TARGET",
    "connection_attributes",
    "message_attributes",
]
