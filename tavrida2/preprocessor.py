"""Incoming messages: validate, parse, route -> jobs for the controllers."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from tavrida2 import entry_point, exceptions
from tavrida2.controller import AbstractController
from tavrida2.dispatcher import Dispatcher, HandlerInfo
from tavrida2.messages import (
    DEADLINE_HEADER,
    AMQPMessage,
    Error,
    IncomingRequestCall,
    Message,
)
from tavrida2.postprocessor import PostProcessor, Tracer
from tavrida2.proxies import RPCProxy
from tavrida2.router import Router, RoutingTable
from tavrida2.steps import (
    CreateMessageMiddleware,
    LogIncomingAMQPMessageMiddleware,
    ValidateMessageMiddleware,
    amqp_logging_enabled,
)

if TYPE_CHECKING:
    from tavrida2.service import ServiceController

log = logging.getLogger(__name__)

Job = tuple["ServiceController", HandlerInfo, Message, RPCProxy]


class PreProcessor(AbstractController):
    """Turns a delivery into jobs: (controller, handler, message, proxy).

    ``error_postprocessor`` is used to answer a caller whose request cannot be
    handled at all (unknown service or method, malformed body); without one,
    such requests are only reported by raising.
    """

    def __init__(
        self,
        router: Router | RoutingTable,
        service_list: list[ServiceController],
        error_postprocessor: PostProcessor | None = None,
    ) -> None:
        self._table = router if isinstance(router, RoutingTable) else RoutingTable(service_list)
        self._error_postprocessor = error_postprocessor
        #: Told of every message received (set by the server that owns it).
        self.tracer: Tracer | None = None
        self._steps: list[AbstractController] = [
            ValidateMessageMiddleware(),
            CreateMessageMiddleware(),
        ]
        if amqp_logging_enabled():
            self._steps.insert(0, LogIncomingAMQPMessageMiddleware())

    def prepare(self, amqp_message: AMQPMessage) -> list[Job]:
        """Validate, parse and route ``amqp_message``; raise the documented error if it fails."""
        message: Any = amqp_message
        for step in self._steps:
            message = step.process(message)
        if self.tracer is not None:
            self.tracer.received(message)
        deadline = message.headers.get(DEADLINE_HEADER)
        if deadline is not None:
            _check_deadline(message, deadline)
        targets = self._table.lookup(message)
        jobs: list[Job] = []
        for index, (controller, info) in enumerate(targets):
            own = message if index == 0 else _copy(message)
            proxy = RPCProxy(
                controller.postprocessor,
                Dispatcher.proxy_source(own, controller.service_name),
                own.context,
                own.correlation_id,
                own.headers,
            )
            jobs.append((controller, info, own, proxy))
        return jobs

    def process(self, amqp_message: AMQPMessage) -> None:
        """Handle ``amqp_message`` synchronously (the sync engine's whole pipeline)."""
        for controller, info, message, proxy in self.prepare(amqp_message):
            controller.handle(info, message, proxy)

    def reply_error(self, amqp_message: AMQPMessage, error: Exception) -> Any:
        """Answer the caller of a request that cannot be handled; raise if there is none.

        Returns what the publisher returned. Raises ``LookupError`` when the
        message is no request with someone to answer (a cast, a notification,
        headers too broken to trust).
        """
        if self._error_postprocessor is None:
            raise LookupError("no error postprocessor")
        headers = amqp_message.headers if isinstance(amqp_message.headers, dict) else {}
        if headers.get("message_type") != "request":
            raise LookupError("not a request")
        fields = {
            k: headers.get(k)
            for k in ("correlation_id", "request_id", "source", "destination", "reply_to")
        }
        if not all(isinstance(v, str) for v in fields.values()):
            raise LookupError("headers cannot be trusted")
        if not fields["reply_to"] and not amqp_message.reply_to:
            raise LookupError("nobody waits for an answer")
        if not amqp_message.reply_to and not all(
            fields[k] for k in ("correlation_id", "request_id", "destination")
        ):
            # the answer would carry an empty id or source: every Tavrida receiver rejects it
            raise LookupError("too little to answer with")
        try:
            for field in ("source", "destination", "reply_to"):
                entry_point.parse(fields[field])
        except exceptions.WrongEntryPointFormat:
            raise LookupError("headers cannot be trusted") from None
        request = IncomingRequestCall(dict(headers), {}, {})
        request.amqp_reply_to = amqp_message.reply_to
        request.amqp_correlation_id = amqp_message.correlation_id
        return self._error_postprocessor.process(Error.create_by_request(request, error))


def _check_deadline(message: Message, deadline: Any) -> None:
    """Refuse a request whose caller stopped waiting (the ``deadline`` header, epoch ms)."""
    if not isinstance(deadline, int) or isinstance(deadline, bool):
        raise exceptions.UnsuitableFieldValue(field=DEADLINE_HEADER, value=deadline)
    late = int(time.time() * 1000) - deadline
    if late > 0:
        raise exceptions.RequestExpired(
            request_id=message.request_id, destination=message._destination, late_ms=late
        )


def _copy(message: Message) -> Message:
    """An independent copy for a second subscriber: own headers and context."""
    clone = type(message)(dict(message.headers), dict(message.context), dict(message.payload))
    clone.amqp_reply_to = message.amqp_reply_to
    clone.amqp_correlation_id = message.amqp_correlation_id
    return clone


__all__ = ["Job", "PreProcessor"]
