"""Messages: the wire form (:class:`AMQPMessage`) and the typed ones handlers see.

Wire format (Tavrida 1.0): AMQP headers ``correlation_id``, ``request_id``,
``message_id``, ``message_type``, ``reply_to``, ``source``, ``destination``
(plus user headers that travel on), and a UTF-8 JSON body
``{"context": {...}, "payload": {...}}``.

Incoming messages: :class:`IncomingRequestCall` (a request with ``reply_to``),
:class:`IncomingRequestCast` (without), :class:`IncomingResponse`,
:class:`IncomingError`, :class:`IncomingNotification`.
Outgoing messages: :class:`Request`, :class:`Response`, :class:`Error`,
:class:`Notification`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid
from enum import Enum
from typing import Any, ClassVar, TypeVar

from tavrida2 import entry_point, errornames, exceptions
from tavrida2.entry_point import Destination, EntryPoint, Source
from tavrida2.masking import mask_url_passwords


class MessageType(str, Enum):  # noqa: UP042 - StrEnum would change its str()
    """The ``message_type`` header."""

    REQUEST = "request"
    RESPONSE = "response"
    ERROR = "error"
    NOTIFICATION = "notification"

    def __str__(self) -> str:
        return self.value


REQUIRED_HEADERS = (
    "correlation_id",
    "message_id",
    "request_id",
    "message_type",
    "source",
    "destination",
)
#: Epoch milliseconds after which the caller of a request no longer waits.
DEADLINE_HEADER = "deadline"
#: How many times a cast or notification has been delivered for handling (1, 2, ...).
ATTEMPT_HEADER = "x-tavrida2-attempt"
#: Marks a request sent to every running instance of its service (``.broadcast()``).
BROADCAST_HEADER = "x-tavrida2-broadcast"


def broadcast_exchange(service: str) -> str:
    """The fanout exchange that reaches every running instance of ``service``."""
    return f"tavrida2.broadcast.{service}"


#: How often a quorum queue's message was returned to it (set by RabbitMQ on delivery).
DELIVERY_COUNT_HEADER = "x-delivery-count"


def attempt_in(headers: Any) -> int:
    """Which delivery attempt ``headers`` tell.

    ``x-tavrida2-attempt`` (1 if none or bad: tavrida2's retries through the
    retry queue) plus RabbitMQ's ``x-delivery-count`` (the returns of a quorum
    queue's message, 0 if none).
    """
    if not isinstance(headers, dict):
        return 1
    value = headers.get(ATTEMPT_HEADER)
    attempt = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
    count = headers.get(DELIVERY_COUNT_HEADER)
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        attempt += count
    return attempt


#: Headers of a dead letter: why, where it failed, where it was first published.
DEAD_LETTER_HEADERS = (
    "x-tavrida2-reason",
    "x-tavrida2-error-class",
    "x-tavrida2-error-code",
    "x-tavrida2-queue",
    "x-tavrida2-exchange",
    "x-tavrida2-routing-key",
    "x-tavrida2-dead-lettered-at",
)
#: Headers that tavrida2 sets itself; user headers may not override them, and
#: they do not travel on to the messages a handler sends.
RESERVED_HEADERS = frozenset(
    (
        *REQUIRED_HEADERS,
        "reply_to",
        DEADLINE_HEADER,
        ATTEMPT_HEADER,
        BROADCAST_HEADER,
        *DEAD_LETTER_HEADERS,
    )
)
_MESSAGE_TYPES = {t.value: t for t in MessageType}

_AnswerT = TypeVar("_AnswerT", bound="Message")

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


class _IdSource:
    """Unique ids, 32 hex digits like Tavrida 1.0's uuid4: a random per-process
    prefix and a counter (a uuid4 per id cost 2 µs of the hot path; three per
    call). A forked child takes a new prefix."""

    __slots__ = ("counter", "prefix")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count(random.getrandbits(32))

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


#: A new unique id (message, request and correlation ids).
new_id = _IdSource()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=new_id.reset)


def fqcn(obj: object) -> str:
    """``module.ClassName`` of an object (FQCN: fully qualified class name)."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class AMQPMessage:
    """A message as it travels: raw body and headers, plus AMQP properties.

    Drivers build one per delivery and hand it to the preprocessor; the
    postprocessor builds one per outgoing message. ``reply_to`` and
    ``correlation_id`` here are the AMQP *properties* used by callers that
    wait for the answer (direct reply-to), not the Tavrida headers.
    """

    __slots__ = (
        "body",
        "correlation_id",
        "exchange",
        "expiration",
        "headers",
        "redelivered",
        "reply_to",
        "routing_key",
    )

    REQUIRED_HEADERS: ClassVar[tuple[str, ...]] = REQUIRED_HEADERS
    MESSAGE_TYPE: ClassVar[list[str]] = [t.value for t in MessageType]

    def __init__(
        self,
        body: bytes | str,
        headers: dict[str, Any] | None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        expiration: str | None = None,
        redelivered: bool = False,
        exchange: str = "",
        routing_key: str = "",
    ) -> None:
        self.body = body
        self.headers = headers if headers is not None else {}
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.expiration = expiration
        self.redelivered = redelivered
        #: Where a delivered message was published to (for dead letters and replays).
        self.exchange = exchange
        self.routing_key = routing_key

    def validate(self) -> None:
        """Check the Tavrida headers; raise the documented error for the first problem."""
        headers = self.headers
        if not isinstance(headers, dict):
            raise exceptions.FieldMustExist(field="headers")
        for field in REQUIRED_HEADERS:
            if field not in headers:
                raise exceptions.FieldMustExist(field=field)
        for field in ("correlation_id", "message_id", "request_id", "source"):
            value = headers[field]
            if not isinstance(value, str):
                raise exceptions.UnsuitableFieldValue(field=field, value=value)
            if not value:
                raise exceptions.FieldMustFullyDefined(field=field)
        message_type = headers["message_type"]
        if not isinstance(message_type, str) or message_type not in _MESSAGE_TYPES:
            raise exceptions.UnsuitableFieldValue(field="message_type", value=message_type)
        for field in ("source", "destination", "reply_to"):
            value = headers.get(field, "")
            if not isinstance(value, str):
                raise exceptions.UnsuitableFieldValue(field=field, value=value)
            entry_point.parse(value)
        if message_type != "notification" and not headers["destination"]:
            raise exceptions.FieldMustFullyDefined(field="destination")

    def body_deserialize(self) -> dict[str, Any]:
        """Parse the JSON body; raise :class:`MalformedBody` if it is not one."""
        body = self.body
        try:
            text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
            data = _decode(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise exceptions.MalformedBody(reason=f"not UTF-8 JSON ({exc})") from None
        if not isinstance(data, dict):
            raise exceptions.MalformedBody(reason="the body is not a JSON object")
        missing = {"context", "payload"} - data.keys()
        if missing:
            raise exceptions.MalformedBody(reason=f"missing keys {sorted(missing)}")
        if not isinstance(data["payload"], dict):
            raise exceptions.MalformedBody(reason="'payload' is not an object")
        if data["context"] is None:
            data["context"] = {}
        if not isinstance(data["context"], dict):
            raise exceptions.MalformedBody(reason="'context' is not an object")
        return data

    @property
    def message_type(self) -> str:
        value = self.headers.get("message_type", "")
        return value if isinstance(value, str) else ""

    @classmethod
    def create_from_message(cls, message: Message) -> AMQPMessage:
        """Wire form of an outgoing message (used by the postprocessor)."""
        return cls(
            message.body_serialize(),
            message.headers,
            reply_to=message.amqp_reply_to,
            correlation_id=message.amqp_correlation_id,
            expiration=message.amqp_expiration,
        )

    def __repr__(self) -> str:
        return f"AMQPMessage(headers={self.headers!r}, body={self.body!r})"


class Incoming:
    """Marker of messages a handler receives."""


class Outgoing:
    """Marker of messages a service sends."""


class Message:
    """Base of every message: headers, context and payload.

    The header values are also exposed as properties (``correlation_id``,
    ``request_id``, ``message_id``, ``message_type`` and the entry points
    ``reply_to``, ``source``, ``destination``), taken when the message is made:
    later changes of ``headers`` do not change them (as in Tavrida 1.0).
    """

    message_type_enum: ClassVar[MessageType | None] = None

    #: AMQP properties for callers that wait for the answer (direct reply-to).
    amqp_reply_to: str | None = None
    amqp_correlation_id: str | None = None
    amqp_expiration: str | None = None

    def __init__(
        self,
        headers: dict[str, Any],
        context: dict[str, Any] | None,
        payload: dict[str, Any],
    ) -> None:
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be dict, received {type(payload).__name__}")
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"context must be dict, received {type(context).__name__}")
        if not headers.get("message_id"):
            headers["message_id"] = new_id()
        self._headers = headers
        self._context = context if context is not None else {}
        self._payload = payload
        self.correlation_id: str = headers.get("correlation_id") or ""
        self.request_id: str = headers.get("request_id") or ""
        self.message_id: str = headers["message_id"]
        self.message_type: str = headers.get("message_type") or ""
        self._reply_to = headers.get("reply_to") or ""
        self._source = headers.get("source") or ""
        self._destination = headers.get("destination") or ""

    @property
    def reply_to(self) -> EntryPoint:
        return entry_point.parse(self._reply_to)

    @property
    def source(self) -> EntryPoint:
        return entry_point.parse(self._source, Source)

    @property
    def destination(self) -> EntryPoint:
        return entry_point.parse(self._destination, Destination)

    @property
    def headers(self) -> dict[str, Any]:
        return self._headers

    @property
    def context(self) -> dict[str, Any]:
        return self._context

    @property
    def payload(self) -> dict[str, Any]:
        return self._payload

    @property
    def body(self) -> dict[str, Any]:
        return self._payload

    @property
    def type(self) -> str:
        return self.message_type

    def user_headers(self) -> dict[str, Any]:
        """Headers other than the Tavrida ones: they travel on with the chain."""
        return {k: v for k, v in self._headers.items() if k not in RESERVED_HEADERS}

    def update_context(self, context: dict[str, Any]) -> None:
        self._context.update(context)

    def body_serialize(self) -> bytes:
        """The JSON body ``{"context": ..., "payload": ...}`` as UTF-8 bytes.

        Raises ``TypeError`` naming the key whose value is not JSON-serialisable.
        """
        try:
            text = _encode({"context": self._context, "payload": self._payload})
        except (TypeError, ValueError) as exc:
            raise TypeError(_describe_unserialisable(self._context, self._payload, exc)) from None
        return text.encode("utf-8")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(headers={self._headers!r}, context={self._context!r}, "
            f"payload={self._payload!r})"
        )


