"""What the two RabbitMQ drivers share: the reconnect policy, the topology they
declare again after a reconnect, and how a message maps to AMQP properties.

Engine-free: the sync driver calls these functions' results, the async driver
awaits them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import tenacity

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.base import DIRECT_REPLY_TO
from tavrida2.drivers.errors import is_auth_error, is_tls_refused
from tavrida2.messages import AMQPMessage

log = logging.getLogger("tavrida2.drivers")

#: One declaration: ``("exchange", (name, type, durable, alternate))``,
#: ``("queue", (name, durable, arguments, auto_delete))``,
#: ``("binding", (queue, exchange, key))``, ``("exchange_binding", (destination,
#: source, key))`` or ``("unbinding", (queue, exchange, key))``.
Declaration = tuple[str, tuple[Any, ...]]


def describe(exc: BaseException | None) -> str:
    """``str(exc)``, or its repr where that is empty (pika's AMQPConnectionError)."""
    return (str(exc) or repr(exc)) if exc is not None else "?"


def retry_policy(
    config: ConnectionConfig, target: str, errors: tuple[type[BaseException], ...]
) -> dict[str, Any]:
    """tenacity's arguments for connecting: exponential backoff from ``retry_delay``
    to 10 s, retrying connection errors but never refused credentials nor a
    refused TLS handshake (a wrong CA or server name: the next attempt fails alike)."""
    delay = config.retry_delay
    return {
        "wait": tenacity.wait_exponential(multiplier=delay, min=delay, max=max(delay, 10.0)),
        "retry": tenacity.retry_if_exception(
            lambda e: not is_auth_error(e) and not is_tls_refused(e) and isinstance(e, errors)
        ),
        "reraise": True,
        "before_sleep": lambda state: log.warning(
            "cannot connect to %s (attempt %s): %s; retrying",
            target,
            state.attempt_number,
            describe(state.outcome.exception()) if state.outcome else "?",
        ),
    }


def connection_failed(exc: BaseException, target: str) -> exceptions.ConnectionFailed:
    """The ``ConnectionFailed`` of a connection that could not be opened."""
    reason = describe(exc)
    if is_auth_error(exc):
        reason = f"the broker refused the credentials or virtual host ({reason})"
    elif is_tls_refused(exc):
        reason = (
            f"the TLS handshake failed ({reason}); not retried: check ssl_options "
            "ca_certs (the CA that signed the broker's certificate), server_hostname "
            "(a name in that certificate), certfile/keyfile, and that the port is TLS"
        )
    return exceptions.ConnectionFailed(target=target, reason=reason)


class Declarations:
    """What a driver declared, in order, to declare again on a new connection."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Declaration] = []

    def remember(self, declaration: Declaration) -> None:
        if declaration not in self._items:
            self._items.append(declaration)

    def __iter__(self) -> Iterator[Declaration]:
        return iter(list(self._items))


def declare_on(channel: Any, declaration: Declaration) -> Any:
    """Send ``declaration`` on a pika or aiormq channel (the same keyword names in
    both); returns what the channel returns (an awaitable for aiormq)."""
    kind, args = declaration
    if kind == "exchange":
        alternate = args[3] if len(args) > 3 else None
        return channel.exchange_declare(
            args[0],
            exchange_type=args[1],
            durable=args[2],
            arguments={"alternate-exchange": alternate} if alternate else None,
        )
    if kind == "queue":
        return channel.queue_declare(
            args[0], durable=args[1], arguments=args[2], auto_delete=args[3]
        )
    if kind == "exchange_binding":
        return channel.exchange_bind(args[0], args[1], routing_key=args[2])
    if kind == "unbinding":
        return channel.queue_unbind(args[0], args[1], routing_key=args[2])
    return channel.queue_bind(args[0], args[1], routing_key=args[2])


def properties(message: AMQPMessage, delivery_mode: int) -> dict[str, Any]:
    """The AMQP properties of an outgoing message, as keyword arguments.

    Messages to or from a waiting caller (they carry the AMQP
    ``correlation_id``) are transient: the caller gives up after its timeout,
    and an answer cannot outlive the caller's channel.
    """
    return {
        "content_type": "application/json",
        "delivery_mode": 1 if message.correlation_id else delivery_mode,
        "headers": message.headers,
        "reply_to": message.reply_to,
        "correlation_id": message.correlation_id,
        "expiration": message.expiration,
        # aiormq makes up a random message_id for each message that has none
        "message_id": message.headers.get("message_id") or None,
    }


def delivered(body: bytes, props: Any, delivery: Any) -> AMQPMessage:
    """The message of a delivery (pika's method or aiormq's ``Basic.Deliver``)."""
    return AMQPMessage(
        body,
        props.headers or {},
        props.reply_to,
        props.correlation_id,
        props.expiration,
        delivery.redelivered,
        delivery.exchange,
        delivery.routing_key,
    )


def is_direct_reply(exchange: str, routing_key: str) -> bool:
    """Whether a publish answers a waiting caller on its direct reply-to queue."""
    return not exchange and routing_key.startswith(DIRECT_REPLY_TO)


__all__ = [
    "Declaration",
    "Declarations",
    "connection_failed",
    "declare_on",
    "delivered",
    "describe",
    "is_direct_reply",
    "properties",
    "retry_policy",
]
