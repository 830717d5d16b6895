"""Helpers of the fault tests: the service under test, streams of casts and calls, the broker.

- :class:`Tally` (service ``tally``): ``note(n)`` (a cast) records ``n``,
  ``echo(n)`` (a call) records ``n`` and answers ``{"n": n}``, ``big(n, data)``
  records ``(n, len, sha256)`` and answers ``data`` back; every handled message
  lands in a :class:`Ledger`, so a test counts what was handled and how often;
- :class:`CastStream` / :class:`CallStream`: a thread sending casts (re-sent
  until confirmed) or calls (each tried once: it returns or raises) on the sync
  client (``RPCClient``) or the async one (``AsyncRPCClient``), bounded in time,
  optionally pausing at a gate;
- the broker: ``stop_app`` / ``start_app``, :func:`other_pytests` (who else
  may be using it), :func:`queue_counts` (passive declare),
  :func:`dead_lettered` (``<queue>.dlq``, 0 while there is none),
  :func:`delete_dead_letter_topology`;
- :class:`ServerProcess`: ``server_proc.py`` in a child process (to SIGKILL it,
  or to keep it out of the client's memory figures).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions as pex

from tavrida2 import client, discovery, dispatcher, exceptions, service
from tavrida2.config import ConnectionConfig
from tests.integration.conftest import pika_params, queue_info, rabbitmqctl, wait_until

#: What a publish or a call may raise when the broker cannot be reached: tavrida2's own
#: driver errors (a raw pika/aiormq exception reaching the caller is a bug).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    exceptions.ConnectionFailed,
    exceptions.ConnectionClosed,
    exceptions.PublishTimeout,
)
#: ... and for a call, also no answer in time.
CALL_ERRORS: tuple[type[Exception], ...] = (*TRANSPORT_ERRORS, exceptions.CallTimeout)
#: Library errors known to leak out of tavrida2 (counted apart by the streams as
#: ``leaked`` instead of failing at random). None now: the async driver's leak of
#: aiormq's connection error from a publish awaiting its confirmation is fixed.
KNOWN_LEAKS: tuple[type[Exception], ...] = ()


def error_name(exc: BaseException) -> str:
    """The class name; module-qualified unless it is tavrida2's (aiormq has a ConnectionClosed)."""
    cls = type(exc)
    if cls.__module__.startswith("tavrida2"):
        return cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


# -- what was handled ------------------------------------------------------------------