def _describe_unserialisable(
    context: dict[str, Any], payload: dict[str, Any], exc: Exception
) -> str:
    for part, mapping in (("payload", payload), ("context", context)):
        for key, value in mapping.items():
            try:
                _encode(value)
            except (TypeError, ValueError):
                return (
                    f"{part} key {key!r}: value of type {type(value).__name__} "
                    "is not JSON serialisable"
                )
    return f"message is not JSON serialisable: {exc}"


class IncomingRequest(Message, Incoming):
    """A request received by a service."""

    message_type_enum = MessageType.REQUEST


class IncomingRequestCall(IncomingRequest):
    """A request whose sender waits for an answer (it has ``reply_to``)."""

    def make_response(self, **payload: Any) -> Response:
        return Response.create_by_request(self, payload)

    def make_error(self, exception: BaseException) -> Error:
        return Error.create_by_request(self, exception)


class IncomingRequestCast(IncomingRequest):
    """A request nobody waits an answer for (empty ``reply_to``)."""


class _Answer(Message):
    """Base of responses and errors: they have no ``reply_to`` of their own."""

    message_type_enum: ClassVar[MessageType]

    def __init__(
        self, headers: dict[str, Any], context: dict[str, Any] | None, payload: dict[str, Any]
    ) -> None:
        headers["reply_to"] = ""
        headers["message_type"] = self.message_type_enum.value
        super().__init__(headers, context, payload)


