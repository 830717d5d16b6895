"""Dead letters and retries on the real RabbitMQ, both engines; `tavrida2 dlq list|replay`.

A cast whose handler fails is retried (attempt header, backoff through the
retry queue) and handled when it succeeds; one that keeps failing ends in the
dead-letter queue with the reason in its headers; a message that can never be
handled goes there at once; a failing call is not retried (its caller gets
the Error). A dead letter replayed after the handler was fixed is handled.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pika
import pytest

from tavrida2 import cli, client, discovery, dispatcher, exceptions, server, service
from tavrida2.deadletter import DeadLetterPolicy
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    pika_params,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(120)]


@dispatcher.rpc_service("flaky")
class Flaky(service.ServiceController):
    """``work`` fails while ``failures`` has entries left (one per attempt)."""

    rec: ClassVar[Recorder] = Recorder()
    failures: ClassVar[list[str]] = []

    @dispatcher.rpc_method(service="flaky", method="work")
    def work(self, request, proxy, n):
        attempt = request.headers.get("x-tavrida2-attempt", 1)
        if self.failures:
            self.rec.add("failed", (n, attempt))
            raise RuntimeError(self.failures.pop(0))
        self.rec.add("done", (n, attempt))
        return {"n": n}


class Setup:
    def __init__(self, names: Names, servers: Servers) -> None:
        self.names, self.servers = names, servers
        self.exchange = names.exchange("flaky")
        self.queue = names.queue("flaky")
        for suffix in (".dlx",):
            names.exchanges.append(self.queue + suffix)
        for suffix in (".dlq", ".retry"):
            names.queues.append(self.queue + suffix)
        self.disc = discovery.LocalDiscovery()
        self.disc.register_remote_service("flaky", self.exchange)
        Flaky.set_discovery(self.disc)

    def start(self, engine: bool, **policy: Any) -> server.Server:
        conf = amqp_config(engine, self.names.connection("flaky"))
        dead_letters = DeadLetterPolicy.for_queue(self.queue, **policy)
        srv = server.Server(conf, self.queue, self.exchange, [Flaky], dead_letters=dead_letters)
        self.servers.start(srv)
        return srv

    def client(self) -> client.RPCClient:
        return client.RPCClient(amqp_config(False), self.disc, source="script")

    def dead_letters(self) -> list[tuple[Any, bytes]]:
        """The messages of the dead-letter queue (taken off it)."""
        connection = pika.BlockingConnection(pika_params())
        try:
            channel = connection.channel()
            found = []
            while True:
                method, props, body = channel.basic_get(self.queue + ".dlq", auto_ack=True)
                if method is None:
                    return found
                found.append((props, body))
        finally:
            connection.close()


@pytest.fixture
def setup(names: Names, servers: Servers) -> Setup:
    Flaky.rec = Recorder()
    Flaky.failures = []
    return Setup(names, servers)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_cast_is_retried_and_handled(engine: bool, setup: Setup) -> None:
    setup.start(engine, max_attempts=3, retry_delay=0.2)
    Flaky.failures[:] = ["down", "still down"]
    started = time.monotonic()
    with setup.client() as cli_:
        cli_.flaky.work(n=1).cast()
        assert Flaky.rec.wait_for("done") == [(1, 3)]
    # backoff: 0.2 s before the 2nd attempt, 0.4 s before the 3rd
    assert time.monotonic() - started >= 0.6
    assert Flaky.rec.of("failed") == [(1, 1), (1, 2)]
    assert setup.dead_letters() == []


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cast_that_keeps_failing_is_dead_lettered_with_the_reason(
    engine: bool, setup: Setup
) -> None:
    setup.start(engine, max_attempts=2, retry_delay=0.1)
    Flaky.failures[:] = ["db at amqp://app:hunter2@db/ down"] * 5
    with setup.client() as cli_:
        cli_.flaky.work(n=7).cast()
        Flaky.rec.wait_for("failed", 2)
        letters = wait_until(setup.dead_letters, "the dead letter")
    [(props, body)] = letters
    headers = props.headers
    assert headers["x-tavrida2-reason"] == (
        "handler failed 2 time(s), last: db at amqp://app:***@db/ down"
    )
    assert headers["x-tavrida2-error-class"] == "RuntimeError"
    assert headers["x-tavrida2-attempt"] == 2
    assert headers["x-tavrida2-queue"] == setup.queue
    assert headers["x-tavrida2-exchange"] == setup.exchange
    assert headers["x-tavrida2-routing-key"] == "flaky.work"
    assert headers["destination"] == "flaky.work"
    assert props.delivery_mode == 2
    assert json.loads(body)["payload"] == {"n": 7}
    assert Flaky.rec.of("done") == []


@pytest.mark.parametrize("engine", ENGINES)
def test_an_unhandleable_message_is_dead_lettered_at_once(
    engine: bool, setup: Setup, channel: Any
) -> None:
    setup.start(engine)
    headers = {
        "correlation_id": "c",
        "request_id": "r",
        "message_id": "not-json-1",
        "message_type": "request",
        "source": "script",
        "destination": "flaky.work",
        "reply_to": "",
    }
    channel.basic_publish(
        setup.exchange, "flaky.work", b"{not json", pika.BasicProperties(headers=headers)
    )
    [(props, body)] = wait_until(setup.dead_letters, "the dead letter")
    assert body == b"{not json"
    assert props.headers["x-tavrida2-reason"].startswith("cannot be handled: ")
    assert props.headers["x-tavrida2-error-code"] == exceptions.MalformedBody._service_error_code
    assert props.headers["message_id"] == "not-json-1"
    assert "x-tavrida2-attempt" not in props.headers  # never retried


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_call_is_answered_not_retried(engine: bool, setup: Setup) -> None:
    setup.start(engine, retry_delay=0.1)
    Flaky.failures[:] = ["nope"]
    with setup.client() as cli_, pytest.raises(exceptions.RemoteError, match="nope"):
        cli_.flaky.work(n=3).call(timeout=10)
    time.sleep(0.3)
    assert Flaky.rec.of("failed") == [(3, 1)] and Flaky.rec.of("done") == []
    assert setup.dead_letters() == []


# -- tavrida2 dlq list / replay --------------------------------------------------------------

CONTROLLER = """
from tavrida2 import dispatcher, service

