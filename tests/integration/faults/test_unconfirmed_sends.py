"""Fault (10): a handler's send is refused by the broker; its delivery is not acked as handled.

The ``relay.forward(n, how)`` handler casts ``sink.take(n)`` to the ``sink``
service's exchange, which the test deletes once the server declared it (the
broker refuses the publish: 404, the channel closed), or, in the
``unroutable`` cases, leaves without any queue bound (the broker returns the
mandatory publish). How the handler sends (``how``):

- ``cast``: ``proxy.sink.take(n=n).cast()``; on the sync engine it raises in
  the handler; a plain handler on the async engine (run in the executor) gets
  a future it does not wait for, an ``async def`` handler a task it does not
  await;
- ``cast_async``: ``proxy.sink.take(n=n).cast_async()``, its handle never
  waited for.

Either way the handler returns normally in every case but the sync
``cast()``, and the send was not confirmed: the handler counts as failed. An
incoming cast is retried (``x-tavrida2-attempt`` grows: 1, then 2) and then
dead-lettered to ``<queue>.dlq`` with the reason (policy ``max_attempts=2``,
``retry_delay=0.1``); an incoming call answers its caller with an Error that
names the exchange (``RemoteError``), not retried. Afterwards the sink's
exchange is declared again with a queue bound, and the same message kind is
sent again: the server's send goes through and the delivery is acknowledged
(the connection and channels recovered from the refusal).

Last, many handlers at once send, half of them to the deleted exchange: each
refusal closes the publishing channel (not the connection), every refused
one is dead-lettered, every other one delivered, none lost.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any, ClassVar

import pytest

from tavrida2 import client, discovery, dispatcher, exceptions, server, service
from tavrida2.deadletter import DeadLetterPolicy
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    connection_pids,
    get_message,
    wait_until,
)
from tests.integration.faults.conftest import Figures
from tests.integration.faults.support import duplicated, settled

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

ATTEMPTS = 2


@dispatcher.rpc_service("relay")
class Relay(service.ServiceController):
    """A plain handler (both engines; in the executor on the async one)."""

    rec: ClassVar[Recorder] = Recorder()

    @dispatcher.rpc_method(service="relay", method="forward")
    def forward(self, request, proxy, n, how):
        attempt = request.headers.get("x-tavrida2-attempt", 1)
        self.rec.add("ran", (n, attempt))
        sent = getattr(proxy.sink.take(n=n), how)()  # not waited for (unless a sync cast())
        self.rec.add("returned", (n, attempt, type(sent).__name__))
        return {"n": n}

    @dispatcher.rpc_method(service="relay", method="mixed")
    def mixed(self, request, proxy, n):
        """Odd ``n`` to the sink (refused), even ``n`` to ``good`` (delivered); not waited for."""
        (proxy.sink if n % 2 else proxy.good).take(n=n).cast_async()


@dispatcher.rpc_service("relay")
class AsyncRelay(service.ServiceController):
    """An ``async def`` handler that does not await what it sends (async engine)."""

    rec: ClassVar[Recorder] = Recorder()

    @dispatcher.rpc_method(service="relay", method="forward")
    async def forward(self, request, proxy, n, how):
        attempt = request.headers.get("x-tavrida2-attempt", 1)
        self.rec.add("ran", (n, attempt))
        sent = getattr(proxy.sink.take(n=n), how)()  # neither awaited nor waited for
        self.rec.add("returned", (n, attempt, type(sent).__name__))
        return {"n": n}


HANDLERS: dict[str, type[Relay] | type[AsyncRelay]] = {"plain": Relay, "async_def": AsyncRelay}

CASES = [
    pytest.param(False, "plain", "cast", "deleted", id="sync-cast-deleted"),
    pytest.param(False, "plain", "cast_async", "deleted", id="sync-cast_async-deleted"),
    pytest.param(True, "plain", "cast", "deleted", id="async-plain-cast-deleted"),
    pytest.param(True, "plain", "cast_async", "deleted", id="async-plain-cast_async-deleted"),
    pytest.param(True, "async_def", "cast", "deleted", id="async-async_def-cast-deleted"),
    pytest.param(
        True, "async_def", "cast_async", "deleted", id="async-async_def-cast_async-deleted"
    ),
    pytest.param(False, "plain", "cast_async", "unroutable", id="sync-cast_async-unroutable"),
    pytest.param(True, "async_def", "cast", "unroutable", id="async-async_def-cast-unroutable"),
]
INCOMING = [pytest.param("cast", id="incoming_cast"), pytest.param("call", id="incoming_call")]

#: What the server's refused send raises, by refusal.
REFUSED = {"deleted": exceptions.ExchangeNotFound, "unroutable": exceptions.UnroutableMessage}


class Setup:
    def __init__(
        self, engine: bool, handler: str, names: Names, servers: Servers, channel: Any
    ) -> None:
        self.engine = engine
        self.controller = HANDLERS[handler]
        self.controller.rec = Recorder()
        self.names, self.servers, self.channel = names, servers, channel
        self.exchange, self.queue = names.exchange("relay"), names.queue("relay")
        self.sink = names.exchange("sink")
        self.disc = discovery.LocalDiscovery()
        self.disc.register_remote_service("relay", self.exchange)
        self.disc.register_remote_service("sink", self.sink)
        self.controller.set_discovery(self.disc)
        self.server_name = names.connection("relay")

    def start(self) -> None:
        policy = DeadLetterPolicy.for_queue(self.queue, max_attempts=ATTEMPTS, retry_delay=0.1)
        conf = amqp_config(self.engine, self.server_name)
        srv = server.Server(conf, self.queue, self.exchange, [self.controller], dead_letters=policy)
        self.servers.start(srv)

    @property
    def rec(self) -> Recorder:
        return self.controller.rec

    def client(self) -> client.RPCClient:
        return client.RPCClient(amqp_config(False), self.disc, source="faults")

    def dead_letters(self) -> list[tuple[Any, bytes]]:
        found: list[tuple[Any, bytes]] = []
        while True:
            method, props, body = self.channel.basic_get(f"{self.queue}.dlq", auto_ack=True)
            if method is None:
                return found
            found.append((props, body))

    def sink_back(self) -> str:
        """Declare the sink's exchange (again) with a queue bound; the queue's name."""
        sink_queue = self.names.queue("sink")
        self.channel.exchange_declare(self.sink, "topic", durable=True)
        self.channel.queue_declare(sink_queue, durable=True)
        self.channel.queue_bind(sink_queue, self.sink, "#")
        return sink_queue


@pytest.mark.parametrize("incoming", INCOMING)
@pytest.mark.parametrize(("engine", "handler", "how", "refusal"), CASES)
def test_refused_send_fails_the_handler(
    engine: bool,
    handler: str,
    how: str,
    refusal: str,
    incoming: str,
    names: Names,
    servers: Servers,
    channel: Any,
    figures: Figures,
) -> None:
    setup = Setup(engine, handler, names, servers, channel)
    setup.start()
    [server_connection] = connection_pids(setup.server_name)
    if refusal == "deleted":
        channel.exchange_delete(setup.sink)
    started = time.monotonic()
    letters: list[tuple[Any, bytes]] = []
    answer: Any = None
    raised: BaseException | None = None
    with setup.client() as cli:
        if incoming == "cast":
            cli.relay.forward(n=1, how=how).cast()
            letters = wait_until(setup.dead_letters, "the dead letter", timeout=20)
        else:
            try:
                answer = cli.relay.forward(n=1, how=how).call(timeout=15)
            except exceptions.TavridaError as exc:
                raised = exc
        wait_until(lambda: settled(setup.queue), "the delivery settled")
        seconds = time.monotonic() - started
        ran = setup.rec.of("ran")
        returned = setup.rec.of("returned")

        # the exchange is back, with a queue: the server's sends go through again
        sink_queue = setup.sink_back()
        if incoming == "cast":
            cli.relay.forward(n=2, how=how).cast()
        else:
            again = cli.relay.forward(n=2, how=how).call(timeout=15)
            assert again.payload == {"n": 2}
        _, _, body = get_message(channel, sink_queue)
        wait_until(lambda: settled(setup.queue), "the second delivery settled")
    recovered_connection = connection_pids(setup.server_name)

    reason = letters[0][0].headers.get("x-tavrida2-reason", "") if letters else ""
    figures.record(
        test=f"(10) handler's send refused ({refusal} exchange), incoming {incoming}",
        engine=f"{'async' if engine else 'sync'} ({handler} handler, {how}())",
        sent=1,
        handled=0,
        dead_lettered=len(letters),
        duplicated=0,
        lost=1 - len(letters) - (raised is not None) - (answer is not None),
        calls_returned=None if incoming == "cast" else int(answer is not None),
        calls_raised=None if incoming == "cast" else int(raised is not None),
        seconds=seconds,
        notes=(
            f"handler ran {len(ran)} time(s) (attempts {[a for _, a in ran]}), returned "
            f"{len(returned)}; "
            + (f"dead letter: {reason}" if incoming == "cast" else f"caller got {raised}")
            + "; sent again once the exchange was back"
        ),
    )

    refused = REFUSED[refusal]
    assert json.loads(body)["payload"] == {"n": 2}
    assert recovered_connection == [server_connection], "the server's connection was replaced"
    assert (2, 1) in setup.rec.of("ran") and len(setup.rec.of("ran")) == len(ran) + 1
    assert setup.dead_letters() == [], "the second message was dead-lettered"
    if incoming == "cast":
        # retried, then dead-lettered: never acknowledged as handled
        assert ran == [(1, attempt) for attempt in range(1, ATTEMPTS + 1)], ran
        [(props, _)] = letters
        headers = props.headers
        assert headers["x-tavrida2-attempt"] == ATTEMPTS
        assert reason.startswith(f"handler failed {ATTEMPTS} time(s), last: "), reason
        assert setup.sink in reason, reason
        assert headers["x-tavrida2-error-class"].endswith(refused.__name__), headers
        assert headers["x-tavrida2-queue"] == setup.queue
    else:
        # answered with an Error, not retried
        assert answer is None, f"the caller got an answer: {answer.payload}"
        assert isinstance(raised, exceptions.RemoteError), repr(raised)
        assert raised.remote_class.endswith(refused.__name__), raised
        assert setup.sink in raised.remote_message, raised
        assert ran == [(1, 1)], ran
        assert letters == []
    if not (engine is False and how == "cast"):
        # the handler returned normally, yet its delivery was not acknowledged as handled
        assert len(returned) == len(ran), returned


MIXED = 200


@pytest.mark.parametrize("engine", ENGINES)
def test_refused_send_among_confirmed_ones(
    engine: bool, names: Names, servers: Servers, channel: Any, figures: Figures
) -> None:
    """Many handlers at once (async engine: 64 in flight), half of them sending to the
    deleted exchange, half to one with a queue: the refusals close the publishing
    channel, not the server's connection; every odd ``n`` is dead-lettered, every even
    one reaches its queue, none is lost."""
    setup = Setup(engine, "plain", names, servers, channel)
    good, good_queue = names.exchange("good"), names.queue("good")
    setup.disc.register_remote_service("good", good)
    setup.start()
    [server_connection] = connection_pids(setup.server_name)
    channel.queue_declare(good_queue, durable=True)
    channel.queue_bind(good_queue, good, "#")
    channel.exchange_delete(setup.sink)
    started = time.monotonic()
    with setup.client() as cli:
        for n in range(MIXED):
            cli.relay.mixed(n=n).cast()
    odd = {n for n in range(MIXED) if n % 2}
    even = set(range(MIXED)) - odd
    letters: collections.Counter[int] = collections.Counter()
    arrived: collections.Counter[int] = collections.Counter()

    def collect() -> bool:
        for _, body in setup.dead_letters():
            letters[json.loads(body)["payload"]["n"]] += 1
        while True:
            method, _, body = channel.basic_get(good_queue, auto_ack=True)
            if method is None:
                break
            arrived[json.loads(body)["payload"]["n"]] += 1
        return (
            set(letters) | set(arrived) >= odd | even
            and settled(setup.queue)
            and settled(f"{setup.queue}.retry")
        )

    wait_until(collect, "every n dead-lettered or delivered", timeout=40)
    time.sleep(0.5)
    collect()  # and nothing more comes
    seconds = time.monotonic() - started
    after = connection_pids(setup.server_name)
    lost = MIXED - len(set(letters) | set(arrived))
    collateral = sorted(even & set(letters))
    figures.record(
        test="(10) handler sends refused among confirmed ones (half to a deleted exchange)",
        engine="async" if engine else "sync",
        sent=MIXED,
        handled=len(arrived),
        dead_lettered=len(letters),
        duplicated=duplicated(letters) + duplicated(arrived),
        lost=lost,
        seconds=seconds,
        notes=f"odd n to the deleted exchange: {len(odd & set(letters))} dead-lettered; even n: "
        f"{len(even & set(arrived))} delivered, {len(collateral)} dead-lettered; the server's "
        f"connection {'kept' if after == [server_connection] else 'replaced'}",
    )

    assert lost == 0
    assert set(letters) >= odd
    assert set(arrived) <= even, "an odd n reached the good queue"
    assert after == [server_connection], (
        "a refused publish (404: one channel closed) cost the server its connection"
    )
    assert collateral == [], (
        f"{len(collateral)} handlers whose send was fine failed and were dead-lettered, "
        f"e.g. n={collateral[:5]}"
    )
    # A good publish written just before a refused one may have reached its queue when
    # the broker closed the channel without confirming it: sent again, it arrives twice
    # (at least once, never lost). Dead letters are never doubled.
    assert duplicated(letters) == 0, "a dead letter was doubled"
    assert duplicated(arrived) <= len(odd), "more copies than channel closes"
