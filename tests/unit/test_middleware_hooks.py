"""Each incoming middleware that let a message through hears exactly once how it ended.

``handled`` when the handler returned; ``failed`` when it raised, when a
middleware after it raised, when the answer could not be made, or when a
stopping async server cancelled the handler; ``stopped`` when a middleware
after it stopped the message with an answer. (``tavrida2.metrics`` relies on
this to count the messages in flight.) On the memory broker, both engines.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tavrida2 import config, dispatcher, messages, middleware, server, service
from tavrida2.discovery import LocalDiscovery
from tavrida2.drivers.memory import MemoryBroker
from tests.unit.bad_input_support import body_of, call_headers

BROKER = "hooks"
QUEUE, EXCHANGE = "hooks_queue", "hooks_exchange"
Answer = messages.Response | messages.Error
ENGINES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


class Recorder(middleware.Middleware):
    """Records each hook call as ``(name, hook)``; ``process`` may stop or raise."""

    def __init__(self, name: str, log: list[tuple[str, str]], action: str = "pass") -> None:
        self.name = name
        self.log = log
        self.action = action

    def process(self, message: messages.Message) -> messages.Message:
        self.log.append((self.name, "process"))
        if self.action == "stop":
            return messages.Error.create_by_request(message, ValueError("stopped here"))
        if self.action == "raise":
            raise RuntimeError("middleware broke")
        return message

    def handled(self, message: messages.Message) -> None:
        self.log.append((self.name, "handled"))

    def failed(self, message: messages.Message, error: BaseException) -> None:
        self.log.append((self.name, f"failed:{type(error).__name__}"))

    def stopped(
        self, message: messages.Message, answer: messages.Response | messages.Error
    ) -> None:
        self.log.append((self.name, "stopped"))


class Rig:
    """A ``svc`` server whose controller has the middlewares ``actions`` names, in order."""

    def __init__(self, async_engine: bool, actions: list[str], stop_timeout: float = 5) -> None:
        self.log: list[tuple[str, str]] = []
        self.broker = MemoryBroker.get(BROKER)
        self.entered = threading.Event()
        log, entered = self.log, self.entered
        names = [f"m{n}" for n in range(len(actions))]

        class Svc(service.ServiceController):
            def __init__(self, postprocessor: Any) -> None:
                super().__init__(postprocessor)
                for name, action in zip(names, actions, strict=True):
                    self.add_incoming_middleware(Recorder(name, log, action))

            @dispatcher.rpc_method(service="svc", method="ok")
            def ok(self, request, proxy):
                return {}

            @dispatcher.rpc_method(service="svc", method="boom")
            def boom(self, request, proxy):
                raise ValueError("handler broke")

            @dispatcher.rpc_method(service="svc", method="not_json")
            def not_json(self, request, proxy):
                return {"when": datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)}

        if async_engine:

            async def forever(self, request, proxy):
                entered.set()
                await asyncio.sleep(60)

            Svc.forever = dispatcher.rpc_method(service="svc", method="forever")(forever)
        dispatcher.rpc_service("svc")(Svc)
        disc = LocalDiscovery()
        disc.register_remote_service("caller", "caller_exchange")
        Svc.set_discovery(disc)
        conf = config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=async_engine)
        self.server = server.Server(
            conf, QUEUE, EXCHANGE, [Svc], dead_letters=False, stop_timeout=stop_timeout
        )
        self._threads = server.run_servers([self.server])

    def cast(self, method: str) -> None:
        headers = call_headers(f"svc.{method}", reply_to="")
        self.broker.publish(EXCHANGE, f"svc.{method}", body_of({}), headers, None, True)

    def wait(self, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; log: {self.log}"
            time.sleep(0.005)

    def hooks(self) -> list[tuple[str, str]]:
        return [entry for entry in self.log if entry[1] != "process"]

    def stop(self) -> None:
        self.server.stop()
        for thread in self._threads:
            thread.join(timeout=10)
            assert not thread.is_alive()


@pytest.fixture(params=ENGINES)
def async_engine(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def rig_of(async_engine: bool) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(actions: list[str], **kwargs: Any) -> Rig:
        rig = Rig(async_engine, actions, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop()


def test_a_handler_that_returns_is_handled_in_reverse_order(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["pass", "pass"])
    rig.cast("ok")
    rig.wait(lambda: len(rig.hooks()) == 2)
    assert rig.log == [("m0", "process"), ("m1", "process"), ("m1", "handled"), ("m0", "handled")]


def test_a_handler_that_raises_is_failed(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["pass"])
    rig.cast("boom")
    rig.wait(lambda: len(rig.hooks()) == 1)
    assert rig.hooks() == [("m0", "failed:ValueError")]


def test_those_before_a_middleware_that_stops_hear_stopped(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["pass", "pass", "stop", "pass"])
    rig.cast("ok")
    rig.wait(lambda: len(rig.hooks()) == 2)
    rig.broker.wait_until_idle()
    assert rig.log == [
        ("m0", "process"),
        ("m1", "process"),
        ("m2", "process"),
        ("m1", "stopped"),
        ("m0", "stopped"),
    ]


def test_those_before_a_middleware_that_raises_hear_failed(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["pass", "raise", "pass"])
    rig.cast("ok")
    rig.wait(lambda: len(rig.hooks()) == 1)
    rig.broker.wait_until_idle()
    assert rig.log == [("m0", "process"), ("m1", "process"), ("m0", "failed:RuntimeError")]


def test_an_answer_that_cannot_be_made_is_failed(rig_of: Callable[..., Rig]) -> None:
    rig = rig_of(["pass"])
    headers = call_headers("svc.not_json", reply_to="caller.on_answer")
    rig.broker.publish(EXCHANGE, "svc.not_json", body_of({}), headers, None, True)
    rig.wait(lambda: len(rig.hooks()) == 1)
    assert rig.hooks() == [("m0", "failed:TypeError")]


def test_a_handler_cancelled_by_a_stopping_server_is_failed() -> None:
    """The async engine (a sync handler is not cancelled: its connection is cut)."""
    rig = Rig(True, ["pass"], stop_timeout=0.2)
    try:
        rig.cast("forever")
        assert rig.entered.wait(10)
    finally:
        rig.stop()
    assert rig.hooks() == [("m0", "failed:CancelledError")]
