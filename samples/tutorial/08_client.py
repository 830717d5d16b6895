"""Tutorial, chapter 8 — Client: calling services from a script.

``client.RPCClient(config, discovery, source, context=None, headers=None,
service=None, correlation_id="", timeout=30)`` sends requests from outside any
service. It keeps one connection, opened on first use and closed by
``close()`` or the end of its ``with`` block. What a client can set:

- ``source``: the name its requests come from, ``"service"`` or ``"service.method"``;
- ``correlation_id``: per client, or per request in ``cast()``/``call()``;
- ``headers`` (and ``add_headers()``): user headers sent with every request;
- ``context``: the initial context of its requests;
- ``service``: fix the service, as Tavrida 1.0 did: ``cli.<method>(...)``.

Hello prints what each request brought. (samples/client_script.py shows the
calls that wait for an answer in detail.)

Run::

    python samples/tutorial/08_client.py
    python samples/tutorial/08_client.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, server, service

REQUESTS = 6
handled: list[int] = []
all_handled = threading.Event()


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def handler(self, request, proxy, param):
        user_headers = request.user_headers()  # the headers that are not Tavrida's own
        print(
            f"[hello #{param}] source={request.source} correlation_id={request.correlation_id}"
            f" headers={user_headers} context={request.context}",
            flush=True,
        )
        handled.append(param)
        if len(handled) == REQUESTS:
            all_handled.set()
        return {"seen": param}


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
        queue_name="client_hello_service",
        exchange_name="client_hello_exchange",
        service_list=[HelloController],
    )
    threads = server.run_servers([srv])

    # Every client needs a discovery that knows the services it calls.
    disc = discovery.LocalDiscovery()
    disc.register_remote_service(service_name="test_hello", exchange_name="client_hello_exchange")
    answer = None
    try:
        # 1. A source name, and a correlation id for one request.
        with client.RPCClient(config=conf, discovery=disc, source="client_app") as cli:
            cli.test_hello.hello(param=1).cast(correlation_id="123-456")
            # cli["name"] is cli.name, for service names that are no identifiers.
            cli["test_hello"].hello(param=2).cast()

        # 2. The source may name a method too.
        with client.RPCClient(config=conf, discovery=disc, source="source_service.method") as cli:
            cli.test_hello.hello(param=3).cast()

        # 3. Tavrida 1.0's form: the service fixed when the client is made.
        with client.RPCClient(
            config=conf, service="test_hello", discovery=disc, source="client_app"
        ) as cli:
            cli.hello(param=4).cast()

        # 4. Headers, context and a correlation id for everything the client sends.
        with client.RPCClient(
            config=conf,
            discovery=disc,
            source="client_app",
            headers={"x-origin": "sample"},
            context={"user": "ann"},
            correlation_id="batch-7",
        ) as cli:
            cli.add_headers({"x-trace": "t-1"})
            cli.test_hello.hello(param=5).cast()
            # call() waits for the answer: the handler's return value.
            answer = cli.test_hello.hello(param=6).call(timeout=5)
            print(f"client: call() answered {answer.payload}", flush=True)
        ok = all_handled.wait(10) and answer.payload == {"seen": 6}
    finally:
        srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print(f"done: {len(handled)} requests handled" if ok else f"FAILED: handled {handled}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
