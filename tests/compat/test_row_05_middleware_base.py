"""Row 5: ``middleware.Middleware`` is a concrete base, as in Tavrida 1.0.

1.0's docs: a middleware is a class inherited from ``middleware.Middleware``
that implements ``process()``, taking a message and returning the message for
the next middleware; the base's ``process`` returns the message it got.
"""

from __future__ import annotations

from typing import Any

import pytest

from tavrida2 import dispatcher, exceptions, messages, middleware, service
from tests.compat.memory_rig import Rig


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest) -> Any:
    made = Rig(request.param)
    yield made
    made.stop()


def test_row_05a_the_base_can_be_created_and_passes_the_message_on() -> None:
    message = messages.IncomingRequestCast(
        {"source": "a.b", "destination": "c.d", "message_type": "request"}, {}, {"x": 1}
    )

    assert middleware.Middleware().process(message) is message


def test_row_05a_a_subclass_that_extends_process_through_super_works(rig: Rig) -> None:
    seen: list[str] = []

    class Counting(middleware.Middleware):
        def process(self, message):
            seen.append(message.message_type)
            return super().process(message)

    @dispatcher.rpc_service("mw_hello")
    class Hello(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            self.add_incoming_middleware(Counting())
            self.add_outgoing_middleware(Counting())
            self.add_incoming_middleware(middleware.Middleware())  # the base itself, as a step

        @dispatcher.rpc_method(service="mw_hello", method="hello")
        def hello(self, request, proxy, param):
            return {"parameter": param}

    rig.serve("mw_queue", "mw_exchange", Hello)
    answer = rig.run(lambda cli: cli.mw_hello.hello(param=7).call(timeout=5))

    assert answer.payload == {"parameter": 7}
    assert seen == ["request", "response"]  # the incoming request, then the answer


def test_row_05a_a_subclass_overriding_nothing_changes_nothing(rig: Rig) -> None:
    class Marker(middleware.Middleware):
        """A 1.0 user's marker class: no process() of its own."""

    @dispatcher.rpc_service("mw_plain")
    class Plain(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            self.add_incoming_middleware(Marker())
            self.add_outgoing_middleware(Marker())

        @dispatcher.rpc_method(service="mw_plain", method="echo")
        def echo(self, request, proxy, value):
            return {"value": value}

    rig.serve("mw_plain_queue", "mw_plain_exchange", Plain)
    answer = rig.run(lambda cli: cli.mw_plain.echo(value="v").call(timeout=5))

    assert answer.payload == {"value": "v"}


class Refuse(middleware.Middleware):
    def process(self, message):
        raise PermissionError("no entry")


class ReturnNothing(middleware.Middleware):
    def process(self, message):
        return None


def guarded_service(
    runs: list[str], incoming: list[Any], outgoing: list[Any]
) -> type[service.ServiceController]:
    @dispatcher.rpc_service("mw_guarded")
    class Guarded(service.ServiceController):
        def __init__(self, postprocessor):
            super().__init__(postprocessor)
            for step in incoming:
                self.add_incoming_middleware(step)
            for step in outgoing:
                self.add_outgoing_middleware(step)

        @dispatcher.rpc_method(service="mw_guarded", method="go")
        def go(self, request, proxy):
            runs.append("go")
            return {"went": True}

    return Guarded


def test_row_05b_kept_a_cast_an_incoming_middleware_refuses_is_not_handled(rig: Rig) -> None:
    """1.0 went on to the handler when a middleware raised on a cast; tavrida2 stops there."""
    runs: list[str] = []
    rig.serve("mw_g_queue", "mw_g_exchange", guarded_service(runs, [Refuse()], []))

    rig.run(lambda cli: cli.mw_guarded.go().cast())

    assert runs == []
    if not rig.is_async:  # retried later, as a failing handler's cast (row 9b)
        [waiting] = rig.broker.messages_in("mw_g_queue.retry")
        assert waiting.headers["x-tavrida2-attempt"] == 2


@pytest.mark.parametrize(
    ("incoming", "outgoing", "remote_class", "code"),
    [
        ([ReturnNothing()], [], "tavrida2.exceptions.IncorrectMessage", 1031),
        ([], [Refuse()], "PermissionError", 1000),
        ([], [ReturnNothing()], "tavrida2.exceptions.IncorrectOutgoingMessage", 1031),
    ],
    ids=["incoming_returns_none", "outgoing_raises", "outgoing_returns_none"],
)
def test_row_05c_kept_a_call_whose_middleware_fails_is_answered_with_an_error(
    rig: Rig, incoming: list[Any], outgoing: list[Any], remote_class: str, code: int
) -> None:
    """1.0 answered nothing (the exception reached its driver); tavrida2 answers an Error."""
    runs: list[str] = []
    rig.serve("mw_g_queue", "mw_g_exchange", guarded_service(runs, incoming, outgoing))

    def call(cli: Any) -> Any:
        async def waiting() -> exceptions.RemoteError:
            with pytest.raises(exceptions.RemoteError) as caught:
                await cli.mw_guarded.go().call(timeout=5)
            return caught.value

        if rig.is_async:
            return waiting()
        with pytest.raises(exceptions.RemoteError) as caught:
            cli.mw_guarded.go().call(timeout=5)
        return caught.value

    error = rig.run(call)

    assert (error.remote_class, error.code) == (remote_class, code)
