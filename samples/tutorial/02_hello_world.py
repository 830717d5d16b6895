"""Tutorial, chapter 2 — two services that talk: request, response and error handling.

A client casts ``test_hello.hello`` twice. For each, Hello calls
``test_world.world`` with ``call()``: World's answer does not come back to the
line that called, it arrives at Hello's ``rpc_response_method`` for
``test_world.world`` — or, when World raises, at its ``rpc_error_method``
(an error handler takes only the error and the proxy).

Each service binds a discovery that tells where the other one lives: Hello
sends its requests to World's exchange, World sends its answers to Hello's.
As in the Tavrida tutorial, Hello runs on the async engine and World on the
sync engine. World logs the failure of the second request (with its
traceback) on stderr: that is expected.

Run::

    python samples/tutorial/02_hello_world.py
    python samples/tutorial/02_hello_world.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, server, service

got_response = threading.Event()
got_error = threading.Event()
_print_lock = threading.Lock()


def say(*lines: str) -> None:
    """Print lines together: handlers of the async engine run in several threads."""
    with _print_lock:
        print("\n".join(lines), flush=True)


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def handler(self, request, proxy, param):
        say(f"---- request to hello: param={param!r}")
        # call(): World answers, and the answer goes to world_resp / world_error.
        proxy.test_world.world(param=param).call()

    @dispatcher.rpc_response_method(service="test_world", method="world")
    def world_resp(self, response, proxy, param):
        # ``param`` here is the key of World's answer, not of our request.
        say(
            f"---- response from world to hello: param={param!r}",
            f"     context={response.context}",
            f"     source={response.source} destination={response.destination}",
        )
        got_response.set()

    @dispatcher.rpc_error_method(service="test_world", method="world")
    def world_error(self, error, proxy):
        # The payload of an error: {"class": ..., "message": ..., "code": ...}.
        say(
            f"---- error from world to hello: {error.payload['class']}",
            f"     message={error.payload['message']!r} code={error.payload['code']}",
        )
        got_error.set()


@dispatcher.rpc_service("test_world")
class WorldController(service.ServiceController):
    @dispatcher.rpc_method(service="test_world", method="world")
    def world(self, request, proxy, param):
        say(f"---- request to world: param={param!r} from {request.source}")
        if param < 0:
            # Any exception becomes an Error message for the caller.
            raise ValueError(f"no world for param {param}")
        return {"param": "world response"}  # a dict becomes the Response payload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # Hello sends requests to World: it needs World's exchange.
    hello_disc = discovery.LocalDiscovery()
    hello_disc.register_remote_service("test_world", "test_world_exchange")
    HelloController.set_discovery(hello_disc)

    # World sends responses and errors to Hello: it needs Hello's exchange.
    world_disc = discovery.LocalDiscovery()
    world_disc.register_remote_service("test_hello", "test_exchange")
    WorldController.set_discovery(world_disc)

    servers = [
        server.Server(
            config.ConnectionConfig.from_url(args.url, async_engine=True),
            queue_name="test_service",
            exchange_name="test_exchange",
            service_list=[HelloController],
        ),
        server.Server(
            config.ConnectionConfig.from_url(args.url),
            queue_name="test_world_service",
            exchange_name="test_world_exchange",
            service_list=[WorldController],
        ),
    ]
    threads = server.run_servers(servers)

    # The client script is the one of chapter 1.
    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service(service_name="test_hello", exchange_name="test_exchange")
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        with client.RPCClient(config=conf, discovery=client_disc, source="client_app") as cli:
            cli.test_hello.hello(param=123).cast()
            cli.test_hello.hello(param=-1).cast()
        ok = got_response.wait(10) and got_error.wait(10)
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print("done: one response, one error" if ok else "FAILED: an answer is missing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
