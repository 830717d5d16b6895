"""Server: declares a server's topology and runs its service controllers on a driver."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tavrida2 import exceptions
from tavrida2.calls import AsyncCalls, SyncCalls
from tavrida2.config import ConnectionConfig
from tavrida2.deadletter import DeadLetterPolicy, DeadLetters
from tavrida2.discovery.base import AbstractDiscovery
from tavrida2.discovery.local import ChainedDiscovery
from tavrida2.dispatcher import HandlerInfo
from tavrida2.drivers import create_async_driver, create_sync_driver
from tavrida2.drivers.base import AsyncDriver, SyncDriver
from tavrida2.drivers.topology import QueueSpec, Topology, server_topology
from tavrida2.engine import (
    DEFAULT_STOP_TIMEOUT,
    AsyncEngine,
    AsyncOutbox,
    DeliveryEvents,
    SyncEngine,
    delivery_events,
)
from tavrida2.lifecycle import Lifecycle
from tavrida2.liveness import DEFAULT_ANNOUNCE_PERIOD, describe, instance_id
from tavrida2.otel import load as load_telemetry
from tavrida2.postprocessor import Calls, PostProcessor, Publisher, Tracer
from tavrida2.preprocessor import PreProcessor
from tavrida2.queuetypes import CLASSIC, QUORUM, check_queue_type, mismatch
from tavrida2.router import RoutingTable
from tavrida2.schedule import HookInfo, TaskInfo
from tavrida2.service import ServiceController

if TYPE_CHECKING:
    from tavrida2.configfile import ServerConfig
    from tavrida2.metrics import MetricsEndpoint, PrometheusMetrics, ServerInstruments
    from tavrida2.otel.incoming import DeliveryTracing
    from tavrida2.otel.settings import Telemetry

log = logging.getLogger(__name__)
#: Seconds a stopping async server gives its last announcement (the sync engine makes
#: one attempt: its driver gives up reconnecting once stop() was called).
FAREWELL_TIMEOUT = 2.0
CallsT = TypeVar("CallsT", SyncCalls, AsyncCalls)
DriverT = TypeVar("DriverT", SyncDriver, AsyncDriver)


def _announce_period(value: Any, config: ConnectionConfig) -> float | None:
    """``announce_period`` checked: seconds, None, or ``"default"`` (none on memory://)."""
    if value == "default":
        # nothing listens in a process of in-memory brokers (tests, demos)
        return None if config.driver == "memory" else DEFAULT_ANNOUNCE_PERIOD
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise exceptions.ConfigError(reason=f"announce_period={value!r}: expected seconds or None")
    if not 0 < value < float("inf"):
        raise exceptions.ConfigError(
            reason=f"announce_period={value!r}: expected a positive number"
        )
    return float(value)


class Server:
    """Runs ``service_list`` on one queue and exchange.

    Before it consumes, it declares the exchange (durable topic), the queue,
    a ``<service>.#`` binding per service, every exchange the services'
    discovery names, and the bindings of their subscriptions; and, unless
    ``dead_letters=False``, the queue's dead-letter exchange and queue and its
    retry queue (``dead_letters=DeadLetterPolicy.for_queue(queue, max_attempts=5)``
    chooses names and retries; see :mod:`tavrida2.deadletter`). The engine is
    the config's: ``async_engine=False`` (default) handles one message at a
    time in :meth:`run`'s thread; ``async_engine=True`` runs an asyncio loop
    with up to ``prefetch_count`` messages in flight. ``queue_type="quorum"``
    declares the server's queue as a RabbitMQ quorum queue (replicated; see
    :mod:`tavrida2.queuetypes`). ``otel=True`` (or a
    ``tavrida2.otel.Telemetry``) traces every message it handles and sends
    with OpenTelemetry (the ``tavrida2[otel]`` extra; :mod:`tavrida2.otel`).
    ``metrics=PrometheusMetrics()`` counts and times what it handles
    (:mod:`tavrida2.metrics`, the ``tavrida2[metrics]`` extra).

    Example::

        srv = server.Server(conf, queue_name="test_service",
                            exchange_name="test_exchange",
                            service_list=[HelloController])
        srv.run()          # until SIGINT/SIGTERM or srv.stop()
    """

    def __init__(
        self,
        config: ConnectionConfig,
        queue_name: str,
        exchange_name: str,
        service_list: Sequence[type[ServiceController]] | type[ServiceController],
        *,
        dead_letters: DeadLetterPolicy | bool = True,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        tracer: Tracer | None = None,
        announce_period: float | Literal["default"] | None = "default",
        queue_type: str = CLASSIC,
        otel: bool | Telemetry = False,
        metrics: PrometheusMetrics | None = None,
    ) -> None:
        if not isinstance(config, ConnectionConfig):
            raise exceptions.IncorrectAMQPConfig(amqp_url=repr(config))
        if not queue_name or not exchange_name:
            raise exceptions.ConfigError(reason="a server needs queue_name and exchange_name")
        classes = [service_list] if isinstance(service_list, type) else list(service_list)
        if not classes:
            raise exceptions.ConfigError(reason="a server needs at least one service class")
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, ServiceController)) or not getattr(
                cls, "service_name", ""
            ):
                raise exceptions.NeedToBeController(service=repr(cls))
            if not config.async_engine:
                _check_sync_handlers(cls)
        if isinstance(stop_timeout, bool) or not isinstance(stop_timeout, int | float):
            raise exceptions.ConfigError(reason=f"stop_timeout={stop_timeout!r}: expected seconds")
        if not 0 < stop_timeout < float("inf"):
            raise exceptions.ConfigError(
                reason=f"stop_timeout={stop_timeout!r}: expected a positive number of seconds"
            )
        #: Seconds a stopping server waits for the handlers in progress; then
        #: their deliveries are left unacknowledged (delivered again) and the
        #: connection is closed.
        self.stop_timeout = float(stop_timeout)
        #: Sees every message this server receives and sends (:mod:`tavrida2.tracing`).
        self.tracer = tracer
        #: OpenTelemetry's spans of this server's messages (:mod:`tavrida2.otel`); None: off.
        self.telemetry = load_telemetry(otel)
        #: Seconds between announcements on ``tavrida2.heartbeat`` (:mod:`tavrida2.liveness`);
        #: None: the server does not announce itself.
        self.announce_period = _announce_period(announce_period, config)
        #: This run of the server, as announcements and ``info()`` name it.
        self.instance_id = instance_id()
        #: When the server started (epoch seconds; 0 before).
        self.started_at = 0.0
        self._lifecycle: Lifecycle | None = None
        self._config = config
        if dead_letters is True:
            dead_letters = DeadLetterPolicy.for_queue(queue_name)
        #: Where what cannot be handled goes, and how failing casts are retried;
        #: None: rejected without a dead-letter exchange of tavrida2's.
        self.dead_letter_policy: DeadLetterPolicy | None = dead_letters or None
        #: ``"classic"`` or ``"quorum"``: the type of the server's queue.
        self.queue_type = check_queue_type(queue_type)
        if self.queue_type == QUORUM and self.dead_letter_policy is not None:
            self.dead_letter_policy.check_quorum()
        self._queue_name = queue_name
        self._exchange_name = exchange_name
        #: Counts and times what this server handles; None: nothing is measured.
        self.metrics = metrics
        self._service_list = classes
        self._services: list[ServiceController] = []
        self._driver: SyncDriver | AsyncDriver | None = None
        #: The sync engine's drivers of the methods with a queue of their own.
        self._method_drivers: list[SyncDriver] = []
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_timer: threading.Timer | None = None
        #: Clear while run() serves: a server only start()ed (its driver pumped by
        #: the caller, as tests do on the memory broker) has no handler of its own to abandon.
        self._finished = threading.Event()
        self._finished.set()
        self.started = threading.Event()

    @functools.cached_property
    def _instruments(self) -> ServerInstruments | None:
        """What counts this server's retries, dead letters and reconnects (with metrics)."""
        return None if self.metrics is None else self.metrics.for_server(self._queue_name)

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def exchange_name(self) -> str:
        return self._exchange_name

    @property
    def services(self) -> list[ServiceController]:
        """The controller instances (after start)."""
        return list(self._services)

    @property
    def service_classes(self) -> list[type[ServiceController]]:
        return list(self._service_list)

    @property
    def is_async(self) -> bool:
        """Whether the server runs on the async engine."""
        return self._config.async_engine

    @property
    def broadcast_queue(self) -> str | None:
        """This instance's queue of broadcasts (auto-delete), if its services take any."""
        takes = any(cls.get_dispatcher().get_broadcast_services() for cls in self._service_list)
        return f"{self._queue_name}.broadcast.{self.instance_id}" if takes else None

    def describe(self) -> dict[str, Any]:
        """The server's structure, as ``<service>.info`` answers (:func:`liveness.describe`)."""
        return describe(self)

    @property
    def driver(self) -> SyncDriver | AsyncDriver | None:
        return self._driver

    def topology(self) -> Topology:
        """What this server declares on the broker."""
        return server_topology(
            self._queue_name,
            self._exchange_name,
            self._service_list,
            self.dead_letter_policy,
            self.broadcast_queue,
            announces=self.announce_period is not None,
            queue_type=self.queue_type,
        )

    def _postprocessor(
        self, publisher: Publisher, discovery: AbstractDiscovery, calls: Calls | None = None
    ) -> PostProcessor:
        if self.telemetry is None:
            return PostProcessor(publisher, discovery, calls)
        from tavrida2.otel.outgoing import TracedPostProcessor

        return TracedPostProcessor(
            publisher, discovery, calls, telemetry=self.telemetry, config=self._config
        )

    def _build(self, publisher: Publisher, calls: Calls) -> PreProcessor:
        preprocessor, self._services = self._pipeline(publisher, calls)
        return preprocessor

    def _pipeline(
        self, publisher: Publisher, calls: Calls
    ) -> tuple[PreProcessor, list[ServiceController]]:
        """A preprocessor and the controller instances it hands messages to."""
        services = [
            cls(self._postprocessor(publisher, cls.get_discovery(), calls))
            for cls in self._service_list
        ]
        fallback = ChainedDiscovery(*(cls.get_discovery() for cls in self._service_list))
        errors = self._postprocessor(publisher, fallback)
        for controller in services:
            controller._describe_server = self.describe
            if self.metrics is not None:
                # first: it also times the other middlewares and sees what they stop
                middleware = self.metrics.middleware(controller.service_name)
                controller._incoming_middlewares.insert(0, middleware)
        preprocessor = PreProcessor(RoutingTable(services), services, errors)
        if self.tracer is not None:
            preprocessor.tracer = errors.tracer = self.tracer
            for controller in services:
                controller.postprocessor.tracer = self.tracer
        return preprocessor, services

    def _delivery_tracing(self) -> DeliveryTracing | None:
        """The span of each delivery an engine handles (None when not traced)."""
        if self.telemetry is None:
            return None
        from tavrida2.otel.incoming import DeliveryTracing

        return DeliveryTracing(self.telemetry, self._config)

    def _delivery_events(self) -> DeliveryEvents | None:
        """Who hears of an engine's failures: the metrics and the delivery's span."""
        failed_spans = None
        if self.telemetry is not None:
            from tavrida2.otel.incoming import FailedSpans

            failed_spans = FailedSpans()
        return delivery_events(self._instruments, failed_spans)

    def _instrumented(self, driver: DriverT) -> DriverT:
        """``driver``, its restored connections counted when the server has metrics."""
        if self._instruments is not None:
            driver.on_reconnect = self._instruments.reconnected
        return driver

    def _calls(self, calls: CallsT) -> CallsT:
        calls.tracer = self.tracer
        return calls

    def _dead_letters(self) -> DeadLetters | None:
        policy = self.dead_letter_policy
        if policy is None:
            return None
        return DeadLetters(policy, self._queue_name, self.queue_type)

    def _mismatch(self, queue: QueueSpec, error: exceptions.PreconditionFailed) -> Exception:
        """The error of a queue RabbitMQ refused to declare: for the server's, how to migrate."""
        policy = self.dead_letter_policy
        if queue.name != self._queue_name and (policy is None or queue.name != policy.queue):
            return error
        return mismatch(queue.name, self.queue_type, dict(queue.arguments), error)

    # -- sync engine ---------------------------------------------------------

    def start(self) -> None:
        """Connect, declare the topology, call the hooks and consume, without blocking.

        The sync engine's start: :meth:`run` calls it; tests on the memory
        broker call it and then ``MemoryBroker.run_until_idle()``. The
        ``pre_start`` hooks run before consuming, the ``post_start`` ones
        after; then the tasks' scheduler starts (in a thread of its own).
        """
        if self._config.async_engine:
            raise RuntimeError("start() is for the sync engine; use run() or await serve()")
        driver = self._instrumented(create_sync_driver(self._config))
        self._driver = driver
        driver.connect()
        self.started_at = time.time()
        self._declare_sync(driver)
        engine = SyncEngine(
            self._build(driver, self._calls(SyncCalls(driver))),
            self._dead_letters(),
            driver.publish,
            self._delivery_events(),
        )
        for service in self._services:
            service._heartbeat = driver.send_heartbeat
        lifecycle = self._lifecycle = Lifecycle(self, driver)
        lifecycle.call_hooks("pre_start")
        tracing = self._delivery_tracing()
        on_delivery = (
            engine.on_delivery if tracing is None else tracing.wrap_sync(engine.on_delivery)
        )
        for queue in self._consumed_queues():
            driver.consume(queue, on_delivery, self._config.prefetch_count)
        self._start_method_consumers()
        log.info(
            "server %s: consuming %s (%s) for %s",
            self._exchange_name,
            self._queue_name,
            self._config.to_url(),
            ", ".join(c.service_name for c in self._service_list),
        )
        lifecycle.call_hooks("post_start")
        lifecycle.build_scheduler().run_in_thread()

    def _declare_sync(self, driver: SyncDriver) -> None:
        topology = self.topology()
        for exchange in topology.exchanges:
            driver.declare_exchange(
                exchange.name, exchange.type, exchange.durable, exchange.alternate
            )
        for queue in topology.queues:
            try:
                driver.declare_queue(
                    queue.name, queue.durable, dict(queue.arguments), queue.auto_delete
                )
            except exceptions.PreconditionFailed as exc:
                raise self._mismatch(queue, exc) from None
        for binding in topology.bindings:
            driver.bind_queue(binding.queue, binding.exchange, binding.routing_key)
        for link in topology.exchange_bindings:
            driver.bind_exchange(link.destination, link.source, link.routing_key)
        for unbinding in topology.unbindings:
            driver.unbind_queue(unbinding.queue, unbinding.exchange, unbinding.routing_key)

    def _start_method_consumers(self) -> None:
        """The sync engine's consumers of the methods with a queue of their own.

        One handler at a time per connection on the sync engine: each such
        queue gets a driver (a connection) and a pipeline (controller
        instances) of its own, run by a thread of its own in :meth:`run`, so
        a slow method does not hold up the others. Tests on the memory broker
        that only :meth:`start` deliver to them with ``run_until_idle()``.
        """
        for method_queue in self.topology().method_queues:
            driver = self._instrumented(create_sync_driver(self._config))
            driver.connect()
            self._method_drivers.append(driver)
            preprocessor, services = self._pipeline(driver, self._calls(SyncCalls(driver)))
            for controller in services:
                controller._heartbeat = driver.send_heartbeat
            engine = SyncEngine(
                preprocessor, self._dead_letters(), driver.publish, self._delivery_events()
            )
            tracing = self._delivery_tracing()
            on_delivery = (
                engine.on_delivery if tracing is None else tracing.wrap_sync(engine.on_delivery)
            )
            driver.consume(method_queue.name, on_delivery, method_queue.prefetch)
            log.info(
                "server %s: consuming %s for %s, %s at once",
                self._exchange_name,
                method_queue.name,
                method_queue.entry_point,
                method_queue.prefetch,
            )

    def _run_method_consumers(self) -> list[threading.Thread]:
        threads = []
        for driver in self._method_drivers:
            thread = threading.Thread(
                target=driver.run, name=f"tavrida2-{self._queue_name}-method", daemon=True
            )
            thread.start()
            threads.append(thread)
        return threads

    def _close_method_consumers(self, threads: list[threading.Thread]) -> None:
        for driver in self._method_drivers:
            driver.stop()
        for thread in threads:
            thread.join(self.stop_timeout)
        drivers, self._method_drivers = self._method_drivers, []
        for driver in drivers:
            driver.close()

    def _consumed_queues(self) -> list[str]:
        broadcasts = self.broadcast_queue
        return [self._queue_name] if broadcasts is None else [self._queue_name, broadcasts]

    def _stop_sync(self, driver: SyncDriver) -> None:
        """The sync engine's end: ``pre_stop`` hooks, no more tasks, a last announcement."""
        lifecycle, self._lifecycle = self._lifecycle, None
        if lifecycle is None:
            return
        if lifecycle.scheduler is not None:
            lifecycle.scheduler.stop(self.stop_timeout)
        lifecycle.call_hooks("pre_stop")
        lifecycle.farewell()

    def run(self) -> None:
        """Serve until :meth:`stop`, SIGINT or SIGTERM; finish the message in hand, close.

        Raises ``ConnectionFailed`` if the broker cannot be reached at start, or
        once a lost connection could not be restored in ``reconnect_attempts``.
        """
        self._finished.clear()
        try:
            with _stop_on_signals(self):
                if self._config.async_engine:
                    asyncio.run(self.serve())
                    return
                method_threads: list[threading.Thread] = []
                try:
                    self.start()
                    assert isinstance(self._driver, SyncDriver)
                    method_threads = self._run_method_consumers()
                    self.started.set()
                    if not self._stop_requested.is_set():
                        self._driver.run()
                    self._stop_sync(self._driver)
                finally:
                    if self._lifecycle is not None and self._lifecycle.scheduler is not None:
                        self._lifecycle.scheduler.stop(0)  # start() failed after it began
                    self._close_method_consumers(method_threads)
                    if self._driver is not None:
                        self._driver.close()
                    log.info("server %s stopped", self._exchange_name)
        finally:
            self._finished.set()
            if self._stop_timer is not None:
                self._stop_timer.cancel()

    def stop(self) -> None:
        """Ask the server to stop (from any thread or a signal handler).

        The handlers in progress get ``stop_timeout`` seconds to finish; on the
        sync engine a handler still running then has its connection cut (its
        delivery goes back to the queue), on the async engine it is cancelled.
        """
        first = not self._stop_requested.is_set()
        self._stop_requested.set()
        driver = self._driver
        lifecycle = self._lifecycle
        if lifecycle is not None and lifecycle.scheduler is not None:
            lifecycle.scheduler.halt()  # no more runs; run() waits for those in progress
        if isinstance(driver, SyncDriver):
            driver.stop()
            for method_driver in self._method_drivers:
                method_driver.stop()
            if first and self._stop_timer is None and not self._finished.is_set():
                timer = threading.Timer(self.stop_timeout, self._abandon_handler)
                timer.daemon = True
                self._stop_timer = timer
                timer.start()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def _abandon_handler(self) -> None:
        """The sync engine's handler did not return within ``stop_timeout``."""
        if self._finished.is_set():
            return
        log.error(
            "server %s: a handler is still running %s s after the stop was asked "
            "(stop_timeout); cutting the connection: its delivery goes back to the queue",
            self._exchange_name,
            self.stop_timeout,
        )
        for driver in (self._driver, *self._method_drivers):
            abandon = getattr(driver, "abandon", None)
            if callable(abandon):
                abandon()

    # -- async engine --------------------------------------------------------

    async def serve(self) -> None:
        """The async engine: serve in the running event loop until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        if self._stop_requested.is_set():
            return
        driver = self._instrumented(create_async_driver(self._config))
        self._driver = driver
        scheduler = None
        try:
            await driver.connect()
            self.started_at = time.time()
            topology = self.topology()
            for exchange in topology.exchanges:
                await driver.declare_exchange(
                    exchange.name, exchange.type, exchange.durable, exchange.alternate
                )
            for queue in topology.queues:
                try:
                    await driver.declare_queue(
                        queue.name, queue.durable, dict(queue.arguments), queue.auto_delete
                    )
                except exceptions.PreconditionFailed as exc:
                    raise self._mismatch(queue, exc) from None
            for binding in topology.bindings:
                await driver.bind_queue(binding.queue, binding.exchange, binding.routing_key)
            for link in topology.exchange_bindings:
                await driver.bind_exchange(link.destination, link.source, link.routing_key)
            for unbinding in topology.unbindings:
                await driver.unbind_queue(
                    unbinding.queue, unbinding.exchange, unbinding.routing_key
                )
            preprocessor = self._build(
                AsyncOutbox(driver, loop), self._calls(AsyncCalls(driver, loop))
            )
            engine = AsyncEngine(
                preprocessor,
                loop,
                dead_letters=self._dead_letters(),
                driver=driver,
                events=self._delivery_events(),
            )
            lifecycle = Lifecycle(self, driver)
            await lifecycle.call_hooks_async("pre_start")
            tracing = self._delivery_tracing()
            on_delivery = (
                engine.on_delivery if tracing is None else tracing.wrap_async(engine.on_delivery)
            )
            for queue_name in self._consumed_queues():
                await driver.consume(queue_name, on_delivery, self._config.prefetch_count)
            for method_queue in topology.method_queues:
                await driver.consume(method_queue.name, on_delivery, method_queue.prefetch)
            log.info(
                "server %s: consuming %s (%s, async engine)",
                self._exchange_name,
                self._queue_name,
                self._config.to_url(),
            )
            await lifecycle.call_hooks_async("post_start")
            scheduler = lifecycle.build_scheduler(loop, engine.run_sync)
            scheduler.run_in_loop()
            self.started.set()
            if not self._stop_requested.is_set():
                await self._wait_for_stop(driver)
            await scheduler.stop_async(self.stop_timeout)
            scheduler = None
            # as on the sync engine: the handlers in progress end before pre_stop
            await driver.stop_consuming(self.stop_timeout)
            await lifecycle.call_hooks_async("pre_stop")
            farewell = lifecycle.farewell()
            if farewell is not None:
                # a courtesy to the peers (they also notice the silence): not worth
                # publish_timeout of a stop when the broker is away
                with contextlib.suppress(exceptions.TavridaError, TimeoutError):
                    await asyncio.wait_for(farewell, FAREWELL_TIMEOUT)
        finally:
            if scheduler is not None:
                await scheduler.stop_async(0)
            await driver.close()
            log.info("server %s stopped", self._exchange_name)

    async def _wait_for_stop(self, driver: AsyncDriver) -> None:
        """Until :meth:`stop`; raise ``ConnectionFailed`` if the driver gave up reconnecting."""
        assert self._stop_event is not None
        stopped = asyncio.ensure_future(self._stop_event.wait())
        failed = asyncio.ensure_future(driver.wait_gave_up())
        try:
            done, _ = await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopped, failed):
                task.cancel()
        if stopped not in done:
            raise failed.result()


def file_server_arguments(loaded: ServerConfig) -> dict[str, Any]:
    """The arguments of :class:`Server` that a loaded config file gives (its tracer apart)."""
    return {
        "config": loaded.connection,
        "queue_name": loaded.queue_name,
        "exchange_name": loaded.exchange_name,
        "service_list": loaded.controllers,
        "dead_letters": loaded.dead_letters or False,
        "stop_timeout": loaded.stop_timeout,
        "announce_period": loaded.announce_period,
        "queue_type": loaded.queue_type,
        "otel": loaded.otel,
    }


class CLIServer(Server):
    """A :class:`Server` described by an INI config file (see :mod:`tavrida2.configfile`).

    Reading the file imports the controllers and binds each to the discovery
    its entry names; a bad file raises ``ConfigError`` naming the file,
    section and key. This is what ``tavrida2 run CONFIG`` runs.

    Without ``config_file`` the file is the command line's ``--config-file
    PATH``, as in Tavrida 1.0 (``python hello_server.py --config-file
    hello.cfg``); without either, ``ConfigFileIsNotDefined``. ``project_name``
    names the program in command-line errors. The file is also the one
    ``configfile.get_services()`` and the other 1.0 helpers read.

    ``otel=True`` traces with OpenTelemetry even if the file does not say
    ``otel = true`` (``tavrida2 run --otel``).

    With a metrics port (``metrics_port``, else the file's ``[metrics] port``),
    :meth:`run` first serves the server's Prometheus metrics on
    ``http://HOST:PORT/metrics`` (:mod:`tavrida2.metrics`; the host is
    ``metrics_host``, else the file's, else 127.0.0.1). A port in use raises
    ``MetricsPortInUse`` before anything connects; without prometheus_client,
    a ``ConfigError`` names the ``metrics`` extra.

    Example::

        server.CLIServer("hello.ini").run()
        server.CLIServer().run()   # --config-file PATH from sys.argv
    """

    def __init__(
        self,
        config_file: str | os.PathLike[str] | None = None,
        project_name: str | None = None,
        *,
        otel: bool = False,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
    ) -> None:
        from tavrida2 import configfile

        if config_file is None:
            [config_file] = configfile.get_config(sys.argv[1:], project_name)
        else:
            configfile.get_config([], project_name, os.fspath(config_file))
        loaded = configfile.load(config_file)
        loaded.bind_discovery()
        tracer = None
        if loaded.trace is not None:
            from tavrida2 import tracing

            try:
                tracer = tracing.make_tracer(**loaded.trace)
            except tracing.TraceDatabaseError as exc:
                raise exceptions.ConfigError(
                    reason=f"{loaded.path}, section [trace], key db: {exc}"
                ) from None
        #: The checked contents of the file.
        self.file_config = loaded
        arguments = file_server_arguments(loaded)
        arguments["otel"] = arguments["otel"] or otel
        #: ``(host, port)`` where :meth:`run` serves the metrics; None: no metrics.
        self.metrics_endpoint = _metrics_endpoint(loaded, metrics_port, metrics_host)
        metrics = None
        if self.metrics_endpoint is not None:
            try:
                from tavrida2.metrics import PrometheusMetrics
            except ImportError as exc:
                raise exceptions.ConfigError(reason=str(exc)) from None
            metrics = PrometheusMetrics()
        self._endpoint: MetricsEndpoint | None = None
        super().__init__(**arguments, tracer=tracer, metrics=metrics)

    def run(self) -> None:
        """Serve the metrics (if asked), then :meth:`Server.run`; the endpoint closes after."""
        if self.metrics is None or self.metrics_endpoint is None:
            super().run()
            return
        from tavrida2.metrics import MetricsEndpoint

        host, port = self.metrics_endpoint
        try:
            with MetricsEndpoint(port, host, self.metrics.registry) as endpoint:
                self._endpoint = endpoint
                super().run()
        finally:
            self._endpoint = None

    @property
    def metrics_url(self) -> str | None:
        """Where the metrics are served while :meth:`run` runs (the port chosen, if 0 was)."""
        return None if self._endpoint is None else self._endpoint.url


def _metrics_endpoint(
    loaded: ServerConfig, port: int | None, host: str | None
) -> tuple[str, int] | None:
    """``(host, port)`` of a CLIServer's metrics: the arguments, else the file's."""
    from tavrida2.configfile import DEFAULT_METRICS_HOST

    file_host, file_port = loaded.metrics or (DEFAULT_METRICS_HOST, None)
    if port is None:
        port = file_port
    if port is None:
        if host is not None:
            raise exceptions.ConfigError(
                reason=f"a metrics host ({host}) but no metrics port: give --metrics-port "
                f"or [metrics] port in {loaded.path}"
            )
        return None
    return host or file_host, port


def _check_sync_handlers(cls: type[ServiceController]) -> None:
    dispatcher = cls.get_dispatcher()
    hooks = [hook for hooks in dispatcher.hooks.values() for hook in hooks]
    kinds: list[HandlerInfo | TaskInfo | HookInfo] = [
        *dispatcher.iter_handlers(),
        *dispatcher.tasks,
        *hooks,
    ]
    for item in kinds:
        if item.is_coroutine:
            raise exceptions.IncompatibleHandler(
                handler=f"{cls.__name__}.{item.name}",
                reason="async def handlers, tasks and hooks need "
                "ConnectionConfig(async_engine=True)",
            )


#: Seconds a process stopped by a signal gets, past ``stop_timeout``, to close.
_CLOSING_GRACE = 3.0


class _stop_on_signals:
    """Route SIGINT/SIGTERM to ``server.stop()`` while serving (main thread only).

    A signal asks the process to end, so it does end: if the server has not
    stopped ``stop_timeout`` + 3 s after the first signal (a handler that
    neither returns nor can be cancelled: a plain function blocked in an
    executor thread), or at a second signal, the process exits with status 1.
    Its unacknowledged deliveries go back to their queue when its connection
    drops.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self._previous: dict[int, Any] = {}
        self._signalled = False

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self._signalled:
            self._exit(f"signal {name} again while stopping")
            return
        self._signalled = True
        log.info("signal %s: stopping", name)
        self._server.stop()
        threading.Thread(target=self._last_resort, name="tavrida2-stop", daemon=True).start()

    def _last_resort(self) -> None:
        server = self._server
        if not server._finished.wait(server.stop_timeout + _CLOSING_GRACE):
            self._exit(
                f"not stopped {server.stop_timeout + _CLOSING_GRACE:g} s after the signal "
                f"(stop_timeout={server.stop_timeout:g}): a handler does not return"
            )

    @staticmethod
    def _exit(reason: str) -> None:
        log.critical("%s; exiting now (unacknowledged deliveries go back to their queue)", reason)
        logging.shutdown()
        os._exit(1)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_servers(servers: Iterable[Server]) -> list[threading.Thread]:
    """Start each server's :meth:`Server.run` in a daemon thread; wait until all consume."""
    threads = []
    for srv in servers:
        thread = threading.Thread(target=srv.run, name=f"tavrida2-{srv.queue_name}", daemon=True)
        thread.start()
        threads.append((srv, thread))
    for srv, thread in threads:
        while not srv.started.wait(0.05):
            if not thread.is_alive():
                raise RuntimeError(f"server {srv.queue_name} failed to start")
    return [thread for _, thread in threads]


__all__ = ["CLIServer", "Server", "run_servers"]
