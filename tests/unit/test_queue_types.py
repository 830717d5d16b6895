"""Queue types on the memory broker: quorum topology, attempts counted by the broker, bad input.

The memory broker keeps RabbitMQ's delivery count of quorum queues
(``x-delivery-count``, ``x-delivery-limit``), so the engines' quorum path runs
here on both engines; the same on RabbitMQ is in
``tests/integration/test_queue_types_rabbitmq.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tavrida2 import client, config, configfile, dispatcher, exceptions, server, service
from tavrida2.deadletter import DeadLetterPolicy, DeadLetters
from tavrida2.discovery import LocalDiscovery
from tavrida2.drivers.aio import connection as aio_connection
from tavrida2.drivers.base import Disposition
from tavrida2.drivers.errors import from_channel_close
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.drivers.pika_sync import connection as pika_connection
from tavrida2.messages import AMQPMessage, attempt_in
from tavrida2.queuetypes import DEFAULT_DELIVERY_LIMIT, mismatch

QUEUE = "qt_queue"
EXCHANGE = "qt_exchange"
DEPLOY = Path(__file__).resolve().parents[2] / "samples" / "deploy"


@dispatcher.rpc_service("qt")
class Flaky(service.ServiceController):
    """``work`` fails while ``failures`` is positive; records the attempt of each delivery."""

    failures: ClassVar[int] = 0
    attempts: ClassVar[list[int]] = []
    done: ClassVar[list[int]] = []

    @dispatcher.rpc_method(service="qt", method="work")
    def work(self, request, proxy, n):
        self.attempts.append(attempt_in(request.headers))
        if Flaky.failures > 0:
            Flaky.failures -= 1
            raise RuntimeError(f"down ({n})")
        self.done.append(n)
        return {"n": n}

    @dispatcher.broadcast_method(service="qt", method="flush")
    def flush(self, request, proxy):
        return {}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Flaky.failures, Flaky.attempts, Flaky.done = 0, [], []


class Rig:
    """A quorum (or classic) server of ``Flaky`` on a memory broker, on one engine."""

    def __init__(self, async_engine: bool, **server_kwargs: Any) -> None:
        self.broker = MemoryBroker.get("queue-types")
        self.conf = config.ConnectionConfig.from_url(
            "memory://queue-types", async_engine=async_engine
        )
        self.disc = LocalDiscovery()
        self.disc.register_remote_service("qt", EXCHANGE)
        Flaky.set_discovery(self.disc)
        self.srv = server.Server(self.conf, QUEUE, EXCHANGE, [Flaky], **server_kwargs)
        self.threads: list[Any] = []

    def start(self) -> Rig:
        if self.conf.async_engine:
            self.threads = server.run_servers([self.srv])
        else:
            self.srv.start()
        return self

    def cast(self, n: int) -> None:
        with client.RPCClient(config=self.conf, discovery=self.disc, source="test") as cli:
            cli.qt.work(n=n).cast()
        if self.conf.async_engine:
            assert self.broker.wait_until_idle(timeout=10)
        else:
            self.broker.run_until_idle()

    def dead_letters(self) -> list[dict[str, Any]]:
        return [dict(m.headers) for m in self.broker.messages_in(f"{QUEUE}.dlq")]

    def stop(self) -> None:
        self.srv.stop()
        if not self.conf.async_engine and self.srv.driver is not None:
            self.srv.driver.close()
        for thread in self.threads:
            thread.join(5)


ENGINES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


@pytest.fixture(params=ENGINES)
def quorum(request: pytest.FixtureRequest) -> Any:
    rig = Rig(
        request.param,
        queue_type="quorum",
        dead_letters=DeadLetterPolicy.for_queue(QUEUE, max_attempts=3, delivery_limit=5),
    ).start()
    yield rig
    rig.stop()


def test_the_quorum_topology_types_the_server_queue_and_its_dead_letters() -> None:
    srv = Rig(False, queue_type="quorum").srv
    queues = {queue.name: queue for queue in srv.topology().queues}
    main = dict(queues[QUEUE].arguments)
    assert main == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": f"{QUEUE}.dlx",
        "x-dead-letter-routing-key": QUEUE,
        "x-delivery-limit": DEFAULT_DELIVERY_LIMIT,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert queues[QUEUE].durable and not queues[QUEUE].auto_delete
    # nothing waits in a retry queue: the broker delivers again
    assert f"{QUEUE}.retry" not in queues
    # dead letters outlive a node as the messages did
    assert dict(queues[f"{QUEUE}.dlq"].arguments) == {"x-queue-type": "quorum"}
    broadcasts = queues[srv.broadcast_queue or ""]
    assert broadcasts.auto_delete and not broadcasts.durable
    assert "x-queue-type" not in dict(broadcasts.arguments)


def test_classic_is_the_default_and_keeps_its_retry_queue() -> None:
    srv = Rig(False).srv
    queues = {queue.name: dict(queue.arguments) for queue in srv.topology().queues}
    assert srv.queue_type == "classic"
    assert "x-queue-type" not in queues[QUEUE] and "x-delivery-limit" not in queues[QUEUE]
    assert f"{QUEUE}.retry" in queues


def test_without_dead_letters_a_quorum_queue_has_no_delivery_limit() -> None:
    srv = Rig(False, queue_type="quorum", dead_letters=False).srv
    queues = {queue.name: dict(queue.arguments) for queue in srv.topology().queues}
    # a limit without a dead-letter exchange would drop messages
    assert queues[QUEUE] == {"x-queue-type": "quorum"}


def test_a_failing_cast_is_redelivered_and_counted_by_the_broker(quorum: Rig) -> None:
    Flaky.failures = 2
    quorum.cast(1)
    assert Flaky.attempts == [1, 2, 3]
    assert Flaky.done == [1]
    assert quorum.dead_letters() == []


def test_a_cast_that_keeps_failing_is_dead_lettered_after_max_attempts(quorum: Rig) -> None:
    Flaky.failures = 10
    quorum.cast(7)
    assert Flaky.attempts == [1, 2, 3]
    [letter] = quorum.dead_letters()
    assert letter["x-tavrida2-reason"] == "handler failed 3 time(s), last: down (7)"
    # the broker's count became tavrida2's attempt: the copy is counted afresh
    assert letter["x-tavrida2-attempt"] == 3
    assert "x-delivery-count" not in letter
    assert quorum.broker.message_count(QUEUE) == 0


@pytest.mark.parametrize("async_engine", ENGINES)
def test_a_delivery_limit_below_max_attempts_ends_the_attempts_sooner(async_engine: bool) -> None:
    policy = DeadLetterPolicy.for_queue(QUEUE, max_attempts=3, delivery_limit=2)
    rig = Rig(async_engine, queue_type="quorum", dead_letters=policy).start()
    try:
        Flaky.failures = 10
        rig.cast(1)
    finally:
        rig.stop()
    assert Flaky.attempts == [1, 2, 3]
    assert len(rig.dead_letters()) == 1


def test_the_broker_dead_letters_past_the_delivery_limit() -> None:
    """Deliveries that never end (the consumer goes each time) stop at the limit."""
    broker = MemoryBroker.get("limit")
    broker.declare_exchange("dlx", "direct")
    broker.declare_queue("dlq")
    broker.bind_queue("dlq", "dlx", "q")
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": 2,
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "q",
    }
    broker.declare_queue("q", arguments=arguments)
    broker.publish("", "q", b"{}", {"a": 1})
    counts = []
    for _ in range(3):
        consumer = broker.add_consumer("q", owner=object())
        delivery = broker.next_delivery(consumer)
        assert delivery is not None
        counts.append(delivery.message.headers["x-delivery-count"])
        broker.cancel_consumer(consumer)  # as a killed server
    assert counts == [0, 1, 2]
    assert broker.message_count("q") == 0
    [letter] = broker.messages_in("dlq")
    assert letter.headers["x-death"][0]["reason"] == "delivery_limit"
    assert "x-delivery-count" not in letter.headers


def test_a_nack_requeue_counts_too() -> None:
    broker = MemoryBroker.get("limit-nack")
    broker.declare_queue("q", arguments={"x-queue-type": "quorum", "x-delivery-limit": 1})
    broker.publish("", "q", b"{}", {})
    consumer = broker.add_consumer("q", owner=object())
    for expected in (0, 1):
        delivery = broker.next_delivery(consumer)
        assert delivery is not None
        assert delivery.message.headers["x-delivery-count"] == expected
        broker.settle(delivery, Disposition.REQUEUE)
    # no dead-letter exchange: dropped, as RabbitMQ does
    assert broker.message_count("q") == 0 and len(broker.discarded) == 1


def test_attempt_adds_the_broker_count_to_tavrida2s() -> None:
    assert attempt_in({"x-delivery-count": 0}) == 1
    assert attempt_in({"x-delivery-count": 2}) == 3
    assert attempt_in({"x-tavrida2-attempt": 2, "x-delivery-count": 1}) == 3
    assert attempt_in({"x-delivery-count": "2"}) == 1
    assert attempt_in({"x-delivery-count": True}) == 1


def test_dead_letters_on_quorum_requeue_until_the_last_attempt() -> None:
    policy = DeadLetterPolicy.for_queue(QUEUE, max_attempts=2)
    letters = DeadLetters(policy, QUEUE, "quorum")
    first = AMQPMessage(b"{}", {"x-delivery-count": 0}, exchange="e", routing_key="qt.work")
    assert letters.after_failure(first, RuntimeError("x")) is None
    last = AMQPMessage(b"{}", {"x-delivery-count": 1}, exchange="e", routing_key="qt.work")
    outcome = letters.after_failure(last, RuntimeError("x"))
    assert outcome is not None
    exchange, routing_key, copy, retried = outcome
    assert (exchange, routing_key, retried) == (f"{QUEUE}.dlx", QUEUE, False)
    assert copy.headers["x-tavrida2-attempt"] == 2
    assert copy.headers["x-tavrida2-exchange"] == "e"


# -- bad input -----------------------------------------------------------------------------


def test_an_unknown_queue_type_names_the_allowed_ones() -> None:
    with pytest.raises(
        exceptions.ConfigError, match="queue_type='lazy': expected 'classic' or 'quorum'"
    ):
        Rig(False, queue_type="lazy")


@pytest.mark.parametrize("limit", [0, -1, True, 2.5])
def test_a_delivery_limit_must_be_a_positive_integer(limit: Any) -> None:
    with pytest.raises(exceptions.ConfigError, match="delivery_limit"):
        DeadLetterPolicy.for_queue(QUEUE, delivery_limit=limit)


def test_a_delivery_limit_that_cannot_reach_max_attempts_is_refused() -> None:
    policy = DeadLetterPolicy.for_queue(QUEUE, max_attempts=5, delivery_limit=2)
    with pytest.raises(exceptions.ConfigError, match="expected delivery_limit >= 4"):
        Rig(False, queue_type="quorum", dead_letters=policy)
    # a classic queue has no delivery limit
    assert Rig(False, dead_letters=policy).srv.queue_type == "classic"


@pytest.mark.parametrize("async_engine", ENGINES)
def test_changing_the_queue_type_raises_how_to_migrate(async_engine: bool) -> None:
    Rig(False).start().stop()  # the classic queue exists now
    quorum = Rig(async_engine, queue_type="quorum")
    with pytest.raises(exceptions.QueueTypeMismatch) as raised:
        if async_engine:
            import asyncio

            asyncio.run(quorum.srv.serve())
        else:
            quorum.srv.start()
    text = str(raised.value)
    assert f"Queue '{QUEUE}' cannot be declared" in text
    assert f"rabbitmqctl delete_queue {QUEUE}" in text
    assert "new queue_name" in text and "x-queue-type='quorum'" in text
    assert isinstance(raised.value, exceptions.PreconditionFailed)


@pytest.mark.parametrize(
    ("queue_type", "broker_text", "found"),
    [
        (
            "quorum",
            "PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue 'q' in vhost '/': "
            "received the value 'reject-publish' of type 'longstr' but current is none",
            "it exists as a classic queue and this server declares a quorum queue",
        ),
        (
            "classic",
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-strategy' for queue 'q' in "
            "vhost '/': received none but current is the value 'at-least-once'",
            "it exists as a quorum queue and this server declares a classic queue",
        ),
        (
            "quorum",
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost "
            "'/': received '5' but current is '2'",
            "it exists with another x-delivery-limit (delivery_limit changed)",
        ),
        (
            "classic",
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q'",
            "it exists with other arguments",
        ),
    ],
)
def test_the_mismatch_says_what_changed(queue_type: str, broker_text: str, found: str) -> None:
    error = exceptions.PreconditionFailed(what="entity", name="q", reason=broker_text)
    text = str(mismatch("q", queue_type, {"x-queue-type": queue_type}, error))
    assert found in text
    assert broker_text in text
    assert f"To move to queue_type={queue_type!r}" in text


# -- config files --------------------------------------------------------------------------


def config_with(tmp_path: Path, server_keys: str) -> Path:
    for name in ("hello_world.py", "services.ds"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    text = (DEPLOY / "hello.ini").read_text()
    path = tmp_path / "hello.ini"
    path.write_text(text.replace("[server]\n", f"[server]\n{server_keys}\n", 1))
    return path


def test_queue_type_and_delivery_limit_come_from_the_file(tmp_path: Path) -> None:
    loaded = configfile.load(config_with(tmp_path, "queue_type = quorum\ndelivery_limit = 7"), {})
    assert loaded.queue_type == "quorum"
    assert loaded.dead_letters is not None and loaded.dead_letters.delivery_limit == 7
    srv = server.CLIServer(config_with(tmp_path, "queue_type = quorum"))
    assert srv.queue_type == "quorum"
    queues = {queue.name: dict(queue.arguments) for queue in srv.topology().queues}
    assert queues[srv.queue_name]["x-queue-type"] == "quorum"


@pytest.mark.parametrize(
    ("keys", "complaint"),
    [
        (
            "queue_type = lazy",
            "key 'queue_type': 'lazy' is not valid: expected 'classic' or 'quorum'",
        ),
        ("delivery_limit = 0", "key 'delivery_limit'"),
        (
            "queue_type = quorum\nmax_attempts = 9\ndelivery_limit = 3",
            "section [server]: delivery_limit=3",
        ),
    ],
)
def test_bad_queue_keys_in_a_file_name_the_key(tmp_path: Path, keys: str, complaint: str) -> None:
    path = config_with(tmp_path, keys)
    with pytest.raises(exceptions.ConfigError) as raised:
        configfile.load(path, {})
    assert complaint in str(raised.value)
    assert str(path) in str(raised.value)


def test_the_topology_command_shows_the_quorum_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tavrida2 import cli

    assert cli.main(["topology", str(config_with(tmp_path, "queue_type = quorum"))]) == 0
    out = capsys.readouterr().out
    assert "'x-queue-type': 'quorum'" in out and "'x-delivery-limit': 20" in out
    assert ".retry" not in out


def test_a_classic_queue_whose_node_is_down_is_unavailable_not_missing() -> None:
    error = from_channel_close(
        404,
        "NOT_FOUND - home node 'rabbit@n3' of durable queue 'svc.dlq' in vhost '/' is "
        "down or inaccessible",
        "svc.dlq",
    )
    assert isinstance(error, exceptions.QueueUnavailable)
    assert error.kwargs["queue"] == "svc.dlq"
    assert "rabbit@n3" in str(error) and "quorum" in str(error)
    # connecting again is tried again for it, with backoff, as for a lost connection
    assert exceptions.QueueUnavailable in pika_connection.RETRIED_WHEN_CONNECTING
    assert exceptions.QueueUnavailable in aio_connection.RETRIED_WHEN_CONNECTING
