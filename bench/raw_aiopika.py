"""raw-aiopika: the async floor, the classic aio-pika RPC pattern.

Server: ``queue.consume`` callback on its own queue (auto-delete), prefetch 64; the answer
is published to the request's ``reply_to`` through the default exchange (mandatory=False,
on aio-pika's default channel, i.e. with publisher confirms), then the request is acked.
Client: one channel (publisher confirms, aio-pika's default) consumes
``amq.rabbitmq.reply-to`` (no_ack) and publishes the requests; futures are keyed by
correlation_id.  Casts are confirmed publishes on the same channel.  W2 and W3 keep 64
calls/publishes in flight (64 workers).  BENCH_PERSISTENT=1 (the raw-aiopika-persistent
row) makes the queue durable and the casts persistent (delivery_mode 2), as tavrida2's are
by default: the broker writes them to disk before it confirms them.

    python bench/raw_aiopika.py server|client
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from typing import Any

import aio_pika
import common

REPLY_TO = "amq.rabbitmq.reply-to"
PERSISTENT = os.environ.get("BENCH_PERSISTENT") == "1"
DELIVERY = aio_pika.DeliveryMode
CAST_MODE = DELIVERY.PERSISTENT if PERSISTENT else DELIVERY.NOT_PERSISTENT


async def serve() -> None:
    counter = common.Counter()
    conn = await aio_pika.connect(common.amqp_url())
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=common.WINDOW)
    queue = await ch.declare_queue(common.prefix(), durable=PERSISTENT, auto_delete=True)

    async def on_request(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        answer = common.raw_handle(counter, msg.body)
        if answer is not None and msg.reply_to:
            reply = aio_pika.Message(answer, correlation_id=msg.correlation_id)
            await ch.default_exchange.publish(reply, routing_key=msg.reply_to, mandatory=False)
        await msg.ack()

    await queue.consume(on_request)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    common.ready()
    await stop.wait()
    await conn.close()


class Client:
    async def connect(self) -> None:
        self.queue = common.prefix()
        self.conn = await aio_pika.connect(common.amqp_url())
        self.ch = await self.conn.channel()
        self.futures: dict[str, asyncio.Future[bytes]] = {}
        self.ids = itertools.count(1)
        reply_queue = await self.ch.get_queue(REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        fut = self.futures.pop(msg.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(msg.body)

    async def _call(self, method: str, **args: Any) -> Any:
        cid = str(next(self.ids))
        fut = asyncio.get_running_loop().create_future()
        self.futures[cid] = fut
        msg = aio_pika.Message(
            common.request(method, **args), correlation_id=cid, reply_to=REPLY_TO
        )
        await self.ch.default_exchange.publish(msg, routing_key=self.queue)
        return json.loads(await fut)

    async def add(self, x: int, y: int) -> int:
        return int((await self._call("add", x=x, y=y))["result"])

    async def note(self, n: int) -> None:
        msg = aio_pika.Message(common.request("note", n=n), delivery_mode=CAST_MODE)
        await self.ch.default_exchange.publish(msg, routing_key=self.queue)

    async def stats(self) -> tuple[int, float]:
        s = await self._call("stats")
        return s["count"], s["last"]

    async def close(self) -> None:
        await self.conn.close()


if __name__ == "__main__":
    common.main(
        {
            "server": lambda: asyncio.run(serve()),
            "client": lambda: asyncio.run(common.run_async(Client())),
        }
    )
