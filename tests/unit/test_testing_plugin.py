"""tavrida2's pytest plugin and testing helpers (tavrida2.testing), on the memory broker.

The plugin's own behaviour (loaded through its entry point, options, skips and
failures) is checked in inner pytest runs with ``pytester``; RabbitMQ there is
an address where nothing listens. The helpers are checked directly.
"""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tavrida2 import dispatcher, exceptions, messages, service
from tavrida2.discovery import LocalDiscovery
from tavrida2.drivers.memory import MemoryBroker
from tavrida2.router import Router
from tavrida2.server import Server
from tavrida2.testing import (
    AnyServiceDiscovery,
    ControllerHarness,
    RunningServices,
    reset_global_state,
)
from tavrida2.testing.vhosts import (
    BrokerAddress,
    ManagementAdmin,
    RabbitmqctlAdmin,
    RabbitMQUnavailable,
    choose_admin,
)
from tests.plugin_sample import copy_sample

pytest_plugins = ["pytester"]

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1


# -- the package and the plugin ------------------------------------------------------


def test_tavrida2_testing_imports_without_pytest() -> None:
    code = (
        "import sys, tavrida2.testing\n"
        "assert 'pytest' not in sys.modules, 'pytest imported'\n"
        "print(tavrida2.testing.reset_global_state.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reset_global_state"


def test_the_old_fixture_name_is_still_importable() -> None:
    from tavrida2.testing import plugin, tavrida2_isolation

    assert tavrida2_isolation is plugin.tavrida2_isolation


def test_the_plugin_is_loaded_through_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_loaded(request):
            manager = request.config.pluginmanager
            assert manager.has_plugin("tavrida2")
            assert manager.get_plugin("tavrida2").__name__ == "tavrida2.testing.plugin"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_docs_examples_pass_on_the_memory_broker(pytester: pytest.Pytester) -> None:
    copy_sample(pytester)
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not rabbitmq")
    result.assert_outcomes(passed=6, deselected=1)


# -- tavrida2_isolation ------------------------------------------------------------------

ISOLATION_TESTS = """
from tavrida2 import dispatcher, service
from tavrida2.router import Router

def define():
    @dispatcher.rpc_service("isolated")
    class Isolated(service.ServiceController):
        pass

def test_first{fixture}:
    define()

def test_second{fixture}:
    leaked = [d for d in Router().services if "isolated" in d]
    assert not leaked, "the first test's service is still there"
    define()
"""


def test_tavrida2_isolation_fixture_resets_global_state(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ISOLATION_TESTS.format(fixture="(tavrida2_isolation)"))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_without_isolation_global_state_leaks_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ISOLATION_TESTS.format(fixture="()"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the first test's service is still there*"])


def test_ini_option_gives_isolation_to_every_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntavrida2_isolation = true\n")
    pytester.makepyfile(ISOLATION_TESTS.format(fixture="()"))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_reset_global_state_forgets_services_discovery_and_brokers() -> None:
    @dispatcher.rpc_service("forgotten")
    class Forgotten(service.ServiceController):
        pass

    Forgotten.set_discovery(LocalDiscovery())
    broker = MemoryBroker.get("forgotten")
    reset_global_state()
    assert not [d for d in Router().services if "forgotten" in d]
    assert Forgotten._discovery is None
    assert MemoryBroker.get("forgotten") is not broker


# -- rabbitmq_vhost when RabbitMQ cannot be used ----------------------------------------

VHOST_TEST = """
def test_needs_rabbitmq(rabbitmq_vhost):
    raise AssertionError("never reached")
"""


def test_rabbitmq_vhost_skips_saying_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(VHOST_TEST)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-rs", f"--tavrida2-rabbitmq-url={NOWHERE}"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*RabbitMQ is needed: RabbitMQ is not reachable at 127.0.0.1:1*TAVRIDA2_RABBITMQ_URL*"]
    )


