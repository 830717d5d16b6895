"""Tutorial, chapter 6 — Middlewares: steps before and after a controller's handlers.

A middleware is a ``middleware.Middleware`` subclass with one method,
``process(message)``; a controller adds its middlewares in ``__init__``, and
they run in the order added.

- Incoming middlewares get the incoming message before the handler. Returning
  the message (changed or not) goes on to the next step; returning a
  ``Response`` or an ``Error`` stops there and answers the caller at once;
  raising an exception answers the caller with an Error.
- Outgoing middlewares get the ``Response`` or ``Error`` a request handler
  produced, and must return one.

The Greeter service checks a ``token`` header, tidies the ``name`` parameter,
and stamps its answers. A client calls it three times: with the token, without
it, and without a name (the server logs that last failure, with its traceback,
on stderr: that is expected).

Run::

    python samples/tutorial/06_middlewares.py
    python samples/tutorial/06_middlewares.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys

from tavrida2 import (
    client,
    config,
    discovery,
    dispatcher,
    exceptions,
    messages,
    middleware,
    server,
    service,
)


class RequireToken(middleware.Middleware):
    """Incoming: refuse requests whose ``token`` header is not the expected one."""

    def __init__(self, token: str) -> None:
        self.token = token

    def process(self, message: messages.Message) -> messages.Message:
        if message.headers.get("token") != self.token:
            print("[RequireToken] no valid token: answering with an Error", flush=True)
            return messages.Error.create_by_request(message, PermissionError("invalid token"))
        print("[RequireToken] token accepted", flush=True)
        return message


class TidyName(middleware.Middleware):
    """Incoming: clean up the ``name`` parameter before the handler sees it."""

    def process(self, message: messages.Message) -> messages.Message:
        raw = message.payload["name"]  # no name: KeyError, and the caller gets an Error
        message.payload["name"] = raw.strip().title()
        print(f"[TidyName] {raw!r} -> {message.payload['name']!r}", flush=True)
        return message


class Stamp(middleware.Middleware):
    """Outgoing: add who answered to every Response."""

    def process(self, message: messages.Message) -> messages.Message:
        if isinstance(message, messages.Response):
            message.payload["served_by"] = "greeter"
            print("[Stamp] response stamped", flush=True)
        return message


@dispatcher.rpc_service("greeter")
class GreeterController(service.ServiceController):
    def __init__(self, postprocessor):
        super().__init__(postprocessor)
        self.add_incoming_middleware(RequireToken("s3cret"))
        self.add_incoming_middleware(TidyName())
        self.add_outgoing_middleware(Stamp())

    @dispatcher.rpc_method(service="greeter", method="greet")
    def greet(self, request, proxy, name):
        print(f"[greeter.greet] name={name!r}", flush=True)
        return {"greeting": f"Hello, {name}!"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    conf = config.ConnectionConfig.from_url(args.url)

    srv = server.Server(
        conf,
        queue_name="greeter_service",
        exchange_name="greeter_exchange",
        service_list=[GreeterController],
    )
    threads = server.run_servers([srv])

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("greeter", "greeter_exchange")
    outcomes = []
    try:
        # Headers given to the client travel with every request it sends.
        with client.RPCClient(
            config=conf, discovery=disc, source="client_app", headers={"token": "s3cret"}
        ) as cli:
            answer = cli.greeter.greet(name="  ada lovelace ").call(timeout=5)
            print(f"client: answer {answer.payload}", flush=True)
            expected = {"greeting": "Hello, Ada Lovelace!", "served_by": "greeter"}
            outcomes.append(answer.payload == expected)
            try:
                cli.greeter.greet().call(timeout=5)
                outcomes.append(False)
            except exceptions.RemoteError as error:
                print(f"client: no name -> RemoteError {error}")
                outcomes.append(error.remote_class == "KeyError")

        with client.RPCClient(config=conf, discovery=disc, source="client_app") as cli:
            try:
                cli.greeter.greet(name="eve").call(timeout=5)
                outcomes.append(False)
            except exceptions.RemoteError as error:
                print(f"client: no token -> RemoteError {error}")
                outcomes.append(error.remote_class == "PermissionError")
    finally:
        srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    ok = outcomes == [True, True, True]
    print("done: middlewares answered as expected" if ok else f"FAILED: {outcomes}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
