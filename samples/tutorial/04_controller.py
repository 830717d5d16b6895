"""Tutorial, chapter 4 — Controller: the four kinds of handlers, and what a handler returns.

A controller is a ``service.ServiceController`` subclass decorated with
``dispatcher.rpc_service(name)``. Its handlers take ``(message, proxy,
**payload)``; the decorator says which messages they get:

- ``rpc_method(service, method)``: requests to our own entry point;
- ``rpc_response_method(service, method)``: responses from a remote entry point;
- ``rpc_error_method(service, method)``: errors from a remote entry point
  (only ``(error, proxy)``: the error payload is ``{"class", "message", "code"}``);
- ``subscription_method(service, method)``: notifications a remote service
  published from that entry point.

A request handler may return a dict (sent as the Response), a ``Response``, an
``Error``, or ``None``; an exception it raises becomes an Error. ``None`` (or
``{}``) sends no answer to a call like Shop's below, whose answer would go to a
response handler, as in Tavrida 1.0; a caller that waits for the answer (a
client's ``call()``) gets an empty Response. The Inventory service below
shows each; the Shop service calls them all and receives the answers in its
response and error handlers, and a notification in its subscription handler.
Inventory logs the exception of ``broken`` with its traceback on stderr: that
is expected.

Run::

    python samples/tutorial/04_controller.py
    python samples/tutorial/04_controller.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, messages, server, service

EXPECTED = {"get_item", "reserve", "ping", "forbidden", "broken", "reserved"}
arrived: set[str] = set()
all_arrived = threading.Event()
_lock = threading.Lock()


def arrive(name: str, *lines: str) -> None:
    """Print what a Shop handler got and note that it arrived (handlers run in threads)."""
    with _lock:
        print("\n".join(lines), flush=True)
        arrived.add(name)
        if arrived >= EXPECTED:
            all_arrived.set()


# -- Inventory: request handlers returning each kind of answer ---------------------------


@dispatcher.rpc_service("inventory")
class InventoryController(service.ServiceController):
    @dispatcher.rpc_method(service="inventory", method="get_item")
    def get_item(self, request, proxy, item):
        return {"item": item, "stock": 5}  # a dict: the payload of the Response

    @dispatcher.rpc_method(service="inventory", method="reserve")
    def reserve(self, request, proxy, item, count=1):
        # Optional parameters have defaults; a notification tells subscribers.
        proxy.publish(item=item, count=count)
        return request.make_response(item=item, reserved=count)  # a Response object

    @dispatcher.rpc_method(service="inventory", method="ping")
    def ping(self, request, proxy):
        # An empty Response, made explicitly: returning None or {} would send
        # nothing to this call (Tavrida 1.0's rule), and ping_resp would not run.
        return request.make_response()

    @dispatcher.rpc_method(service="inventory", method="forbidden")
    def forbidden(self, request, proxy, item):
        # An Error object, returned rather than raised: nothing is logged as a failure.
        return messages.Error.create_by_request(request, PermissionError(f"{item} is locked"))

    @dispatcher.rpc_method(service="inventory", method="broken")
    def broken(self, request, proxy, item):
        raise KeyError(item)  # an exception: logged, and sent to the caller as an Error


# -- Shop: one request handler, the answers, and a subscription --------------------------


@dispatcher.rpc_service("shop")
class ShopController(service.ServiceController):
    @dispatcher.rpc_method(service="shop", method="order")
    def order(self, request, proxy, item):
        print(f"[shop.order] item={item!r}: calling inventory", flush=True)
        inventory = proxy.inventory
        inventory.get_item(item=item).call()
        inventory.reserve(item=item, count=2).call()
        inventory.ping().call()
        inventory.forbidden(item=item).call()
        inventory.broken(item=item).call()

    @dispatcher.rpc_response_method(service="inventory", method="get_item")
    def get_item_resp(self, response, proxy, item, stock):
        arrive("get_item", f"[response from inventory.get_item] item={item!r} stock={stock}")

    @dispatcher.rpc_response_method(service="inventory", method="reserve")
    def reserve_resp(self, response, proxy, item, reserved):
        arrive("reserve", f"[response from inventory.reserve] item={item!r} reserved={reserved}")

    @dispatcher.rpc_response_method(service="inventory", method="ping")
    def ping_resp(self, response, proxy):
        arrive("ping", f"[response from inventory.ping] payload={response.payload}")

    @dispatcher.rpc_error_method(service="inventory", method="forbidden")
    def forbidden_error(self, error, proxy):
        arrive(
            "forbidden",
            f"[error from inventory.forbidden] {error.payload['class']}: "
            f"{error.payload['message']} (code {error.payload['code']})",
        )

    @dispatcher.rpc_error_method(service="inventory", method="broken")
    def broken_error(self, error, proxy):
        arrive(
            "broken",
            f"[error from inventory.broken] {error.payload['class']}: "
            f"{error.payload['message']} (code {error.payload['code']})",
        )

    @dispatcher.subscription_method(service="inventory", method="reserve")
    def reserved(self, notification, proxy, item, count):
        arrive("reserved", f"[notification from inventory.reserve] item={item!r} count={count}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    inventory_disc = discovery.LocalDiscovery()
    inventory_disc.register_remote_service("shop", "shop_exchange")  # where answers go
    inventory_disc.register_local_publisher("inventory", "inventory_notifications")
    InventoryController.set_discovery(inventory_disc)

    shop_disc = discovery.LocalDiscovery()
    shop_disc.register_remote_service("inventory", "inventory_exchange")
    shop_disc.register_remote_publisher("inventory", "inventory_notifications")
    ShopController.set_discovery(shop_disc)

    servers = [
        server.Server(
            config.ConnectionConfig.from_url(args.url),
            queue_name="inventory_service",
            exchange_name="inventory_exchange",
            service_list=[InventoryController],
        ),
        server.Server(
            config.ConnectionConfig.from_url(args.url, async_engine=True),
            queue_name="shop_service",
            exchange_name="shop_exchange",
            service_list=[ShopController],
        ),
    ]
    threads = server.run_servers(servers)

    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("shop", "shop_exchange")
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        with client.RPCClient(config=conf, discovery=client_disc, source="client_app") as cli:
            cli.shop.order(item="teapot").cast()
        ok = all_arrived.wait(10)
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    missing = sorted(EXPECTED - arrived)
    print("done: 3 responses, 2 errors, 1 notification" if ok else f"FAILED: missing {missing}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