class BaseResponse(_Answer):
    """Base of responses."""

    message_type_enum = MessageType.RESPONSE


class IncomingResponse(BaseResponse, Incoming):
    """A response received from a remote handler."""


def _answer_headers(request: Message) -> dict[str, Any]:
    headers = dict(request.headers)
    headers["correlation_id"] = request.correlation_id
    headers["request_id"] = request.request_id
    headers["source"] = request._destination
    headers["destination"] = request._reply_to or request._source
    headers["message_id"] = ""
    headers.pop(DEADLINE_HEADER, None)
    return headers


def _to_caller(answer: _AnswerT, request: Message) -> _AnswerT:
    """Route ``answer`` like ``request`` asked: to a waiting caller's direct reply-to, if any."""
    answer.amqp_reply_to = request.amqp_reply_to
    answer.amqp_correlation_id = request.amqp_correlation_id
    return answer


class Response(BaseResponse, Outgoing):
    """A response to send."""

    @classmethod
    def create_by_request(cls, request: Message, payload: dict[str, Any]) -> Response:
        return _to_caller(cls(_answer_headers(request), request.context, payload), request)


class BaseError(_Answer):
    """Base of error messages; payload ``{"class", "message", "code"}``."""

    message_type_enum = MessageType.ERROR


class IncomingError(BaseError, Incoming):
    """An error received from a remote handler.

    Its payload's ``class`` names tavrida2's errors as tavrida2 does: a
    ``tavrida.exceptions.X`` sent by Tavrida 1.0 (or by a tavrida2 server,
    which sends 1.0's names) reads ``tavrida2.exceptions.X``
    (:mod:`tavrida2.errornames`).
    """

    def __init__(
        self, headers: dict[str, Any], context: dict[str, Any] | None, payload: dict[str, Any]
    ) -> None:
        remote_class = payload.get("class") if isinstance(payload, dict) else None
        if isinstance(remote_class, str):
            payload["class"] = errornames.from_wire(remote_class)
        super().__init__(headers, context, payload)

    def to_exception(self) -> exceptions.RemoteError:
        payload = self.payload
        return exceptions.RemoteError(
            str(payload.get("class", "")),
            str(payload.get("message", "")),
            int(payload.get("code", exceptions.UNKNOWN_ERROR)),
        )


