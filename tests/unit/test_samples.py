"""Every sample under samples/ runs, as a user would run it, and says what it should.

Each sample runs as a subprocess with this interpreter (the venv's), on the
in-memory broker by default; the ``rabbitmq`` tests run the same samples with
``--url`` against the real broker, in a virtual host of their own that is
deleted afterwards. A sample passes when it exits 0, prints its key lines, and
logs on stderr no error but the ones it provokes on purpose.

samples/deploy/ and samples/from-1.0/ (config-file and .ds-file deployments, run with the
``tavrida2`` command) is tested with the command line, not here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tavrida2.testing import Vhost

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = ROOT / "samples"
#: Folders of samples/ that other tests run (testing/: test_testing_plugin.py;
#: from-1.0/: tests/integration/test_from_10_sample_rabbitmq.py).
TESTED_ELSEWHERE = ("deploy", "agents", "testing", "from-1.0")


@dataclass(frozen=True)
class Sample:
    """A sample, the lines its output must contain, and the errors it logs on purpose."""

    stdout: tuple[str, ...]
    #: Each an ERROR log line on stderr that the sample provokes (a handler that raises).
    errors: tuple[str, ...] = ()
    #: Whether it takes ``--url`` (runs on RabbitMQ too).
    takes_url: bool = True


SAMPLES: dict[str, Sample] = {
    "demo.py": Sample(
        stdout=(
            "--- hello (request from the client)",
            "--- world_resp (response from test_world.world)",
            "--- world_error (error from test_world.fail)",
            "--- hello_subscription (notification from test_hello.hello)",
            "=== 6 of 6 handler calls; broker idle: True",
        ),
        errors=("test_world.fail failed on request",),
        takes_url=False,
    ),
    "client_script.py": Sample(
        stdout=(
            "call: calc.add(a=1, b=2) -> {'sum': 3} from calc.add",
            "call: calc.divide(a=1, b=0) -> RemoteError ZeroDivisionError: division by zero"
            " (code 1000)",
            "call: calc.slow(seconds=1.0), timeout=0.2 -> CallTimeout after ",
            "(No answer from calc.slow within 0.2 s)",
            "call_async: 10 calls in flight -> sums [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]",
            "cast: 1 cast and 3 cast_async confirmed by the broker",
            "call: calc.notes() -> ['cast 1', 'cast_async 0', 'cast_async 1', 'cast_async 2']",
            "AsyncRPCClient: 100 calls with asyncio.gather -> sums 1..100",
            "AsyncRPCClient: call_async -> {'sum': 42}; cast confirmed",
            "AsyncRPCClient: calc.divide(a=1, b=0) -> RemoteError ZeroDivisionError",
            "done: every answer as expected",
        ),
        errors=("calc.divide failed on request", "calc.divide failed on request"),
    ),
    "otel_chain.py": Sample(
        stdout=(
            "client: hello, world, chuck says hi to ann",
            "script (INTERNAL)\n"
            "  send test_hello.hello (CLIENT) exchange=otel_hello\n"
            "    process test_hello.hello (SERVER) exchange=otel_hello\n"
            "      send test_world.world (CLIENT) exchange=otel_world\n"
            "        process test_world.world (SERVER) exchange=otel_world\n"
            "          send test_chuck.chuck (CLIENT) exchange=otel_chuck\n"
            "            process test_chuck.chuck (SERVER) exchange=otel_chuck\n",
            "done: one trace, each hop under the one before",
        ),
    ),
    "tutorial/01_request_handling.py": Sample(
        stdout=(
            "client: cast test_hello.hello(param=123)",
            "[test_hello.hello] param=123",
            "[test_hello.hello] IncomingRequestCast from client_app",
            "done: the request was handled",
        ),
    ),
    "tutorial/02_hello_world.py": Sample(
        stdout=(
            "---- request to hello: param=123",
            "---- request to hello: param=-1",
            "---- request to world: param=123 from test_hello.hello",
            "---- response from world to hello: param='world response'",
            "     source=test_world.world destination=test_hello.hello",
            "---- error from world to hello: ValueError",
            "     message='no world for param -1' code=1000",
            "done: one response, one error",
        ),
        errors=("test_world.world failed on request",),
    ),
    "tutorial/03_publish_subscribe.py": Sample(
        stdout=(
            "---- hello publishes a notification",
            "---- notification from hello to world: param='hello publication'",
            "     type=notification source=test_hello.hello",
            "---- notification from hello to audit: param='hello publication'",
            "done: both subscribers were notified",
        ),
    ),
    "tutorial/04_controller.py": Sample(
        stdout=(
            "[response from inventory.get_item] item='teapot' stock=5",
            "[response from inventory.reserve] item='teapot' reserved=2",
            "[response from inventory.ping] payload={}",
            "[error from inventory.forbidden] PermissionError: teapot is locked (code 1000)",
            "[error from inventory.broken] KeyError: 'teapot' (code 1000)",
            "[notification from inventory.reserve] item='teapot' count=2",
            "done: 3 responses, 2 errors, 1 notification",
        ),
        errors=("inventory.broken failed on request",),
    ),
    "tutorial/05_messages.py": Sample(
        stdout=(
            "---- orders.start: IncomingRequestCast",
            "     source=client_app destination=orders.start reply_to=''",
            "     payload={'order_id': 7} context={'order_id': 7}",
            "---- customers.enrich: IncomingRequestCall",
            "     source=orders.start destination=customers.enrich reply_to='orders.start'",
            "     payload={'customer': 'ann'} context={'order_id': 7, 'customer': 'ann'}",
            "---- archive.store: IncomingRequestCast",
            "     payload={'total': 42} context={'order_id': 7, 'customer': 'ann', 'total': 42}",
            '"correlation_id": "order-7", "destination": "archive.store"',
            '     body: {"context":{"order_id":7,"customer":"ann","total":42},'
            '"payload":{"total":42}}',
            "---- response from customers.enrich: IncomingResponse",
            "     source=customers.enrich destination=orders.start reply_to=''",
            "     tenant header='acme'",
            "check: one correlation_id along the chain: True",
            "check: a request and its answer share request_id: True",
            "check: every message_id is new: True",
            "check: the context grew at each hop: True",
        ),
    ),
    "tutorial/06_middlewares.py": Sample(
        stdout=(
            "[TidyName] '  ada lovelace ' -> 'Ada Lovelace'",
            "[greeter.greet] name='Ada Lovelace'",
            "[Stamp] response stamped",
            "client: answer {'greeting': 'Hello, Ada Lovelace!', 'served_by': 'greeter'}",
            "client: no name -> RemoteError KeyError: 'name' (code 1000)",
            "[RequireToken] no valid token: answering with an Error",
            "client: no token -> RemoteError PermissionError: invalid token (code 1000)",
            "done: middlewares answered as expected",
        ),
        errors=("greeter.greet failed on request",),
    ),
    "tutorial/07_discovery.py": Sample(
        stdout=(
            "LocalDiscovery tables: {'remote': ['remote_service_exchange'], "
            "'remote_publisher': ['remote_service_notifications'], "
            "'local_publisher': ['local_service_notifications']}",
            "  get_remote('nobody') raises UnableToDiscover",
            "services.ds for test_hello: {'remote': ['ds_hello_exchange', 'ds_world_exchange'], "
            "'remote_publisher': [], 'local_publisher': ['ds_hello_notifications']}",
            "services.ds for test_world: {'remote': ['ds_hello_exchange', 'ds_world_exchange'], "
            "'remote_publisher': ['ds_hello_notifications'], 'local_publisher': []}",
            "DiscoveryFactory: FileBasedDiscoveryService from a path, else LocalDiscovery",
            "[world] request from test_hello.hello: param=21",
            "[world] notification from test_hello.hello: param=21",
            "[hello] response from world: answer=42",
            "done: services wired by the .ds file",
        ),
    ),
    "tutorial/08_client.py": Sample(
        stdout=(
            "[hello #1] source=client_app correlation_id=123-456 headers={} context={'param': 1}",
            "[hello #3] source=source_service.method correlation_id=",
            "[hello #4] source=client_app correlation_id=",
            "[hello #5] source=client_app correlation_id=batch-7 "
            "headers={'x-origin': 'sample', 'x-trace': 't-1'} context={'user': 'ann', 'param': 5}",
            "client: call() answered {'seen': 6}",
            "done: 6 requests handled",
        ),
    ),
    "tutorial/09_proxy.py": Sample(
        stdout=(
            "[pricing.quote] amount=10 from front.checkout",
            "[front.checkout] pricing answered inline: total=12.0",
            "client: front.checkout answered {'order': 'A-1', 'total': 12.0}",
            "[billing.charge] order=A-1 total=12.0",
            "[audit.record] 'checkout A-1' by cast: correlation_id=order-A-1 x-shop='teapots'"
            " reply_to=''",
            "[audit] notification: order=A-1 total=12.0",
            "[front] billing.charge answered: charged=12.0",
            "[audit.record] 'charged 12.0' by transfer: correlation_id=order-A-1",
            "[front] audit.record answered the transfer",
            "done: every message arrived",
        ),
    ),
}


def run_sample(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SAMPLES_DIR / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )


def check_output(name: str, done: subprocess.CompletedProcess[str]) -> None:
    sample = SAMPLES[name]
    report = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    for line in sample.stdout:
        assert line in done.stdout, f"missing {line!r}\n{report}"
    assert "FAILED" not in done.stdout, report
    logged = [
        line
        for line in done.stderr.splitlines()
        if re.match(r"(ERROR|WARNING|CRITICAL)\b", line) or line.startswith("Traceback")
    ]
    errors = [line for line in logged if line.startswith("ERROR")]
    for expected in sample.errors:
        matching = [line for line in errors if expected in line]
        assert matching, f"no logged error {expected!r}\n{report}"
        errors.remove(matching[0])
    assert errors == [], f"unexpected errors {errors}\n{report}"
    # A traceback only with an error the sample provokes; never a warning.
    assert not [line for line in logged if not line.startswith(("ERROR", "Traceback"))], report
    assert done.stderr.count("Traceback") <= len(sample.errors), report


def test_every_sample_file_is_run_here() -> None:
    """A new sample must be listed in SAMPLES (with what it prints), a removed one unlisted."""
    found = {
        path.relative_to(SAMPLES_DIR).as_posix()
        for path in SAMPLES_DIR.rglob("*.py")
        if path.relative_to(SAMPLES_DIR).parts[0] not in TESTED_ELSEWHERE
    }
    assert found == set(SAMPLES), (
        f"not run by this test: {sorted(found - set(SAMPLES))}; "
        f"listed but missing: {sorted(set(SAMPLES) - found)}"
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_runs_on_the_memory_broker(name: str) -> None:
    check_output(name, run_sample(name))


@pytest.mark.parametrize("name", sorted(n for n, s in SAMPLES.items() if s.takes_url))
def test_sample_help_names_the_url_option(name: str) -> None:
    done = run_sample(name, "--help")
    assert done.returncode == 0, done.stderr
    assert "--url URL" in done.stdout


# -- the same samples on RabbitMQ ----------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(n for n, s in SAMPLES.items() if s.takes_url))
def test_sample_runs_on_rabbitmq(name: str, rabbitmq_vhost: Vhost) -> None:
    # rabbitmq_vhost: tavrida2's pytest plugin, a vhost of the test's own, deleted afterwards
    check_output(name, run_sample(name, "--url", rabbitmq_vhost.url))
