"""The shared harness of `make bench`: what W1, W2 and W3 measure, and how.

W1: 200 warm-up calls, then 2,000 sequential ``add(x=i, y=1)`` calls; calls/s, p50, p99.
W2: 10,000 ``add`` calls with 64 in flight; calls/s.
W3: 20,000 one-way ``note(n=i)`` casts, published as fast as the client allows; the clock
runs from the first publish until the server handled the last one (the server's own
``time.time()``, read back with ``stats()``); msgs/s.  Async clients keep 64 casts in
flight; sync clients publish in a loop, or through their ``note_many`` hook if they have one.
BENCH_WORKLOADS (e.g. ``w3``) runs only some of the workloads.
Sizes are multiplied by BENCH_SCALE; every answer is checked; each workload is cut off
after 120 s.  Around each workload the client reads the CPU time of itself, the server
(BENCH_SERVER_PID) and the broker (BENCH_BROKER_PID) from /proc/<pid>/stat.

Each engine script (``<script> server`` / ``<script> client``) uses this module: a server
calls ``ready()`` once it consumes; a client hands an adapter to ``run_sync`` or
``run_async``, which print one ``RESULT {json}`` line per workload for bench/run.py.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

W1_WARMUP = 200
W1_CALLS = 2000
W2_CALLS = 10000
WINDOW = 64
W3_CASTS = 20000
LIMIT_S = 120.0  # per workload
DRAIN_S = 60.0  # W3: longest wait for the server after the last publish
ALARM_S = 400  # every process ends itself after this
CALL_TIMEOUT_S = 10.0
RESULT_TAG = "RESULT "
WORKLOADS = ("w1", "w2", "w3")

T = TypeVar("T")


class WorkloadFailed(Exception):
    """A workload gave a wrong answer, ran past its limit, or lost messages."""


def scaled(n: int) -> int:
    return max(1, round(n * float(os.environ.get("BENCH_SCALE", "1"))))


def w3_casts() -> int:
    """W3's size: W3_CASTS scaled, times BENCH_W3_SCALE (rows whose casts are each
    confirmed in turn run fewer, to keep `make bench` short)."""
    return max(1, round(scaled(W3_CASTS) * float(os.environ.get("BENCH_W3_SCALE", "1"))))


def workloads() -> tuple[str, ...]:
    """The workloads to run: BENCH_WORKLOADS (comma-separated, e.g. ``w3``), default all."""
    wanted = {w.strip().lower() for w in os.environ.get("BENCH_WORKLOADS", "").split(",")}
    chosen = tuple(w for w in WORKLOADS if w in wanted)
    return chosen or WORKLOADS


def amqp_url() -> str:
    return os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def prefix() -> str:
    """Name prefix of this engine's queues and exchanges, e.g. ``t2bench_raw_pika``."""
    return os.environ.get("BENCH_PREFIX", "t2bench_manual")


def arm_alarm() -> None:
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
    signal.alarm(ALARM_S)


def ready() -> None:
    """Tell the runner that the server consumes (creates BENCH_READY_FILE)."""
    path = os.environ.get("BENCH_READY_FILE")
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
    print("ready", flush=True)


# ---------------------------------------------------------------- server side
class Counter:
    """Counts one-way notes; remembers the wall-clock time of the last one."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def hit(self) -> None:
        self.count += 1
        self.last = time.time()

    def stats(self) -> dict[str, Any]:
        return {"count": self.count, "last": self.last}


def raw_handle(counter: Counter, body: bytes) -> bytes | None:
    """The service of the raw servers: JSON ``{"method", "args"}`` in, JSON out (None: a cast)."""
    req = json.loads(body)
    method, args = req["method"], req.get("args", {})
    if method == "add":
        return json.dumps({"result": args["x"] + args["y"]}).encode()
    if method == "note":
        counter.hit()
        return None
    if method == "stats":
        return json.dumps(counter.stats()).encode()
    raise ValueError(f"unknown method {method!r}")


def request(method: str, **args: Any) -> bytes:
    return json.dumps({"method": method, "args": args}).encode()


# ---------------------------------------------------------------- Tavrida's wire work by hand
# BENCH_TAVWIRE=1 (the raw-*-tavwire rows): the broker work of Tavrida's wire format, as
# ../shared/peers-bench's pika-tavwire / aiormq-tavwire do it: a topic exchange bound with
# ``bench.#``, routing key ``bench.<method>``, eight string headers and a
# ``{"context", "payload"}`` body on requests and answers, mandatory publishes, an
# expiration on requests, casts persistent into a durable queue.
TAVWIRE = os.environ.get("BENCH_TAVWIRE") == "1"
TAV_BINDING = "bench.#"
TAV_EXPIRATION = str(int(CALL_TIMEOUT_S * 1000))


def tav_exchange() -> str:
    return prefix() + "_exchange"


def tav_request(method: str, cid: str, **args: Any) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Tavrida request (or cast) ``bench.<method>(**args)``."""
    headers = {
        "correlation_id": cid,
        "request_id": cid,
        "message_id": cid + "m",
        "message_type": "request",
        "source": "benchclient",
        "reply_to": "",
        "destination": "bench." + method,
        "proxy": "tavwire",
    }
    return json.dumps({"context": {}, "payload": args}).encode(), headers


