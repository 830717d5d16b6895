"""The stock service of the Tavrida 1.0 project (see shop_server.py), on the async engine.

``reserve`` answers and publishes a notification when stock runs low, or
raises an error with a code of its own; ``release`` returns ``{}``, which
answers nobody in 1.0 and in tavrida2; ``restock`` raises a nackable error the
first time, which asks for the message to be requeued, as 1.0 did (tavrida2
bounds it: after ``max_attempts`` deliveries it is dead-lettered).

Run it::

    python stock_server.py --config-file stock_config.cfg
    tavrida2 run samples/from-1.0/stock_config.cfg
"""

from tavrida2 import dispatcher, exceptions, server, service

STOCK = {"teapot": 3, "cup": 10}
RELEASED = []
RESTOCK_ATTEMPTS = []


class OutOfStock(exceptions.BaseAckableException):
    _msg_template = "only %(left)s %(item)s left, %(count)s asked"
    _service_error_code = 2001


class WarehouseBusy(exceptions.BaseNackableException):
    _msg_template = "the warehouse is busy, restock %(item)s later"


@dispatcher.rpc_service("stock")
class StockController(service.ServiceController):
    @dispatcher.rpc_method(service="stock", method="reserve")
    def reserve(self, request, proxy, item, count):
        left = STOCK.get(item, 0) - count
        if left < 0:
            raise OutOfStock(item=item, count=count, left=STOCK.get(item, 0))
        STOCK[item] = left
        if left < 2:
            proxy.publish(item=item, left=left)
        return {"item": item, "left": left}

    @dispatcher.rpc_method(service="stock", method="release")
    def release(self, request, proxy, item):
        RELEASED.append(item)
        return {}

    @dispatcher.rpc_method(service="stock", method="restock")
    def restock(self, request, proxy, item, count):
        RESTOCK_ATTEMPTS.append(item)
        if RESTOCK_ATTEMPTS.count(item) == 1:
            raise WarehouseBusy(item=item)
        STOCK[item] = STOCK.get(item, 0) + count

    @dispatcher.rpc_method(service="stock", method="level")
    def level(self, request, proxy, item):
        return {
            "item": item,
            "left": STOCK.get(item, 0),
            "released": list(RELEASED),
            "restock_attempts": RESTOCK_ATTEMPTS.count(item),
        }


if __name__ == "__main__":
    srv = server.CLIServer()
    srv.run()
