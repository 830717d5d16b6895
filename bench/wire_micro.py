"""Encoding the properties of tavrida2's messages: the libraries' encoders against ``drivers.wire``.

In-process, no broker: µs per message (best of 7 runs, the library's and
``drivers.wire``'s taking turns, as the machine may be busy) for a call request (the
7 Tavrida headers and the deadline) and its response, on each engine, for

- the properties alone (pika ``BasicProperties.encode``, pamqp ``Basic.Properties.marshal``),
- the content header frame (pika ``frame.Header.marshal``, pamqp ``frame.marshal``),
- every frame of a publish (method, content header and body frames, as pika's
  connection and aiormq's channel write them),
- and the libraries' decoding of the content header frame, which ``drivers.wire``
  leaves as it is.

    python bench/wire_micro.py
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

import pika
import pika.frame
import pika.spec
from pamqp import body as pamqp_body
from pamqp import commands, header
from pamqp import frame as pamqp_frame

from tavrida2.drivers.shared import properties
from tavrida2.drivers.wire import PamqpProperties, PikaProperties
from tavrida2.messages import DEADLINE_HEADER, AMQPMessage, Request, Response

RUNS, NUMBER = 7, 10_000


def per_call(*fns: Callable[[], Any]) -> list[float]:
    """µs per call of each of ``fns``, best of ``RUNS``, taking turns."""
    best = [float("inf")] * len(fns)
    for _ in range(RUNS):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], timeit.timeit(fn, number=NUMBER) / NUMBER * 1e6)
    return best


def messages() -> dict[str, AMQPMessage]:
    call = Request({"source": "client.Hello", "destination": "hello.World.say"}, {}, {"n": 1})
    call.headers[DEADLINE_HEADER] = int(time.time() * 1000) + 30_000
    request = AMQPMessage.create_from_message(call)
    request.reply_to, request.correlation_id = "amq.rabbitmq.reply-to", call.correlation_id
    answer = Response.create_by_request(call, {"greeting": "hello, world"})
    answer.amqp_correlation_id = call.correlation_id
    return {"request": request, "response": AMQPMessage.create_from_message(answer)}


def pika_stages(message: AMQPMessage, cls: type) -> list[Callable[[], Any]]:
    props = cls(**properties(message, 2))
    body = bytes(message.body)
    method = pika.spec.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True)

    def frames() -> bytes:
        return b"".join(
            (
                pika.frame.Method(1, method).marshal(),
                pika.frame.Header(1, len(body), props).marshal(),
                pika.frame.Body(1, body).marshal(),
            )
        )

    return [props.encode, pika.frame.Header(1, len(body), props).marshal, frames]


def pamqp_stages(message: AMQPMessage, cls: type) -> list[Callable[[], Any]]:
    props = cls(**properties(message, 2))
    props.message_id = props.message_id or "0f" * 16  # as aiormq's basic_publish does
    body = bytes(message.body)
    method = commands.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True)
    content_header = header.ContentHeader(body_size=len(body), properties=props)

    def frames() -> bytes:
        return b"".join(
            pamqp_frame.marshal(frame, 1)
            for frame in (method, content_header, pamqp_body.ContentBody(body))
        )

    return [props.marshal, lambda: pamqp_frame.marshal(content_header, 1), frames]


def decode_figures(message: AMQPMessage) -> list[float]:
    kwargs = properties(message, 2)
    pika_frame = pika.frame.Header(1, 10, pika.BasicProperties(**kwargs)).marshal()
    props = commands.Basic.Properties(**kwargs)
    pamqp_header = pamqp_frame.marshal(header.ContentHeader(body_size=10, properties=props), 1)
    return per_call(
        lambda: pika.frame.decode_frame(pika_frame), lambda: pamqp_frame.unmarshal(pamqp_header)
    )


def main() -> None:
    print("µs per message; library -> drivers.wire")
    stages = ("properties", "content header frame", "all frames of a publish")
    for name, message in messages().items():
        print(f"\n{name} ({len(message.headers)} headers)")
        engines = (
            ("pika", pika_stages, pika.BasicProperties, PikaProperties),
            ("pamqp", pamqp_stages, commands.Basic.Properties, PamqpProperties),
        )
        for engine, stages_of, library_cls, fast_cls in engines:
            pairs = zip(stages_of(message, library_cls), stages_of(message, fast_cls), strict=True)
            for stage, (library, fast) in zip(stages, pairs, strict=True):
                old, new = per_call(library, fast)
                print(f"  {engine:5} {stage:24} {old:6.2f} -> {new:6.2f}  ({old - new:+.2f} saved)")
        pika_decode, pamqp_decode = decode_figures(message)
        print(f"  decoding the header frame: pika {pika_decode:.2f}, pamqp {pamqp_decode:.2f}")


if __name__ == "__main__":
    main()
