"""The node holding the queue's leader is SIGKILLed under load; nothing is lost.

On the session's 3-node cluster (``conftest.cluster``): the server's queue is a
quorum queue (``queue_type="quorum"``, three members) whose leader is placed on
node 3. The server and the clients are given all three nodes
(``ConnectionConfig(hosts=[...])``, no shuffling), the server node 2 first, the
clients node 1 first. While 5,000 casts (``tally.note``, re-sent until
confirmed) and 1,000 calls (``tally.echo``, each tried once) are under way,
node 3's ``beam.smp`` gets SIGKILL: the queue's leader goes with it. Then:

- every confirmed cast is handled at least once (lost = 0), and every cast is
  confirmed in the end;
- every call returned or raised one of tavrida2's errors (none hangs, no raw
  library error), and each answer is the right one;
- the service answers a call sent after the kill within 10 s; the figures (time
  to the first answer, the longest gap between answers, when the broker showed
  a new leader) are printed and written to ``build/cluster-figures.json``.

The probe that times the fail-over calls through node 1. The killed node is
started again after the test (it rejoins the cluster). (Clients failing over
to another node when theirs is lost are tested through TCP proxies in
``tests/integration/test_brokers_rabbitmq.py``.)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from typing import Any

import pika
import pytest

from tavrida2 import exceptions, server
from tavrida2.config import ConnectionConfig
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.queuetypes import QUORUM, queue_type_arguments
from tests.brokers.rabbit_node import Cluster, RabbitNode
from tests.cluster.conftest import FailoverFigures
from tests.integration.conftest import ENGINES, Servers, wait_until
from tests.integration.faults.support import (
    CallStream,
    CastStream,
    Tally,
    duplicated,
    fresh_tally,
    sync_client,
)

pytestmark = [pytest.mark.cluster, pytest.mark.rabbitmq, pytest.mark.timeout(600)]

CASTS = 5000
CALLS = 1000
#: The service must answer again this soon after the kill.
SERVING_AGAIN_WITHIN = 10.0
PROBE_TIMEOUT = 1.0
PROBE_PERIOD = 0.05


def node_config(nodes: list[RabbitNode], engine: bool, label: str) -> ConnectionConfig:
    """Every node of ``nodes``, tried in that order (the first one is used while it is up)."""
    return ConnectionConfig.from_url(
        f"amqp://guest:guest@127.0.0.1:{nodes[0].port}/%2F",
        async_engine=engine,
        connection_name=f"t2cl-{label}-{uuid.uuid4().hex[:8]}",
        retry_delay=0.2,
        hosts=[("127.0.0.1", node.port) for node in nodes],
        shuffle_hosts=False,
    )


def declare_quorum_queue(node: RabbitNode, queue: str, arguments: dict[str, Any]) -> None:
    """Declare ``queue`` through ``node``: its leader goes there (``client-local``)."""
    params = pika.ConnectionParameters(
        "127.0.0.1", node.port, credentials=pika.PlainCredentials("guest", "guest")
    )
    connection = pika.BlockingConnection(params)
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=arguments)
    finally:
        connection.close()


def leader_of(node: RabbitNode, queue: str) -> str | None:
    """The queue's leader as ``node`` sees it (None: none now)."""
    done = node.ctl("list_queues", "name", "leader", "-q", "--formatter", "json", check=False)
    if done.returncode != 0:
        return None
    for row in json.loads(done.stdout or "[]"):
        if row["name"] == queue:
            return str(row["leader"]) or None
    return None