BROKEN = True
HANDLED = []

@dispatcher.rpc_service("ledger")
class Ledger(service.ServiceController):
    @dispatcher.rpc_method(service="ledger", method="book")
    def book(self, request, proxy, amount):
        if BROKEN:
            raise ValueError("ledger closed")
        HANDLED.append(amount)
"""


def test_dlq_list_and_replay_after_the_handler_is_fixed(
    tmp_path: Path, names: Names, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange, queue = names.exchange("ledger"), names.queue("ledger")
    names.exchanges.append(queue + ".dlx")
    names.queues += [queue + ".dlq", queue + ".retry"]
    module = f"t2_ledger_{names.tag}"
    (tmp_path / f"{module}.py").write_text(CONTROLLER)
    (tmp_path / "services.ds").write_text(f"[ledger]\nexchange = {exchange}\n")
    config_file = tmp_path / "ledger.ini"
    config_file.write_text(
        textwrap.dedent(
            f"""\
            [server]
            queue_name = {queue}
            exchange_name = {exchange}
            discovery = services.ds
            services = [{{"name": "ledger", "controller": "{module}.Ledger"}}]
            max_attempts = 1

            [connection]
            host = 127.0.0.1
            retry_delay = 0.2
            """
        )
    )
    srv = server.CLIServer(config_file)
    controller = srv.file_config.controllers[0]
    ledger_module = __import__(module)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        assert srv.started.wait(20)
        disc = discovery.LocalDiscovery()
        disc.register_remote_service("ledger", exchange)
        with client.RPCClient(amqp_config(False), disc, source="script") as cli_:
            cli_.ledger.book(amount=42).cast()
        assert controller.service_name == "ledger"

        def listed() -> str:
            assert cli.main(["dlq", "list", str(config_file)]) == 0
            return capsys.readouterr().out

        out = wait_until(lambda: "1 dead letter(s)" in (text := listed()) and text, "a dead letter")
        assert "request ledger.book" in out
        assert "handler failed (ledger closed)" in out or "ledger closed" in out
        assert f"from {exchange} / ledger.book" in out
        assert "1 dead letter(s)" in listed()  # listing leaves it there

        ledger_module.BROKEN = False  # the fix
        assert cli.main(["dlq", "replay", str(config_file)]) == 0
        assert "replayed 1 dead letter(s)" in capsys.readouterr().out
        wait_until(lambda: ledger_module.HANDLED == [42], "the replayed cast handled")
        assert "0 dead letter(s)" in listed()
    finally:
        srv.stop()
        thread.join(20)
