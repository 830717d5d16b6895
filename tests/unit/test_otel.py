"""OpenTelemetry tracing on the memory broker, with the SDK's in-memory exporter.

A chain Hello -> World -> Chuck called from a script is one trace with each hop
the child of the one before (sync engine with RPCClient, async engine with
AsyncRPCClient); failures mark their spans; a message without a trace
context, or with a broken one, starts a new trace and is handled as usual;
casts and notifications get PRODUCER/CONSUMER spans; without ``otel`` nothing
of OpenTelemetry runs.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tavrida2 import cli, client, config, discovery, dispatcher, exceptions, server, service
from tavrida2.deadletter import DeadLetterPolicy
from tavrida2.drivers.memory import MemoryBroker, MemoryDriver
from tavrida2.engine import SyncEngine
from tavrida2.messages import new_id
from tavrida2.otel import Telemetry
from tavrida2.postprocessor import PostProcessor
from tavrida2.workers import launch
from tests.otel_support import (
    assert_chain,
    chain_services,
    in_memory_telemetry,
    one,
    parent_of,
    span_id,
    trace_id,
)

BROKER = "otel"
EXCHANGES = {name: f"{name}_exchange" for name in ("test_hello", "test_world", "test_chuck")}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return result


class Rig:
    """The three servers and a script's client on one engine, traced into ``exporter``."""

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self.telemetry, self.exporter, self.provider = in_memory_telemetry()
        self.seen: list[dict[str, Any]] = []
        self.classes = chain_services(self.is_async, EXCHANGES, self.seen)
        self.sync_servers: list[server.Server] = []
        self.dead_letters: DeadLetterPolicy | bool = False

    @property
    def is_async(self) -> bool:
        return self.engine == "async"

    def config(self) -> config.ConnectionConfig:
        return config.ConnectionConfig.from_url(f"memory://{BROKER}", async_engine=self.is_async)

    def discovery(self) -> discovery.LocalDiscovery:
        disc = discovery.LocalDiscovery()
        for name, exchange in EXCHANGES.items():
            disc.register_remote_service(name, exchange)
        return disc

    def make_servers(self) -> list[server.Server]:
        return [
            server.Server(
                self.config(),
                f"{cls.service_name}_queue",
                EXCHANGES[cls.service_name],
                [cls],
                dead_letters=(
                    DeadLetterPolicy.for_queue(
                        f"{cls.service_name}_queue", max_attempts=2, retry_delay=0
                    )
                    if self.dead_letters
                    else False
                ),
                otel=self.telemetry,
            )
            for cls in self.classes
        ]

    def run(self, action: Callable[[Any], Any]) -> Any:
        """``action(client)`` (awaited if it gives an awaitable) while the servers serve."""
        if self.is_async:
            return asyncio.run(self._run_async(action))
        if not self.sync_servers:
            self.sync_servers = self.make_servers()
            for srv in self.sync_servers:
                srv.start()
        with client.RPCClient(
            self.config(), self.discovery(), source="script", otel=self.telemetry
        ) as cli:
            result = action(cli)
        MemoryBroker.get(BROKER).run_until_idle()
        return result

    async def _run_async(self, action: Callable[[Any], Any]) -> Any:
        servers = self.make_servers()
        tasks = [asyncio.ensure_future(srv.serve()) for srv in servers]
        try:
            deadline = time.monotonic() + 5
            while not all(srv.started.is_set() for srv in servers):
                assert time.monotonic() < deadline, "servers did not start"
                await asyncio.sleep(0.005)
            async with client.AsyncRPCClient(
                self.config(), self.discovery(), source="script", otel=self.telemetry
            ) as cli:
                result = action(cli)
                return await result if inspect.isawaitable(result) else result
        finally:
            for srv in servers:
                srv.stop()
            await asyncio.gather(*tasks)

    def spans(self, count: int) -> list[ReadableSpan]:
        wait_for(lambda: len(self.exporter.get_finished_spans()) >= count, f"{count} spans")
        return list(self.exporter.get_finished_spans())

    def close(self) -> None:
        for srv in self.sync_servers:
            srv.stop()
            if srv.driver is not None:
                srv.driver.close()
        self.provider.shutdown()


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = Rig(request.param)
    yield made
    made.close()


@pytest.fixture
def sync_rig() -> Iterator[Rig]:
    made = Rig("sync")
    yield made
    made.close()