class Ledger:
    """How often each item was handled, per label; thread-safe, with bounded waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, collections.Counter[Any]] = collections.defaultdict(
            collections.Counter
        )

    def add(self, label: str, item: Any) -> None:
        with self._lock:
            self._counts[label][item] += 1

    def counts(self, label: str) -> collections.Counter[Any]:
        with self._lock:
            return collections.Counter(self._counts[label])

    def handled(self, label: str) -> set[Any]:
        with self._lock:
            return set(self._counts[label])

    def wait_for(self, label: str, items: Iterable[Any], timeout: float, what: str = "") -> None:
        wanted = set(items)

        def missing() -> set[Any]:
            return wanted - self.handled(label)

        try:
            wait_until(lambda: not missing(), what or f"{len(wanted)} x {label!r} handled", timeout)
        except AssertionError as exc:
            left = sorted(missing())
            raise AssertionError(f"{exc}; {len(left)} never handled, e.g. {left[:10]}") from None


def duplicated(counts: collections.Counter[Any]) -> int:
    """How many items were handled more than once."""
    return sum(1 for times in counts.values() if times > 1)


@dispatcher.rpc_service("tally")
class Tally(service.ServiceController):
    """The service under test; plain ``def`` handlers, so it runs on both engines."""

    ledger = Ledger()
    note_seconds = 0.0  # how long note() takes (a backlog outlasting the fault)

    @dispatcher.rpc_method(service="tally", method="note")
    def note(self, request, proxy, n):
        if self.note_seconds:
            time.sleep(self.note_seconds)
        self.ledger.add("note", n)

    @dispatcher.rpc_method(service="tally", method="echo")
    def echo(self, request, proxy, n, seconds=0.0):
        self.ledger.add("echo", n)
        if seconds:
            time.sleep(seconds)
        return {"n": n}

    @dispatcher.rpc_method(service="tally", method="big")
    def big(self, request, proxy, n, data):
        digest = hashlib.sha256(data.encode()).hexdigest()
        self.ledger.add("big", (n, len(data), digest))
        return {"n": n, "data": data}


def fresh_tally(note_seconds: float = 0.0) -> Ledger:
    Tally.ledger = Ledger()
    Tally.note_seconds = note_seconds
    return Tally.ledger


def tally_discovery(exchange: str) -> discovery.LocalDiscovery:
    disc = discovery.LocalDiscovery()
    disc.register_remote_service("tally", exchange)
    return disc


def sync_client(conf: ConnectionConfig, exchange: str) -> client.RPCClient:
    return client.RPCClient(conf, tally_discovery(exchange), source="faults")


def async_client(conf: ConnectionConfig, exchange: str) -> client.AsyncRPCClient:
    return client.AsyncRPCClient(conf, tally_discovery(exchange), source="faults")


# -- streams ---------------------------------------------------------------------------


class _Stream(threading.Thread):
    """A sending thread on the sync or the async client; see the subclasses.

    ``gate_at``: once that many items were tried, wait for :attr:`gate` (set by
    the test) before trying more. ``deadline``: seconds the whole stream may take.
    """

    def __init__(
        self,
        async_client_: bool,
        conf: ConnectionConfig,
        exchange: str,
        total: int,
        window: int,
        gate_at: int | None = None,
        deadline: float = 90.0,
        pause: float = 0.1,
    ) -> None:
        super().__init__(daemon=True, name=type(self).__name__)
        self.async_client = async_client_
        self.conf = conf
        self.exchange = exchange
        self.total = total
        self.window = window
        self.gate_at = gate_at
        self.gate = threading.Event()
        self.deadline = deadline
        self.pause = pause  # after a window in which something raised
        self.lock = threading.Lock()
        self.tried = 0
        self.raised: collections.Counter[str] = collections.Counter()
        self.raised_at: list[float] = []  # monotonic times of the raises
        self.unexpected: list[BaseException] = []  # raised, but not a transport error
        self.leaked: list[BaseException] = []  # raised one of KNOWN_LEAKS
        self.failure: BaseException | None = None
        self.started_at = self.finished_at = 0.0

    def _raised(self, exc: BaseException, allowed: tuple[type[Exception], ...]) -> None:
        with self.lock:
            self.raised[error_name(exc)] += 1
            self.raised_at.append(time.monotonic())
            if isinstance(exc, allowed):
                return
            if isinstance(exc, KNOWN_LEAKS):
                self.leaked.append(exc)
            else:
                self.unexpected.append(exc)

    def raised_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for at in self.raised_at if at >= moment)

    def _past_deadline(self) -> bool:
        return time.monotonic() - self.started_at > self.deadline

    def _at_gate(self) -> bool:
        return self.gate_at is not None and self.tried >= self.gate_at and not self.gate.is_set()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            if self.async_client:
                asyncio.run(self._run_async())
            else:
                self._run_sync()
        except BaseException as exc:  # reported by finish()
            self.failure = exc
        finally:
            self.finished_at = time.monotonic()

    def _run_sync(self) -> None:
        raise NotImplementedError

    async def _run_async(self) -> None:
        raise NotImplementedError

    def finish(self, timeout: float) -> None:
        """Join the thread (bounded); fail if it hangs or broke down."""
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still running after {timeout} s: it hangs"
        if self.failure is not None:
            raise AssertionError(f"{self.name} broke down: {self.failure!r}") from self.failure

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started_at


class CastStream(_Stream):
    """Casts ``tally.note(n)`` for ``n`` in ``range(total)``, ``window`` at a time.

    A cast counts as sent once the broker confirmed it (``cast()`` returned,
    ``cast_async().result()`` returned). One that raised was not accepted: it is
    counted in :attr:`raised` and sent again later, until every ``n`` is confirmed
    or the deadline passed. (A cast that raised may still have reached the queue
    when only its confirmation was lost: handled twice then, never lost.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.confirmed: set[int] = set()
        self.window_seconds: list[float] = []  # from the first publish to the last confirm

    def _next_window(self, todo: collections.deque[int]) -> list[int]:
        return [todo.popleft() for _ in range(min(self.window, len(todo)))]

    def _check(self, todo: collections.deque[int]) -> None:
        if self._past_deadline():
            raise AssertionError(
                f"casts not all confirmed within {self.deadline} s: {len(todo)} left, "
                f"raised {dict(self.raised)}"
            )

    def _run_sync(self) -> None:
        todo = collections.deque(range(self.total))
        with sync_client(self.conf, self.exchange) as cli:
            while todo:
                self._check(todo)
                if self._at_gate():
                    self.gate.wait(self.deadline)
                batch = self._next_window(todo)
                self.tried += len(batch)
                started = time.monotonic()
                handles = []
                failed: list[int] = []
                for index, n in enumerate(batch):
                    try:
                        handles.append((n, cli.tally.note(n=n).cast_async()))
                    except Exception as exc:
                        self._raised(exc, TRANSPORT_ERRORS)
                        failed.extend(batch[index:])  # the rest of the window waits
                        break
                for n, handle in handles:
                    try:
                        handle.result()
                    except Exception as exc:
                        self._raised(exc, TRANSPORT_ERRORS)
                        failed.append(n)
                    else:
                        self.confirmed.add(n)
                self.window_seconds.append(time.monotonic() - started)
                if failed:
                    todo.extendleft(reversed(failed))
                    time.sleep(self.pause)

    async def _run_async(self) -> None:
        todo = collections.deque(range(self.total))
        cli = async_client(self.conf, self.exchange)
        try:
            while todo:
                self._check(todo)
                if self._at_gate():
                    await asyncio.to_thread(self.gate.wait, self.deadline)
                batch = self._next_window(todo)
                self.tried += len(batch)
                started = time.monotonic()
                outcomes = await asyncio.gather(
                    *(cli.tally.note(n=n).cast() for n in batch), return_exceptions=True
                )
                failed = []
                for n, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        self._raised(outcome, TRANSPORT_ERRORS)
                        failed.append(n)
                    else:
                        self.confirmed.add(n)
                self.window_seconds.append(time.monotonic() - started)
                if failed:
                    todo.extendleft(reversed(failed))
                    await asyncio.sleep(self.pause)
        finally:
            await cli.close()


class CallStream(_Stream):
    """Calls ``tally.echo(n)`` for ``n`` in ``range(total)``, each once: it returns or raises.

    The sync client calls one at a time; the async client ``window`` at a time.
    :attr:`returned` holds the ``n`` whose answer came (and was checked),
    :attr:`failed` the ``n`` whose call raised, :attr:`longest` the longest
    call, to show none hung past its timeout.
    """

    def __init__(self, *args: Any, call_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_timeout = call_timeout
        self.returned: set[int] = set()
        self.failed: set[int] = set()
        self.wrong_answers: list[tuple[int, Any]] = []
        self.longest = 0.0

    def _answered(self, n: int, answer: Any) -> None:
        if answer.payload != {"n": n}:
            self.wrong_answers.append((n, answer.payload))
        self.returned.add(n)

    def _run_sync(self) -> None:
        with sync_client(self.conf, self.exchange) as cli:
            for n in range(self.total):
                if self._past_deadline():
                    raise AssertionError(f"calls not all done within {self.deadline} s")
                if self._at_gate():
                    self.gate.wait(self.deadline)
                self.tried += 1
                started = time.monotonic()
                try:
                    answer = cli.tally.echo(n=n).call(timeout=self.call_timeout)
                except Exception as exc:
                    self._raised(exc, CALL_ERRORS)
                    self.failed.add(n)
                    time.sleep(self.pause)
                else:
                    self._answered(n, answer)
                finally:
                    self.longest = max(self.longest, time.monotonic() - started)

    async def _run_async(self) -> None:
        cli = async_client(self.conf, self.exchange)

        async def one(n: int) -> None:
            started = time.monotonic()
            try:
                answer = await cli.tally.echo(n=n).call(timeout=self.call_timeout)
            except Exception as exc:
                self._raised(exc, CALL_ERRORS)
                self.failed.add(n)
            else:
                self._answered(n, answer)
            finally:
                self.longest = max(self.longest, time.monotonic() - started)

        try:
            todo = list(range(self.total))
            while todo:
                if self._past_deadline():
                    raise AssertionError(f"calls not all done within {self.deadline} s")
                if self._at_gate():
                    await asyncio.to_thread(self.gate.wait, self.deadline)
                batch, todo = todo[: self.window], todo[self.window :]
                self.tried += len(batch)
                failed_before = len(self.failed)
                await asyncio.gather(*(one(n) for n in batch))
                if len(self.failed) > failed_before:
                    await asyncio.sleep(self.pause)
        finally:
            await cli.close()


# -- the broker ------------------------------------------------------------------------


def stop_app() -> None:
    rabbitmqctl("stop_app")


def start_app() -> None:
    """Start the broker's application; retried, as a restore in a ``finally`` must work."""
    last: AssertionError | None = None
    for _ in range(3):
        try:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            return
        except AssertionError as exc:
            last = exc
            time.sleep(1)
    assert last is not None
    raise last


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def _runs_pytest(argv: list[bytes]) -> bool:
    """Whether a command line runs pytest (``pytest ...``, ``python -m pytest ...``).

    Not just any process with "pytest" in it: a broker node that a test started
    has pytest's temp folder in its arguments.
    """
    words = [os.path.basename(a.decode(errors="replace")) for a in argv[:4] if a]
    if any(word in ("pytest", "py.test") for word in words[:2]):
        return True
    return any(a == "-m" and b == "pytest" for a, b in itertools.pairwise(words))


def other_pytests() -> list[str]:
    """Command lines of pytest processes other than this one (and its parents) that may
    use the broker (a ``-m "not rabbitmq"`` run, or one of tests/unit only, does not)."""
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if not _runs_pytest(argv) or "not rabbitmq" in line:
            continue
        if "tests/unit" in line and "tests/integration" not in line:
            continue  # unit tests only: no broker
        found.append(f"{entry.name}: {line[:160]}")
    return found


def queue_counts(queue: str) -> tuple[int, int] | None:
    """``(messages ready, consumers)`` of ``queue`` (passive declare); None: no such queue."""
    connection = pika.BlockingConnection(pika_params())
    try:
        ok = connection.channel().queue_declare(queue, passive=True)
        return ok.method.message_count, ok.method.consumer_count
    except pex.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    finally:
        if connection.is_open:
            connection.close()


def consumers_of(queue: str) -> int:
    counts = queue_counts(queue)
    return 0 if counts is None else counts[1]


def dead_lettered(queue: str) -> int:
    """Messages in ``<queue>.dlq``, the server's dead-letter queue; 0 while there is none."""
    counts = queue_counts(f"{queue}.dlq")
    return 0 if counts is None else counts[0]


def delete_dead_letter_topology(queue: str) -> None:
    """Delete what the server declares for dead letters of ``queue`` (if it does)."""
    connection = pika.BlockingConnection(pika_params())
    try:
        channel = connection.channel()
        for name in (f"{queue}.dlq", f"{queue}.retry"):
            channel.queue_delete(name)
        channel.exchange_delete(f"{queue}.dlx")
    finally:
        if connection.is_open:
            connection.close()


def settled(queue: str) -> bool:
    """Whether ``queue`` holds no message, ready or unacknowledged (rabbitmqctl)."""
    info = queue_info(queue) or {}
    return info.get("messages_ready") == 0 and info.get("messages_unacknowledged") == 0


def timed(action: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run ``action``; how long it took and what it raised (None: it returned)."""
    started = time.monotonic()
    try:
        action()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def payload(size: int, seed: int = 0) -> str:
    """A ``size``-character ASCII string that differs from one seed to the next."""
    block = hashlib.sha256(str(seed).encode()).hexdigest()
    return (block * (size // len(block) + 1))[:size]


@contextlib.contextmanager
def restored_broker() -> Any:
    """Whatever happens in the block, the broker's application is running after it."""
    try:
        yield
    finally:
        start_app()


# -- a server in a process of its own ---------------------------------------------------

SERVER_SCRIPT = Path(__file__).with_name("server_proc.py")


class ServerProcess:
    """``server_proc.py`` run as a child process; what it handled is read from its ledger file."""

    def __init__(
        self,
        engine: bool,
        queue: str,
        exchange: str,
        workdir: Path,
        connection_name: str,
        sleep: float = 0.0,
        fsync: bool = True,
        prefetch: int | None = None,
    ) -> None:
        self.queue = queue
        self.ledger = workdir / "ledger.txt"
        self.log = workdir / "server.log"
        self.args = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--engine",
            "async" if engine else "sync",
            "--queue",
            queue,
            "--exchange",
            exchange,
            "--ledger",
            str(self.ledger),
            "--connection-name",
            connection_name,
            "--sleep",
            str(sleep),
        ]
        if not fsync:
            self.args.append("--no-fsync")
        if prefetch is not None:
            self.args += ["--prefetch", str(prefetch)]
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start the process; return once it consumes its queue."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        process = self.process
        wait_until(
            lambda: process.poll() is not None or consumers_of(self.queue) == 1,
            "the server process consuming",
            timeout,
        )
        assert process.poll() is None, f"the server process exited: {self.log_tail()}"

    def kill(self) -> None:
        """SIGKILL: no goodbye, no ack, nothing flushed but what is on disk."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def counts(self) -> collections.Counter[int]:
        """How often each ``n`` was handled (a line cut short by a kill is not counted)."""
        if not self.ledger.exists():
            return collections.Counter()
        text = self.ledger.read_text()
        lines = text.split("\n")[:-1]  # the last piece has no newline: empty, or cut short
        return collections.Counter(int(line) for line in lines if line)

    def handled(self) -> set[int]:
        return set(self.counts())

    def wait_for(self, items: Iterable[int], timeout: float, what: str) -> None:
        """Wait until every item was handled (the ledger is read twice a second)."""
        wanted = set(items)
        deadline = time.monotonic() + timeout
        while not wanted <= self.handled():
            if time.monotonic() > deadline:
                left = sorted(wanted - self.handled())
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}: {len(left)} never "
                    f"handled, e.g. {left[:10]}; log: {self.log_tail()}"
                )
            time.sleep(0.5)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
