"""A client script: calls that wait for their answer, calls in flight, casts, and asyncio.

What a script does with ``client.RPCClient`` (blocking; one connection, safe to
share between threads):

- ``cli.<service>.<method>(**payload).call(timeout=...)`` waits and returns the
  ``IncomingResponse`` (``.payload`` is what the handler returned); an Error
  answer raises ``exceptions.RemoteError``, no answer in time
  ``exceptions.CallTimeout``;
- ``.call_async()`` sends at once and returns a ``PendingCall``: many calls in
  flight, ``result()`` waits for each;
- ``.cast()`` sends a request nobody answers and returns once the broker has
  it; ``.cast_async()`` returns a handle whose ``result()`` waits for that.

and with ``client.AsyncRPCClient`` from asyncio code: the same, awaited.

A Calc service (async engine) runs in this process for the script to call;
against RabbitMQ, pass ``--url``. Answers come back by RabbitMQ direct
reply-to; the timeout travels with each request, so the server skips a request
whose caller has stopped waiting. The server logs the two divisions by zero
(with their tracebacks) on stderr: that is expected.

Run::

    python samples/client_script.py
    python samples/client_script.py --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from tavrida2 import client, config, discovery, dispatcher, exceptions, server, service

notes: list[str] = []


@dispatcher.rpc_service("calc")
class CalcController(service.ServiceController):
    @dispatcher.rpc_method(service="calc", method="add")
    async def add(self, request, proxy, a, b):
        return {"sum": a + b}

    @dispatcher.rpc_method(service="calc", method="divide")
    async def divide(self, request, proxy, a, b):
        return {"quotient": a / b}  # b == 0: ZeroDivisionError, an Error answer

    @dispatcher.rpc_method(service="calc", method="slow")
    async def slow(self, request, proxy, seconds):
        await asyncio.sleep(seconds)  # async def handlers do not block the server
        return {"slept": seconds}

    @dispatcher.rpc_method(service="calc", method="remember")
    async def remember(self, request, proxy, note):
        notes.append(note)

    @dispatcher.rpc_method(service="calc", method="notes")
    async def get_notes(self, request, proxy):
        return {"notes": list(notes)}


def blocking_client(conf: config.ConnectionConfig, disc: discovery.LocalDiscovery) -> bool:
    """The blocking client; True if every answer was the expected one."""
    ok = True
    # ``timeout`` here is the default wait of every call; call(timeout=...) overrides it.
    with client.RPCClient(config=conf, discovery=disc, source="client_script", timeout=10) as cli:
        answer = cli.calc.add(a=1, b=2).call(timeout=5)
        print(f"call: calc.add(a=1, b=2) -> {answer.payload} from {answer.source}")
        ok &= answer.payload == {"sum": 3}

        try:
            cli.calc.divide(a=1, b=0).call(timeout=5)
            ok = False
        except exceptions.RemoteError as error:
            print(
                f"call: calc.divide(a=1, b=0) -> RemoteError {error.remote_class}: "
                f"{error.remote_message} (code {error.code})"
            )
            ok &= error.remote_class == "ZeroDivisionError"

        started = time.monotonic()
        try:
            cli.calc.slow(seconds=1.0).call(timeout=0.2)
            ok = False
        except exceptions.CallTimeout as error:
            waited = time.monotonic() - started
            print(f"call: calc.slow(seconds=1.0), timeout=0.2 -> CallTimeout after {waited:.1f} s")
            print(f"      ({error})")

        # Many calls in flight on the one connection, then their answers in order.
        pending = [cli.calc.add(a=i, b=i).call_async(timeout=5) for i in range(10)]
        sums = [p.result().payload["sum"] for p in pending]
        print(f"call_async: 10 calls in flight -> sums {sums}")
        ok &= sums == [2 * i for i in range(10)]

        cli.calc.remember(note="cast 1").cast()
        handles = [cli.calc.remember(note=f"cast_async {i}").cast_async() for i in range(3)]
        for handle in handles:
            handle.result()  # raises if the broker did not take it
        print("cast: 1 cast and 3 cast_async confirmed by the broker")
        # Casts are not answered: ask for the notes until all four arrived.
        remembered = wait_for_notes(cli, 4)
        print(f"call: calc.notes() -> {remembered}")
        ok &= sorted(remembered) == ["cast 1", "cast_async 0", "cast_async 1", "cast_async 2"]
    return ok


def wait_for_notes(cli: client.RPCClient, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while True:
        found: list[str] = cli.calc.notes().call().payload["notes"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def asyncio_client(conf: config.ConnectionConfig, disc: discovery.LocalDiscovery) -> bool:
    """The asyncio client; True if every answer was the expected one."""
    async with client.AsyncRPCClient(conf, disc, source="client_script") as cli:
        calls = [cli.calc.add(a=i, b=1).call(timeout=5) for i in range(100)]
        answers = await asyncio.gather(*calls)
        sums = [answer.payload["sum"] for answer in answers]
        print(f"AsyncRPCClient: 100 calls with asyncio.gather -> sums {sums[0]}..{sums[-1]}")

        later = cli.calc.add(a=20, b=22).call_async(timeout=5)  # an asyncio future
        await cli.calc.remember(note="from asyncio").cast()  # returns once confirmed
        answer = await later
        print(f"AsyncRPCClient: call_async -> {answer.payload}; cast confirmed")

        try:
            await cli.calc.divide(a=1, b=0).call()
            return False
        except exceptions.RemoteError as error:
            print(f"AsyncRPCClient: calc.divide(a=1, b=0) -> RemoteError {error.remote_class}")
    return sums == [i + 1 for i in range(100)] and answer.payload == {"sum": 42}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://client_script", help="broker URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    srv = server.Server(
        config.ConnectionConfig.from_url(args.url, async_engine=True),
        queue_name="calc_service",
        exchange_name="calc_exchange",
        service_list=[CalcController],
    )
    threads = server.run_servers([srv])

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("calc", "calc_exchange")
    conf = config.ConnectionConfig.from_url(args.url)
    try:
        ok = blocking_client(conf, disc)
        ok = asyncio.run(asyncio_client(conf, disc)) and ok
    finally:
        srv.stop()
        for thread in threads:
            thread.join(timeout=5)

    print("done: every answer as expected" if ok else "FAILED: an answer was not as expected")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