def test_rabbitmq_vhost_fails_when_rabbitmq_is_required(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(VHOST_TEST)
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        f"--tavrida2-rabbitmq-url={NOWHERE}",
        "--tavrida2-require-rabbitmq",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*not reachable at 127.0.0.1:1*--tavrida2-require-rabbitmq*"])
    assert "never reached" not in result.stdout.str()


def test_environment_sets_the_url_and_the_requirement(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAVRIDA2_RABBITMQ_URL", NOWHERE)
    monkeypatch.setenv("TAVRIDA2_REQUIRE_RABBITMQ", "1")
    pytester.makepyfile(VHOST_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*not reachable at 127.0.0.1:1*"])


def test_ini_sets_the_url(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAVRIDA2_RABBITMQ_URL", raising=False)
    monkeypatch.delenv("TAVRIDA2_REQUIRE_RABBITMQ", raising=False)
    pytester.makeini(f"[pytest]\ntavrida2_rabbitmq_url = {NOWHERE}\n")
    pytester.makepyfile(VHOST_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not reachable at 127.0.0.1:1*"])


def test_a_test_asking_for_rabbitmq_vhost_is_a_rabbitmq_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(VHOST_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not rabbitmq")
    result.assert_outcomes(deselected=1)


# -- the memory and RabbitMQ variants of one test ----------------------------------------

BOTH_BROKERS_TEST = """
import pytest

@pytest.mark.tavrida2_with_rabbitmq
def test_on_both(tavrida2_broker_url):
    print("URL", tavrida2_broker_url)
    assert tavrida2_broker_url.startswith("memory://")
"""


def test_marker_runs_a_test_on_memory_and_on_rabbitmq(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BOTH_BROKERS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["*test_on_both?memory?", "*test_on_both?rabbitmq?", "2 tests collected*"]
    )


def test_rabbitmq_variant_is_marked_rabbitmq(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BOTH_BROKERS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not rabbitmq")
    result.assert_outcomes(passed=1, deselected=1)


def test_rabbitmq_variant_skips_without_rabbitmq(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BOTH_BROKERS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tavrida2-rabbitmq-url={NOWHERE}")
    result.assert_outcomes(passed=1, skipped=1)


def test_marker_on_a_test_without_a_broker_fixture_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.tavrida2_with_rabbitmq
        def test_no_broker():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*tavrida2_with_rabbitmq needs a test that uses*"])


def test_each_test_gets_a_memory_broker_of_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        seen = []

        def test_one(tavrida2_broker_url):
            seen.append(tavrida2_broker_url)

        def test_two(tavrida2_broker_url):
            assert tavrida2_broker_url.startswith("memory://tavrida2-test-")
            assert tavrida2_broker_url not in seen
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


# -- tavrida2_server -------------------------------------------------------------------


@dispatcher.rpc_service("calc")
class Calc(service.ServiceController):
    """Adds; remembers casts; calls ``store``; publishes its totals."""

    casts: list[int] = []

    @dispatcher.rpc_method(method="add")
    def add(self, request, proxy, a, b):
        return {"sum": a + b}

    @dispatcher.rpc_method(method="remember")
    def remember(self, request, proxy, n):
        Calc.casts.append(n)

    @dispatcher.rpc_method(method="total")
    def total(self, request, proxy, n):
        proxy.publish(total=n)
        proxy.store.save(n=n).cast()


@dispatcher.rpc_service("store")
class Store(service.ServiceController):
    """Keeps what it is asked to save, and the totals ``calc`` published."""

    saved: list[int] = []
    totals: list[int] = []

    @dispatcher.rpc_method(method="save")
    def save(self, request, proxy, n):
        Store.saved.append(n)

    @dispatcher.subscription_method(service="calc", method="total")
    def on_total(self, notification, proxy, total):
        Store.totals.append(total)


@pytest.fixture
def calc_and_store() -> None:
    Calc.casts, Store.saved, Store.totals = [], [], []


@pytest.mark.parametrize("async_engine", [False, True], ids=["sync", "async"])
def test_tavrida2_server_calls_casts_and_publishes(
    tavrida2_server: RunningServices, calc_and_store: None, async_engine: bool
) -> None:
    tavrida2_server(Calc, async_engine=async_engine)
    tavrida2_server(Store, async_engine=async_engine)
    cli = tavrida2_server.client
    assert cli.calc.add(a=2, b=3).call(timeout=10).payload == {"sum": 5}
    cli.calc.remember(n=7).cast()
    cli.calc.total(n=11).cast()
    tavrida2_server.wait_until_idle()
    assert Calc.casts == [7]
    assert Store.saved == [11]
    assert Store.totals == [11]
    assert tavrida2_server.broker.unroutable == []


def test_tavrida2_server_without_threads(
    tavrida2_server: RunningServices, calc_and_store: None
) -> None:
    tavrida2_server(Calc, Store, in_thread=False)
    with tavrida2_server.make_client(source="script") as cli:
        cli.calc.remember(n=1).cast()
        cli.calc.total(n=2).cast()
    assert tavrida2_server.broker.run_until_idle() > 0
    assert Calc.casts == [1]
    assert Store.saved == [2]
    assert Store.totals == [2]


def test_tavrida2_server_wires_discovery_and_forgets_it(calc_and_store: None) -> None:
    running = RunningServices("memory://wiring")
    own = LocalDiscovery()
    own.register_remote_service("calc", "calc_exchange")
    own.register_remote_publisher("calc", "calc_notifications")
    Store.set_discovery(own)
    srv = running(Calc, queue="calc_queue", exchange="calc_x")
    running(Store)
    assert isinstance(srv, Server)
    assert (srv.queue_name, srv.exchange_name) == ("calc_queue", "calc_x")
    assert Calc._discovery is running.discovery
    assert Store._discovery is own  # its own is kept
    assert running.discovery.get_remote("calc") == "calc_x"
    assert running.discovery.get_remote("store") == "store_exchange"
    assert running.discovery.get_local_publisher("calc") == "calc_notifications"
    running.stop()
    assert Calc._discovery is None
    assert Store._discovery is own
    with pytest.raises(RuntimeError, match="stopped"):
        running(Calc)


def test_tavrida2_server_refuses_bad_input(tavrida2_server: RunningServices) -> None:
    with pytest.raises(TypeError, match="give the controller classes"):
        tavrida2_server()
    with pytest.raises(TypeError, match="no ServiceController class"):
        tavrida2_server(object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_thread=False is for the sync engine"):
        tavrida2_server(Calc, in_thread=False, async_engine=True)
    assert tavrida2_server.servers == []


def test_tavrida2_server_stops_its_servers_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading
        from tavrida2 import dispatcher, service

        @dispatcher.rpc_service("echo")
        class Echo(service.ServiceController):
            @dispatcher.rpc_method(method="echo")
            def echo(self, request, proxy, text):
                return {"text": text}

        def test_runs(tavrida2_server):
            tavrida2_server(Echo)
            assert tavrida2_server.client.echo.echo(text="hi").call(timeout=10).payload == {
                "text": "hi"
            }

        def test_stopped():
            names = [t.name for t in threading.enumerate()]
            assert "tavrida2-test-echo" not in names, names
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_wait_until_returns_the_value_or_fails() -> None:
    running = RunningServices("memory://waiting")
    assert running.wait_until(lambda: 42) == 42
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for nothing"):
        running.wait_until(lambda: None, "nothing", timeout=0.05)


def test_broker_is_for_memory_urls_only() -> None:
    with pytest.raises(TypeError, match="no memory:// broker"):
        _ = RunningServices("amqp://guest:guest@127.0.0.1:1/").broker


# -- ControllerHarness -------------------------------------------------------------------


class PlanetError(Exception):
    """What a handler under test raises."""


@dispatcher.rpc_service("test_hello")
class Hello(service.ServiceController):
    """The tutorial's Hello, with a waiting call, an async handler, a schema and a broadcast."""

    @dispatcher.rpc_method(service="test_hello", method="hello")
    def hello(self, request, proxy, param):
        proxy.test_world.world(param=param + 1).call()
        proxy.publish(param="hello publication")
        return {"accepted": param}

    @dispatcher.rpc_method(method="ask")
    def ask(self, request, proxy, question):
        answer = proxy.test_world.answer(question=question).call(wait=True)
        pending = proxy.test_world.answer(question="again").call_async()
        return {"answer": answer.payload, "again": pending.result().payload}

    @dispatcher.rpc_method(method="notify")
    def notify(self, request, proxy, question):
        assert proxy.test_world.note(question=question).cast_async().result() is None

    @dispatcher.rpc_method(method="ask_async")
    async def ask_async(self, request, proxy, question):
        await proxy.test_world.note(question=question).cast_async()
        answer = await proxy.test_world.answer(question=question).call(wait=True)
        return {"answer": answer.payload}

    @dispatcher.rpc_method(
        method="typed",
        schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    def typed(self, request, proxy, n):
        return {"n": n}

    @dispatcher.rpc_method(method="fail")
    def fail(self, request, proxy):
        raise PlanetError("no such planet")

    @dispatcher.broadcast_method(method="drop")
    def drop(self, request, proxy, key):
        proxy.test_world.dropped(key=key).cast()

    @dispatcher.rpc_response_method(service="test_world", method="world")
    def world_resp(self, response, proxy, param):
        proxy.test_world.thanks(param=param).cast()

    @dispatcher.rpc_error_method(service="test_world", method="world")
    def world_error(self, error, proxy):
        proxy.publish(failed=error.payload["message"])

    @dispatcher.subscription_method(service="test_world", method="news")
    def on_news(self, notification, proxy, headline):
        if headline == "bad":
            raise PlanetError("bad news")


def test_harness_call_gets_the_request_a_server_would_give() -> None:
    harness = ControllerHarness(Hello)
    outcome = harness.call("test_hello.hello", {"param": 1}, context={"trace": "t1"})

    request = outcome.message
    assert type(request) is messages.IncomingRequestCall
    assert request.payload == {"param": 1}
    assert request.context == {"trace": "t1", "param": 1}
    assert request.headers["source"] == "test_client"
    assert request.headers["reply_to"] == "test_client"
    assert outcome.payload == {"accepted": 1}
    assert outcome.error is None and outcome.raised is None

    world = outcome.sent.assert_called("test_world.world", param=2)
    assert world.exchange == "test_world_exchange"
    assert world.routing_key == "test_world.world"
    assert world.headers["reply_to"] == "test_hello.hello"
    assert world.headers["correlation_id"] == request.correlation_id
    assert world.context == {"trace": "t1", "param": 1}
    assert not world.waited
    note = outcome.sent.assert_published(param="hello publication")
    assert note.exchange == "test_hello_notifications"
    assert note.source == "test_hello.hello"
    assert outcome.answer is not None
    assert outcome.answer.headers["destination"] == "test_client"
    # to the waiting client's direct reply-to queue, as RabbitMQ would deliver it
    assert (outcome.answer.exchange, outcome.answer.routing_key) == (
        "",
        "amq.rabbitmq.reply-to.tavrida2-test",
    )
    assert [s.kind for s in outcome.sent] == ["call", "publish", "answer"]
    assert len(harness.sent) == 3


def test_harness_waiting_calls_get_canned_answers() -> None:
    harness = ControllerHarness(Hello)
    harness.answer("test_world.answer", lambda payload: {"said": payload["question"].upper()})
    outcome = harness.call("test_hello.ask", {"question": "why"})
    assert outcome.payload == {"answer": {"said": "WHY"}, "again": {"said": "AGAIN"}}
    asked = outcome.sent.calls
    assert [s.payload for s in asked] == [{"question": "why"}, {"question": "again"}]
    assert all(s.waited for s in asked)


def test_harness_canned_exception_is_a_remote_error_for_the_handler() -> None:
    harness = ControllerHarness(Hello)
    harness.answer("test_world.answer", PlanetError("no such planet"))
    outcome = harness.call("test_hello.ask", {"question": "why"})
    assert isinstance(outcome.error, exceptions.RemoteError)
    assert outcome.error.remote_class == f"{__name__}.PlanetError"
    with pytest.raises(exceptions.RemoteError, match="PlanetError: no such planet"):
        _ = outcome.payload


def test_harness_call_without_canned_answer_says_what_to_set() -> None:
    outcome = ControllerHarness(Hello).call("test_hello.ask", {"question": "why"})
    assert isinstance(outcome.error, LookupError)
    assert "no canned answer for a call to test_world.answer" in str(outcome.error)
    assert "answer('test_world.answer', {...})" in str(outcome.error)


def test_harness_canned_answer_of_a_wrong_type_is_reported() -> None:
    harness = ControllerHarness(Hello)
    harness.answer("test_world.answer", lambda payload: ["not", "a", "dict"])  # type: ignore[arg-type,return-value]
    outcome = harness.call("test_hello.ask", {"question": "why"})
    assert isinstance(outcome.error, TypeError)
    assert "must be a dict or an exception, got list" in str(outcome.error)


def test_harness_async_handler_is_awaited_with_awaitable_proxy() -> None:
    harness = ControllerHarness(Hello)
    harness.answer("test_world.answer", {"said": "yes"})
    outcome = harness.call("test_hello.ask_async", {"question": "why"})
    assert outcome.payload == {"answer": {"said": "yes"}}
    outcome.sent.assert_cast("test_world.note", question="why")
    outcome.sent.assert_called("test_world.answer", question="why")


def test_harness_cast_async_is_recorded_as_a_cast() -> None:
    outcome = ControllerHarness(Hello).call("test_hello.notify", {"question": "q"})
    assert outcome.error is None
    outcome.sent.assert_cast("test_world.note", question="q")


def test_harness_handler_error_becomes_the_error_answer() -> None:
    outcome = ControllerHarness(Hello).call("test_hello.fail")
    assert isinstance(outcome.error, PlanetError)
    assert outcome.answer is not None
    assert outcome.answer.payload == {
        "class": f"{__name__}.PlanetError",
        "message": "no such planet",
        "code": 1000,
    }


def test_harness_schema_refuses_a_bad_payload_before_the_handler() -> None:
    outcome = ControllerHarness(Hello).call("test_hello.typed", {"n": "seven"})
    assert isinstance(outcome.error, exceptions.ValidationError)
    assert "payload.n" in str(outcome.error)
    assert ControllerHarness(Hello).call("test_hello.typed", {"n": 7}).payload == {"n": 7}


def test_harness_cast_has_no_answer() -> None:
    outcome = ControllerHarness(Hello).cast("test_hello.hello", {"param": 5})
    assert type(outcome.message) is messages.IncomingRequestCast
    assert outcome.answer is None
    assert outcome.sent.answers == []
    outcome.sent.assert_called("test_world.world", param=6)
    with pytest.raises(AssertionError, match="no answer was sent"):
        _ = outcome.payload


def test_harness_failing_notification_handler_raises_handler_failed() -> None:
    harness = ControllerHarness(Hello)
    assert harness.notification("test_world.news", {"headline": "good"}).raised is None
    outcome = harness.notification("test_world.news", {"headline": "bad"})
    assert type(outcome.message) is messages.IncomingNotification
    assert isinstance(outcome.raised, exceptions.HandlerFailed)
    assert isinstance(outcome.error, PlanetError)
    outcome.sent.assert_nothing_sent()


def test_harness_response_and_error_reach_their_handlers() -> None:
    harness = ControllerHarness(Hello)
    response = harness.response("test_world.world", {"param": "world response"})
    assert type(response.message) is messages.IncomingResponse
    assert response.message.headers["source"] == "test_world.world"
    response.sent.assert_cast("test_world.thanks", param="world response")

    error = harness.error("test_world.world", PlanetError("no such planet"))
    assert type(error.message) is messages.IncomingError
    assert error.message.payload["class"] == f"{__name__}.PlanetError"
    error.sent.assert_published(failed="no such planet")


def test_harness_broadcast_reaches_the_broadcast_handler() -> None:
    outcome = ControllerHarness(Hello).broadcast("test_hello.drop", {"key": "k"})
    assert outcome.raised is None
    assert messages.BROADCAST_HEADER in outcome.message.headers  # type: ignore[union-attr]
    outcome.sent.assert_cast("test_world.dropped", key="k")


def test_harness_unknown_entry_point_is_refused_as_a_server_would() -> None:
    outcome = ControllerHarness(Hello).cast("test_hello.nope")
    assert outcome.message is None
    assert isinstance(outcome.raised, exceptions.HandlerNotFound)


def test_harness_uses_the_controllers_own_discovery() -> None:
    disc = LocalDiscovery()
    disc.register_remote_service("test_world", "the_world")
    disc.register_local_publisher("test_hello", "the_news")
    Hello.set_discovery(disc)
    outcome = ControllerHarness(Hello).call("test_hello.hello", {"param": 1})
    assert outcome.sent.calls[0].exchange == "the_world"
    assert outcome.sent.publications[0].exchange == "the_news"

    Hello.set_discovery(LocalDiscovery())
    refused = ControllerHarness(Hello).call("test_hello.hello", {"param": 1})
    assert isinstance(refused.error, exceptions.UnableToDiscover)
    given = ControllerHarness(Hello, discovery=AnyServiceDiscovery())
    assert given.call("test_hello.hello", {"param": 1}).error is None
    with pytest.raises(TypeError, match="knows every service already"):
        AnyServiceDiscovery().register_remote_service("test_world", "elsewhere")


def test_harness_prepare_adds_middlewares() -> None:
    class Stamp:
        def process(self, message: Any) -> Any:
            message.context["stamped"] = True
            return message

        def handled(self, message: Any) -> None:
            pass

        def failed(self, message: Any, error: BaseException) -> None:
            pass

    harness = ControllerHarness(
        Hello,
        prepare=lambda c: c.add_incoming_middleware(Stamp()),  # type: ignore[arg-type]
    )
    outcome = harness.call("test_hello.hello", {"param": 1})
    assert outcome.sent.calls[0].context["stamped"] is True


def test_harness_refuses_what_is_no_controller() -> None:
    with pytest.raises(exceptions.NeedToBeController):
        ControllerHarness(object)  # type: ignore[arg-type]

    class Undecorated(service.ServiceController):
        pass

    with pytest.raises(exceptions.NeedToBeController, match="not decorated"):
        ControllerHarness(Undecorated)


def test_sent_assertions_say_what_was_sent() -> None:
    outcome = ControllerHarness(Hello).call("test_hello.hello", {"param": 1})
    sent = outcome.sent
    with pytest.raises(AssertionError) as failed:
        sent.assert_called("test_world.world", param=99)
    text = str(failed.value)
    assert "no call test_world.world {'param': 99} was sent" in text
    assert "call test_world.world {'param': 2}" in text
    with pytest.raises(AssertionError, match="no cast"):
        sent.assert_cast("test_world.world")
    with pytest.raises(AssertionError, match="no publish"):
        sent.assert_published(param="other")
    with pytest.raises(AssertionError, match="no broadcast"):
        sent.assert_broadcast("test_world.world")
    with pytest.raises(AssertionError, match="expected nothing sent"):
        sent.assert_nothing_sent()
    assert sent.assert_called("test_world.world") is sent[0]
    assert len(sent.broadcasts) == 0


def test_unserialisable_payload_fails_as_in_production() -> None:
    @dispatcher.rpc_service("sender")
    class Sender(service.ServiceController):
        @dispatcher.rpc_method(method="send")
        def send(self, request, proxy):
            proxy.other.take(value=object()).cast()

    outcome = ControllerHarness(Sender).call("sender.send")
    assert isinstance(outcome.error, TypeError)
    assert "payload key 'value'" in str(outcome.error)
    assert len(outcome.sent) == 1 and outcome.sent.answers


# -- vhost helpers (without a broker) -------------------------------------------------


def test_broker_address_keeps_user_and_options_in_vhost_urls() -> None:
    address = BrokerAddress.parse("amqp://us%40r:p%2Fw@rabbit:5673/%2F?heartbeat=30")
    assert (address.host, address.port, address.user, address.password) == (
        "rabbit",
        5673,
        "us@r",
        "p/w",
    )
    assert address.url_of("t/1") == "amqp://us%40r:p%2Fw@rabbit:5673/t%2F1?heartbeat=30"
    assert BrokerAddress.parse("amqps://h").port == 5671


def test_broker_address_refuses_what_is_no_amqp_url() -> None:
    with pytest.raises(RabbitMQUnavailable, match="no amqp:// or amqps:// URL"):
        BrokerAddress.parse("memory://x")
    with pytest.raises(RabbitMQUnavailable, match=r"not reachable at 127\.0\.0\.1:1"):
        BrokerAddress.parse(NOWHERE).check_reachable()


def test_admin_choice() -> None:
    address = BrokerAddress.parse(NOWHERE)
    assert isinstance(choose_admin("rabbitmqctl", address), RabbitmqctlAdmin)
    admin = choose_admin("http://127.0.0.1:1/", address)
    assert isinstance(admin, ManagementAdmin)
    assert not admin.answers()
    with pytest.raises(RabbitMQUnavailable, match="unknown RabbitMQ admin 'ftp'"):
        choose_admin("ftp", address)


def test_rabbitmqctl_admin_failure_is_reported() -> None:
    admin = RabbitmqctlAdmin("/nonexistent/rabbitmqctl")
    with pytest.raises(RabbitMQUnavailable, match="add_vhost"):
        admin.create("v", "guest")


class FakeManagementAPI:
    """An HTTP server that records requests like RabbitMQ's management API would get them."""

    def __init__(self, status: int = 204) -> None:
        self.requests: list[tuple[str, str, str, Any]] = []
        self.status = status
        recorded = self.requests
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                auth = self.headers.get("Authorization", "")
                recorded.append((self.command, self.path, auth, body))
                self.send_response(api.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def management_api() -> Iterator[FakeManagementAPI]:
    api = FakeManagementAPI()
    yield api
    api.close()


def test_management_admin_creates_grants_and_deletes(management_api: FakeManagementAPI) -> None:
    admin = ManagementAdmin(management_api.url + "/", "us@r", "pw")
    assert admin.answers()
    admin.create("t/1", "us@r")
    admin.delete("t/1")
    auth = "Basic " + base64.b64encode(b"us@r:pw").decode()
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    assert management_api.requests == [
        ("GET", "/api/overview", auth, None),
        ("PUT", "/api/vhosts/t%2F1", auth, {}),
        ("PUT", "/api/permissions/t%2F1/us%40r", auth, everything),
        ("DELETE", "/api/vhosts/t%2F1", auth, None),
    ]


def test_management_admin_reports_http_errors(management_api: FakeManagementAPI) -> None:
    management_api.status = 401
    admin = ManagementAdmin(management_api.url, "guest", "wrong")
    assert not admin.answers()
    with pytest.raises(RabbitMQUnavailable, match=r"PUT /api/vhosts/v: HTTP 401"):
        admin.create("v", "guest")


def test_harness_headers_travel_on_and_keep_the_correlation_id() -> None:
    harness = ControllerHarness(Hello)
    headers = {"correlation_id": "chain-1", "x-tenant": "acme"}
    outcome = harness.call("test_hello.hello", {"param": 1}, headers=headers)
    assert outcome.message is not None
    assert outcome.message.correlation_id == "chain-1"
    world = outcome.sent.assert_called("test_world.world")
    assert world.headers["correlation_id"] == "chain-1"
    assert world.headers["x-tenant"] == "acme"

    error = harness.error("test_world.world", PlanetError("x"), headers=headers)
    assert error.message is not None
    assert error.message.correlation_id == "chain-1"
    assert error.sent.assert_published(failed="x").headers["x-tenant"] == "acme"


def test_harness_refuses_a_payload_that_is_no_dict() -> None:
    with pytest.raises(TypeError, match="payload must be a dict, got list"):
        ControllerHarness(Hello).call("test_hello.hello", [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="context must be a dict, got str"):
        ControllerHarness(Hello).cast("test_hello.hello", {}, context="c")  # type: ignore[arg-type]


def test_harness_try_call_gets_the_canned_answer_or_error() -> None:
    @dispatcher.rpc_service("asker")
    class Asker(service.ServiceController):
        @dispatcher.rpc_method(method="ask")
        def ask(self, request, proxy):
            ok, (code, result) = proxy.test_world.answer().try_call()
            return {"ok": ok, "code": code, "result": result}

    harness = ControllerHarness(Asker)
    harness.answer("test_world.answer", {"said": "yes"})
    assert harness.call("asker.ask").payload == {"ok": True, "code": 0, "result": {"said": "yes"}}
    harness.answer("test_world.answer", PlanetError("no"))
    failed = harness.call("asker.ask").payload
    assert failed["code"] == 1000
    assert failed["result"]["class"] == f"{__name__}.PlanetError"
