"""The Hello/World tutorial of Tavrida, in one process on the in-memory broker.

A client casts ``test_hello.hello``. Hello calls ``test_world.world`` (its
response handler gets the answer) and ``test_world.fail`` (its error handler
gets the error), and publishes a notification that World subscribes to.
Every handler prints what it received. Run: ``make demo``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from tavrida2 import client, config, discovery, dispatcher, server, service
from tavrida2.drivers.memory import MemoryBroker

received: list[tuple[str, dict[str, Any]]] = []


def show(handler: str, message: Any, **extra: Any) -> None:
    headers = {
        k: message.headers[k]
        for k in ("correlation_id", "request_id", "source", "destination", "reply_to")
    }
    record = {"payload": message.payload, "context": message.context, "headers": headers, **extra}
    received.append((handler, record))
    print(f"--- {handler}\n{json.dumps(record, indent=2, sort_keys=True)}", flush=True)


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def handler(self, request, proxy, param):
        show("hello (request from the client)", request)
        proxy.test_world.world(param=12345).call()
        proxy.test_world.fail(reason="no such planet").call()
        proxy.publish(param="hello publication")

    @dispatcher.rpc_response_method(service="test_world", method="world")
    def world_resp(self, response, proxy, param):
        show("world_resp (response from test_world.world)", response)

    @dispatcher.rpc_error_method(service="test_world", method="fail")
    def world_error(self, error, proxy):
        show("world_error (error from test_world.fail)", error)


@dispatcher.rpc_service("test_world")
class WorldController(service.ServiceController):
    @dispatcher.rpc_method(service="test_world", method="world")
    def world(self, request, proxy, param):
        show("world (request from test_hello)", request)
        return {"param": "world response"}

    @dispatcher.rpc_method(service="test_world", method="fail")
    def fail(self, request, proxy, reason):
        show("fail (request from test_hello)", request)
        raise ValueError(reason)

    @dispatcher.subscription_method(service="test_hello", method="hello")
    def hello_subscription(self, notification, proxy, param):
        show("hello_subscription (notification from test_hello.hello)", notification)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    conf = config.ConnectionConfig.from_url("memory://demo")

    hello_disc = discovery.LocalDiscovery()
    hello_disc.register_remote_service("test_world", "test_world_exchange")
    hello_disc.register_local_publisher("test_hello", "test_notification_exchange")
    HelloController.set_discovery(hello_disc)

    world_disc = discovery.LocalDiscovery()
    world_disc.register_remote_service("test_hello", "test_exchange")
    world_disc.register_remote_publisher("test_hello", "test_notification_exchange")
    WorldController.set_discovery(world_disc)

    servers = [
        server.Server(
            conf,
            queue_name="test_service",
            exchange_name="test_exchange",
            service_list=[HelloController],
        ),
        server.Server(
            config.ConnectionConfig.from_url("memory://demo", async_engine=True),
            queue_name="test_world_service",
            exchange_name="test_world_exchange",
            service_list=[WorldController],
        ),
    ]
    threads = server.run_servers(servers)

    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("test_hello", "test_exchange")
    with client.RPCClient(config=conf, discovery=client_disc, source="client_app") as cli:
        cli.test_hello.hello(param=123).cast(correlation_id="demo-correlation-id")

    idle = MemoryBroker.get("demo").wait_until_idle(timeout=10)
    for srv in servers:
        srv.stop()
    for thread in threads:
        thread.join(timeout=5)
    expected = 6
    print(f"=== {len(received)} of {expected} handler calls; broker idle: {idle}")
    return 0 if idle and len(received) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
