"""Several broker addresses: parsing, URL lists, the order drivers try them in, the error.

Connecting to closed local ports needs no broker; the same against RabbitMQ
(and failover through proxies) is in ``tests/integration/test_brokers_rabbitmq.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tavrida2 import configfile, exceptions
from tavrida2.config import ConnectionConfig, Credentials
from tavrida2.drivers.aio import AioDriver
from tavrida2.drivers.failover import Failover, NoBrokerAnswered
from tavrida2.drivers.pika_sync import PikaDriver

ENGINES = [pytest.param(False, id="sync"), pytest.param(True, id="async")]


def test_hosts_take_a_port_each_or_the_configs() -> None:
    conf = ConnectionConfig(
        hosts=["rabbit1", "rabbit2:5673", "[::1]:5674", "fe80::1", ("rabbit3", 5675)], port=5999
    )
    assert conf.hosts == [
        ("rabbit1", 5999),
        ("rabbit2", 5673),
        ("::1", 5674),
        ("fe80::1", 5999),
        ("rabbit3", 5675),
    ]
    # host and port are the first address
    assert (conf.host, conf.port) == ("rabbit1", 5999)
    assert ConnectionConfig(hosts="a, b:1", ssl=True).hosts == [("a", 5671), ("b", 1)]


def test_one_host_is_the_list_of_one() -> None:
    conf = ConnectionConfig("rabbit", port=5673)
    assert conf.hosts == [("rabbit", 5673)]
    assert conf.to_url() == "amqp://guest:***@rabbit:5673/%2F"


def test_the_same_address_twice_is_tried_once() -> None:
    assert ConnectionConfig(hosts=["a", "a:5672", "b"]).hosts == [("a", 5672), ("b", 5672)]


@pytest.mark.parametrize(
    ("hosts", "complaint"),
    [
        ([], "at least one broker address"),
        ("", "at least one broker address"),
        (["a:0"], "'a:0': the port must be an integer from 1 to 65535"),
        (["a:x"], "'a:x': the port must be an integer"),
        ([":5672"], "expected a host name before the port"),
        (["amqp://a"], "a URL goes to from_url"),
        ([5672], 'expected "host", "host:port" or (host, port)'),
        ([("a", 70000)], "the port must be an integer"),
        ([("", 1)], "expected a host name"),
    ],
)
def test_bad_hosts_are_refused(hosts: Any, complaint: str) -> None:
    with pytest.raises(exceptions.ConfigError) as raised:
        ConnectionConfig(hosts=hosts)
    assert complaint in str(raised.value)


def test_a_url_list_gives_the_hosts() -> None:
    from_list = ConnectionConfig.from_url(
        ["amqp://app:s3cret@rabbit1:5673/prod?heartbeat=30", "amqp://rabbit2", "amqp://rabbit3:1/"]
    )
    from_text = ConnectionConfig.from_url(
        "amqp://app:s3cret@rabbit1:5673/prod?heartbeat=30, amqp://rabbit2,amqp://rabbit3:1/"
    )
    for conf in (from_list, from_text):
        assert conf.hosts == [("rabbit1", 5673), ("rabbit2", 5672), ("rabbit3", 1)]
        assert conf.credentials == Credentials("app", "s3cret")
        assert (conf.virtual_host, conf.heartbeat_interval) == ("prod", 30.0)


def test_a_url_list_goes_back_and_forth_and_masks_the_password() -> None:
    conf = ConnectionConfig.from_url("amqp://app:pa,ss@a/vh,amqp://app:pa,ss@b:5673/vh")
    assert conf.credentials.password == "pa,ss"  # a comma inside a URL is no separator
    assert conf.to_url() == "amqp://app:***@a:5672/vh,amqp://app:***@b:5673/vh"
    again = ConnectionConfig.from_url(conf.to_url(mask_password=False))
    assert again.hosts == conf.hosts and again.credentials == conf.credentials
    assert "pa,ss" not in repr(conf)


@pytest.mark.parametrize(
    ("urls", "complaint"),
    [
        ("amqp://a,amqps://b", "every URL of a list must be amqp:// or every one amqps://"),
        ("amqp://u:p@a,amqp://v:p@b", "not in credentials"),
        ("amqp://a/one,amqp://b/two", "not in virtual_host"),
        ("amqp://a,amqp://b?heartbeat=5", "not in heartbeat_interval"),
        ("amqp://a,memory://b", "every URL of a list"),
    ],
)
def test_urls_of_a_list_may_differ_only_in_the_address(urls: str, complaint: str) -> None:
    with pytest.raises(exceptions.ConfigError) as raised:
        ConnectionConfig.from_url(urls)
    assert complaint in str(raised.value)
    assert ":p@" not in str(raised.value)


def test_each_address_gets_its_own_pika_and_aio_parameters() -> None:
    conf = ConnectionConfig(hosts=["a:1", "b:2"], connection_name="n")
    params = conf.to_pika_params(("b", 2))
    assert (params.host, params.port) == ("b", 2)
    assert (conf.to_pika_params().host, conf.to_pika_params().port) == ("a", 1)
    url, _ = conf.to_aio_params(("b", 2))
    assert url.startswith("amqp://guest:guest@b:2/%2F?")


def test_tls_checks_the_name_of_the_address_it_connects_to() -> None:
    conf = ConnectionConfig(hosts=["a", "b"], ssl=True)
    assert conf.to_pika_params(("b", 5671)).ssl_options.server_hostname == "b"
    _, kwargs = conf.to_aio_params(("b", 5671))
    assert kwargs["ssl_context"].server_name == "b"
    named = ConnectionConfig(hosts=["a", "b"], ssl=True, ssl_options={"server_hostname": "rmq"})
    assert named.to_pika_params(("b", 5671)).ssl_options.server_hostname == "rmq"


# -- the order of the attempts --------------------------------------------------------------


def test_without_shuffle_the_order_is_the_given_one() -> None:
    conf = ConnectionConfig(hosts=["a", "b", "c"], shuffle_hosts=False)
    assert Failover(conf).round() == [("a", 5672), ("b", 5672), ("c", 5672)]


def test_shuffle_is_on_by_default_and_each_driver_has_its_order() -> None:
    conf = ConnectionConfig(hosts=["a", "b", "c", "d"])
    assert conf.shuffle_hosts
    orders = {tuple(Failover(conf).round()) for _ in range(50)}
    assert len(orders) > 1
    assert all(sorted(order) == sorted(conf.hosts) for order in orders)
    assert Failover(conf, shuffle=lambda hosts: hosts.reverse()).round()[0] == ("d", 5672)


def test_after_a_loss_the_next_round_starts_after_the_lost_address() -> None:
    failover = Failover(ConnectionConfig(hosts=["a", "b", "c"], shuffle_hosts=False))
    assert failover.attempt(lambda address: address, (OSError,)) == ("a", 5672)
    assert failover.round() == [("b", 5672), ("c", 5672), ("a", 5672)]


def test_the_first_address_that_answers_is_used() -> None:
    failover = Failover(ConnectionConfig(hosts=["a", "b", "c"], shuffle_hosts=False))
    tried = []

    def open_one(address: tuple[str, int]) -> str:
        tried.append(address[0])
        if address[0] == "a":
            raise ConnectionRefusedError("refused")
        return f"connection to {address[0]}"

    assert failover.attempt(open_one, (OSError,)) == "connection to b"
    assert tried == ["a", "b"] and failover.current == ("b", 5672)


def test_a_round_where_none_answers_names_every_address() -> None:
    failover = Failover(ConnectionConfig(hosts=["a", "b:5673"], shuffle_hosts=False))

    def refuse(address: tuple[str, int]) -> None:
        raise ConnectionRefusedError(f"refused by {address[0]}")

    with pytest.raises(NoBrokerAnswered) as raised:
        failover.attempt(refuse, (OSError,))
    assert str(raised.value) == (
        "none of the 2 broker addresses answered: a:5672 (refused by a); b:5673 (refused by b)"
    )


def test_refused_credentials_end_the_round() -> None:
    failover = Failover(ConnectionConfig(hosts=["a", "b"], shuffle_hosts=False))
    tried = []

    def refuse(address: tuple[str, int]) -> None:
        tried.append(address)
        raise ConnectionError("ACCESS_REFUSED - Login was refused")

    with pytest.raises(ConnectionError, match="ACCESS_REFUSED"):
        failover.attempt(refuse, (OSError,))
    assert len(tried) == 1


def test_one_address_raises_its_own_error() -> None:
    failover = Failover(ConnectionConfig("a"))
    with pytest.raises(ConnectionRefusedError, match="nope"):
        failover.attempt(
            lambda _: (_ for _ in ()).throw(ConnectionRefusedError("nope")), (OSError,)
        )


def test_the_async_round_is_the_same() -> None:
    failover = Failover(ConnectionConfig(hosts=["a", "b"], shuffle_hosts=False))

    async def open_one(address: tuple[str, int]) -> str:
        if address[0] == "a":
            raise ConnectionRefusedError("refused")
        return "b"

    assert asyncio.run(failover.attempt_async(open_one, (OSError,))) == "b"


# -- drivers, against closed ports (no broker) ----------------------------------------------


def closed_ports(count: int) -> list[int]:
    """Local ports nothing listens on (bound, then released)."""
    ports = []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


@pytest.mark.parametrize("async_engine", ENGINES)
def test_all_addresses_down_is_one_error_naming_each_bounded_by_connection_attempts(
    async_engine: bool,
) -> None:
    ports = closed_ports(3)
    conf = ConnectionConfig(
        hosts=[f"127.0.0.1:{port}" for port in ports],
        connection_attempts=2,
        retry_delay=0.05,
        async_engine=async_engine,
    )
    started = time.monotonic()
    with pytest.raises(exceptions.ConnectionFailed) as raised:
        if async_engine:
            asyncio.run(AioDriver(conf).connect())
        else:
            PikaDriver(conf).connect()
    text = str(raised.value)
    for port in ports:
        assert text.count(f"127.0.0.1:{port}") == 2  # in the target and in the reasons
    assert "none of the 3 broker addresses answered" in text
    assert "guest:guest" not in text
    assert time.monotonic() - started < 5


# -- config files ---------------------------------------------------------------------------


def connection_of(tmp_path: Path, lines: str, environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "c.ini"
    path.write_text(f"[connection]\n{lines}\n")
    sections = configfile.read_sections(str(path))
    configfile._check(
        str(path),
        {
            "server": {
                "queue_name": "q",
                "exchange_name": "x",
                "services": [{"name": "s", "controller": "m.C"}],
            },
            **sections,
        },
    )
    return configfile.connection_config(str(path), sections, environ or {})


def test_hosts_and_shuffle_hosts_in_a_config_file(tmp_path: Path) -> None:
    conf = connection_of(tmp_path, "hosts = rabbit1, rabbit2:5673\nshuffle_hosts = no")
    assert conf.hosts == [("rabbit1", 5672), ("rabbit2", 5673)] and not conf.shuffle_hosts
    listed = connection_of(tmp_path, 'hosts = ["rabbit1:1", "rabbit2"]\nport = 2')
    assert listed.hosts == [("rabbit1", 1), ("rabbit2", 2)]


def test_tavrida2_url_with_a_list_overrides_the_files_hosts(tmp_path: Path) -> None:
    conf = connection_of(
        tmp_path, "hosts = a, b", {"TAVRIDA2_URL": "amqp://u:p@c:1/v,amqp://u:p@d:2/v"}
    )
    assert conf.hosts == [("c", 1), ("d", 2)] and conf.virtual_host == "v"


@pytest.mark.parametrize(
    ("lines", "complaint"),
    [
        ("hosts = []", "key 'hosts'"),
        ("hosts = a:99999", "hosts entry 'a:99999'"),
        ("shuffle_hosts = maybe", "key 'shuffle_hosts'"),
    ],
)
def test_bad_hosts_in_a_file_name_the_key(tmp_path: Path, lines: str, complaint: str) -> None:
    with pytest.raises(exceptions.ConfigError) as raised:
        connection_of(tmp_path, lines)
    assert complaint in str(raised.value)
