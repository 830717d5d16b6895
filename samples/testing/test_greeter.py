"""Tests of greeter.py with tavrida2's pytest plugin (docs/testing.md).

Run them with ``pytest samples/testing`` (tavrida2 installed: the plugin is on).
"""

from __future__ import annotations

import pytest
from greeter import Greeter, Guestbook, Profiles

from tavrida2.exceptions import RemoteError
from tavrida2.testing import ControllerHarness


def test_greet_calls_profiles_and_publishes():
    harness = ControllerHarness(Greeter)
    harness.answer("profiles.get", {"title": "Dr."})

    outcome = harness.call("greeter.greet", {"name": "ann"})

    assert outcome.payload == {"greeting": "hello Dr. ann"}
    outcome.sent.assert_called("profiles.get", name="ann")
    outcome.sent.assert_published(greeted="ann")


def test_greet_fails_when_profiles_fails():
    harness = ControllerHarness(Greeter)
    harness.answer("profiles.get", ValueError("no such profile"))

    outcome = harness.call("greeter.greet", {"name": "bob"})

    assert isinstance(outcome.error, RemoteError)
    assert outcome.error.remote_message == "no such profile"
    assert outcome.answer.headers["message_type"] == "error"
    assert outcome.sent.publications == []


def test_greet_refuses_a_request_without_name():
    outcome = ControllerHarness(Greeter).call("greeter.greet", {})

    assert "'name' is a required property" in str(outcome.error)
    assert outcome.sent.calls == []


def test_guestbook_writes_down_the_greeted(tavrida2_isolation):
    Guestbook.names = []

    ControllerHarness(Guestbook).notification("greeter.greet", {"greeted": "ann"})

    assert Guestbook.names == ["ann"]


@pytest.mark.tavrida2_with_rabbitmq
def test_greeting_through_the_broker(tavrida2_server):
    Guestbook.names = []
    tavrida2_server(Greeter)
    tavrida2_server(Profiles, async_engine=True)
    tavrida2_server(Guestbook)

    answer = tavrida2_server.client.greeter.greet(name="ann").call(timeout=10)

    assert answer.payload == {"greeting": "hello Dr. ann"}
    assert tavrida2_server.wait_until(lambda: Guestbook.names) == ["ann"]


def test_profiles_error_reaches_the_client(tavrida2_server):
    tavrida2_server(Profiles)

    with pytest.raises(RemoteError, match="no name"):
        tavrida2_server.client.profiles.get(name="").call(timeout=10)
