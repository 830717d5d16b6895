"""The sync driver's direct reply-to: requests of waiting callers and their answers.

Once :meth:`Replies.consume_replies` was called, a call channel takes the
requests whose caller waits (unconfirmed, mandatory: a returned request is
reported at once), and their answers come back to it by RabbitMQ direct
reply-to. Answers are dispatched by whichever thread services the connection.
"""

from __future__ import annotations

from typing import Any

from tavrida2 import exceptions
from tavrida2.drivers.base import DIRECT_REPLY_TO, ReplyCallback, ReplyFailureCallback
from tavrida2.drivers.pika_sync.connection import closed_by_broker
from tavrida2.drivers.pika_sync.publishing import Publishing
from tavrida2.messages import AMQPMessage


class Replies(Publishing):
    """The call channel of waiting callers (a base of the sync driver)."""

    _call_channel: Any = None
    _on_reply: ReplyCallback | None = None
    _on_reply_failure: ReplyFailureCallback | None = None

    def _attach(self) -> None:
        super()._attach()
        if self._on_reply is not None:
            self._open_call_channel()

    def _detach(self, error: Exception) -> None:
        if self._call_channel is not None:
            self._call_channel = None
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

    def _publish_request(
        self, exchange: str, routing_key: str, body: Any, props: Any, mandatory: bool
    ) -> None:
        if self._call_channel is None:
            raise RuntimeError("a request for a waiting caller needs consume_replies() first")
        self._check_call_channel()
        self._call_channel.basic_publish(exchange, routing_key, body, props, mandatory)


__all__ = ["Replies"]