def tav_handle(
    counter: Counter, headers: dict[str, Any], body: bytes
) -> tuple[bytes, dict[str, str]] | None:
    """The raw servers' service on Tavrida's wire: body and headers of the answer (None: a cast)."""
    method = str(headers["destination"]).split(".", 1)[1]
    answer = raw_handle(counter, request(method, **json.loads(body)["payload"]))
    if answer is None:
        return None
    reply_headers = {
        "correlation_id": headers["correlation_id"],
        "request_id": headers["request_id"],
        "message_id": str(headers["message_id"]) + "r",
        "message_type": "response",
        "source": headers["destination"],
        "destination": headers["source"],
        "reply_to": "",
        "proxy": "tavwire",
    }
    body = json.dumps({"context": {}, "payload": json.loads(answer)}).encode()
    return body, reply_headers


def tav_answer(body: bytes) -> Any:
    """The payload of a Tavrida answer."""
    return json.loads(body)["payload"]


# ---------------------------------------------------------------- CPU sampling
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (from /proc/<pid>/task/<tid>/children)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(kid) for kid in f.read().split()]
        except (OSError, ValueError):
            continue
    return kids


def tree_cpu_seconds(pid: int | str | None) -> float | None:
    """utime + stime of a process and of its living descendants (a supervisor's workers)."""
    own = cpu_seconds(pid)
    if own is None or pid is None:
        return own
    total, todo = own, _children(int(pid))
    while todo:
        kid = todo.pop()
        total += cpu_seconds(kid) or 0.0
        todo += _children(kid)
    return total


class CpuWatch:
    """CPU seconds used by client, server and broker between start() and stop().

    The server's count includes its child processes (T2_WORKERS: the workers of a
    supervisor); a child that exits between start() and stop() is not counted.
    """

    def __init__(self) -> None:
        self.pids = {
            "client": os.getpid(),
            "server": os.environ.get("BENCH_SERVER_PID"),
            "broker": os.environ.get("BENCH_BROKER_PID"),
        }
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = {k: self._cpu(k, p) for k, p in self.pids.items()}

    @staticmethod
    def _cpu(key: str, pid: int | str | None) -> float | None:
        return tree_cpu_seconds(pid) if key == "server" else cpu_seconds(pid)

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        used: dict[str, float | None] = {}
        for k, p in self.pids.items():
            c1, c0 = self._cpu(k, p), self.c0[k]
            used[k] = None if c1 is None or c0 is None else round(c1 - c0, 3)
        return {"cpu_wall_s": round(wall, 4), "cpu_s": used}


# ---------------------------------------------------------------- reporting
def emit(workload: str, result: dict[str, Any]) -> None:
    result["workload"] = workload
    sys.stdout.write(RESULT_TAG + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def _pct(sorted_vals: list[int], q: float) -> float:
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i] / 1000.0


def latency_result(lat_ns: list[int], elapsed: float) -> dict[str, Any]:
    lat = sorted(lat_ns)
    return {
        "calls": len(lat),
        "elapsed_s": round(elapsed, 4),
        "rate": round(len(lat) / elapsed, 1),
        "p50_us": round(_pct(lat, 0.50), 1),
        "p99_us": round(_pct(lat, 0.99), 1),
        "max_us": round(lat[-1] / 1000.0, 1),
    }


def check(answers: list[Any], n: int) -> None:
    wrong = [i for i in range(n) if answers[i] != i + 1]
    if len(answers) != n or wrong:
        raise WorkloadFailed(f"{len(wrong)} wrong answers of {n} (first at i={wrong[:1]})")


def _w3_result(
    n: int, t0: float, t_pub: float, count: int, last: float, client: object
) -> dict[str, Any]:
    # the workload ends when the server handled the last note, but not before the
    # publisher returned
    elapsed = max(last, t_pub) - t0
    how = getattr(client, "w3_how", None)
    return ({"how": how} if how else {}) | {
        "casts": n,
        "handled": count,
        "elapsed_s": round(elapsed, 4),
        "rate": round(n / elapsed, 1),
        "publish_s": round(t_pub - t0, 4),
    }


