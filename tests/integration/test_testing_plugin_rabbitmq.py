"""tavrida2's pytest plugin on the real RabbitMQ: vhosts of tests, one test on both brokers."""

from __future__ import annotations

import json
import subprocess

import pika
import pytest

from tavrida2 import dispatcher, service
from tavrida2.testing import RunningServices, Vhost, VhostFactory
from tavrida2.testing.vhosts import DEFAULT_URL
from tests.plugin_sample import copy_sample

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(90)]


def vhosts() -> set[str]:
    done = subprocess.run(
        ["rabbitmqctl", "list_vhosts", "name", "-q", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {row["name"] for row in json.loads(done.stdout or "[]")}


def default_vhost_queues() -> list[str]:
    done = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "-q"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


def declare_and_use_a_queue(url: str) -> int:
    """Declare a queue in the vhost of ``url``, publish to it; how many messages it holds."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("plugin-probe")
        channel.basic_publish("", "plugin-probe", b"{}")
        return int(channel.queue_declare("plugin-probe", passive=True).method.message_count)
    finally:
        connection.close()


def test_the_docs_examples_pass_on_both_brokers(pytester: pytest.Pytester) -> None:
    copy_sample(pytester)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--tavrida2-require-rabbitmq")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["*test_greeting_through_the_broker?rabbitmq? PASSED*"])


def test_rabbitmq_vhost_is_fresh_usable_and_deleted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_vhost(rabbitmq_vhost):
            print("VHOST", rabbitmq_vhost.name, rabbitmq_vhost.url)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "--tavrida2-require-rabbitmq")
    result.assert_outcomes(passed=1)
    [line] = [line for line in result.outlines if "VHOST " in line]
    name, url = line.split("VHOST ", 1)[1].split()[:2]
    assert name.startswith("tavrida2-test-")
    assert url.endswith(f"/{name}")
    assert name not in vhosts()


@pytest.mark.parametrize("admin", ["rabbitmqctl", "auto"])
def test_vhost_factory_grants_the_url_user_and_deletes(admin: str) -> None:
    factory = VhostFactory(DEFAULT_URL, admin)
    vhost = factory.create("probe")
    try:
        assert vhost.name in vhosts()
        assert declare_and_use_a_queue(vhost.url) == 1
        # a vhost of its own: the default vhost has no such queue
        assert "plugin-probe" not in default_vhost_queues()
    finally:
        factory.delete(vhost)
    assert vhost.name not in vhosts()


def test_rabbitmq_vhost_fixture_in_this_run(rabbitmq_vhost: Vhost) -> None:
    assert rabbitmq_vhost.name in vhosts()
    assert str(rabbitmq_vhost) == rabbitmq_vhost.url
    assert declare_and_use_a_queue(rabbitmq_vhost.url) == 1


@dispatcher.rpc_service("greeter")
class Greeter(service.ServiceController):
    """Greets, and tells its subscribers."""

    @dispatcher.rpc_method(method="greet")
    def greet(self, request, proxy, name):
        proxy.publish(greeted=name)
        return {"greeting": f"hello {name}"}


@dispatcher.rpc_service("guestbook")
class Guestbook(service.ServiceController):
    """Writes down whom the greeter greeted."""

    names: list[str] = []

    @dispatcher.subscription_method(service="greeter", method="greet")
    def on_greet(self, notification, proxy, greeted):
        Guestbook.names.append(greeted)


@pytest.mark.tavrida2_with_rabbitmq
@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_the_same_test_on_memory_and_on_rabbitmq(
    tavrida2_server: RunningServices, async_engine: bool
) -> None:
    Guestbook.names = []
    tavrida2_server(Greeter, async_engine=async_engine)
    tavrida2_server(Guestbook, async_engine=async_engine)
    answer = tavrida2_server.client.greeter.greet(name="ann").call(timeout=10)
    assert answer.payload == {"greeting": "hello ann"}
    assert tavrida2_server.wait_until(lambda: Guestbook.names, "the guestbook") == ["ann"]
    assert tavrida2_server.is_memory == tavrida2_server.url.startswith("memory://")
