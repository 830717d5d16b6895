"""Driver errors on the real broker, on both engines.

Broker down and wrong credentials at start (``ConnectionFailed``, bounded, no
retry storm for refused credentials); a service missing from discovery
(``UnableToDiscover`` before anything is sent); a cast nobody is bound for
(``UnroutableMessage``); an exchange that does not exist (``ExchangeNotFound``,
and the driver keeps working); a graceful stop while a handler runs.
"""

from __future__ import annotations

import threading
import time

import pytest

from tavrida2 import client, discovery, dispatcher, exceptions, server, service
from tavrida2.config import ConnectionConfig
from tests.integration.conftest import (
    ENGINES,
    Names,
    Recorder,
    Servers,
    amqp_config,
    get_message,
    make_driver,
    queue_info,
    wait_until,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

NOBODY_LISTENS = "amqp://guest:guest@127.0.0.1:5673/%2F"


@dispatcher.rpc_service("probe")
class Probe(service.ServiceController):
    rec = Recorder()
    release = threading.Event()

    @dispatcher.rpc_method(service="probe", method="send")
    def send(self, request, proxy, service_name):
        try:
            pending = getattr(proxy, service_name).noop().cast()
            if hasattr(pending, "result"):  # the async engine's outbox gives a future
                pending.result(10)
        except exceptions.TavridaError as exc:
            self.rec.add("error", exc)
        else:
            self.rec.add("sent", service_name)

    @dispatcher.rpc_method(service="probe", method="noop")
    def noop(self, request, proxy):
        self.rec.add("noop")

    @dispatcher.rpc_method(service="probe", method="slow")
    def slow(self, request, proxy, n):
        self.rec.add("started", n)
        self.release.wait(10)
        time.sleep(0.2)  # still running when stop() is called
        self.rec.add("finished", n)


@pytest.fixture
def probe() -> type[Probe]:
    Probe.rec, Probe.release = Recorder(), threading.Event()
    return Probe


# -- connecting ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_broker_down_at_start_fails_with_host_and_port(engine: bool) -> None:
    conf = ConnectionConfig.from_url(
        NOBODY_LISTENS, async_engine=engine, connection_attempts=2, retry_delay=0.1
    )
    driver = make_driver(engine, conf)
    started = time.monotonic()
    try:
        with pytest.raises(exceptions.ConnectionFailed) as caught:
            driver.connect()
    finally:
        driver.close()
    assert time.monotonic() - started < 10
    assert "127.0.0.1" in str(caught.value)
    assert "5673" in str(caught.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_server_run_with_the_broker_down_raises_connection_failed(
    engine: bool, names: Names
) -> None:
    conf = ConnectionConfig.from_url(
        NOBODY_LISTENS, async_engine=engine, connection_attempts=2, retry_delay=0.1
    )
    srv = server.Server(conf, names.queue("probe"), names.exchange("probe"), [Probe])
    result: list[BaseException] = []

    def run() -> None:
        try:
            srv.run()
        except BaseException as exc:  # checked below
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    [error] = result
    assert isinstance(error, exceptions.ConnectionFailed)
    assert "127.0.0.1:5673" in str(error)


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_credentials_fail_at_once_without_retrying(engine: bool) -> None:
    conf = ConnectionConfig.from_url(
        "amqp://guest:wrong-password@127.0.0.1:5672/%2F",
        async_engine=engine,
        connection_attempts=5,
        retry_delay=10,
    )
    driver = make_driver(engine, conf)
    started = time.monotonic()
    try:
        with pytest.raises(exceptions.ConnectionFailed) as caught:
            driver.connect()
    finally:
        driver.close()
    # a single retry would first wait retry_delay (10 s), five attempts 40 s of backoff;
    # one refused attempt takes well under that even on a loaded machine
    assert time.monotonic() - started < 10
    assert "credentials" in str(caught.value)
    assert "wrong-password" not in str(caught.value)


# -- publishing ------------------------------------------------------------------------


def test_a_service_missing_from_discovery_fails_before_anything_is_sent() -> None:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("known", "known_exchange")
    # nothing listens there: had the client tried to send, it would fail to connect
    conf = ConnectionConfig.from_url(NOBODY_LISTENS, connection_attempts=1)
    with client.RPCClient(conf, disc, source="cli") as cli:
        with pytest.raises(exceptions.UnableToDiscover):
            cli.unknown_service.method(param=1).cast()
        with pytest.raises(exceptions.UnableToDiscover):
            client.RPCClient(conf, disc, source="cli", service="unknown_service")
    # the control: sending does connect
    with pytest.raises(exceptions.ConnectionFailed), client.RPCClient(conf, disc, "cli") as cli:
        cli.known.method(param=1).cast()


@pytest.mark.parametrize("engine", ENGINES)
def test_handlers_see_unable_to_discover_and_unroutable_message(
    engine: bool, names: Names, servers: Servers, probe: type[Probe]
) -> None:
    probe_ex, empty_ex = names.exchange("probe"), names.exchange("empty")
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("nobody_bound", empty_ex)  # the server declares it
    disc.register_remote_service("probe", probe_ex)
    probe.set_discovery(disc)
    conf = amqp_config(engine, names.connection("probe"))
    servers.start(server.Server(conf, names.queue("probe"), probe_ex, [probe]))

    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("probe", probe_ex)
    client_disc.register_remote_service("nobody_bound", empty_ex)
    with client.RPCClient(amqp_config(False, names.connection("cli")), client_disc, "cli") as cli:
        with pytest.raises(exceptions.UnroutableMessage) as caught:
            cli.nobody_bound.method(param=1).cast()
        assert empty_ex in str(caught.value)
        cli.probe.send(service_name="missing_service").cast()
        cli.probe.send(service_name="nobody_bound").cast()
        # the client's driver still works after the returned message
        cli.probe.send(service_name="probe").cast()

    errors = probe.rec.wait_for("error", 2)
    assert {type(e) for e in errors} == {
        exceptions.UnableToDiscover,
        exceptions.UnroutableMessage,
    }
    assert probe.rec.wait_for("sent") == ["probe"]
    probe.rec.wait_for("noop")


@pytest.mark.parametrize("engine", ENGINES)
def test_publishing_to_a_missing_exchange_raises_and_the_driver_keeps_working(
    engine: bool, names: Names, channel
) -> None:
    missing, exchange, queue = names.exchange("missing"), names.exchange(), names.queue()
    driver = make_driver(engine, amqp_config(engine, names.connection("driver")))
    try:
        driver.connect()
        for _ in range(2):
            with pytest.raises(exceptions.ExchangeNotFound) as caught:
                driver.publish(missing, "a.b", b"lost")
            assert missing in str(caught.value)
        driver.declare_exchange(exchange)
        driver.declare_queue(queue)
        driver.bind_queue(queue, exchange, "a.#")
        driver.publish(exchange, "a.b", b"kept", marker="yes")
        _method, properties, body = get_message(channel, queue)
        assert body == b"kept"
        assert properties.headers == {"marker": "yes"}
    finally:
        driver.close()


# -- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_lets_the_running_handler_finish_and_ack(
    engine: bool, names: Names, servers: Servers, probe: type[Probe]
) -> None:
    exchange, queue = names.exchange("probe"), names.queue("probe")
    srv = server.Server(amqp_config(engine, names.connection("probe")), queue, exchange, [probe])
    servers.start(srv)
    client_disc = discovery.LocalDiscovery()
    client_disc.register_remote_service("probe", exchange)
    with client.RPCClient(amqp_config(False, names.connection("cli")), client_disc, "cli") as cli:
        cli.probe.slow(n=1).cast()
        probe.rec.wait_for("started")

        stopping = threading.Thread(target=servers.stop, args=(srv,), daemon=True)
        stopping.start()
        time.sleep(0.1)  # let stop() begin while the handler is still running
        probe.release.set()
        stopping.join(30)
        assert not stopping.is_alive()
        assert probe.rec.of("finished") == [1]
        info = queue_info(queue)
        assert info is not None
        assert (info["messages_ready"], info["messages_unacknowledged"]) == (0, 0)

        # a new server on the same queue gets the next message, not the first again
        again = server.Server(
            amqp_config(engine, names.connection("again")), queue, exchange, [probe]
        )
        servers.start(again)
        cli.probe.slow(n=2).cast()
        wait_until(lambda: probe.rec.of("finished") == [1, 2], "the second message handled")
    assert probe.rec.of("started") == [1, 2]
