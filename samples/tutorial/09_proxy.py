"""Tutorial, chapter 9 — Proxy: what a handler sends.

Every handler gets a proxy as its second argument. It sends on behalf of the
entry point being handled, with the incoming message's correlation id,
context and user headers:

- ``proxy.<service>.<method>(**payload).call()``: a request whose answer goes
  to this service's ``rpc_response_method`` / ``rpc_error_method`` (Tavrida 1.0);
- ``.call(wait=True, timeout=...)``: a request whose answer comes back right
  here (awaited in an ``async def`` handler on the async engine);
- ``.cast()``: a request nobody answers;
- ``.transfer(message)``: a call on behalf of another message: its correlation
  id, its context merged in;
- ``proxy.publish(**payload)``: a notification from this entry point;
- ``proxy.add_headers({...})``: user headers for everything sent afterwards.

Front (async engine, an ``async def`` handler) uses each; Pricing, Billing and
Audit share one server on the sync engine. A client calls ``front.checkout``.

Run::

    python samples/tutorial/09_proxy.py
    python samples/tutorial/09_proxy.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from tavrida2 import client, config, discovery, dispatcher, server, service

EXPECTED = {
    "pricing.quote",
    "billing.charge",
    "audit.record (cast)",
    "audit.record (transfer)",
    "audit notification",
    "front: charge answered",
    "front: transfer answered",
}
arrived: set[str] = set()
all_arrived = threading.Event()
_lock = threading.Lock()


def arrive(name: str, line: str) -> None:
    with _lock:
        print(line, flush=True)
        arrived.add(name)
        if arrived >= EXPECTED:
            all_arrived.set()


@dispatcher.rpc_service("front")
class FrontController(service.ServiceController):
    @dispatcher.rpc_method(service="front", method="checkout")
    async def checkout(self, request, proxy, order, amount):
        proxy.add_headers({"x-shop": "teapots"})
        # The answer inline: wait=True, awaited in an async def handler.
        quote = await proxy.pricing.quote(amount=amount).call(wait=True, timeout=5)
        total = quote.payload["total"]
        print(f"[front.checkout] pricing answered inline: total={total}", flush=True)
        # Tavrida 1.0's call(): the answer goes to charge_resp below.
        proxy.billing.charge(order=order, total=total).call()
        proxy.audit.record(event=f"checkout {order}", how="cast").cast()
        proxy.publish(order=order, total=total)
        return {"order": order, "total": total}  # the answer to our own caller

    @dispatcher.rpc_response_method(service="billing", method="charge")
    def charge_resp(self, response, proxy, charged):
        arrive("front: charge answered", f"[front] billing.charge answered: charged={charged}")
        # On behalf of the response: its correlation id and context go on.
        proxy.audit.record(event=f"charged {charged}", how="transfer").transfer(response)

    @dispatcher.rpc_response_method(service="audit", method="record")
    def record_resp(self, response, proxy):
        arrive("front: transfer answered", "[front] audit.record answered the transfer")


@dispatcher.rpc_service("pricing")
class PricingController(service.ServiceController):
    @dispatcher.rpc_method(service="pricing", method="quote")
    def quote(self, request, proxy, amount):
        arrive("pricing.quote", f"[pricing.quote] amount={amount} from {request.source}")
        return {"total": round(amount * 1.2, 2)}


@dispatcher.rpc_service("billing")
class BillingController(service.ServiceController):
    @dispatcher.rpc_method(service="billing", method="charge")
    def charge(self, request, proxy, order, total):
        arrive("billing.charge", f"[billing.charge] order={order} total={total}")
        return {"charged": total}


@dispatcher.rpc_service("audit")
class AuditController(service.ServiceController):
    @dispatcher.rpc_method(service="audit", method="record")
    def record(self, request, proxy, event, how):
        arrive(
            f"audit.record ({how})",
            f"[audit.record] {event!r} by {how}: correlation_id={request.correlation_id}"
            f" x-shop={request.headers.get('x-shop')!r} reply_to={str(request.reply_to)!r}",
        )
        # the answer to the transfer (dropped for the cast); returning None would
        # send none, and front.record_resp would not run
        return {"recorded": event}

    @dispatcher.subscription_method(service="front", method="checkout")
    def checkout_done(self, notification, proxy, order, total):
        arrive("audit notification", f"[audit] notification: order={order} total={total}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://tutorial", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    front_disc = discovery.LocalDiscovery()
    for name in ("pricing", "billing", "audit"):
        front_disc.register_remote_service(name, "backend_exchange")
    front_disc.register_local_publisher("front", "front_notifications")
    FrontController.set_discovery(front_disc)

    backend_disc = discovery.LocalDiscovery()
    backend_disc.register_remote_service("front", "front_exchange")  # answers go there
    backend_disc.register_remote_publisher("front", "front_notifications")
    backend = [PricingController, BillingController, AuditController]
    for controller in backend:
        controller.set_discovery(backend_disc)

    servers = [
        server.Server(
            config.ConnectionConfig.from_url(args.url, async_engine=True),
            queue_name="front_service",
            exchange_name="front_exchange",
            service_list=[FrontController],
        ),
        server.Server(
            config.ConnectionConfig.from_url(args.url),
            queue_name="backend_service",
            exchange_name="backend_exchange",
            service_list=backend,
        ),
    ]
    threads = server.run_servers(servers)

    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("front", "front_exchange")
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        with client.RPCClient(config=conf, discovery=client_disc, source="client_app") as cli:
            answer = cli.front.checkout(order="A-1", amount=10).call(
                correlation_id="order-A-1", timeout=10
            )
            print(f"client: front.checkout answered {answer.payload}", flush=True)
        ok = all_arrived.wait(10) and answer.payload == {"order": "A-1", "total": 12.0}
    finally:
        for srv in servers:
            srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print("done: every message arrived" if ok else f"FAILED: missing {sorted(EXPECTED - arrived)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
