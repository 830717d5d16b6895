"""Row 5: ``middleware.Middleware`` is a concrete base, as in Tavrida 1.0.

1.0's docs: a middleware is a class inherited from ``middleware.Middleware``
that implements ``process()``, taking a message and returning the message for
the next middleware; the base's ``process`` returns the message it got.
"""

from __future__ import annotations

from typing import Any

import pytest

from tavrida2 import dispatcher, messages, middleware, service
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
