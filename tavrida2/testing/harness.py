"""Call one handler of a controller directly, with a recording proxy.

The model is nameko's ``worker_factory`` and ``entrypoint_hook``: no broker,
no server, but the handler gets what it gets in production. Each message is
built as a sender would build it, serialised, validated and routed by the
server's own :class:`~tavrida2.preprocessor.PreProcessor`; the controller's
pipeline (incoming middlewares, schema, parameters, the answer) runs as in a
server. What the handler sends is recorded by a
:class:`~tavrida2.testing.outbox.RecordingPostProcessor`::

    harness = ControllerHarness(HelloController)
    harness.answer("test_world.world", {"param": "world response"})
    outcome = harness.call("test_hello.hello", {"param": 123})
    assert outcome.payload == {"accepted": 123}
    outcome.sent.assert_called("test_world.world", param=12345)
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from tavrida2 import exceptions
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.dispatcher import HandlerInfo
from tavrida2.messages import (
    BROADCAST_HEADER,
    AMQPMessage,
    Error,
    IncomingRequestCall,
    Message,
    Notification,
    Request,
    Response,
    new_id,
)
from tavrida2.preprocessor import PreProcessor
from tavrida2.proxies import RPCProxy
from tavrida2.router import RoutingTable
from tavrida2.service import ServiceController
from tavrida2.testing.outbox import CannedAnswer, RecordingPostProcessor, Sent, SentMessages

#: The ``source`` of the requests a harness sends, as a script's client would.
TEST_CLIENT = "test_client"
#: The direct reply-to queue of that client, where answers to its calls go.
REPLY_QUEUE = "amq.rabbitmq.reply-to.tavrida2-test"


def exchange_of(service: str) -> str:
    """The exchange of ``service`` where the testing helpers choose one."""
    return f"{service}_exchange"


def notifications_of(service: str) -> str:
    """The notification exchange of ``service`` where the testing helpers choose one."""
    return f"{service}_notifications"


class AnyServiceDiscovery(AbstractDiscovery):
    """Discovery that knows every service: ``<service>_exchange`` and ``<service>_notifications``.

    The default of a :class:`ControllerHarness` whose controller has no discovery of its own.
    """

    def register_remote_service(self, service_name: str, exchange_name: str) -> None:
        raise TypeError("AnyServiceDiscovery knows every service already")

    register_remote_publisher = register_remote_service
    register_local_publisher = register_remote_service

    def get_remote(self, service_name: str) -> str:
        return exchange_of(service_name)

    def get_remote_publisher(self, service_name: str) -> str:
        return notifications_of(service_name)

    def get_local_publisher(self, service_name: str) -> str:
        return notifications_of(service_name)

    def get_all_exchanges(self) -> dict[str, list[str]]:
        return {"remote": [], "remote_publisher": [], "local_publisher": []}


@dataclasses.dataclass
class HandlerOutcome:
    """What one message did to the controller.

    ``message``: what the handler received (None if it was refused before);
    ``sent``: what it sent while handling, the answer to its caller included;
    ``answer``: that Response or Error (a request with someone to answer);
    ``raised``: what the pipeline raised (a cast or notification whose handler
    failed raises ``HandlerFailed``, as it would in a server).
    """

    message: Message | None
    sent: SentMessages
    answer: Sent | None
    raised: Exception | None

    @property
    def payload(self) -> dict[str, Any]:
        """The payload of the Response; raises ``RemoteError`` for an Error answer."""
        if self.answer is None:
            raise AssertionError(f"no answer was sent (raised: {self.raised!r})")
        if self.answer.kind == "answer" and isinstance(self.answer.message, Error):
            raise exceptions.RemoteError(
                str(self.answer.payload["class"]),
                str(self.answer.payload["message"]),
                int(self.answer.payload["code"]),
            )
        return self.answer.payload

    @property
    def error(self) -> BaseException | None:
        """The exception the handler (or a step before it) raised, if any."""
        if self.answer is not None and isinstance(self.answer.message, Error):
            return self.answer.message.exception
        if isinstance(self.raised, exceptions.HandlerFailed) and self.raised.__cause__:
            return self.raised.__cause__
        return self.raised


class ControllerHarness:
    """One controller instance whose handlers a test calls directly (see the module docstring).

    ``discovery``: what its proxy resolves services with; default: the
    class's own if one was set, else :class:`AnyServiceDiscovery`.
    ``async_engine``: run handlers as the async engine does (``async def``
    handlers awaited, what the proxy returns awaitable); default: for
    ``async def`` handlers only. ``prepare``: called with the new controller
    instance (add middlewares there).
    """

    def __init__(
        self,
        controller: type[ServiceController],
        *,
        discovery: AbstractDiscovery | None = None,
        async_engine: bool | None = None,
        prepare: Callable[[ServiceController], None] | None = None,
    ) -> None:
        if not (isinstance(controller, type) and issubclass(controller, ServiceController)):
            raise exceptions.NeedToBeController(service=repr(controller))
        if not controller.service_name:
            raise exceptions.NeedToBeController(
                service=f"{controller!r} (not decorated with @dispatcher.rpc_service)"
            )
        if discovery is None:
            discovery = controller._discovery or AnyServiceDiscovery()
        self.controller_class = controller
        self.postprocessor = RecordingPostProcessor(discovery)
        self.controller = controller(self.postprocessor)
        if prepare is not None:
            prepare(self.controller)
        self._async_engine = async_engine
        self._preprocessor = PreProcessor(RoutingTable([self.controller]), [self.controller])

    @property
    def sent(self) -> SentMessages:
        """Everything sent by every handler called so far."""
        return self.postprocessor.sent

    def answer(self, destination: str, answer: CannedAnswer) -> None:
        """Answer waiting calls to ``destination`` (``service.method``) with ``answer``.

        A dict is the Response's payload; an exception becomes the Error (the
        caller gets ``RemoteError``); a function gets the request's payload
        and returns either.
        """
        self.postprocessor.answer(destination, answer)

    # -- the messages a handler can get ------------------------------------------

    def call(
        self,
        destination: str,
        payload: dict[str, Any] | None = None,
        *,
        source: str = TEST_CLIENT,
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> HandlerOutcome:
        """A request to ``destination`` whose sender waits for the answer."""
        return self._deliver(
            Request, source, destination, payload, context, headers, reply_to=source
        )

    def cast(
        self,
        destination: str,
        payload: dict[str, Any] | None = None,
        *,
        source: str = TEST_CLIENT,
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> HandlerOutcome:
        """A request to ``destination`` nobody waits an answer for."""
        return self._deliver(Request, source, destination, payload, context, headers)

    def broadcast(
        self,
        destination: str,
        payload: dict[str, Any] | None = None,
        *,
        source: str = TEST_CLIENT,
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> HandlerOutcome:
        """A request to ``destination`` sent to every instance (its ``broadcast_method``)."""
        extra = {**(headers or {}), BROADCAST_HEADER: True}
        return self._deliver(Request, source, destination, payload, context, extra)

    def response(
        self,
        source: str,
        payload: dict[str, Any] | None = None,
        *,
        destination: str = "",
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> HandlerOutcome:
        """A Response from the remote ``source`` (``service.method``) to its response handler."""
        to = destination or self.controller_class.service_name
        return self._deliver(Response, source, to, payload, context, headers)

    def error(
        self,
        source: str,
        exception: BaseException,
        *,
        destination: str = "",
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> HandlerOutcome:
        """An Error from the remote ``source`` made of ``exception``, to its error handler."""
        to = destination or self.controller_class.service_name
        request = IncomingRequestCall(
            {
                "correlation_id": new_id(),
                **(headers or {}),
                "request_id": new_id(),
                "message_type": "request",
                "source": to,
                "destination": source,
                "reply_to": to,
            },
            dict(context or {}),
            {},
        )
        return self._run(AMQPMessage.create_from_message(request.make_error(exception)))

    def notification(
        self,
        source: str,
        payload: dict[str, Any] | None = None,
        *,
        context: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> HandlerOutcome:
        """A notification published from ``source`` (``service.method``) to its subscriptions."""
        return self._deliver(Notification, source, "", payload, context, headers)

    # -- delivering --------------------------------------------------------------

    def _deliver(
        self,
        kind: type[Request | Response | Notification],
        source: str,
        destination: str,
        payload: dict[str, Any] | None,
        context: dict[str, Any] | None,
        headers: dict[str, Any] | None,
        reply_to: str = "",
    ) -> HandlerOutcome:
        """Build the message as its sender would (``kind``), and handle its wire form."""
        for name, value in (("payload", payload), ("context", context), ("headers", headers)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
        wire_headers: dict[str, Any] = {
            "correlation_id": new_id(),
            **(headers or {}),
            "source": source,
            "destination": destination,
            "reply_to": reply_to,
        }
        if kind is Response:
            wire_headers.setdefault("request_id", new_id())
        message = kind(wire_headers, dict(context or {}), dict(payload or {}))
        wire = AMQPMessage.create_from_message(message)
        if reply_to:
            # a waiting client: the answer goes to its direct reply-to queue
            wire.reply_to, wire.correlation_id = REPLY_QUEUE, message.request_id
        return self._run(wire)

    def _run(self, wire: AMQPMessage) -> HandlerOutcome:
        """Validate, route and handle ``wire`` as a server does; what it did."""
        before = len(self.sent)
        received: Message | None = None
        raised: Exception | None = None
        try:
            for controller, info, message, proxy in self._preprocessor.prepare(wire):
                received = message
                use_async = info.is_coroutine if self._async_engine is None else self._async_engine
                if use_async:
                    asyncio.run(self._handle_async(controller, info, message, proxy))
                else:
                    self.postprocessor.async_mode = False
                    controller.handle(info, message, proxy)
        except Exception as exc:
            raised = exc
        sent = SentMessages(list(self.sent)[before:])
        answers = sent.answers
        return HandlerOutcome(received, sent, answers[-1] if answers else None, raised)

    async def _handle_async(
        self, controller: ServiceController, info: HandlerInfo, message: Message, proxy: RPCProxy
    ) -> None:
        self.postprocessor.async_mode = True
        try:
            await controller.handle_async(info, message, proxy, _run_sync)
        finally:
            self.postprocessor.async_mode = False


async def _run_sync(func: Callable[[], Any]) -> Any:
    """A sync handler on the async engine under test: run in the loop's thread."""
    result = func()
    if isinstance(result, Awaitable):
        return await result
    return result


__all__ = [
    "TEST_CLIENT",
    "AnyServiceDiscovery",
    "ControllerHarness",
    "HandlerOutcome",
    "exchange_of",
    "notifications_of",
]
