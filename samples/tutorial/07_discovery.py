"""Tutorial, chapter 7 — Discovery: which exchange a service's messages go to.

A discovery object holds three tables of ``service name -> exchange``:

- remote services: where requests, responses and errors for a service go;
- remote publishers: where a service we subscribe to publishes its notifications;
- local publishers: where our own service publishes its notifications.

``discovery.LocalDiscovery`` is filled in code; ``discovery.FileBasedDiscoveryService``
reads a ``.ds`` file (INI: one section per service, with ``exchange`` and an
optional ``notifications``) — here ``services.ds`` beside this script. Every
controller class binds one with ``set_discovery()`` before its server starts,
and every client gets one.

The script prints the tables of both kinds, then runs Hello and World wired by
the ``.ds`` file: a client casts ``test_hello.hello``, Hello calls World and
publishes a notification that World subscribes to.

Run::

    python samples/tutorial/07_discovery.py
    python samples/tutorial/07_discovery.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from tavrida2 import client, config, discovery, dispatcher, exceptions, server, service

DS_FILE = Path(__file__).with_name("services.ds")
EXPECTED = {"world", "world_resp", "notification"}
arrived: set[str] = set()
all_arrived = threading.Event()
_lock = threading.Lock()


def arrive(name: str, line: str) -> None:
    with _lock:
        print(line, flush=True)
        arrived.add(name)
        if arrived >= EXPECTED:
            all_arrived.set()


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def handler(self, request, proxy, param):
        proxy.test_world.world(param=param).call()  # to ds_world_exchange
        proxy.publish(param=param)  # to ds_hello_notifications

    @dispatcher.rpc_response_method(service="test_world", method="world")
    def world_resp(self, response, proxy, answer):
        arrive("world_resp", f"[hello] response from world: answer={answer!r}")


@dispatcher.rpc_service("test_world")
class WorldController(service.ServiceController):
    @dispatcher.rpc_method(service="test_world", method="world")
    def world(self, request, proxy, param):
        arrive("world", f"[world] request from {request.source}: param={param!r}")
        return {"answer": param * 2}  # to ds_hello_exchange

    @dispatcher.subscription_method(service="test_hello", method="hello")
    def hello_notification(self, notification, proxy, param):
        arrive("notification", f"[world] notification from {notification.source}: param={param!r}")


def show_tables() -> None:
    """Both kinds of discovery, and what they answer."""
    local = discovery.LocalDiscovery()
    local.register_remote_service("remote_service", "remote_service_exchange")
    local.register_local_publisher("local_service", "local_service_notifications")
    local.register_remote_publisher("remote_service", "remote_service_notifications")
    print(f"LocalDiscovery tables: {local.get_all_exchanges()}")
    print(f"  get_remote('remote_service') = {local.get_remote('remote_service')!r}")
    try:
        local.get_remote("nobody")
    except exceptions.UnableToDiscover as error:
        print(f"  get_remote('nobody') raises UnableToDiscover: {error}")

    # From the .ds file, for each local service. A subscriber names the services
    # it subscribes to: their ``notifications`` become its remote publishers.
    hello_disc = discovery.FileBasedDiscoveryService(DS_FILE, "test_hello")
    world_disc = discovery.FileBasedDiscoveryService(
        DS_FILE, "test_world", subscriptions=["test_hello"]
    )
    print(f"{DS_FILE.name} for test_hello: {hello_disc.get_all_exchanges()}")
    print(f"{DS_FILE.name} for test_world: {world_disc.get_all_exchanges()}")

    # DiscoveryFactory picks the kind: the file when a path is given, else local.
    from_file = discovery.DiscoveryFactory(DS_FILE).get_discovery_service("test_hello")
    plain = discovery.DiscoveryFactory().get_discovery_service()
    print(f"DiscoveryFactory: {type(from_file).__name__} from a path, else {type(plain).__name__}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    show_tables()

    # Each controller's discovery comes from the .ds file; so do its server's names.
    HelloController.set_discovery(discovery.FileBasedDiscoveryService(DS_FILE, "test_hello"))
    WorldController.set_discovery(
        discovery.FileBasedDiscoveryService(DS_FILE, "test_world", subscriptions=["test_hello"])
    )
    ds = discovery.DSFile(DS_FILE)
    servers = [
        server.Server(
            config.ConnectionConfig.from_url(args.url, async_engine=True),
            queue_name="ds_hello_service",
            exchange_name=ds.get("test_hello").exchange,
            service_list=[HelloController],
        ),
        server.Server(
            config.ConnectionConfig.from_url(args.url),
            queue_name="ds_world_service",
            exchange_name=ds.get("test_world").exchange,
            service_list=[WorldController],
        ),
    ]
    threads = server.run_servers(servers)

    # A script's discovery: every service of the file as a remote service.
    client_disc = discovery.LocalDiscovery()
    for entry in ds.services.values():
        client_disc.register_remote_service(entry.service, entry.exchange)
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        with client.RPCClient(config=conf, discovery=client_disc, source="client_app") as cli:
            cli.test_hello.hello(param=21).cast()
        ok = all_arrived.wait(10)
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print("done: services wired by the .ds file" if ok else f"FAILED: got only {sorted(arrived)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
