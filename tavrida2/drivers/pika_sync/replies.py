"""The sync driver's direct reply-to: requests of waiting callers and their answers.

Once :meth:`Replies.consume_replies` was called, a call channel takes the
requests whose caller waits (unconfirmed, mandatory: a returned request is
reported at once), and their answers come back to it by RabbitMQ direct
reply-to. Answers are dispatched by whichever thread services the connection.

A request never queues for the connection's lock: when another thread holds
it, the request is handed over. A thread servicing the connection sends what
was handed at its next turn (one wake-up for a batch of requests), any other
holder when it releases the lock; so threads sharing a client do not take
turns to publish.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any

from tavrida2 import exceptions
from tavrida2.drivers.base import DIRECT_REPLY_TO, ReplyCallback, ReplyFailureCallback
from tavrida2.drivers.pika_sync.connection import (
    CONNECTION_ERRORS,
    NOT_RUN,
    closed_by_broker,
)
from tavrida2.drivers.pika_sync.publishing import Publishing
from tavrida2.messages import AMQPMessage


class Replies(Publishing):
    """The call channel of waiting callers (a base of the sync driver)."""

    _call_channel: Any = None
    _on_reply: ReplyCallback | None = None
    _on_reply_failure: ReplyFailureCallback | None = None

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        #: Requests handed to the leader: (exchange, routing key, body, properties, mandatory).
        self._handed: deque[tuple[str, str, Any, Any, bool]] = deque()
        self._wake_asked = False

    def _attach(self) -> None:
        super()._attach()
        if self._on_reply is not None:
            self._open_call_channel()

    def _detach(self, error: Exception) -> None:
        self._wake_asked = False
        if self._call_channel is not None:
            self._call_channel = None
            self._handed.clear()  # their callers are told with the others
            self._fail_waiting_callers(error)
        super()._detach(error)

    def _check_channels(self) -> None:
        super()._check_channels()
        self._check_call_channel()

    def _check_call_channel(self) -> None:
        error = closed_by_broker(self._call_channel, "request")
        if error is not None:  # a request to a missing exchange closed it
            self._open_call_channel()
            self._fail_waiting_callers(error)

    def consume_replies(self, on_reply: ReplyCallback, on_failure: ReplyFailureCallback) -> None:
        self._on_reply, self._on_reply_failure = on_reply, on_failure
        self._with_connection(self._open_call_channel)

    def _open_call_channel(self) -> None:
        channel = self._connection.channel()
        channel.add_on_return_callback(self._on_returned)
        channel.basic_consume(DIRECT_REPLY_TO, self._on_answer, auto_ack=True)
        self._call_channel = channel

    def _on_answer(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        assert self._on_reply is not None
        self._on_reply(AMQPMessage(body, props.headers or {}, props.reply_to, props.correlation_id))

    def _on_returned(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if self._on_reply_failure is not None:
            error = exceptions.UnroutableMessage(
                exchange=method.exchange, routing_key=method.routing_key
            )
            self._on_reply_failure(props.correlation_id, error)

    def _fail_waiting_callers(self, error: Exception) -> None:
        if self._on_reply_failure is not None:
            self._on_reply_failure(None, error)

    def _send_request(
        self, exchange: str, routing_key: str, body: Any, props: Any, mandatory: bool
    ) -> None:
        if self._on_reply is None:
            raise RuntimeError("a request for a waiting caller needs consume_replies() first")
        self._handed.append((exchange, routing_key, body, props, mandatory))
        if self._with_connection(self._send_handed, queue=False) is not NOT_RUN:
            return
        # another thread holds the connection: if it services it, it sends this
        # request at its next turn; if not, it does when it releases the lock
        if not self._wake_asked:
            self._wake_asked = True
            connection = self._connection
            if connection is not None:
                with contextlib.suppress(Exception):  # closed: its holder fails the requests
                    connection.add_callback_threadsafe(self._send_handed)

    def _send_handed(self) -> None:
        """Send the requests handed over by other threads (lock held)."""
        self._wake_asked = False
        handed = self._handed
        while handed:
            exchange, routing_key, body, props, mandatory = handed.popleft()
            try:
                self._publish_request(exchange, routing_key, body, props, mandatory)
            except CONNECTION_ERRORS:
                handed.appendleft((exchange, routing_key, body, props, mandatory))
                raise
            except Exception as exc:
                if self._on_reply_failure is not None:
                    self._on_reply_failure(props.correlation_id, exc)

    def _left_behind(self) -> bool:
        return bool(self._handed) or super()._left_behind()

    def _pick_up(self) -> None:
        super()._pick_up()
        if self._handed:
            try:
                self._send_handed()
            except CONNECTION_ERRORS:
                self._drop_connection(graceful=False)  # every waiting caller is told

    def _publish_request(
        self, exchange: str, routing_key: str, body: Any, props: Any, mandatory: bool
    ) -> None:
        if self._call_channel is None:
            self._open_call_channel()
        else:
            self._check_call_channel()
        self._call_channel.basic_publish(exchange, routing_key, body, props, mandatory)


__all__ = ["Replies"]
