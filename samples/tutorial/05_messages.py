"""Tutorial, chapter 5 — Messages: properties, headers, context, and the wire form.

A chain of calls: a client casts ``orders.start(order_id=7)`` with the
correlation id ``order-7`` and a user header; Orders calls
``customers.enrich(customer="ann")``; Customers casts
``archive.store(total=42)`` and answers Orders. Each handler prints the
message it got:

- ``correlation_id`` is the same along the whole chain; ``request_id`` pairs a
  request with its answer; ``message_id`` is new for every message;
- ``source``, ``destination`` and ``reply_to`` are entry points
  (``service.method``); a cast has an empty ``reply_to``;
- ``context`` grows at each hop with the payload of each request handled
  (conflicting keys are overwritten by the newer value);
- user headers (here ``tenant``) travel on with the chain.

On the wire a message is its AMQP headers and a UTF-8 JSON body
``{"context": {...}, "payload": {...}}``; Archive prints both.

Run::

    python samples/tutorial/05_messages.py
    python samples/tutorial/05_messages.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, messages, server, service

received: dict[str, messages.Message] = {}  # handler name -> message
all_received = threading.Event()
_lock = threading.Lock()


def show(name: str, message: messages.Message, *extra: str) -> None:
    """Print the properties of ``message``, remember it, and note when the chain is done."""
    lines = [
        f"---- {name}: {type(message).__name__}",
        f"     message_type={message.message_type} correlation_id={message.correlation_id}",
        f"     request_id={message.request_id} message_id={message.message_id}",
        f"     source={message.source} destination={message.destination} "
        f"reply_to={str(message.reply_to)!r}",
        f"     payload={message.payload} context={message.context}",
        f"     tenant header={message.headers.get('tenant')!r}",
        *extra,
    ]
    with _lock:
        print("\n".join(lines), flush=True)
        received[name] = message
        if len(received) == 4:
            all_received.set()


@dispatcher.rpc_service("orders")
class OrdersController(service.ServiceController):
    @dispatcher.rpc_method(service="orders", method="start")
    def start(self, request, proxy, order_id):
        show("orders.start", request)
        # The proxy carries this request's correlation id, context and user headers.
        proxy.customers.enrich(customer="ann").call()

    @dispatcher.rpc_response_method(service="customers", method="enrich")
    def enrich_resp(self, response, proxy, discount):
        show("response from customers.enrich", response)


@dispatcher.rpc_service("customers")
class CustomersController(service.ServiceController):
    @dispatcher.rpc_method(service="customers", method="enrich")
    def enrich(self, request, proxy, customer):
        show("customers.enrich", request)
        proxy.archive.store(total=42).cast()
        return {"discount": 5}


@dispatcher.rpc_service("archive")
class ArchiveController(service.ServiceController):
    @dispatcher.rpc_method(service="archive", method="store")
    def store(self, request, proxy, total):
        # The wire form: the AMQP headers as they arrived, and this message's JSON
        # body as the postprocessor writes it (the context by now includes this
        # hop's payload, ``total``).
        wire_headers = json.dumps(request.headers, sort_keys=True)
        wire_body = request.body_serialize().decode("utf-8")
        show(
            "archive.store",
            request,
            f"     AMQP headers: {wire_headers}",
            f"     body: {wire_body}",
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # One server, one queue and one exchange for all three services.
    disc = discovery.LocalDiscovery()
    for name in ("orders", "customers", "archive"):
        disc.register_remote_service(name, "messages_exchange")
    controllers = [OrdersController, CustomersController, ArchiveController]
    for controller in controllers:
        controller.set_discovery(disc)
    srv = server.Server(
        config.ConnectionConfig.from_url(args.url),
        queue_name="messages_service",
        exchange_name="messages_exchange",
        service_list=controllers,
    )
    threads = server.run_servers([srv])

    conf = config.ConnectionConfig.from_url(args.url)
    try:
        with client.RPCClient(
            config=conf, discovery=disc, source="client_app", headers={"tenant": "acme"}
        ) as cli:
            cli.orders.start(order_id=7).cast(correlation_id="order-7")
        ok = all_received.wait(10)
    finally:
        srv.stop()
        for thread in threads:
            thread.join(timeout=5)
    if not ok:
        print(f"FAILED: only {sorted(received)} arrived")
        return 1

    chain = list(received.values())
    enrich, answer = received["customers.enrich"], received["response from customers.enrich"]
    checks = {
        "one correlation_id along the chain": len({m.correlation_id for m in chain}) == 1,
        "a request and its answer share request_id": enrich.request_id == answer.request_id,
        "every message_id is new": len({m.message_id for m in chain}) == len(chain),
        "the context grew at each hop": set(received["archive.store"].context)
        == {"order_id", "customer", "total"},
    }
    for what, holds in checks.items():
        print(f"check: {what}: {holds}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