def call_in_script_span(rig: Rig, method: str = "hello", n: int = 1) -> tuple[Any, Any]:
    """Call ``test_hello.<method>`` inside a span of the script's own; (answer or error, span)."""
    tracer = rig.provider.get_tracer("script")

    def action(cli: Any) -> Any:
        if rig.is_async:

            async def call() -> Any:
                with tracer.start_as_current_span("script") as span:
                    try:
                        return await getattr(cli.test_hello, method)(n=n).call(timeout=10), span
                    except exceptions.RemoteError as exc:
                        return exc, span

            return call()
        with tracer.start_as_current_span("script") as span:
            try:
                return getattr(cli.test_hello, method)(n=n).call(timeout=10), span
            except exceptions.RemoteError as exc:
                return exc, span

    return rig.run(action)  # type: ignore[no-any-return]


# -- the chain ------------------------------------------------------------------------


def test_a_three_service_chain_is_one_trace_with_each_hop_under_the_one_before(rig: Rig) -> None:
    answer, _ = call_in_script_span(rig)
    assert answer.payload == {"n": 4}
    spans = rig.spans(7)
    root = one(spans, "script", SpanKind.INTERNAL)
    assert parent_of(root) is None
    assert_chain(spans, root, EXCHANGES, answer.correlation_id)
    # what Chuck received carries the context of the span that sent it
    sent = one(spans, "send test_chuck.chuck", SpanKind.CLIENT)
    version, trace, parent, flags = rig.seen[0]["traceparent"].split("-")
    assert (version, trace, parent) == ("00", f"{trace_id(sent):032x}", f"{span_id(sent):016x}")
    assert int(flags, 16) & 1  # sampled


def test_a_script_call_outside_any_span_starts_the_trace(sync_rig: Rig) -> None:
    answer = sync_rig.run(lambda cli: cli.test_hello.hello(n=1).call(timeout=10))
    spans = sync_rig.spans(6)
    first = one(spans, "send test_hello.hello", SpanKind.CLIENT)
    assert parent_of(first) is None
    assert {trace_id(s) for s in spans} == {trace_id(first)}
    assert answer.payload == {"n": 4}


def test_each_call_of_a_script_is_a_trace_of_its_own(sync_rig: Rig) -> None:
    sync_rig.run(lambda cli: [cli.test_hello.hello(n=i).call(timeout=10) for i in range(2)])
    spans = sync_rig.spans(12)
    assert len({trace_id(s) for s in spans}) == 2


# -- failures -------------------------------------------------------------------------


def exception_events(span: ReadableSpan) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == "exception"]


def test_a_failing_handler_marks_its_span_and_the_callers(rig: Rig) -> None:
    rig.classes[0].get_discovery().register_remote_service("test_chuck", EXCHANGES["test_chuck"])

    def action(cli: Any) -> Any:
        if rig.is_async:

            async def call() -> Any:
                with pytest.raises(exceptions.RemoteError) as caught:
                    await cli.test_chuck.fail(n=7).call(timeout=10)
                return caught.value

            return call()
        with pytest.raises(exceptions.RemoteError) as caught:
            cli.test_chuck.fail(n=7).call(timeout=10)
        return caught.value

    error = rig.run(action)
    assert error.remote_class == "ValueError"
    spans = rig.spans(2)
    handled = one(spans, "process test_chuck.fail", SpanKind.SERVER)
    caller = one(spans, "send test_chuck.fail", SpanKind.CLIENT)
    assert parent_of(handled) == span_id(caller)
    assert handled.status.status_code is StatusCode.ERROR
    assert handled.status.description == "ValueError: no chuck for 7 at amqp://app:***@db.internal/"
    assert handled.attributes is not None and handled.attributes["error.type"] == "ValueError"
    [event] = exception_events(handled)
    assert event["exception.type"] == "ValueError"
    assert "letmein" not in event["exception.message"]
    assert "letmein" not in event["exception.stacktrace"]
    assert caller.status.status_code is StatusCode.ERROR
    assert caller.attributes is not None
    assert caller.attributes["error.type"] == "tavrida2.exceptions.RemoteError"