class Probe(threading.Thread):
    """Calls ``tally.echo`` every 50 ms (1 s timeout); records when answers came."""

    def __init__(self, conf: ConnectionConfig, exchange: str) -> None:
        super().__init__(daemon=True, name="probe")
        self.conf = conf
        self.exchange = exchange
        self.stopping = threading.Event()
        self.answers: list[tuple[float, float]] = []  # (sent, answered), monotonic
        self.errors: list[str] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with sync_client(self.conf, self.exchange) as cli:
                n = 0
                while not self.stopping.is_set():
                    n -= 1  # negative: apart from the CallStream's
                    sent = time.monotonic()
                    try:
                        answer = cli.tally.echo(n=n).call(timeout=PROBE_TIMEOUT)
                    except (exceptions.CallTimeout, exceptions.ConnectionClosed) as exc:
                        self.errors.append(type(exc).__name__)
                    else:
                        assert answer.payload == {"n": n}
                        self.answers.append((sent, time.monotonic()))
                    self.stopping.wait(PROBE_PERIOD)
        except BaseException as exc:
            self.failure = exc

    def first_answer_sent_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the answer of the first call sent after it."""
        later = [answered for sent, answered in self.answers if sent >= moment]
        return min(later) - moment if later else None

    def longest_gap_around(self, moment: float) -> float:
        """The longest time without an answer, from the last answer before ``moment`` on."""
        times = [answered for _, answered in self.answers]
        before = [t for t in times if t < moment]
        after = [t for t in times if t >= moment]
        points = before[-1:] + after
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def all_running(cluster: Cluster) -> None:
    """Start any node that is down (it rejoins) and wait for the three to be clustered."""
    for node in cluster.nodes:
        if not node.running():
            node.start()
    wanted = sorted(n.node for n in cluster.nodes)
    wait_until(lambda: cluster.running_nodes(cluster.nodes[0]) == wanted, "the cluster whole", 60)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_queue_leader_node_killed_under_load(
    cluster: Cluster, engine: bool, failover_figures: FailoverFigures
) -> None:
    all_running(cluster)
    clients_node, server_node, victim = cluster.nodes
    tag = uuid.uuid4().hex[:12]
    queue, exchange = f"t2cl-q-{tag}", f"t2cl-x-{tag}"
    policy = DeadLetterPolicy.for_queue(queue)
    declare_quorum_queue(
        victim, queue, {**queue_type_arguments(QUORUM), **policy.queue_arguments(queue, QUORUM)}
    )
    assert leader_of(server_node, queue) == victim.node
    server_first = [server_node, clients_node, victim]
    clients_first = [clients_node, server_node, victim]

    ledger = fresh_tally()
    servers = Servers()
    probe = Probe(node_config(clients_first, False, "probe"), exchange)
    try:
        srv = server.Server(
            node_config(server_first, engine, "server"),
            queue,
            exchange,
            [Tally],
            dead_letters=policy,
            queue_type=QUORUM,
        )
        servers.start(srv)
        casts = CastStream(
            engine, node_config(clients_first, engine, "casts"), exchange, CASTS, 50,
            deadline=300,
        )  # fmt: skip
        calls = CallStream(
            engine, node_config(clients_first, engine, "calls"), exchange, CALLS, 10,
            deadline=300, call_timeout=10.0,
        )  # fmt: skip
        started = time.monotonic()
        # the calls (one at a time on the sync client) are slower than the casts:
        # they start first, so that both are under way at the kill
        calls.start()
        probe.start()
        wait_until(lambda: len(calls.returned) >= CALLS // 20, "the calls under way", 60)
        casts.start()
        wait_until(lambda: len(casts.confirmed) >= CASTS // 10, "the casts under way", 60)
        confirmed_at_kill, returned_at_kill = len(casts.confirmed), len(calls.returned)
        killed_at = time.monotonic()
        victim.kill()  # SIGKILL, then wait for the process to be gone
        wait_until(
            lambda: leader_of(server_node, queue) not in (None, victim.node),
            "a new leader",
            timeout=60,
        )
        new_leader_after = time.monotonic() - killed_at
        casts.finish(320)
        calls.finish(320)
        ledger.wait_for("note", casts.confirmed, timeout=120, what="every confirmed cast handled")
        probe.stopping.set()
        probe.join(10)
        seconds = time.monotonic() - started
    finally:
        probe.stopping.set()
        servers.stop_all()

    assert probe.failure is None, f"the probe broke down: {probe.failure!r}"
    serving_again = probe.first_answer_sent_after(killed_at)
    gap = probe.longest_gap_around(killed_at)
    counts = ledger.counts("note")
    lost = len(casts.confirmed - set(counts))
    failover_figures.record(
        engine="async" if engine else "sync",
        casts=len(casts.confirmed),
        handled=len(counts),
        duplicated=duplicated(counts),
        lost=lost,
        casts_raised=sum(casts.raised.values()),
        calls_returned=len(calls.returned),
        calls_raised=len(calls.failed),
        casts_confirmed_at_kill=confirmed_at_kill,
        calls_returned_at_kill=returned_at_kill,
        new_leader_seen_s=round(new_leader_after, 2),
        first_answer_after_kill_s=None if serving_again is None else round(serving_again, 3),
        longest_gap_s=round(gap, 3),
        seconds=round(seconds, 1),
        raised=dict(casts.raised + calls.raised),
    )
    assert confirmed_at_kill < CASTS and returned_at_kill < CALLS, "killed after the streams"
    assert lost == 0
    assert casts.confirmed == set(range(CASTS)), "a cast was never confirmed"
    assert calls.returned | calls.failed == set(range(CALLS)), "a call neither returned nor raised"
    assert not calls.returned & calls.failed
    assert not calls.wrong_answers, calls.wrong_answers[:5]
    assert not casts.unexpected and not calls.unexpected, (casts.unexpected, calls.unexpected)
    assert serving_again is not None, "no call sent after the kill was answered"
    assert serving_again <= SERVING_AGAIN_WITHIN, f"serving again after {serving_again:.1f} s"
