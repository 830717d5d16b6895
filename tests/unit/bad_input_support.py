"""Support of the bad-input tests: a target service, a caller that records answers, a rig.

The rig runs two servers on one memory broker, on the sync or the async engine:
``target`` (the service that gets the bad input) and ``caller`` (whose
``rpc_response_method``/``rpc_error_method`` handlers record every answer).
Tests publish raw messages straight into the broker, as a foreign or broken
client would.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from tavrida2 import config, dispatcher, exceptions, server, service
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.discovery import LocalDiscovery
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.messages import AMQPMessage, new_id
from tavrida2.postprocessor import PostProcessor
from tavrida2.preprocessor import PreProcessor
from tavrida2.router import RoutingTable

TARGET_EXCHANGE = "target_exchange"
TARGET_QUEUE = "target_queue"
CALLER_EXCHANGE = "caller_exchange"
CALLER_QUEUE = "caller_queue"
#: Where the caller waits for answers (the ``reply_to`` of every call).
REPLY_TO = "caller.on_answer"


@dispatcher.rpc_service("target")
class Target(service.ServiceController):
    """The service under attack; ``handled`` records what its handlers got."""

    handled: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    @dispatcher.rpc_method(method="echo")
    def echo(self, request, proxy, value):
        self.handled.append(("echo", {"value": value}))
        return {"value": value}

    @dispatcher.rpc_method(method="explode")
    def explode(self, request, proxy, value):
        self.handled.append(("explode", {"value": value}))
        raise ValueError(f"kaboom {value}")

    @dispatcher.rpc_method(method="wrong")
    def wrong(self, request, proxy):
        self.handled.append(("wrong", {}))
        return ["not", "a", "dict"]

    @dispatcher.rpc_method(method="forward")
    def forward(self, request, proxy, service_name):
        """Calls ``<service_name>.sink`` with a payload that JSON cannot carry."""
        when = datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)
        proxy[service_name].sink(when=when, ok=1).call()
        return {"sent": True}

    @dispatcher.rpc_method(method="relay")
    def relay(self, request, proxy, service_name):
        """Calls ``<service_name>.sink`` with a good payload; the caller learns what happened."""
        proxy[service_name].sink(value=1).call()
        return {"sent": True}


@dispatcher.rpc_service("strict_target")
class StrictTarget(Target):
    """``Target`` with strict parameters: unknown payload keys are refused."""

    strict_parameters = True


@dispatcher.rpc_service("kwargs_target")
class KwargsTarget(service.ServiceController):
    """A handler that takes any payload (``**payload``)."""

    @dispatcher.rpc_method(method="any")
    def any(self, request, proxy, **payload):
        Target.handled.append(("any", dict(payload)))
        return {"keys": sorted(payload)}


#: Entry points the caller takes answers from (responses and errors).
ANSWERING = (
    "kwargs_target.any",
    "target.echo",
    "target.explode",
    "target.wrong",
    "target.forward",
    "target.relay",
    "target.nope",
    "ghost.echo",
    "strict_target.echo",
)


@dataclass
class Answer:
    kind: str  # "response" or "error"
    source: str
    payload: dict[str, Any]


def make_caller() -> type[service.ServiceController]:
    """A ``caller`` service with a response and an error handler per entry point of ANSWERING."""
    answers: list[Answer] = []
    namespace: dict[str, Any] = {"answers": answers}
    for index, ep in enumerate(ANSWERING):
        remote, method = ep.split(".")

        def on_response(self, response, proxy, **payload):
            answers.append(Answer("response", response.headers["source"], dict(payload)))

        def on_error(self, error, proxy):
            answers.append(Answer("error", error.headers["source"], dict(error.payload)))

        namespace[f"response_{index}"] = dispatcher.rpc_response_method(remote, method)(on_response)
        namespace[f"error_{index}"] = dispatcher.rpc_error_method(remote, method)(on_error)
    cls = type("Caller", (service.ServiceController,), namespace)
    return dispatcher.rpc_service("caller")(cls)


def call_headers(destination: str | None = "target.echo", **overrides: Any) -> dict[str, Any]:
    """Headers of a valid call from the caller; ``overrides`` change or (None) remove some."""
    headers: dict[str, Any] = {
        "correlation_id": new_id(),
        "request_id": new_id(),
        "message_id": new_id(),
        "message_type": "request",
        "reply_to": REPLY_TO,
        "source": REPLY_TO,
        "destination": destination,
    }
    for key, value in {"destination": destination, **overrides}.items():
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return headers


def body_of(payload: dict[str, Any], context: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"context": context or {}, "payload": payload}).encode()


class _NoPublisher:
    def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing should be published here")


def prepare_error(headers: Any, body: bytes, *classes: type) -> Exception:
    """What the preprocessor raises for a delivery (the engine catches exactly this)."""
    controllers = [
        cls(PostProcessor(_NoPublisher(), LocalDiscovery())) for cls in classes or (Target,)
    ]
    preprocessor = PreProcessor(RoutingTable(controllers), controllers)
    with pytest.raises(Exception) as caught:
        preprocessor.prepare(AMQPMessage(body, headers))
    return caught.value


def assert_logged(caplog: pytest.LogCaptureFixture, *fragments: str) -> logging.LogRecord:
    """The ERROR record that contains every fragment."""
    for record in caplog.records:
        text = record.getMessage()
        if record.levelno >= logging.ERROR and all(f in text for f in fragments):
            return record
    logged = "\n".join(r.getMessage() for r in caplog.records)
    raise AssertionError(f"no ERROR record with {fragments}; logged:\n{logged}")


@dataclass
class DeadLetter:
    """A message of a dead-letter queue: the headers it was sent with, and why it is there."""

    headers: Any
    reason: str
    error_code: int | None


def dead_letters(broker: MemoryBroker, queue: str) -> list[DeadLetter]:
    """What the server of ``queue`` dead-lettered, oldest first (left in the queue)."""
    found = []
    for stored in broker.messages_in(f"{queue}.dlq"):
        headers = {
            k: v
            for k, v in stored.headers.items()
            if not k.startswith("x-tavrida2-") and k != "x-death"
        }
        found.append(
            DeadLetter(
                headers,
                str(stored.headers.get("x-tavrida2-reason", "")),
                stored.headers.get("x-tavrida2-error-code"),
            )
        )
    return found


class Rig:
    """The target and caller servers on one memory broker, on one engine.

    Failing casts are dead-lettered at the first failure (``max_attempts=1``).
    """

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.broker_name = f"bad-input-{engine}"
        self.broker = MemoryBroker.get(self.broker_name)
        self.caller = make_caller()
        self.answers: list[Answer] = self.caller.answers  # type: ignore[attr-defined]
        self.servers: list[server.Server] = []
        self._threads: list[threading.Thread] = []
        Target.handled = []

    @property
    def is_async(self) -> bool:
        return self.engine == "async"

    def config(self) -> config.ConnectionConfig:
        return config.ConnectionConfig.from_url(
            f"memory://{self.broker_name}", async_engine=self.is_async
        )

    def start(self, *targets: type[service.ServiceController]) -> server.Server:
        """Serve ``targets`` (default: all three) and the caller; returns the target server."""
        targets = targets or (Target, StrictTarget, KwargsTarget)
        discovery = LocalDiscovery()
        discovery.register_remote_service("caller", CALLER_EXCHANGE)
        discovery.register_remote_service("target", TARGET_EXCHANGE)
        for cls in targets:
            cls.set_discovery(discovery)
        once = DeadLetterPolicy.for_queue
        self.servers = [
            server.Server(
                self.config(),
                TARGET_QUEUE,
                TARGET_EXCHANGE,
                list(targets),
                dead_letters=once(TARGET_QUEUE, max_attempts=1),
            ),
            server.Server(
                self.config(),
                CALLER_QUEUE,
                CALLER_EXCHANGE,
                [self.caller],
                dead_letters=once(CALLER_QUEUE, max_attempts=1),
            ),
        ]
        if self.is_async:
            self._threads = server.run_servers(self.servers)
        else:
            for srv in self.servers:
                srv.start()
        return self.servers[0]

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()
            if not self.is_async and srv.driver is not None:
                srv.driver.close()
        for thread in self._threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "a server did not stop"

    def publish(
        self,
        headers: Any,
        body: bytes,
        routing_key: str = "target.echo",
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.broker.publish(TARGET_EXCHANGE, routing_key, body, headers, properties, True)

    def settle(self) -> None:
        """Deliver until nothing is left in any queue (both engines)."""
        if self.is_async:
            assert self.broker.wait_until_idle(timeout=10), "the broker did not become idle"
        else:
            self.broker.run_until_idle()

    def send(self, headers: Any, body: bytes, routing_key: str = "target.echo") -> None:
        self.publish(headers, body, routing_key)
        self.settle()

    def call(self, payload: dict[str, Any], destination: str = "target.echo", **headers) -> None:
        self.send(call_headers(destination, **headers), body_of(payload))

    def cast(self, payload: dict[str, Any], destination: str = "target.echo", **headers) -> None:
        self.send(call_headers(destination, reply_to="", **headers), body_of(payload))

    def dead_letters(self) -> list[DeadLetter]:
        """What the target server dead-lettered (nothing is discarded: the broker's list)."""
        assert self.broker.discarded == []
        return dead_letters(self.broker, TARGET_QUEUE)

    def assert_still_serves(self) -> None:
        """A good call right after the bad input is answered by the same running server."""
        before = len(self.answers)
        discarded = len(self.dead_letters())
        value = f"still-alive-{new_id()}"
        self.call({"value": value})
        assert self.answers[before:] == [Answer("response", "target.echo", {"value": value})]
        assert len(self.dead_letters()) == discarded
        assert self.broker.message_count(TARGET_QUEUE) == 0


def error_payload(exc_class: type[Exception], code: int) -> dict[str, Any]:
    """The class and code an Error answer carries for ``exc_class``."""
    module = exc_class.__module__
    name = exc_class.__qualname__ if module == "builtins" else f"{module}.{exc_class.__qualname__}"
    return {"class": name, "code": code}


def assert_error_answer(
    answer: Answer, source: str, exc_class: type[Exception], code: int, *message: str
) -> None:
    assert answer.kind == "error", answer
    assert answer.source == source
    assert {k: answer.payload.get(k) for k in ("class", "code")} == error_payload(exc_class, code)
    assert set(answer.payload) == {"class", "message", "code"}
    for fragment in message:
        assert fragment in answer.payload["message"]


__all__ = [
    "REPLY_TO",
    "Answer",
    "KwargsTarget",
    "Rig",
    "StrictTarget",
    "Target",
    "assert_error_answer",
    "assert_logged",
    "body_of",
    "call_headers",
    "exceptions",
    "prepare_error",
]