def test_a_failing_cast_marks_its_consumer_span_with_the_handlers_exception(rig: Rig) -> None:
    def action(cli: Any) -> Any:
        return cli.test_chuck.explode(n=3).cast()

    rig.run(action)
    spans = rig.spans(2)
    handled = one(spans, "process test_chuck.explode", SpanKind.CONSUMER)
    sent = one(spans, "send test_chuck.explode", SpanKind.PRODUCER)
    assert parent_of(handled) == span_id(sent)
    assert sent.status.status_code is StatusCode.UNSET
    assert handled.status.status_code is StatusCode.ERROR
    [event] = exception_events(handled)
    assert event["exception.type"] == "KeyError"


def test_each_attempt_of_a_retried_cast_is_a_span_under_the_one_that_sent_it(
    sync_rig: Rig,
) -> None:
    sync_rig.dead_letters = True
    sync_rig.run(lambda cli: cli.test_chuck.explode(n=3).cast())
    broker = MemoryBroker.get(BROKER)
    wait_for(
        lambda: broker.run_until_idle() >= 0 and len(sync_rig.exporter.get_finished_spans()) >= 3,
        "the retry",
    )
    spans = sync_rig.spans(3)
    sent = one(spans, "send test_chuck.explode", SpanKind.PRODUCER)
    attempts = [s for s in spans if s.kind == SpanKind.CONSUMER]
    assert len(attempts) == 2
    for attempt in attempts:
        assert parent_of(attempt) == span_id(sent)
        assert attempt.status.status_code is StatusCode.ERROR


def test_a_request_for_an_unknown_method_is_recorded_once(sync_rig: Rig) -> None:
    def action(cli: Any) -> Any:
        with pytest.raises(exceptions.RemoteError):
            cli.test_chuck.nothing_here(n=1).call(timeout=10)

    sync_rig.run(action)
    spans = sync_rig.spans(2)
    handled = one(spans, "process test_chuck.nothing_here", SpanKind.SERVER)
    assert handled.status.status_code is StatusCode.ERROR
    assert len(exception_events(handled)) == 1


# -- messages that bring no usable context ----------------------------------------------


def raw_cast(headers: dict[str, Any], body: bytes | None = None) -> None:
    """Publish a cast to ``test_chuck.note`` as a foreign client would."""
    body = body if body is not None else json.dumps({"context": {}, "payload": {"n": 1}}).encode()
    tavrida = {
        "correlation_id": new_id(),
        "request_id": new_id(),
        "message_id": new_id(),
        "message_type": "request",
        "reply_to": "",
        "source": "foreign",
        "destination": "test_chuck.note",
    }
    MemoryBroker.get(BROKER).publish(
        EXCHANGES["test_chuck"], "test_chuck.note", body, {**tavrida, **headers}
    )


GOOD_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"traceparent": "garbage"}, id="not-a-traceparent"),
        pytest.param({"traceparent": f"00-{'0' * 32}-{'0' * 16}-01"}, id="zero-ids"),
        pytest.param({"traceparent": "ff" + GOOD_TRACEPARENT[2:]}, id="version-ff"),
        pytest.param({"traceparent": 12345}, id="a-number"),
        pytest.param({"traceparent": b"\xff\xfe"}, id="bytes-not-ascii"),
        pytest.param({"traceparent": "x" * 600, "tracestate": "a=b"}, id="too-long"),
    ],
)
def test_a_message_without_a_usable_context_starts_a_new_trace(
    sync_rig: Rig, headers: dict[str, Any]
) -> None:
    sync_rig.run(lambda cli: None)
    raw_cast(headers)
    MemoryBroker.get(BROKER).run_until_idle()
    [span] = sync_rig.spans(1)
    assert span.name == "process test_chuck.note"
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    assert len(sync_rig.seen) == 1  # handled, and no parameter came from the header
    assert int(GOOD_TRACEPARENT.split("-")[1], 16) != trace_id(span)


@pytest.mark.parametrize("encode", [str, str.encode], ids=["str", "bytes"])
def test_a_message_from_a_traced_peer_continues_its_trace(
    sync_rig: Rig, encode: Callable[[str], Any]
) -> None:
    sync_rig.run(lambda cli: None)
    raw_cast({"traceparent": encode(GOOD_TRACEPARENT), "tracestate": encode("vendor=1")})
    MemoryBroker.get(BROKER).run_until_idle()
    [span] = sync_rig.spans(1)
    assert f"{trace_id(span):032x}" == GOOD_TRACEPARENT.split("-")[1]
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == GOOD_TRACEPARENT.split("-")[2]
    assert span.parent.trace_state.get("vendor") == "1"


