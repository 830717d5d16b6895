"""The pytest plugin of tavrida2 (entry point ``pytest11``; loaded by pytest only).

Fixtures:

- ``tavrida2_isolation``: fresh global state (Router, class-level discovery,
  memory brokers) before and after the test; the ini option
  ``tavrida2_isolation = true`` gives it to every test of the project;
- ``tavrida2_broker_url``: the URL of the test's broker, a ``memory://``
  broker of its own unless the test is marked ``tavrida2_with_rabbitmq``;
- ``tavrida2_server``: a :class:`~tavrida2.testing.services.RunningServices`
  on that broker; call it with controllers to run a server, stopped at teardown;
- ``rabbitmq_vhost``: a :class:`~tavrida2.testing.vhosts.Vhost` of the test's own
  on RabbitMQ, deleted at teardown.

Marker ``tavrida2_with_rabbitmq``: run the test on the memory broker and on
RabbitMQ (the second variant is marked ``rabbitmq``).

Options (command line, else environment, else ini): ``--tavrida2-rabbitmq-url``
(``TAVRIDA2_RABBITMQ_URL``, ``tavrida2_rabbitmq_url``),
``--tavrida2-rabbitmq-admin`` (``TAVRIDA2_RABBITMQ_ADMIN``,
``tavrida2_rabbitmq_admin``: ``auto``, ``rabbitmqctl`` or a management API
URL) and ``--tavrida2-require-rabbitmq`` (``TAVRIDA2_REQUIRE_RABBITMQ=1``,
``tavrida2_require_rabbitmq``): an unreachable RabbitMQ fails the tests that
need it instead of skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tavrida2.testing import reset_global_state
from tavrida2.testing.services import RunningServices
from tavrida2.testing.vhosts import DEFAULT_URL, RabbitMQUnavailable, Vhost, VhostFactory

WITH_RABBITMQ = "tavrida2_with_rabbitmq"
_TRUE = ("1", "true", "yes", "on")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tavrida2", "tavrida2 services")
    group.addoption(
        "--tavrida2-rabbitmq-url",
        dest="tavrida2_rabbitmq_url",
        default=None,
        help="the RabbitMQ that rabbitmq_vhost makes vhosts on "
        f"(env TAVRIDA2_RABBITMQ_URL; default {DEFAULT_URL})",
    )
    group.addoption(
        "--tavrida2-rabbitmq-admin",
        dest="tavrida2_rabbitmq_admin",
        default=None,
        help="how vhosts are made: auto, rabbitmqctl or the management API's "
        "http://host:15672 (env TAVRIDA2_RABBITMQ_ADMIN; default auto)",
    )
    group.addoption(
        "--tavrida2-require-rabbitmq",
        dest="tavrida2_require_rabbitmq",
        action="store_true",
        default=None,
        help="fail, not skip, the tests that need RabbitMQ when it cannot be used "
        "(env TAVRIDA2_REQUIRE_RABBITMQ=1)",
    )
    parser.addini("tavrida2_rabbitmq_url", "see --tavrida2-rabbitmq-url", default=DEFAULT_URL)
    parser.addini("tavrida2_rabbitmq_admin", "see --tavrida2-rabbitmq-admin", default="auto")
    parser.addini(
        "tavrida2_require_rabbitmq", "see --tavrida2-require-rabbitmq", type="bool", default=False
    )
    parser.addini(
        "tavrida2_isolation",
        "give every test the tavrida2_isolation fixture (fresh global state)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rabbitmq: needs a RabbitMQ broker")
    config.addinivalue_line(
        "markers",
        f"{WITH_RABBITMQ}: run the test on the memory broker and on RabbitMQ "
        "(its tavrida2_broker_url, tavrida2_server)",
    )


def _setting(config: pytest.Config, name: str, env: str) -> str:
    value = config.getoption(name)
    if value is None:
        value = os.environ.get(env) or config.getini(name)
    return str(value)


def _rabbitmq_required(config: pytest.Config) -> bool:
    if config.getoption("tavrida2_require_rabbitmq"):
        return True
    env = os.environ.get("TAVRIDA2_REQUIRE_RABBITMQ")
    if env is not None:
        return env.strip().lower() in _TRUE
    return bool(config.getini("tavrida2_require_rabbitmq"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker(WITH_RABBITMQ) is None:
        return
    if "tavrida2_broker_url" not in metafunc.fixturenames:
        pytest.fail(
            f"{metafunc.definition.nodeid}: @pytest.mark.{WITH_RABBITMQ} needs a test that "
            "uses the tavrida2_broker_url or tavrida2_server fixture",
            pytrace=False,
        )
    metafunc.parametrize(
        "tavrida2_broker_url",
        ["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)],
        indirect=True,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for ``rabbitmq_vhost`` is a ``rabbitmq`` test (before ``-m`` selects)."""
    for item in items:
        if "rabbitmq_vhost" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "rabbitmq"
        ):
            item.add_marker(pytest.mark.rabbitmq)


