"""raw-aiormq: a reference below aio-pika — aio-pika's connection, aiormq's channel.

Client and server connect with ``aio_pika.connect`` but publish and consume through the
underlying aiormq channel (``await channel.get_underlay_channel()``): no Message, Queue or
Exchange objects.  Requests and answers go over a channel without publisher confirms (an
answer is the request's confirmation; the server acks after answering); casts go over a
second channel with confirms, as tavrida2 confirms its casts.  Server: prefetch 64, its
own auto-delete queue.  Client: direct reply-to, futures keyed by correlation_id; W2 and
W3 keep 64 calls/publishes in flight (64 workers).  BENCH_TAVWIRE=1 (the
raw-aiormq-tavwire row) does Tavrida's wire work by hand, as ../shared/peers-bench's
aiormq-tavwire does (common.py, "Tavrida's wire work by hand"): a topic exchange, eight
headers, a ``{"context", "payload"}`` body, mandatory, requests with an expiration, casts
persistent into a durable queue (64 confirms in flight).

    python bench/raw_aiormq.py server|client
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from typing import Any

import aio_pika
import aiormq
import aiormq.abc
import common
from pamqp.commands import Basic

REPLY_TO = "amq.rabbitmq.reply-to"
JSON = "application/json"


async def serve() -> None:
    counter = common.Counter()
    queue = common.prefix()
    conn = await aio_pika.connect(common.amqp_url())
    channel = await conn.channel(publisher_confirms=False)
    ch: aiormq.abc.AbstractChannel = await channel.get_underlay_channel()
    await ch.basic_qos(prefetch_count=common.WINDOW)
    if common.TAVWIRE:  # durable, as Tavrida's queues are (run.py deletes it afterwards)
        await ch.queue_declare(queue, durable=True)
        await ch.exchange_declare(common.tav_exchange(), exchange_type="topic", auto_delete=True)
        await ch.queue_bind(queue, common.tav_exchange(), routing_key=common.TAV_BINDING)
    else:
        await ch.queue_declare(queue, auto_delete=True)

    async def on_tav_request(msg: aiormq.abc.DeliveredMessage) -> None:
        props = msg.header.properties
        answer = common.tav_handle(counter, props.headers or {}, msg.body)
        if answer is not None and props.reply_to:
            await ch.basic_publish(
                answer[0],
                routing_key=props.reply_to,
                properties=Basic.Properties(
                    correlation_id=props.correlation_id, headers=answer[1], content_type=JSON
                ),
            )
        await ch.basic_ack(msg.delivery_tag or 0)

    async def on_request(msg: aiormq.abc.DeliveredMessage) -> None:
        props = msg.header.properties
        answer = common.raw_handle(counter, msg.body)
        if answer is not None and props.reply_to:
            await ch.basic_publish(
                answer,
                routing_key=props.reply_to,
                properties=Basic.Properties(correlation_id=props.correlation_id),
            )
        await ch.basic_ack(msg.delivery_tag or 0)

    await ch.basic_consume(queue, on_tav_request if common.TAVWIRE else on_request)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    common.ready()
    await stop.wait()
    await conn.close()


class Client:
    async def connect(self) -> None:
        self.queue = common.prefix()
        self.conn = await aio_pika.connect(common.amqp_url())
        self.channels = [
            await self.conn.channel(publisher_confirms=False),
            await self.conn.channel(),
        ]
        self.rpc = await self.channels[0].get_underlay_channel()
        self.casts = await self.channels[1].get_underlay_channel()
        self.futures: dict[str, asyncio.Future[bytes]] = {}
        self.ids = itertools.count(1)
        await self.rpc.basic_consume(REPLY_TO, self._on_reply, no_ack=True)

    async def _on_reply(self, msg: aiormq.abc.DeliveredMessage) -> None:
        fut = self.futures.pop(msg.header.properties.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(msg.body)

    async def _call(self, method: str, **args: Any) -> Any:
        cid = str(next(self.ids))
        fut = asyncio.get_running_loop().create_future()
        self.futures[cid] = fut
        if common.TAVWIRE:
            body, headers = common.tav_request(method, cid, **args)
            props = Basic.Properties(
                correlation_id=cid,
                reply_to=REPLY_TO,
                expiration=common.TAV_EXPIRATION,
                content_type=JSON,
                headers=headers,
            )
            await self.rpc.basic_publish(
                body,
                exchange=common.tav_exchange(),
                routing_key="bench." + method,
                properties=props,
                mandatory=True,
            )
            return common.tav_answer(await fut)
        props = Basic.Properties(correlation_id=cid, reply_to=REPLY_TO)
        await self.rpc.basic_publish(
            common.request(method, **args), routing_key=self.queue, properties=props
        )
        return json.loads(await fut)

    async def add(self, x: int, y: int) -> int:
        return int((await self._call("add", x=x, y=y))["result"])

    async def note(self, n: int) -> None:
        if common.TAVWIRE:
            body, headers = common.tav_request("note", str(next(self.ids)), n=n)
            props = Basic.Properties(delivery_mode=2, content_type=JSON, headers=headers)
            await self.casts.basic_publish(
                body,
                exchange=common.tav_exchange(),
                routing_key="bench.note",
                properties=props,
                mandatory=True,
            )
            return
        await self.casts.basic_publish(common.request("note", n=n), routing_key=self.queue)

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