def test_a_cast_that_cannot_be_handled_marks_its_span(sync_rig: Rig) -> None:
    sync_rig.run(lambda cli: None)
    raw_cast({"traceparent": GOOD_TRACEPARENT}, body=b"not json")
    MemoryBroker.get(BROKER).run_until_idle()
    [span] = sync_rig.spans(1)
    assert (span.name, span.kind) == ("process test_chuck.note", SpanKind.CONSUMER)
    assert span.status.status_code is StatusCode.ERROR
    [event] = exception_events(span)
    assert event["exception.type"] == "tavrida2.exceptions.MalformedBody"
    assert sync_rig.seen == []


# -- casts, notifications, Tavrida 1.0's calls ------------------------------------------


def test_casts_notifications_and_answers_to_response_handlers_are_linked(rig: Rig) -> None:
    """The script casts ``bell.ring``, which publishes; ``listener`` hears it and calls
    ``bell.count`` the Tavrida 1.0 way: the answer goes to its response handler."""
    counted: list[int] = []

    @dispatcher.rpc_service("bell")
    class Bell(service.ServiceController):
        @dispatcher.rpc_method(method="ring")
        def ring(self, request, proxy, times):
            proxy.publish(times=times)

        @dispatcher.rpc_method(method="count")
        def count(self, request, proxy, times):
            return {"count": times * 2}

    @dispatcher.rpc_service("listener")
    class Listener(service.ServiceController):
        @dispatcher.subscription_method(service="bell", method="ring")
        def heard(self, notification, proxy, times):
            proxy.bell.count(times=times).call()

        @dispatcher.rpc_response_method(service="bell", method="count")
        def counted(self, response, proxy, count):
            counted.append(count)

    disc = discovery.LocalDiscovery()
    disc.register_remote_service("bell", "bell_exchange")
    disc.register_remote_service("listener", "listener_exchange")
    disc.register_local_publisher("bell", "bell_notifications")
    disc.register_remote_publisher("bell", "bell_notifications")
    Bell.set_discovery(disc)
    Listener.set_discovery(disc)
    rig.classes = [Bell, Listener]
    EXCHANGES.update(bell="bell_exchange", listener="listener_exchange")
    try:
        rig.run(lambda cli: _wait_for_count(cli.bell.ring(times=2).cast(), counted))
    finally:
        del EXCHANGES["bell"], EXCHANGES["listener"]
    assert counted == [4]
    spans = rig.spans(7)

    def by_type(kind: SpanKind, message_type: str) -> list[ReadableSpan]:
        return [
            s
            for s in spans
            if s.kind == kind and (s.attributes or {})["tavrida2.message_type"] == message_type
        ]

    [cast_sent, published] = sorted(
        (s for s in spans if s.name == "send bell.ring"), key=lambda s: s.start_time or 0
    )
    assert cast_sent.kind == published.kind == SpanKind.PRODUCER
    [cast_handled] = by_type(SpanKind.CONSUMER, "request")
    [notified] = by_type(SpanKind.CONSUMER, "notification")
    [call_sent] = by_type(SpanKind.CLIENT, "request")
    [call_served] = by_type(SpanKind.SERVER, "request")
    [answered] = by_type(SpanKind.CONSUMER, "response")
    chain = [cast_sent, cast_handled, published, notified, call_sent, call_served, answered]
    assert len(spans) == len(chain), [(s.name, s.kind) for s in spans]
    assert parent_of(cast_sent) is None
    for parent, child in itertools.pairwise(chain):
        assert parent_of(child) == span_id(parent), f"{child.name} under {parent.name}"
    assert {trace_id(s) for s in spans} == {trace_id(cast_sent)}
    assert [s.name for s in chain] == [
        "send bell.ring",
        "process bell.ring",
        "send bell.ring",
        "process bell.ring",
        "send bell.count",
        "process bell.count",
        "process listener",
    ]
    assert published.attributes is not None and notified.attributes is not None
    assert published.attributes["messaging.destination.name"] == "bell_notifications"
    assert notified.attributes["messaging.destination.name"] == "bell_notifications"
    assert notified.attributes["tavrida2.source"] == "bell.ring"


def _wait_for_count(sent: Any, counted: list[int]) -> Any:
    if inspect.isawaitable(sent):

        async def done() -> None:
            await sent
            deadline = time.monotonic() + 10
            while not counted:
                assert time.monotonic() < deadline, "the answer did not reach listener.counted"
                await asyncio.sleep(0.01)

        return done()
    return None


