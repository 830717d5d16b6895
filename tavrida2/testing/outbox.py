"""What a handler under test sent: records, canned answers, assertions.

:class:`RecordingPostProcessor` stands where a controller's
:class:`~tavrida2.postprocessor.PostProcessor` stands in a server. Every message
goes through the real resolution (discovery, exchange, routing key) and
serialisation, then is recorded in a :class:`SentMessages` instead of being
published. A request whose caller waits (``call(wait=True)``,
``call_async()``) gets the canned answer the test set with
:meth:`RecordingPostProcessor.answer`, built as a real Response or Error.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

from tavrida2 import exceptions
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.messages import (
    BROADCAST_HEADER,
    AMQPMessage,
    Error,
    IncomingError,
    IncomingMessageFactory,
    IncomingResponse,
    Message,
    MessageType,
    Request,
    Response,
)
from tavrida2.postprocessor import PostProcessor

#: A canned answer: a payload, an exception (the caller gets ``RemoteError``),
#: or a function of the request's payload returning either.
CannedAnswer: TypeAlias = (
    dict[str, Any] | BaseException | Callable[[dict[str, Any]], "dict[str, Any] | BaseException"]
)

_factory = IncomingMessageFactory()


@dataclasses.dataclass(frozen=True)
class Sent:
    """One message a handler sent, as it would have travelled.

    ``kind``: ``"call"`` (a request with someone to answer), ``"cast"``,
    ``"broadcast"``, ``"publish"`` (a notification) or ``"answer"`` (the
    Response or Error to the handler's own caller); ``waited``: the sender
    waited for the answer (``call(wait=True)`` or ``call_async()``).
    ``payload``, ``context`` and ``headers`` are decoded from the wire form.
    """

    kind: str
    message: Message
    exchange: str
    routing_key: str
    wire: AMQPMessage
    waited: bool = False

    @property
    def headers(self) -> dict[str, Any]:
        return self.wire.headers

    @property
    def payload(self) -> dict[str, Any]:
        return self.wire.body_deserialize()["payload"]  # type: ignore[no-any-return]

    @property
    def context(self) -> dict[str, Any]:
        return self.wire.body_deserialize()["context"]  # type: ignore[no-any-return]

    @property
    def destination(self) -> str:
        """``service.method`` of a request or answer; ``""`` for a notification."""
        return str(self.headers.get("destination") or "")

    @property
    def source(self) -> str:
        return str(self.headers.get("source") or "")

    def describe(self) -> str:
        where = self.destination or self.source
        return f"{self.kind} {where} {self.payload!r}"


def _kind(message: Message) -> str:
    kind = message.message_type
    if kind == MessageType.NOTIFICATION:
        return "publish"
    if kind != MessageType.REQUEST:
        return "answer"
    if BROADCAST_HEADER in message.headers:
        return "broadcast"
    return "call" if message.headers.get("reply_to") else "cast"


class SentMessages:
    """Messages sent, in order, with assertions (each returns what it matched).

    ``assert_called("svc.method", param=1)`` passes when a call to
    ``svc.method`` was sent with exactly that payload (any payload when none is
    given); ``assert_cast``, ``assert_broadcast`` likewise; ``assert_published``
    checks a notification's payload; ``assert_nothing_sent`` that there is none.
    A failed assertion lists what was sent.
    """

    def __init__(self, records: list[Sent] | None = None) -> None:
        self._records: list[Sent] = records if records is not None else []

    def append(self, record: Sent) -> None:
        self._records.append(record)

    def __iter__(self) -> Iterator[Sent]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Sent:
        return self._records[index]

    def __repr__(self) -> str:
        return f"SentMessages({[r.describe() for r in self._records]!r})"

    def of_kind(self, kind: str) -> list[Sent]:
        return [r for r in self._records if r.kind == kind]

    @property
    def calls(self) -> list[Sent]:
        return self.of_kind("call")

    @property
    def casts(self) -> list[Sent]:
        return self.of_kind("cast")

    @property
    def broadcasts(self) -> list[Sent]:
        return self.of_kind("broadcast")

    @property
    def publications(self) -> list[Sent]:
        return self.of_kind("publish")

    @property
    def answers(self) -> list[Sent]:
        return self.of_kind("answer")

    def _find(self, kind: str, destination: str | None, payload: dict[str, Any] | None) -> Sent:
        candidates = [
            r for r in self.of_kind(kind) if destination is None or r.destination == destination
        ]
        found = [r for r in candidates if payload is None or r.payload == payload]
        if found:
            return found[0]
        wanted = f"{kind} {destination or ''} {payload if payload is not None else '(any)'}"
        sent = "\n  ".join(r.describe() for r in self._records) or "(nothing)"
        raise AssertionError(f"no {wanted.strip()} was sent; sent:\n  {sent}")

    def assert_called(self, destination: str, /, **payload: Any) -> Sent:
        return self._find("call", destination, payload or None)

    def assert_cast(self, destination: str, /, **payload: Any) -> Sent:
        return self._find("cast", destination, payload or None)

    def assert_broadcast(self, destination: str, /, **payload: Any) -> Sent:
        return self._find("broadcast", destination, payload or None)

    def assert_published(self, **payload: Any) -> Sent:
        return self._find("publish", None, payload or None)

    def assert_nothing_sent(self) -> None:
        outgoing = [r for r in self._records if r.kind != "answer"]
        if outgoing:
            sent = "\n  ".join(r.describe() for r in outgoing)
            raise AssertionError(f"expected nothing sent; sent:\n  {sent}")


class AnswerHandle:
    """What ``call_async()`` and ``cast_async()`` return on the sync engine under test.

    ``result()`` gives the canned answer of a call (None for a cast) or raises its error.
    """

    def __init__(self, answer: IncomingResponse | None, error: Exception | None) -> None:
        self._answer = answer
        self._error = error

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> IncomingResponse | None:
        if self._error is not None:
            raise self._error
        return self._answer


class RecordingPostProcessor(PostProcessor):
    """A postprocessor that records instead of publishing (see the module docstring).

    ``async_mode``: what it returns is awaitable, as on the async engine.
    """

    def __init__(self, discovery: AbstractDiscovery, *, async_mode: bool = False) -> None:
        super().__init__(_NoPublisher(), discovery)
        self.sent = SentMessages()
        self.async_mode = async_mode
        self._answers: dict[str, CannedAnswer] = {}

    def answer(self, destination: str, answer: CannedAnswer) -> None:
        """What a waiting call to ``destination`` (``service.method``) gets."""
        self._answers[destination] = answer

    def _record(self, message: Message, waited: bool = False) -> Sent:
        exchange, routing_key, _, wire = self._wire(message)
        record = Sent(_kind(message), message, exchange, routing_key, wire, waited)
        self.sent.append(record)
        return record

    def _returned(self, value: Any = None, error: Exception | None = None) -> Any:
        if not self.async_mode:
            if error is not None:
                raise error
            return value
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
        return future

    def process(self, message_obj: Message) -> Any:
        self._record(message_obj)
        return self._returned()

    def process_async(self, message_obj: Message) -> Any:
        self._record(message_obj)
        return self._returned(AnswerHandle(None, None) if not self.async_mode else None)

    async def send(self, message_obj: Message) -> None:
        self._record(message_obj)

    def _canned(self, request: Request) -> tuple[IncomingResponse | None, Exception | None]:
        destination = request.headers["destination"]
        if destination not in self._answers:
            known = ", ".join(sorted(self._answers)) or "none"
            return None, LookupError(
                f"no canned answer for a call to {destination} (answers set for: {known}); "
                f"set one with answer({destination!r}, {{...}})"
            )
        canned = self._answers[destination]
        if callable(canned) and not isinstance(canned, BaseException):
            canned = canned(dict(request.payload))
        if isinstance(canned, BaseException):
            error = Error.create_by_request(request, canned)
            incoming = _factory.create(AMQPMessage.create_from_message(error))
            assert isinstance(incoming, IncomingError)
            return None, incoming.to_exception()
        if not isinstance(canned, dict):
            return None, TypeError(
                f"the canned answer for {destination} must be a dict or an exception, "
                f"got {type(canned).__name__}"
            )
        response = Response.create_by_request(request, canned)
        incoming = _factory.create(AMQPMessage.create_from_message(response))
        assert isinstance(incoming, IncomingResponse)
        return incoming, None

    def call(self, request: Request, timeout: float) -> Any:
        self._record(request, waited=True)
        answer, error = self._canned(request)
        return self._returned(answer, error)

    def start_call(self, request: Request, timeout: float) -> Any:
        self._record(request, waited=True)
        answer, error = self._canned(request)
        if not self.async_mode:
            return AnswerHandle(answer, error)
        return self._returned(answer, error)


class _NoPublisher:
    """The publisher of a recording postprocessor: never used (it records instead)."""

    def publish(
        self, exchange: str, routing_key: str, message: AMQPMessage, mandatory: bool = True
    ) -> Any:
        raise exceptions.TavridaError("a recording postprocessor does not publish")


__all__ = ["AnswerHandle", "CannedAnswer", "RecordingPostProcessor", "Sent", "SentMessages"]