# ---------------------------------------------------------------- sync clients
class SyncClient(Protocol):
    def add(self, x: int, y: int) -> int: ...

    def add_many(self, n: int, window: int, deadline: float) -> list[int]:
        """``add(i, 1)`` for i in range(n), ``window`` in flight; answers in order."""
        ...

    def note(self, n: int) -> None: ...

    # optional: note_many(n, window, deadline) publishes note(i) for i in range(n) (W3)
    # and returns once they are all sent (e.g. confirmed), instead of a loop of note();
    # w3_how: str, how W3 was published (copied into the W3 result as "how")

    def stats(self) -> tuple[int, float]: ...

    def close(self) -> None: ...


def windowed(
    start: Callable[[int], T], wait: Callable[[T], Any], n: int, window: int, deadline: float
) -> list[Any]:
    """Keep ``window`` calls started (``start(i)`` -> handle), wait for the oldest."""
    out: list[Any] = [0] * n
    pending: collections.deque[tuple[int, T]] = collections.deque()
    for i in range(n):
        if len(pending) >= window:
            j, handle = pending.popleft()
            out[j] = wait(handle)
            if time.monotonic() > deadline:
                raise WorkloadFailed(f"over {LIMIT_S:.0f} s after {i} calls")
        pending.append((i, start(i)))
    while pending:
        j, handle = pending.popleft()
        out[j] = wait(handle)
    return out


def threaded(fn: Callable[[int], T], n: int, threads: int, deadline: float) -> list[T]:
    """``fn(i)`` for i in range(n) on ``threads`` OS threads sharing whatever ``fn`` uses
    (e.g. one client): each thread takes the next i until none is left."""
    out: list[Any] = [None] * n
    todo = iter(range(n))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while not errors:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                out[i] = fn(i)
                if time.monotonic() > deadline:
                    raise WorkloadFailed(f"over {LIMIT_S:.0f} s")
            except BaseException as e:  # the first error ends every thread
                errors.append(e)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return out


def _workload(name: str, body: Callable[[], dict[str, Any]]) -> None:
    try:
        emit(name, body())
    except Exception as e:  # report it and go on with the next workload
        emit(name, {"error": f"{type(e).__name__}: {e}"})


def run_sync(client: SyncClient) -> None:
    cpu = CpuWatch()

    def w1() -> dict[str, Any]:
        for i in range(scaled(W1_WARMUP)):
            if client.add(i, 1) != i + 1:
                raise WorkloadFailed(f"wrong answer in the warm-up, add({i}, 1)")
        n, lat, clock = scaled(W1_CALLS), [], time.perf_counter_ns
        cpu.start()
        t0 = time.perf_counter()
        for i in range(n):
            s = clock()
            r = client.add(i, 1)
            lat.append(clock() - s)
            if r != i + 1:
                raise WorkloadFailed(f"add({i}, 1) answered {r!r}")
            if i % 64 == 0 and time.perf_counter() - t0 > LIMIT_S:
                raise WorkloadFailed(f"over {LIMIT_S:.0f} s after {i} calls")
        return latency_result(lat, time.perf_counter() - t0) | cpu.stop()

    def w2() -> dict[str, Any]:
        n = scaled(W2_CALLS)
        cpu.start()
        t0 = time.perf_counter()
        out = client.add_many(n, WINDOW, time.monotonic() + LIMIT_S)
        elapsed = time.perf_counter() - t0
        check(out, n)
        return {"calls": n, "elapsed_s": round(elapsed, 4), "rate": round(n / elapsed, 1)} | (
            cpu.stop()
        )

    def w3() -> dict[str, Any]:
        n = w3_casts()
        base, _ = client.stats()
        note_many = getattr(client, "note_many", None)
        cpu.start()
        t0 = time.time()
        if note_many is not None:
            note_many(n, WINDOW, time.monotonic() + LIMIT_S)
        else:
            for i in range(n):
                client.note(i)
                if i % 256 == 0 and time.time() - t0 > LIMIT_S:
                    raise WorkloadFailed(f"over {LIMIT_S:.0f} s after {i} casts")
        t_pub = time.time()
        while True:
            count, last = client.stats()
            if count - base >= n:
                break
            if time.time() - t_pub > DRAIN_S:
                raise WorkloadFailed(f"the server handled {count - base} of {n} casts")
            time.sleep(0.005)
        return _w3_result(n, t0, t_pub, count - base, last, client) | cpu.stop()

    for name, body in (("w1", w1), ("w2", w2), ("w3", w3)):
        if name in workloads():
            _workload(name, body)
    client.close()