class Error(BaseError, Outgoing):
    """An error to send, made from an exception.

    Its payload's ``class`` is the exception's ``module.ClassName``, with
    Tavrida 1.0's name for the errors 1.0 had (``tavrida.exceptions.X``, see
    :mod:`tavrida2.errornames`), so 1.0 callers read what they always read.
    """

    def __init__(
        self, headers: dict[str, Any], context: dict[str, Any] | None, exception: BaseException
    ) -> None:
        self.exception = exception
        payload = {
            "class": errornames.to_wire(fqcn(exception)),
            "message": mask_url_passwords(str(exception)),
            "code": exceptions.error_code(exception) if isinstance(exception, Exception) else 1000,
        }
        super().__init__(headers, context, payload)

    @classmethod
    def create_by_request(cls, request: Message, exception: BaseException) -> Error:
        return _to_caller(cls(_answer_headers(request), request.context, exception), request)


class IncomingNotification(Message, Incoming):
    """A notification received from a publisher the service subscribes to."""

    message_type_enum = MessageType.NOTIFICATION

    def __init__(
        self, headers: dict[str, Any], context: dict[str, Any] | None, payload: dict[str, Any]
    ) -> None:
        headers["reply_to"] = ""
        headers["destination"] = ""
        headers["message_type"] = "notification"
        super().__init__(headers, context, payload)


class Request(Message, Outgoing):
    """A request to send: a new ``request_id``; a new ``correlation_id`` if none."""

    message_type_enum = MessageType.REQUEST

    def __init__(
        self, headers: dict[str, Any], context: dict[str, Any] | None, payload: dict[str, Any]
    ) -> None:
        if not headers.get("correlation_id"):
            headers["correlation_id"] = new_id()
        headers["request_id"] = new_id()
        headers["message_type"] = "request"
        headers.setdefault("reply_to", "")
        super().__init__(headers, context, payload)

    @classmethod
    def create_transfer(
        cls, headers: dict[str, Any], context: dict[str, Any] | None, **payload: Any
    ) -> Request:
        return cls(headers, context, payload)


class Notification(Message, Outgoing):
    """A notification to publish on the source service's notification exchange."""

    message_type_enum = MessageType.NOTIFICATION

    def __init__(
        self, headers: dict[str, Any], context: dict[str, Any] | None, payload: dict[str, Any]
    ) -> None:
        headers["reply_to"] = ""
        headers["destination"] = ""
        headers["message_type"] = "notification"
        headers["request_id"] = new_id()
        if not headers.get("correlation_id"):
            headers["correlation_id"] = new_id()
        super().__init__(headers, context, payload)


class IncomingMessageFactory:
    """Builds the typed incoming message for an :class:`AMQPMessage`."""

    def get_class(self, message_type: str, reply_to: EntryPoint | str) -> type[Message]:
        if message_type == "request":
            return IncomingRequestCall if reply_to else IncomingRequestCast
        if message_type == "response":
            return IncomingResponse
        if message_type == "error":
            return IncomingError
        if message_type == "notification":
            return IncomingNotification
        raise exceptions.UnsuitableFieldValue(field="message_type", value=message_type)

    def create(self, amqp_message: AMQPMessage) -> Message:
        headers = amqp_message.headers
        body = amqp_message.body_deserialize()
        cls = self.get_class(headers["message_type"], headers.get("reply_to") or "")
        message = cls(dict(headers), body["context"], body["payload"])
        if amqp_message.reply_to:
            message.amqp_reply_to = amqp_message.reply_to
            message.amqp_correlation_id = amqp_message.correlation_id
        return message

    def create_notification(
        self, headers: dict[str, Any], context: dict[str, Any], payload: dict[str, Any]
    ) -> IncomingNotification:
        return IncomingNotification(headers, context, payload)


__all__ = [
    "ATTEMPT_HEADER",
    "BROADCAST_HEADER",
    "DEADLINE_HEADER",
    "DEAD_LETTER_HEADERS",
    "DELIVERY_COUNT_HEADER",
    "REQUIRED_HEADERS",
    "RESERVED_HEADERS",
    "AMQPMessage",
    "BaseError",
    "BaseResponse",
    "Error",
    "Incoming",
    "IncomingError",
    "IncomingMessageFactory",
    "IncomingNotification",
    "IncomingRequest",
    "IncomingRequestCall",
    "IncomingRequestCast",
    "IncomingResponse",
    "Message",
    "MessageType",
    "Notification",
    "Outgoing",
    "Request",
    "Response",
    "attempt_in",
    "broadcast_exchange",
    "fqcn",
    "new_id",
]
