"""Drives the shop and stock servers of this folder, as a Tavrida 1.0 client script did.

The requests are 1.0's: casts that set the services going. Reading the answer
of a request (``call()`` waits for it and returns it) is what tavrida2 adds;
the script uses it to wait until the servers have done their work, then prints
what they did as JSON. The servers must be running (see README.md)::

    python client_app.py [--ds services.ds] [--url amqp://guest:guest@localhost:5672/%2F]
"""

import argparse
import json
import os
import sys
import time

from ds_discovery import DSDiscovery

from tavrida2 import client, config

HERE = os.path.dirname(os.path.abspath(__file__))


def wait_for(read, done, timeout=30.0):
    """``read()`` until ``done(result)``; the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = read()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", default=os.path.join(HERE, "services.ds"))
    parser.add_argument("--url", default=None, help="broker URL (default: localhost, guest)")
    args = parser.parse_args(argv)
    if args.url:
        conf = config.ConnectionConfig.from_url(args.url)
    else:
        creds = config.Credentials("guest", "guest")
        conf = config.ConnectionConfig("localhost", credentials=creds)
    disc = DSDiscovery(args.ds)

    cli = client.RPCClient(config=conf, discovery=disc, source="client_app")
    try:
        ping = cli.shop.ping().call(timeout=10).payload  # None in the handler: {} here
        cli.shop.order(item="teapot", count=2).cast()
        cli.shop.order(item="cup", count=50).cast()
        cli.stock.restock(item="teapot", count=5).cast()

        level = wait_for(
            lambda: cli.stock.level(item="teapot").call(timeout=10).payload,
            lambda got: got["left"] == 6 and got["released"] == ["teapot"],
        )
        status = wait_for(
            lambda: cli.shop.status().call(timeout=10).payload,
            lambda got: len(got["events"]) >= 5,
        )
        time.sleep(0.5)  # time for an answer to stock.release, which must not come
        status = cli.shop.status().call(timeout=10).payload
    finally:
        cli.close()
    print(json.dumps({"ping": ping, "level": level, "status": status}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