# ---------------------------------------------------------------- async clients
class AsyncClient(Protocol):
    async def connect(self) -> None: ...

    async def add(self, x: int, y: int) -> int: ...

    async def note(self, n: int) -> None: ...

    async def stats(self) -> tuple[int, float]: ...

    async def close(self) -> None: ...


async def in_window(fn: Callable[[int], Awaitable[T]], n: int, window: int) -> list[T]:
    """``fn(i)`` for i in range(n) by ``window`` workers: ``window`` calls in flight."""
    out: list[Any] = [None] * n
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            out[i] = await fn(i)

    await asyncio.gather(*(worker() for _ in range(window)))
    return out


async def _aworkload(name: str, body: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    try:
        emit(name, await asyncio.wait_for(body(), LIMIT_S + DRAIN_S))
    except TimeoutError:
        emit(name, {"error": f"cut off after {LIMIT_S:.0f} s"})
    except Exception as e:  # report it and go on with the next workload
        emit(name, {"error": f"{type(e).__name__}: {e}"})


async def run_async(client: AsyncClient) -> None:
    await client.connect()
    cpu = CpuWatch()

    async def w1() -> dict[str, Any]:
        for i in range(scaled(W1_WARMUP)):
            if await client.add(i, 1) != i + 1:
                raise WorkloadFailed(f"wrong answer in the warm-up, add({i}, 1)")
        n, lat, clock = scaled(W1_CALLS), [], time.perf_counter_ns
        cpu.start()
        t0 = time.perf_counter()
        for i in range(n):
            s = clock()
            r = await client.add(i, 1)
            lat.append(clock() - s)
            if r != i + 1:
                raise WorkloadFailed(f"add({i}, 1) answered {r!r}")
            if i % 64 == 0 and time.perf_counter() - t0 > LIMIT_S:
                raise WorkloadFailed(f"over {LIMIT_S:.0f} s after {i} calls")
        return latency_result(lat, time.perf_counter() - t0) | cpu.stop()

    async def w2() -> dict[str, Any]:
        n = scaled(W2_CALLS)
        cpu.start()
        t0 = time.perf_counter()
        out = await asyncio.wait_for(in_window(lambda i: client.add(i, 1), n, WINDOW), LIMIT_S)
        elapsed = time.perf_counter() - t0
        check(out, n)
        return {"calls": n, "elapsed_s": round(elapsed, 4), "rate": round(n / elapsed, 1)} | (
            cpu.stop()
        )

    async def w3() -> dict[str, Any]:
        n = w3_casts()
        base, _ = await client.stats()
        cpu.start()
        t0 = time.time()
        await asyncio.wait_for(in_window(client.note, n, WINDOW), LIMIT_S)
        t_pub = time.time()
        while True:
            count, last = await client.stats()
            if count - base >= n:
                break
            if time.time() - t_pub > DRAIN_S:
                raise WorkloadFailed(f"the server handled {count - base} of {n} casts")
            await asyncio.sleep(0.005)
        return _w3_result(n, t0, t_pub, count - base, last, client) | cpu.stop()

    for name, body in (("w1", w1), ("w2", w2), ("w3", w3)):
        if name in workloads():
            await _aworkload(name, body)
    await client.close()


# ---------------------------------------------------------------- process entry
def main(role_fns: dict[str, Callable[[], Any]]) -> None:
    """``<script> server|client``: arm the alarm, run the role, under pyinstrument if
    BENCH_PROFILE (an output path prefix) is set."""
    arm_alarm()
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role not in role_fns:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(role_fns)}")
    out = os.environ.get("BENCH_PROFILE")
    if not out:
        role_fns[role]()
        return
    if os.environ.get("BENCH_PROFILER") == "cprofile":  # flat: where the CPU goes, by function
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        try:
            role_fns[role]()
        finally:
            profile.disable()
            with open(f"{out}-{role}.cprofile.txt", "w") as f:
                stats = pstats.Stats(profile, stream=f).strip_dirs()
                stats.sort_stats("tottime").print_stats(45)
                stats.sort_stats("cumulative").print_stats(45)
            print(f"profile written to {out}-{role}.cprofile.txt", file=sys.stderr, flush=True)
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        role_fns[role]()
    finally:
        profiler.stop()
        with open(f"{out}-{role}.txt", "w") as f:
            f.write(profiler.output_text(unicode=True, show_all=False))
        with open(f"{out}-{role}.html", "w") as f:
            f.write(profiler.output_html())
        print(f"profile written to {out}-{role}.html/.txt", file=sys.stderr, flush=True)