# -- turning it on and off ----------------------------------------------------------------


def test_without_otel_no_span_is_made_and_no_context_is_sent(rig: Rig) -> None:
    rig.telemetry = None  # type: ignore[assignment]
    answer, _ = call_in_script_span(rig)
    assert answer.payload == {"n": 4}
    spans = rig.spans(1)
    assert [s.name for s in spans] == ["script"]  # the script's own span only
    assert "traceparent" not in rig.seen[0]


def test_a_server_without_otel_runs_the_plain_pipeline() -> None:
    [hello, *_] = chain_services(False, EXCHANGES)
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")
    plain = server.Server(conf, "plain_q", "plain_ex", [hello])
    plain.start()
    try:
        assert plain.telemetry is None
        assert type(plain.services[0].postprocessor) is PostProcessor
        assert isinstance(plain.driver, MemoryDriver)
        [(_, callback)] = plain.driver._consumers
        assert getattr(callback, "__func__", None) is SyncEngine.on_delivery
    finally:
        plain.stop()
        assert plain.driver is not None
        plain.driver.close()
    traced = server.Server(conf, "traced_q", "traced_ex", [hello], otel=True)
    assert isinstance(traced.telemetry, Telemetry)


def test_otel_of_the_wrong_kind_is_a_config_error() -> None:
    [hello, *_] = chain_services(False, EXCHANGES)
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")
    with pytest.raises(exceptions.ConfigError, match="otel='yes': expected True, False or a"):
        server.Server(conf, "q", "ex", [hello], otel="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tracer_provider must be a TracerProvider"):
        Telemetry(tracer_provider="provider")  # type: ignore[arg-type]


def test_otel_without_opentelemetry_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config_file(tmp_path))
    for name in [m for m in sys.modules if m.startswith(("opentelemetry", "tavrida2.otel."))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # type: ignore[arg-type]
    conf = config.ConnectionConfig.from_url(f"memory://{BROKER}")
    with pytest.raises(exceptions.ConfigError, match=r"pip install 'tavrida2\[otel\]'"):
        client.RPCClient(conf, discovery.LocalDiscovery(), source="script", otel=True)
    with pytest.raises(exceptions.ConfigError, match="OpenTelemetry is not installed"):
        launch.worker_specs([path], 2, otel=True)  # before any worker starts
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", path, "--otel"])
    assert stopped.value.code == cli.EXIT_USAGE
    assert "OpenTelemetry is not installed; pip install" in capsys.readouterr().err
    # off, nothing of OpenTelemetry is needed
    client.RPCClient(conf, discovery.LocalDiscovery(), source="script").close()
    assert len(launch.worker_specs([path], 2)) == 2


CONTROLLER = """
from tavrida2 import dispatcher, service

@dispatcher.rpc_service("svc_otel")
class A(service.ServiceController):
    @dispatcher.rpc_method(method="ping")
    def ping(self, request, proxy):
        return {}
"""


def config_file(folder: Path, otel_line: str = "") -> Path:
    module = f"t2_otel_controllers_{folder.name}"
    (folder / f"{module}.py").write_text(CONTROLLER)
    (folder / "services.ds").write_text("[svc_otel]\nexchange = ex_otel\n")
    path = folder / "server.ini"
    path.write_text(
        textwrap.dedent(
            f"""\
            [server]
            queue_name = "q_otel"
            exchange_name = "ex_otel"
            discovery = "services.ds"
            services = [{{"name": "svc_otel", "controller": "{module}.A"}}]
            {otel_line}
            """
        )
    )
    return path


def test_a_config_file_and_the_command_line_turn_it_on(tmp_path: Path) -> None:
    assert server.CLIServer(config_file(tmp_path)).telemetry is None
    assert server.CLIServer(config_file(tmp_path), otel=True).telemetry is not None
    assert server.CLIServer(config_file(tmp_path, "otel = yes")).telemetry is not None
    args = cli.build_parser().parse_args(["run", str(tmp_path / "server.ini"), "--otel"])
    assert args.otel is True
    [spec] = launch.worker_specs([str(config_file(tmp_path))], 1, otel=True)
    assert spec.argv[-2:] == [str(tmp_path / "server.ini"), "--otel"]


def test_a_bad_otel_value_in_a_config_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ConfigError, match="otel"):
        server.CLIServer(config_file(tmp_path, 'otel = "sometimes"'))
