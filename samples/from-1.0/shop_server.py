"""The shop service of a Tavrida 1.0 project, moved to tavrida2 by renaming the import.

What the code does is 1.0's: a middleware subclassing ``middleware.Middleware``,
handlers that return ``None`` (no answer to a 1.0-style call), a call whose
answer comes to a response handler, an error handler that reads the error's
``class`` and ``code``, a subscription. The only line that changed from 1.0 is
the import (``from tavrida import ...`` became ``from tavrida2 import ...``);
print statements became print calls for Python 3.

Run it as 1.0 ran it, from this folder::

    python shop_server.py --config-file shop_config.cfg

or with the tavrida2 command, from anywhere::

    tavrida2 run samples/from-1.0/shop_config.cfg
"""

from tavrida2 import dispatcher, middleware, server, service

#: What happened, in order; ``shop.status`` returns it.
events = []


class AuditMiddleware(middleware.Middleware):
    """Counts the incoming messages by type and passes each on unchanged."""

    def __init__(self):
        super(AuditMiddleware, self).__init__()
        self.seen = {}

    def process(self, message):
        self.seen[message.message_type] = self.seen.get(message.message_type, 0) + 1
        return super(AuditMiddleware, self).process(message)


AUDIT = AuditMiddleware()


@dispatcher.rpc_service("shop")
class ShopController(service.ServiceController):
    def __init__(self, postprocessor):
        super(ShopController, self).__init__(postprocessor)
        self.add_incoming_middleware(AUDIT)

    @dispatcher.rpc_method(service="shop", method="order")
    def order(self, request, proxy, item, count):
        events.append("order %s x%s" % (item, count))
        # 1.0's call: the answer goes to reserve_resp (or reserve_error)
        proxy.stock.reserve(item=item, count=count).call()
        # no return: nothing to answer (the client casts)

    @dispatcher.rpc_response_method(service="stock", method="reserve")
    def reserve_resp(self, response, proxy, item, left):
        events.append("reserved %s, %s left" % (item, left))
        # stock.release returns {}: as in 1.0, no answer comes back
        proxy.stock.release(item=item).call()

    @dispatcher.rpc_response_method(service="stock", method="release")
    def release_resp(self, response, proxy):
        events.append("release answered")  # never happens

    @dispatcher.rpc_error_method(service="stock", method="reserve")
    def reserve_error(self, error, proxy):
        events.append(
            "reserve failed: %s (code %s)" % (error.payload["class"], error.payload["code"])
        )

    @dispatcher.subscription_method(service="stock", method="reserve")
    def stock_low(self, notification, proxy, item, left):
        events.append("low stock: %s" % item)

    @dispatcher.rpc_method(service="shop", method="status")
    def status(self, request, proxy):
        return {"events": list(events), "audited": dict(AUDIT.seen)}

    @dispatcher.rpc_method(service="shop", method="ping")
    def ping(self, request, proxy):
        return None  # a caller that waits (a client's call()) gets an empty Response


if __name__ == "__main__":
    srv = server.CLIServer()  # --config-file PATH from the command line, as in 1.0
    srv.run()
