"""Reading and replaying a dead-letter queue (``tavrida2 dlq list|replay``).

Uses its own blocking pika connection: these are operator commands, not a hot
path. Listing takes the messages without acknowledging them and gives them all
back; replaying publishes each (confirmed, mandatory) to the exchange and
routing key it was first sent to, without tavrida2's dead-letter headers and
attempt count, and only then acknowledges it in the dead-letter queue.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from tavrida2 import exceptions
from tavrida2.config import ConnectionConfig
from tavrida2.drivers.errors import from_channel_close
from tavrida2.messages import (
    ATTEMPT_HEADER,
    DEAD_LETTER_HEADERS,
    DELIVERY_COUNT_HEADER,
    attempt_in,
)

_DROPPED = frozenset(
    (
        ATTEMPT_HEADER,
        DELIVERY_COUNT_HEADER,
        *DEAD_LETTER_HEADERS,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
    )
)


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as ``dlq list`` shows it."""

    message_id: str
    message_type: str
    destination: str
    exchange: str
    routing_key: str
    reason: str
    code: Any
    attempts: int
    when: str


def origin(headers: dict[str, Any], method: Any) -> tuple[str, str]:
    """Where a dead letter was first published: tavrida2's headers, else the broker's x-death."""
    if "x-tavrida2-exchange" in headers:
        return str(headers["x-tavrida2-exchange"]), str(headers.get("x-tavrida2-routing-key", ""))
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
        first = deaths[-1]
        keys = first.get("routing-keys") or [method.routing_key]
        return str(first.get("exchange", "")), str(keys[0])
    return "", str(method.routing_key)


def _describe(method: Any, props: Any) -> DeadLetter:
    headers = dict(props.headers or {})
    exchange, routing_key = origin(headers, method)
    reason = headers.get("x-tavrida2-reason")
    if reason is None:
        deaths = headers.get("x-death")
        first = deaths[0] if isinstance(deaths, list) and deaths else {}
        broker = first.get("reason", "?")
        reason = (
            "returned to its quorum queue more often than its x-delivery-limit "
            "(broker: delivery_limit)"
            if broker == "delivery_limit"
            else f"rejected by the server (broker: {broker})"
        )
    stamp = headers.get("x-tavrida2-dead-lettered-at")
    when = (
        datetime.datetime.fromtimestamp(stamp / 1000, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
        if isinstance(stamp, int)
        else "?"
    )
    return DeadLetter(
        str(headers.get("message_id", "?")),
        str(headers.get("message_type", "?")),
        str(headers.get("destination", "")),
        exchange,
        routing_key,
        str(reason),
        headers.get("x-tavrida2-error-code", "?"),
        attempt_in(headers),
        when,
    )


def _connect(config: ConnectionConfig) -> Any:
    import pika
    import pika.exceptions

    if config.driver != "amqp":
        raise exceptions.ConfigError(reason="dlq commands need a RabbitMQ (amqp://) connection")
    try:
        # pika tries the addresses in turn
        return pika.BlockingConnection([config.to_pika_params(a) for a in config.hosts])
    except pika.exceptions.AMQPError as exc:
        raise exceptions.ConnectionFailed(
            target=config.to_url(), reason=str(exc) or type(exc).__name__
        ) from None


def _queue_size(channel: Any, queue: str) -> int:
    import pika.exceptions

    try:
        return int(channel.queue_declare(queue, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        raise exceptions.QueueNotFound(queue=queue) from None


def peek(config: ConnectionConfig, queue: str, limit: int = 100) -> tuple[int, list[DeadLetter]]:
    """``(how many, the first `limit`)`` dead letters of ``queue``; all stay in the queue."""
    connection = _connect(config)
    try:
        channel = connection.channel()
        total = _queue_size(channel, queue)
        letters: list[DeadLetter] = []
        while len(letters) < min(limit, total):
            method, props, _ = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            letters.append(_describe(method, props))
        if letters:
            channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        return total, letters
    finally:
        connection.close()


def replay(config: ConnectionConfig, queue: str, limit: int | None = None) -> int:
    """Publish up to ``limit`` dead letters of ``queue`` again; how many were replayed."""
    import pika
    import pika.exceptions

    connection = _connect(config)
    replayed = 0
    try:
        source = connection.channel()
        _queue_size(source, queue)
        target = connection.channel()
        target.confirm_delivery()
        while limit is None or replayed < limit:
            method, props, body = source.basic_get(queue, auto_ack=False)
            if method is None:
                break
            headers = dict(props.headers or {})
            exchange, routing_key = origin(headers, method)
            for name in _DROPPED:
                headers.pop(name, None)
            props.headers = headers
            try:
                target.basic_publish(exchange, routing_key, body, props, mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                source.basic_nack(method.delivery_tag, requeue=True)
                raise exceptions.UnroutableMessage(
                    exchange=exchange, routing_key=routing_key
                ) from exc
            except pika.exceptions.ChannelClosedByBroker as exc:
                # the letter stays in the queue: unacknowledged, it goes back on close
                raise from_channel_close(exc.reply_code, exc.reply_text, exchange) from None
            source.basic_ack(method.delivery_tag)
            replayed += 1
        return replayed
    finally:
        if connection.is_open:
            connection.close()


__all__ = ["DeadLetter", "origin", "peek", "replay"]