@pytest.fixture
def tavrida2_isolation() -> Iterator[None]:
    """Run a test with fresh global state, and leave none behind."""
    reset_global_state()
    yield
    reset_global_state()


@pytest.fixture(autouse=True)
def _tavrida2_isolation_for_all(request: pytest.FixtureRequest) -> None:
    if request.config.getini("tavrida2_isolation"):
        request.getfixturevalue("tavrida2_isolation")


@pytest.fixture(scope="session")
def tavrida2_vhost_factory(
    request: pytest.FixtureRequest,
) -> VhostFactory | RabbitMQUnavailable:
    """What makes vhosts, or why none can be made (checked once per session)."""
    config = request.config
    url = _setting(config, "tavrida2_rabbitmq_url", "TAVRIDA2_RABBITMQ_URL")
    admin = _setting(config, "tavrida2_rabbitmq_admin", "TAVRIDA2_RABBITMQ_ADMIN")
    try:
        return VhostFactory(url, admin)
    except RabbitMQUnavailable as exc:
        return exc


@pytest.fixture
def rabbitmq_vhost(
    request: pytest.FixtureRequest, tavrida2_vhost_factory: VhostFactory | RabbitMQUnavailable
) -> Iterator[Vhost]:
    """A fresh vhost on RabbitMQ for the test (all permissions for the URL's user), then deleted.

    When RabbitMQ cannot be used the test is skipped, saying why; with
    ``--tavrida2-require-rabbitmq`` it fails.
    """
    factory = tavrida2_vhost_factory
    problem: RabbitMQUnavailable | None = None
    if isinstance(factory, RabbitMQUnavailable):
        problem = factory
    else:
        try:
            vhost = factory.create()
        except RabbitMQUnavailable as exc:
            problem = exc
    if problem is not None:
        reason = f"RabbitMQ is needed: {problem}"
        if _rabbitmq_required(request.config):
            pytest.fail(
                f"{reason} (required: --tavrida2-require-rabbitmq or TAVRIDA2_REQUIRE_RABBITMQ)",
                pytrace=False,
            )
        pytest.skip(f"{reason} (set --tavrida2-rabbitmq-url or TAVRIDA2_RABBITMQ_URL)")
    assert not isinstance(factory, RabbitMQUnavailable)
    try:
        yield vhost
    finally:
        factory.delete(vhost)


@pytest.fixture
def tavrida2_broker_url(request: pytest.FixtureRequest) -> str:
    """The broker of the test: ``memory://`` of its own, or a RabbitMQ vhost's URL."""
    kind = getattr(request, "param", "memory")
    if kind == "rabbitmq":
        vhost: Vhost = request.getfixturevalue("rabbitmq_vhost")
        return vhost.url
    return f"memory://tavrida2-test-{uuid.uuid4().hex}"


@pytest.fixture
def tavrida2_server(tavrida2_broker_url: str) -> Iterator[RunningServices]:
    """Servers on the test's broker: ``tavrida2_server(HelloController)`` starts one.

    ``.client`` calls and casts; everything is stopped at teardown.
    """
    running = RunningServices(tavrida2_broker_url, retry_delay=0.2)
    try:
        yield running
    finally:
        running.stop()
