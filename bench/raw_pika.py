"""raw-pika: the sync floor, pika's BlockingConnection with no framework on top.

Server: basic_consume on its own queue (auto-delete), prefetch 64, JSON bodies; answers
to the request's ``reply_to`` through the default exchange with its ``correlation_id``,
then acks.  Client: one thread, one connection; requests go out on the channel that
consumes ``amq.rabbitmq.reply-to`` (direct reply-to, auto-ack); W2 keeps 64 requests
pipelined; W3 is a basic_publish loop on a second channel, in confirm mode
(``confirm_delivery``) unless BENCH_CONFIRM=0 (the raw-pika-noconfirm row).
BENCH_PERSISTENT=1 (the raw-pika-persistent row) makes the queue durable and the casts
persistent (delivery_mode 2), as tavrida2's are: the broker writes them to disk before it
confirms them.  BENCH_TAVWIRE=1 (the raw-pika-tavwire row) does Tavrida's wire work by hand,
as ../shared/peers-bench's pika-tavwire does (common.py, "Tavrida's wire work by hand"):
requests, answers and casts through a topic exchange with eight headers and a
``{"context", "payload"}`` body, mandatory, requests with an expiration on the channel
without confirms, casts persistent into a durable queue and confirmed one by one.

    python bench/raw_pika.py server|client
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import common
import pika

REPLY_TO = "amq.rabbitmq.reply-to"
PERSISTENT = os.environ.get("BENCH_PERSISTENT") == "1" or common.TAVWIRE
JSON = "application/json"


def server() -> None:
    queue = common.prefix()
    counter = common.Counter()
    conn = pika.BlockingConnection(pika.URLParameters(common.amqp_url()))
    ch = conn.channel()
    if common.TAVWIRE:  # durable, as Tavrida's queues are (run.py deletes it afterwards)
        ch.queue_declare(queue, durable=True)
        ch.exchange_declare(common.tav_exchange(), exchange_type="topic", auto_delete=True)
        ch.queue_bind(queue, common.tav_exchange(), routing_key=common.TAV_BINDING)
    else:
        ch.queue_declare(queue, durable=PERSISTENT, auto_delete=True)
    ch.basic_qos(prefetch_count=common.WINDOW)

    def on_request(ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        if common.TAVWIRE:
            on_tav_request(ch, method, props, body)
            return
        answer = common.raw_handle(counter, body)
        if answer is not None and props.reply_to:
            ch.basic_publish(
                "",
                props.reply_to,
                answer,
                pika.BasicProperties(correlation_id=props.correlation_id),
            )
        ch.basic_ack(method.delivery_tag)

    def on_tav_request(ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        answer = common.tav_handle(counter, props.headers, body)
        if answer is not None and props.reply_to:
            reply_props = pika.BasicProperties(
                correlation_id=props.correlation_id, headers=answer[1], content_type=JSON
            )
            ch.basic_publish("", props.reply_to, answer[0], reply_props)
        ch.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_request)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    common.ready()
    while not stopping:
        conn.process_data_events(time_limit=1)
    conn.close()


class Client:
    def __init__(self) -> None:
        self.queue = common.prefix()
        self.conn = pika.BlockingConnection(pika.URLParameters(common.amqp_url()))
        self.ch = self.conn.channel()
        self.ch.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)
        self.cast_ch = self.conn.channel()
        if os.environ.get("BENCH_CONFIRM", "1") == "1":
            self.cast_ch.confirm_delivery()
        self.replies: dict[str, bytes] = {}
        self.seq = 0
        self.cast_props = pika.BasicProperties(delivery_mode=2 if PERSISTENT else 1)

    def _on_reply(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        self.replies[props.correlation_id] = body

    def _send(self, method: str, **args: Any) -> str:
        self.seq += 1
        cid = str(self.seq)
        if common.TAVWIRE:
            body, headers = common.tav_request(method, cid, **args)
            props = pika.BasicProperties(
                reply_to=REPLY_TO,
                correlation_id=cid,
                expiration=common.TAV_EXPIRATION,
                content_type=JSON,
                headers=headers,
            )
            self.ch.basic_publish(
                common.tav_exchange(), "bench." + method, body, props, mandatory=True
            )
            return cid
        props = pika.BasicProperties(reply_to=REPLY_TO, correlation_id=cid)
        self.ch.basic_publish("", self.queue, common.request(method, **args), props)
        return cid

    def _wait(self, cid: str) -> Any:
        end = time.monotonic() + common.CALL_TIMEOUT_S
        while cid not in self.replies:
            self.conn.process_data_events(time_limit=1)
            if time.monotonic() > end:
                raise TimeoutError(f"no answer to request {cid}")
        return self._answer(self.replies.pop(cid))

    @staticmethod
    def _answer(body: bytes) -> Any:
        return common.tav_answer(body) if common.TAVWIRE else json.loads(body)

    def add(self, x: int, y: int) -> int:
        return int(self._wait(self._send("add", x=x, y=y))["result"])

    def add_many(self, n: int, window: int, deadline: float) -> list[int]:
        out = [0] * n
        pending: dict[str, int] = {}
        sent = 0
        while sent < n or pending:
            while sent < n and len(pending) < window:
                pending[self._send("add", x=sent, y=1)] = sent
                sent += 1
            self.conn.process_data_events(time_limit=1)
            for cid in list(self.replies):
                out[pending.pop(cid)] = self._answer(self.replies.pop(cid))["result"]
            if time.monotonic() > deadline:
                raise common.WorkloadFailed(f"over {common.LIMIT_S:.0f} s")
        return out

    def note(self, n: int) -> None:
        if common.TAVWIRE:
            self.seq += 1
            body, headers = common.tav_request("note", str(self.seq), n=n)
            props = pika.BasicProperties(delivery_mode=2, content_type=JSON, headers=headers)
            self.cast_ch.basic_publish(
                common.tav_exchange(), "bench.note", body, props, mandatory=True
            )
            return
        self.cast_ch.basic_publish("", self.queue, common.request("note", n=n), self.cast_props)

    def stats(self) -> tuple[int, float]:
        s = self._wait(self._send("stats"))
        return s["count"], s["last"]

    def close(self) -> None:
        self.conn.close()


if __name__ == "__main__":
    common.main({"server": server, "client": lambda: common.run_sync(Client())})
