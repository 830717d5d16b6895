"""Three small services, tested in test_greeter.py with tavrida2's pytest plugin.

``greeter.greet`` asks ``profiles.get`` for a title (a call that waits for its
answer), publishes whom it greeted, and answers with the greeting;
``guestbook`` subscribes to those notifications. See docs/testing.md.
"""

from __future__ import annotations

from typing import ClassVar

from tavrida2 import dispatcher, service


@dispatcher.rpc_service("greeter")
class Greeter(service.ServiceController):
    @dispatcher.rpc_method(method="greet", schema={"required": ["name"]})
    def greet(self, request, proxy, name):
        profile = proxy.profiles.get(name=name).call(wait=True, timeout=10)
        proxy.publish(greeted=name)
        return {"greeting": f"hello {profile.payload['title']} {name}"}


@dispatcher.rpc_service("profiles")
class Profiles(service.ServiceController):
    titles: ClassVar[dict[str, str]] = {"ann": "Dr."}

    @dispatcher.rpc_method(method="get")
    def get(self, request, proxy, name):
        if not name:
            raise ValueError("no name")
        return {"title": self.titles.get(name, "dear")}


@dispatcher.rpc_service("guestbook")
class Guestbook(service.ServiceController):
    names: ClassVar[list[str]] = []

    @dispatcher.subscription_method(service="greeter", method="greet")
    def on_greet(self, notification, proxy, greeted):
        Guestbook.names.append(greeted)
