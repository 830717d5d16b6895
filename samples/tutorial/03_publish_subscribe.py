"""Tutorial, chapter 3 — Publication and Subscription.

Hello publishes a notification from its request handler with
``proxy.publish(**payload)``; it goes to Hello's notification exchange with
the routing key ``test_hello.hello`` (the entry point it was published from).
Every service with a ``subscription_method(service="test_hello",
method="hello")`` gets its own copy: here World, as in the Tavrida tutorial,
and an Audit service on a server of its own.

Discovery: the publisher registers its *local publisher* exchange; each
subscriber registers Hello as a *remote publisher* with the same exchange, and
its server binds its queue there for ``test_hello.hello``.

Run::

    python samples/tutorial/03_publish_subscribe.py
    python samples/tutorial/03_publish_subscribe.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, server, service

NOTIFICATIONS = "test_notification_exchange"
world_notified = threading.Event()
audit_notified = threading.Event()
_print_lock = threading.Lock()


def say(*lines: str) -> None:
    """Print lines together: handlers run in several threads."""
    with _print_lock:
        print("\n".join(lines), flush=True)


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def handler(self, request, proxy, param):
        say(f"---- request to hello: param={param!r}")
        say("---- hello publishes a notification")
        proxy.publish(param="hello publication")


@dispatcher.rpc_service("test_world")
class WorldController(service.ServiceController):
    @dispatcher.subscription_method(service="test_hello", method="hello")
    def hello_subscription(self, notification, proxy, param):
        say(
            f"---- notification from hello to world: param={param!r}",
            f"     type={notification.message_type} source={notification.source}",
        )
        world_notified.set()


@dispatcher.rpc_service("test_audit")
class AuditController(service.ServiceController):
    @dispatcher.subscription_method(service="test_hello", method="hello")
    def hello_subscription(self, notification, proxy, param):
        say(f"---- notification from hello to audit: param={param!r}")
        audit_notified.set()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # Hello publishes to its own notification exchange.
    hello_disc = discovery.LocalDiscovery()
    hello_disc.register_local_publisher("test_hello", NOTIFICATIONS)
    HelloController.set_discovery(hello_disc)

    # Each subscriber knows where Hello publishes; its server binds its queue there.
    for controller in (WorldController, AuditController):
        disc = discovery.LocalDiscovery()
        disc.register_remote_publisher("test_hello", NOTIFICATIONS)
        controller.set_discovery(disc)

    def serve(
        queue: str, exchange: str, controller: type[service.ServiceController], async_engine: bool
    ) -> server.Server:
        conf = config.ConnectionConfig.from_url(args.url, async_engine=async_engine)
        return server.Server(
            conf, queue_name=queue, exchange_name=exchange, service_list=[controller]
        )

    servers = [
        serve("test_service", "test_exchange", HelloController, async_engine=True),
        serve("test_world_service", "test_world_exchange", WorldController, async_engine=False),
        serve("test_audit_service", "test_audit_exchange", AuditController, async_engine=False),
    ]
    threads = server.run_servers(servers)

    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("test_hello", "test_exchange")
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        with client.RPCClient(config=conf, discovery=client_disc, source="client_app") as cli:
            cli.test_hello.hello(param=123).cast()
        ok = world_notified.wait(10) and audit_notified.wait(10)
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print("done: both subscribers were notified" if ok else "FAILED: a subscriber missed it")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
