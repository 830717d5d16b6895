"""Tutorial, chapter 1 — Request Handling: one service, and a script that casts to it.

The Hello service handles the entry point ``test_hello.hello``; a client script
sends it a request with ``cast()`` (nobody waits for an answer). The steps are
those of the Tavrida tutorial:

1. declare a service controller and a handler for ``test_hello.hello``;
2. make a connection config and a server for the service's queue and exchange;
3. start the server;
4. in the client: a discovery that knows where ``test_hello`` lives, a client
   with a ``source`` name, and the cast.

Run it on the in-memory broker (default) or on RabbitMQ::

    python samples/tutorial/01_request_handling.py
    python samples/tutorial/01_request_handling.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, server, service

# Set by the handler, so that this script knows when the work is done.
handled = threading.Event()


# -- the service -------------------------------------------------------------------


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def handler(self, request, proxy, param):
        # ``param`` is the payload key of the same name; ``request`` carries the rest.
        print(f"[test_hello.hello] param={param!r}", flush=True)
        print(f"[test_hello.hello] {type(request).__name__} from {request.source}", flush=True)
        handled.set()
        # Returning None: a cast has nobody to answer anyway.


# -- running it ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # The service side. The tutorial runs Hello on the async engine; a plain
    # (not ``async def``) handler then runs in an executor thread.
    server_conf = config.ConnectionConfig.from_url(args.url, async_engine=True)
    srv = server.Server(
        server_conf,
        queue_name="test_service",
        exchange_name="test_exchange",
        service_list=[HelloController],
    )
    # srv.run() blocks until SIGINT/SIGTERM; here it runs in a thread instead,
    # so that one script can show both sides.
    threads = server.run_servers([srv])
    print(f"server: consuming queue test_service on {server_conf.to_url()}", flush=True)

    # The client side: discovery maps the service name to its exchange.
    client_conf = config.ConnectionConfig.from_url(args.url)
    disc = discovery.LocalDiscovery()
    disc.register_remote_service(service_name="test_hello", exchange_name="test_exchange")
    try:
        with client.RPCClient(config=client_conf, discovery=disc, source="client_app") as cli:
            cli.test_hello.hello(param=123).cast()
            print("client: cast test_hello.hello(param=123)", flush=True)
        ok = handled.wait(timeout=10)
    finally:
        srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print("done: the request was handled" if ok else "FAILED: the request was not handled")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
