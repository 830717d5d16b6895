"""`make bench`: tavrida2 against raw pika, raw aio-pika and raw aiormq, in one run.

For each engine (and repetition) the runner starts the engine's server process, waits for
its ready file, runs its client process (W1 sequential calls, W2 calls with 64 in flight,
W3 one-way casts: common.py says how each is measured), then stops the server with SIGTERM
and deletes the engine's queues and exchanges.  It prints a line per workload as it
finishes, then Markdown tables (rates, ratios, the targets against the -tavwire floors and
the earlier ones, CPU of client / server / broker in % and in µs per message), and writes
bench/results/last.json and docs/benchmarks.md.  With --peers it then runs
../shared/peers-bench with tavrida2's adapter (bench/peer) and adds the best-peer check.

    python bench/run.py                                   # every engine, twice (make bench)
    python bench/run.py --only tavrida2-sync,raw-pika --scale 0.1 --reps 1
    python bench/run.py --reps 3                          # medians of 3
    python bench/run.py --profile tavrida2-sync           # pyinstrument, bench/results/
    python bench/run.py --peers                           # and ../shared/peers-bench
    python bench/run.py --render      # docs/benchmarks.md again from last.json + findings.md
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import common

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.environ.get("BENCH_RESULTS_DIR") or os.path.join(HERE, "results")
DOCS = os.path.join(ROOT, "docs", "benchmarks.md")
# what the profiles showed and what stands in the way: written by hand, copied into DOCS
FINDINGS = os.path.join(HERE, "findings.md")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
NAME_PREFIX = "t2bench_"
READY_S = 60.0
ENGINE_ALARM_S = 450  # the runner's own limit per engine (the children end at 400 s)
RESULT_TAG = "RESULT "
WORKLOADS = ("w1", "w2", "w3")
UNITS = {"w1": "calls/s", "w2": "calls/s", "w3": "msgs/s"}
TIMES = "\N{MULTIPLICATION SIGN}"
# rows whose W3 waits for each confirm in turn (about 1,300 casts/s) run this fraction of
# W3's casts, to keep `make bench` within about 6 minutes
TAV_LOOP_W3 = 0.25
# the server as several worker processes (docs/scaling.md); one worker is the plain row
WORKER_COUNTS = (2, 4)


@dataclass
class Engine:
    name: str
    script: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    workloads: tuple[str, ...] = WORKLOADS  # the others are not run (shown as "—")
    w3_scale: float = 1.0  # W3 runs this fraction of the casts (BENCH_W3_SCALE)

    @property
    def prefix(self) -> str:
        return NAME_PREFIX + self.name.replace("-", "_")


ENGINES = [
    Engine(
        "raw-pika",
        "raw_pika.py",
        "pika BlockingConnection, no framework. Server: basic_consume, prefetch 64, answers "
        "to `reply_to` via the default exchange, acks after answering. Client: one thread, "
        "direct reply-to on the channel it publishes on; W2 pipelines 64 requests; W3 is a "
        "basic_publish loop of transient casts with publisher confirms (`confirm_delivery`).",
    ),
    Engine(
        "raw-pika-noconfirm",
        "raw_pika.py",
        "raw-pika with W3 published without confirms; only W3 is run (W1 and W2 are raw-pika's).",
        {"BENCH_CONFIRM": "0"},
        workloads=("w3",),
    ),
    Engine(
        "raw-pika-persistent",
        "raw_pika.py",
        "raw-pika with a durable queue and persistent casts (delivery_mode 2), as tavrida2 "
        "sends casts by default: the broker writes them to disk before confirming them; only "
        "W3 is run (W1 and W2 are raw-pika's).",
        {"BENCH_PERSISTENT": "1"},
        workloads=("w3",),
    ),
    Engine(
        "raw-aiopika",
        "raw_aiopika.py",
        "the classic aio-pika RPC pattern: futures keyed by correlation_id, direct reply-to "
        "consumer; server `queue.consume` callback, prefetch 64, answers published with "
        "mandatory=False; aio-pika's default channels (publisher confirms on), so casts are "
        "confirmed publishes (transient, aio-pika's default). W2/W3: 64 calls/publishes in "
        "flight.",
    ),
    Engine(
        "raw-aiopika-persistent",
        "raw_aiopika.py",
        "raw-aiopika with a durable queue and persistent casts (delivery_mode 2), as tavrida2 "
        "sends casts by default; only W3 is run (W1 and W2 are raw-aiopika's).",
        {"BENCH_PERSISTENT": "1"},
        workloads=("w3",),
    ),
    Engine(
        "raw-aiormq",
        "raw_aiormq.py",
        "a reference below aio-pika: aio-pika's connection, but publish and consume through "
        "the aiormq channel underneath (no Message objects); requests and answers unconfirmed, "
        "casts confirmed (transient). W2/W3: 64 in flight.",
    ),
    Engine(
        "raw-pika-tavwire",
        "raw_pika.py",
        "raw-pika doing Tavrida's wire work by hand (../shared/peers-bench's pika-tavwire): a "
        "topic exchange with routing keys `bench.<method>`, eight string headers and a "
        '`{"context", "payload"}` body on requests and answers, mandatory publishes, requests '
        "with an expiration on a channel without confirms (the answer confirms them), W2 "
        "pipelined on one thread; W3 a loop of persistent casts into a durable queue, each "
        f"confirmed in turn ({TAV_LOOP_W3:.0%} of the casts, see below). The sync floor.",
        {"BENCH_TAVWIRE": "1"},
        w3_scale=TAV_LOOP_W3,
    ),
    Engine(
        "raw-aiormq-tavwire",
        "raw_aiormq.py",
        "raw-aiormq doing Tavrida's wire work by hand (../shared/peers-bench's aiormq-tavwire), "
        "as raw-pika-tavwire but with 64 calls and 64 confirmed persistent casts in flight. "
        "The async floor.",
        {"BENCH_TAVWIRE": "1"},
    ),
    Engine(
        "tavrida2-sync",
        "t2_engines.py",
        "tavrida2 sync engine server + `RPCClient`: W1 `call()`, W2 a window of 64 "
        "`call_async()` handles, W3 {w3}. Library defaults: like Tavrida 1.0, tavrida2 "
        "declares a durable queue and sends casts persistent; requests whose caller waits "
        "and their answers are transient.",
        {"T2_ENGINE": "sync"},
    ),
    Engine(
        "tavrida2-async",
        "t2_engines.py",
        "tavrida2 async engine server (`async def` handlers) + `AsyncRPCClient`: W2/W3 keep "
        "64 `call()`/`cast()` in flight; durable queue and persistent casts as above.",
        {"T2_ENGINE": "async"},
    ),
    Engine(
        "tavrida2-sync-threads",
        "t2_engines.py",
        "tavrida2-sync with W2 as users write it with threads: 64 threads share one "
        "`RPCClient`, each calling `call()` in turn. Only W2 is run.",
        {"T2_ENGINE": "sync", "T2_W2": "threads"},
        ("w2",),
    ),
    Engine(
        "tavrida2-sync-cast-loop",
        "t2_engines.py",
        f"tavrida2-sync with W3 as a loop of `cast()` ({TAV_LOOP_W3:.0%} of the casts, as "
        "raw-pika-tavwire): each persistent cast confirmed before the next. Only W3 is run.",
        {"T2_ENGINE": "sync", "T2_W3": "loop"},
        ("w3",),
        w3_scale=TAV_LOOP_W3,
    ),
    Engine(
        "tavrida2-sync-transient",
        "t2_engines.py",
        "tavrida2-sync with `ConnectionConfig(persistent=False)` for server and client: "
        "casts are sent transient, like raw-pika's and raw-aiopika's. Only W3 is run "
        "(calls are transient in any case, so W1 and W2 are those of tavrida2-sync); "
        "W3 {w3}.",
        {"T2_ENGINE": "sync", "T2_PERSISTENT": "0"},
        ("w3",),
    ),
    Engine(
        "tavrida2-async-transient",
        "t2_engines.py",
        "tavrida2-async with `ConnectionConfig(persistent=False)`: transient casts, 64 "
        "`cast()` in flight; only W3 is run, as above.",
        {"T2_ENGINE": "async", "T2_PERSISTENT": "0"},
        ("w3",),
    ),
    *(
        Engine(
            f"tavrida2-{kind}-workers{n}",
            "t2_engines.py",
            f"tavrida2-{kind} with its server run as `tavrida2 run --workers {n}`: {n} "
            "worker processes, each with its own connection, competing on the one queue "
            "(server CPU is the supervisor's and the workers'). Only W2 and W3 are run, "
            f"for docs/scaling.md (1 worker: tavrida2-{kind}).",
            {"T2_ENGINE": kind, "T2_WORKERS": str(n)},
            ("w2", "w3"),
        )
        for kind in ("sync", "async")
        for n in WORKER_COUNTS
    ),
]
BY_NAME = {e.name: e for e in ENGINES}

# (ours, reference) pairs of the ratio table
COMPARISONS = [
    ("tavrida2-sync", "raw-pika"),
    ("tavrida2-sync", "raw-pika-persistent"),
    ("tavrida2-sync-transient", "raw-pika"),
    ("tavrida2-sync-transient", "raw-aiopika"),
    ("tavrida2-async", "raw-aiopika"),
    ("tavrida2-async", "raw-aiopika-persistent"),
    ("tavrida2-async", "raw-aiormq"),
    ("tavrida2-async-transient", "raw-aiopika"),
    ("tavrida2-async", "raw-aiormq-tavwire"),
    ("tavrida2-sync", "raw-pika-tavwire"),
    ("tavrida2-sync-threads", "raw-pika-tavwire"),
    ("tavrida2-sync-cast-loop", "raw-pika-tavwire"),
    ("tavrida2-sync", "raw-aiormq-tavwire"),
]


@dataclass
class Target:
    """ours/ref of one figure (a summary key: w1, w1_p50_us, w2, w3) against a bound."""

    key: str
    ours: str
    ref: str
    bound: float
    what: str = ""  # how ours is written, e.g. "64 threads sharing one RPCClient"
    at_most: bool = False  # latency: ours/ref must stay at or below the bound

    def label(self) -> str:
        figure = {"w1": "W1 calls/s", "w1_p50_us": "W1 p50", "w2": "W2", "w3": "W3"}[self.key]
        op = "≤" if self.at_most else "≥"
        what = f" ({self.what})" if self.what else ""
        return f"{figure} {self.ours}{what} {op} {self.bound}{TIMES} {self.ref}"

    def met(self, r: float) -> bool:
        return r <= self.bound if self.at_most else r >= self.bound


# issue 14: each engine against the raw library doing the same broker work
TAVWIRE_TARGETS = [
    Target("w1", "tavrida2-async", "raw-aiormq-tavwire", 0.9, "AsyncRPCClient awaiting each"),
    Target("w1_p50_us", "tavrida2-async", "raw-aiormq-tavwire", 1.1, at_most=True),
    Target("w2", "tavrida2-async", "raw-aiormq-tavwire", 0.9, "64 `call()` in flight"),
    Target("w3", "tavrida2-async", "raw-aiormq-tavwire", 0.9, "64 `cast()` in flight"),
    Target("w1", "tavrida2-sync", "raw-pika-tavwire", 0.9, "`call()`"),
    Target("w3", "tavrida2-sync-cast-loop", "raw-pika-tavwire", 0.9, "a `cast()` loop"),
    Target("w2", "tavrida2-sync-threads", "raw-pika-tavwire", 0.8, "64 threads, one RPCClient"),
    Target("w2", "tavrida2-sync", "raw-pika-tavwire", 0.9, "`call_async()` from one thread"),
    Target("w3", "tavrida2-sync", "raw-aiormq-tavwire", 0.9, "64 `cast_async()` in flight"),
]
# (workload, ours, reference, floor): the targets, literally
TARGETS = [
    ("w1", "tavrida2-sync", "raw-pika", 0.8),
    ("w2", "tavrida2-async", "raw-aiopika", 0.7),
    ("w3", "tavrida2-sync", "raw-aiopika", 0.7),
    ("w3", "tavrida2-async", "raw-aiopika", 0.7),
]
# the W3 targets again, persistent casts against persistent, transient against transient
LIKE_FOR_LIKE = [
    ("w3", "tavrida2-sync", "raw-aiopika-persistent", 0.7),
    ("w3", "tavrida2-async", "raw-aiopika-persistent", 0.7),
    ("w3", "tavrida2-sync-transient", "raw-aiopika", 0.7),
    ("w3", "tavrida2-async-transient", "raw-aiopika", 0.7),
]


def say(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------- broker
def broker_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


def sh(*cmd: str, timeout: float = 60) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        return r.stdout if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def broker_pid() -> str | None:
    # the process named beam.smp (-x), oldest first (-o): not a command line that merely
    # mentions it
    pids = sh("pgrep", "-o", "-x", "beam.smp").split()
    return pids[0] if pids else None


def broker_names() -> set[str]:
    """Names of the broker's queues and exchanges (rabbitmqctl), as "q:name" / "x:name"."""
    names = {"q:" + n for n in sh("rabbitmqctl", "-q", "list_queues", "name").split()}
    names |= {"x:" + n for n in sh("rabbitmqctl", "-q", "list_exchanges", "name").split()}
    return {n for n in names if n not in ("q:name", "x:name")}


def delete_names(names: set[str]) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        for n in sorted(names):
            kind, name = n.split(":", 1)
            if kind == "q":
                ch.queue_delete(name)
            else:
                ch.exchange_delete(name)
    finally:
        conn.close()


def other_clients() -> int:
    """Connections to the broker now (between engines, all of them are someone else's)."""
    return len(sh("rabbitmqctl", "-q", "list_connections", "name").splitlines()[1:])


def clean_broker(known: set[str]) -> set[str]:
    """Delete what our engines left (names with our prefix); return the other new names."""
    now = broker_names()
    ours = {n for n in now if n.split(":", 1)[1].startswith(NAME_PREFIX)}
    if ours:
        delete_names(ours)
    return now - ours - known


# ---------------------------------------------------------------- one engine
def stop(proc: subprocess.Popen[Any], grace: float) -> int | None:
    """SIGTERM one child we started, by its pid; SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def tail(path: str, n: int = 12) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:]).rstrip()
    return ""


def fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def cpu_pct(w: dict[str, Any]) -> dict[str, float | None]:
    wall, used = w.get("cpu_wall_s") or 0, w.get("cpu_s") or {}
    return {
        k: (None if used.get(k) is None or not wall else round(100 * used[k] / wall, 1))
        for k in ("client", "server", "broker")
    }


STAGES = ("client", "server", "broker")


def cpu_us_per_msg(w: dict[str, Any]) -> dict[str, float | None]:
    """µs of CPU per message (call or cast) in client, server and broker, and their total."""
    used, n = w.get("cpu_s") or {}, w.get("calls") or w.get("casts")
    out: dict[str, float | None] = {
        k: None if used.get(k) is None or not n else round(1e6 * used[k] / n, 1) for k in STAGES
    }
    known = [v for v in out.values() if v is not None]
    out["total"] = round(sum(known), 1) if known else None
    return out


def stages(us: dict[str, float | None]) -> str:
    """``client / server / broker = total`` µs per message."""
    return "{} / {} / {} = {}".format(*(fmt(us.get(k)) for k in (*STAGES, "total")))


def progress(label: str, w: dict[str, Any]) -> str:
    name = w["workload"]
    head = f"{label} {name.upper()} "
    if "error" in w:
        return head + "FAILED: " + w["error"]
    line = head + f"{fmt(w['rate']):>7} {UNITS[name]}"
    if name == "w1":
        line += f"  p50 {fmt(w['p50_us'])} µs  p99 {fmt(w['p99_us'])} µs"
    if name == "w3":
        line += f"  (published in {w['publish_s']:.2f} s)"
        if w.get("how"):
            line += f"  [{w['how']}]"
    c = cpu_pct(w)
    line += "   cpu client/server/broker {} / {} / {} %".format(*(fmt(c[k]) for k in STAGES))
    return line + f", {stages(cpu_us_per_msg(w))} µs/msg"


def engine_env(engine: Engine, scale: float, ready: str, profile: bool) -> dict[str, str]:
    env = dict(os.environ, **engine.env)
    env.update(
        PYTHONUNBUFFERED="1",
        BENCH_AMQP_URL=AMQP_URL,
        BENCH_PREFIX=engine.prefix,
        BENCH_SCALE=str(scale),
        BENCH_READY_FILE=ready,
        BENCH_WORKLOADS=",".join(engine.workloads),
        BENCH_W3_SCALE=str(engine.w3_scale),
        BENCH_BROKER_PID=broker_pid() or "",
    )
    if profile:
        env["BENCH_PROFILE"] = os.path.join(RESULTS, f"profile-{engine.name}")
    return env


def spawn(engine: Engine, role: str, env: dict[str, str], log: str) -> subprocess.Popen[str]:
    """``<engine script> server|client``; the client's stdout is read by the runner."""
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, os.path.join(HERE, engine.script), role],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE if role == "client" else f,
            stderr=f if role == "client" else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )


def run_engine(
    engine: Engine, rep: int, reps: int, scale: float, logs: str, profile: bool
) -> dict[str, Any]:
    """One engine, one repetition: server, client, stop; the client's results and errors."""
    label = f"{engine.name:<24}" + (f" rep {rep}" if reps > 1 else "")
    out: dict[str, Any] = {"engine": engine.name, "rep": rep, "errors": []}
    ready = os.path.join(tempfile.gettempdir(), f"{engine.prefix}.{os.getpid()}.ready")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ready)
    env = engine_env(engine, scale, ready, profile)
    srv_log = os.path.join(logs, f"{engine.name}.rep{rep}.server.log")
    cli_log = os.path.join(logs, f"{engine.name}.rep{rep}.client.log")
    t0 = time.time()
    server = spawn(engine, "server", env, srv_log)
    client: subprocess.Popen[str] | None = None
    signal.alarm(ENGINE_ALARM_S)
    try:
        while not os.path.exists(ready):
            if server.poll() is not None or time.time() - t0 > READY_S:
                out["errors"].append(f"server not ready (rc={server.poll()}):\n{tail(srv_log)}")
                say(f"{label} FAILED: server not ready, see {srv_log}")
                return out
            time.sleep(0.02)
        env["BENCH_SERVER_PID"] = str(server.pid)
        client = spawn(engine, "client", env, cli_log)
        assert client.stdout is not None
        for line in client.stdout:
            if line.startswith(RESULT_TAG):
                w = json.loads(line[len(RESULT_TAG) :])
                out[w["workload"]] = w
                if "error" in w:
                    out["errors"].append(f"{w['workload']}: {w['error']}")
                say(progress(label, w))
        if client.wait() != 0:
            out["errors"].append(f"client rc={client.returncode}:\n{tail(cli_log)}")
        missing = [w for w in engine.workloads if w not in out]
        if missing:
            out["errors"].append(f"no result for {', '.join(missing)}:\n{tail(cli_log)}")
            say(f"{label} FAILED: no result for {missing}, see {cli_log}")
        if server.poll() is not None:
            out["errors"].append(f"server died (rc={server.returncode}):\n{tail(srv_log)}")
    except TimeoutError:
        out["errors"].append(f"the runner gave up after {ENGINE_ALARM_S} s")
    finally:
        signal.alarm(0)
        if client is not None:
            stop(client, 5)
        rc = stop(server, 30 if profile else 10)
        if rc != 0 and not out["errors"]:
            out["errors"].append(f"server did not stop cleanly on SIGTERM (rc={rc})")
        out["wall_s"] = round(time.time() - t0, 1)
    return out


# ---------------------------------------------------------------- summary
def summarize(runs: list[dict[str, Any]], engines: list[Engine]) -> dict[str, Any]:
    """Per engine: the median over the repetitions of each figure."""

    def med(vals: list[Any]) -> float | None:
        vals = [v for v in vals if isinstance(v, int | float)]
        return round(statistics.median(vals), 1) if vals else None

    summary: dict[str, Any] = {}
    for e in engines:
        rs = [r for r in runs if r["engine"] == e.name]
        ws = {w: [r[w] for r in rs if w in r and "error" not in r[w]] for w in WORKLOADS}
        s: dict[str, Any] = {"reps_ok": {w: len(ws[w]) for w in WORKLOADS}}
        for w in WORKLOADS:
            s[w] = med([x["rate"] for x in ws[w]])
            pcts = [cpu_pct(x) for x in ws[w]]
            s[w + "_cpu"] = {k: med([p[k] for p in pcts]) for k in ("client", "server", "broker")}
            us = [cpu_us_per_msg(x) for x in ws[w]]
            s[w + "_cpu_us"] = {k: med([u[k] for u in us]) for k in (*STAGES, "total")}
            s[w + "_cpu_us_per_msg"] = s[w + "_cpu_us"]["total"]
        s["w1_p50_us"] = med([x["p50_us"] for x in ws["w1"]])
        s["w1_p99_us"] = med([x["p99_us"] for x in ws["w1"]])
        s["errors"] = [err for r in rs for err in r["errors"]]
        summary[e.name] = s
    return summary


def ratio(summary: dict[str, Any], ours: str, ref: str, w: str) -> float | None:
    a, b = summary.get(ours, {}).get(w), summary.get(ref, {}).get(w)
    return round(a / b, 3) if a and b else None


def rates_table(summary: dict[str, Any], engines: list[Engine], reps: int) -> list[str]:
    lines = [
        "| engine | W1 calls/s | W1 p50 µs | W1 p99 µs | W2 calls/s | W3 msgs/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    columns = (("w1", "w1"), ("w1_p50_us", "w1"), ("w1_p99_us", "w1"), ("w2", "w2"), ("w3", "w3"))
    for e in engines:
        s = summary[e.name]
        cells = []
        for key, w in columns:
            if w not in e.workloads:
                cells.append("—")  # not run
                continue
            cell = fmt(s[key])
            if s[key] is not None and s["reps_ok"][w] < reps:
                cell += f" (n={s['reps_ok'][w]})"
            cells.append(cell if s[key] is not None else "failed")
        lines.append(f"| {e.name} | " + " | ".join(cells) + " |")
    return lines


def ratios_table(summary: dict[str, Any]) -> list[str]:
    comps = [c for c in COMPARISONS if c[0] in summary and c[1] in summary]
    if not comps:
        return []
    lines = ["", "| ratio | W1 | W2 | W3 |", "|---|---:|---:|---:|"]
    for ours, ref in comps:
        cells = [
            f"{r:.2f}{TIMES}" if (r := ratio(summary, ours, ref, w)) else "—" for w in WORKLOADS
        ]
        lines.append(f"| {ours} / {ref} | " + " | ".join(cells) + " |")
    return lines


def verdict_rows(summary: dict[str, Any], targets: list[Target]) -> list[str]:
    rows = []
    for t in targets:
        if t.ours not in summary or t.ref not in summary:
            continue
        r = ratio(summary, t.ours, t.ref, t.key)
        verdict = "—" if r is None else ("met" if t.met(r) else "**not met**")
        measured = f"{r:.2f}{TIMES}" if r is not None else "—"
        rows.append(f"| {t.label()} | {measured} | {verdict} |")
    return rows


def targets_tables(summary: dict[str, Any]) -> list[str]:
    """The issue-14 targets against the -tavwire floors, then the older ones."""
    old = [
        (
            "earlier target (from its issue, literally)",
            [Target(w, o, r, f) for w, o, r, f in TARGETS],
        ),
        (
            "like for like (persistent vs persistent, transient vs transient)",
            [Target(w, o, r, f) for w, o, r, f in LIKE_FOR_LIKE],
        ),
    ]
    lines: list[str] = []
    for title, targets in [
        ("target: against the raw library doing the same broker work (issue 14)", TAVWIRE_TARGETS),
        *old,
    ]:
        rows = verdict_rows(summary, targets)
        if rows:
            lines += ["", f"| {title} | measured | |", "|---|---:|---|", *rows]
    return lines


def cpu_tables(summary: dict[str, Any], engines: list[Engine]) -> list[str]:
    """CPU per workload: % of one core, and µs per message in client, server and broker."""
    pct = [
        "",
        "CPU during each workload, % of one core (client / server / broker; the machine has "
        f"{os.cpu_count()} cores):",
        "",
        "| engine | W1 | W2 | W3 |",
        "|---|---|---|---|",
    ]
    per_msg = [
        "",
        "CPU time per message (call or cast), µs, by stage: client / server / broker = total "
        "(a regression shows where it came from):",
        "",
        "| engine | W1 | W2 | W3 |",
        "|---|---|---|---|",
    ]
    for e in engines:
        s = summary[e.name]
        pct_cells, us_cells = [], []
        for w in WORKLOADS:
            c = s[w + "_cpu"]
            if all(v is None for v in c.values()):
                pct_cells.append("—")
                us_cells.append("—")
                continue
            pct_cells.append(" / ".join(fmt(c[k]) for k in STAGES))
            us_cells.append(stages(s[w + "_cpu_us"]))
        pct.append(f"| {e.name} | " + " | ".join(pct_cells) + " |")
        per_msg.append(f"| {e.name} | " + " | ".join(us_cells) + " |")
    return per_msg + pct


def workers_table(summary: dict[str, Any]) -> list[str]:
    """W2 and W3 with the server as 1, 2 and 4 worker processes (docs/scaling.md)."""
    lines = [
        "Servers of several worker processes (`tavrida2 run --workers N`), the same client; "
        "in brackets, against one worker:",
        "",
        "| engine | workers | W2 calls/s | W3 msgs/s | server CPU W2 / W3, % of one core |",
        "|---|---:|---:|---:|---|",
    ]
    for kind in ("sync", "async"):
        one = summary.get(f"tavrida2-{kind}") or {}
        for n in (1, *WORKER_COUNTS):
            row = summary.get(f"tavrida2-{kind}" + (f"-workers{n}" if n > 1 else "")) or {}
            cells = []
            for key in ("w2", "w3"):
                rate, base = row.get(key), one.get(key)
                ratio = f" ({rate / base:.2f}{TIMES})" if rate and base and n > 1 else ""
                cells.append(f"{fmt(rate)}{ratio}")
            cpu = [(row.get(f"{w}_cpu") or {}).get("server") for w in ("w2", "w3")]
            lines.append(
                f"| tavrida2-{kind} | {n} | {cells[0]} | {cells[1]} | "
                f"{fmt(cpu[0])} / {fmt(cpu[1])} |"
            )
    return [*lines, ""]


def tables(summary: dict[str, Any], engines: list[Engine], reps: int) -> str:
    workers = any(e.name.rsplit("-", 1)[-1].startswith("workers") for e in engines)
    return "\n".join(
        rates_table(summary, engines, reps)
        + ratios_table(summary)
        + targets_tables(summary)
        + (workers_table(summary) if workers else [])
        + cpu_tables(summary, engines)
    )


# ---------------------------------------------------------------- --peers
PEERS_BENCH = os.path.join(os.path.dirname(ROOT), "shared", "peers-bench")
OUR_PEER = os.path.join(HERE, "peer")
REFERENCE_PEERS = ("nameko", "faststream", "oslo", "rabibridge")
BEST_PEER_FACTOR = 1.5


def peers_unavailable() -> str | None:
    """Why ../shared/peers-bench cannot run here (None: it can): folder or venvs missing."""
    run_all = os.path.join(PEERS_BENCH, "run_all.py")
    if not os.path.isfile(run_all):
        return f"{PEERS_BENCH} is not there"
    listing = sh(sys.executable, run_all, "--list", "--peer-dir", OUR_PEER)
    missing = []
    for line in listing.splitlines():
        tokens, disabled = line.split(), line.endswith("(disabled)")
        if tokens and not disabled and not os.path.exists(tokens[-1]):
            missing.append(tokens[0])
    if not listing:
        return "run_all.py --list failed"
    if missing:
        return "no venv for " + ", ".join(missing) + f" (run {PEERS_BENCH}/setup.sh)"
    return None


def run_peers(args: argparse.Namespace) -> dict[str, Any] | None:
    """One run of ../shared/peers-bench with tavrida2's adapter (bench/peer); its results.json."""
    why = peers_unavailable()
    if why:
        say(f"\n--peers: skipped, {why}")
        return None
    out = os.path.join(RESULTS, "peers-" + time.strftime("%Y%m%d-%H%M%S"))
    cmd = [sys.executable, os.path.join(PEERS_BENCH, "run_all.py"), "--peer-dir", OUR_PEER]
    cmd += ["--reps", str(args.reps), "--scale", str(args.scale), "--out", out]
    say(f"\n--peers: {shlex.join(cmd)}")
    done = subprocess.run(cmd, cwd=ROOT, check=False)
    path = os.path.join(out, "results.json")
    if done.returncode != 0 or not os.path.isfile(path):
        say(f"--peers: run_all.py failed (rc={done.returncode}), no {path}")
        return None
    with open(path) as f:
        result: dict[str, Any] = json.load(f)
    return result


def our_peer_names() -> tuple[str, str]:
    """The names peers-bench gives bench/peer (async engine) and its sync variant."""
    with open(os.path.join(OUR_PEER, "peer.json")) as f:
        spec = json.load(f)
    variants = [v["name"] for v in spec.get("variants", []) if "name" in v]
    return spec.get("name", "peer"), variants[0] if variants else "tavrida2-sync"


def best_peer(summary: dict[str, Any], key: str) -> tuple[str, float] | None:
    """The best of nameko, FastStream, oslo.messaging and rabibridge on one figure."""
    found = [
        (summary[p][key], p)
        for p in REFERENCE_PEERS
        if p in summary
        and summary[p].get(key)
        and not (key.startswith("w3") and summary[p]["notes"].get("w3_comparable") is False)
    ]
    if not found:
        return None
    value, name = max(found)
    return name, value


def peers_check(peers: dict[str, Any]) -> list[str]:
    """The issue's checks beyond the floors, from one peers-bench run: W2 of each engine and
    W3 of the async engine ≥ 1.5 times the best reference peer; W1 p50 ≤ 1.5 times the broker's
    two-hop time (twice broker_rtt.py's one-hop p50)."""
    summary = peers["summary"]
    lines = [
        "",
        f"| peers-bench check (one run, medians of {peers['reps']}) | tavrida2 | "
        "reference | ratio | |",
        "|---|---:|---:|---:|---|",
    ]

    def row(label: str, ours: float | None, ref: float | None, ok: bool | None) -> None:
        r = f"{ours / ref:.2f}{TIMES}" if ours and ref else "—"
        verdict = "—" if ok is None else ("met" if ok else "**not met**")
        lines.append(f"| {label} | {fmt(ours)} | {fmt(ref)} | {r} | {verdict} |")

    async_peer, sync_peer = our_peer_names()
    for ours, key in (
        (async_peer, "w2_calls_s"),
        (sync_peer, "w2_calls_s"),
        (async_peer, "w3_msgs_s"),
    ):
        mine, best = summary.get(ours, {}).get(key), best_peer(summary, key)
        label = f"{key[:2].upper()} {ours} ≥ {BEST_PEER_FACTOR}{TIMES} best peer"
        if best is None or not mine:
            row(label, mine, None, None)
            continue
        row(f"{label} ({best[0]})", mine, best[1], mine >= BEST_PEER_FACTOR * best[1])
    hops = [r["p50_us"] for r in peers.get("broker_rtt") or [] if r and r.get("p50_us")]
    two_hops = 2 * statistics.median(hops) if hops else None
    for ours in (async_peer, sync_peer):
        p50 = summary.get(ours, {}).get("w1_p50_us")
        ok = None if not (p50 and two_hops) else p50 <= BEST_PEER_FACTOR * two_hops
        row(f"W1 p50 µs {ours} ≤ {BEST_PEER_FACTOR}{TIMES} broker two-hop", p50, two_hops, ok)
    return lines


# ---------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("tavrida2", "pika", "aio-pika", "aiormq", "pamqp"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    dirty = sh("git", "-C", ROOT, "status", "--porcelain", "--", "tavrida2").strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "versions": versions,
        "rabbitmq": sh("rabbitmqctl", "version", timeout=30).strip() or "unknown",
        "commit": sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD").strip()
        + (" + uncommitted changes in tavrida2/" if dirty else ""),
    }


def command_line() -> str:
    if os.environ.get("MAKELEVEL") and sys.argv[1:] == ["--peers"]:
        return "make bench"
    return shlex.join(["python", "bench/run.py", *sys.argv[1:]])


def described(engine: Engine, runs: list[dict[str, Any]]) -> str:
    """The engine's description, ``{w3}`` replaced by how its client published W3."""
    hows = sorted(
        {r["w3"]["how"] for r in runs if r["engine"] == engine.name and r.get("w3", {}).get("how")}
    )
    return engine.what.replace("{w3}", " / ".join(hows) or "(not run)")


def document(md: str, info: dict[str, Any], engines: list[Engine]) -> str:
    m = info["machine"]
    v = m["versions"]
    engine_lines = "\n".join(f"- **{e.name}**: {described(e, info['runs'])}" for e in engines)
    with open(FINDINGS) as f:
        findings = f.read().strip().replace("{TIMES}", TIMES)
    warn = ""
    if info["disturbed"]:
        warn = (
            "\n\n**Other clients were connected to the broker when these engines started: "
            f"{', '.join(info['disturbed'])}; their figures may be disturbed.**"
        )
    return f"""# Benchmarks: tavrida2 against raw pika and raw aio-pika

Generated by `{info["command"]}` on {info["date"]}; do not edit by hand (the prose after the
engines' tables comes from bench/findings.md; `python bench/run.py --render` copies it in).
Scale {info["scale"]}, {info["reps"]} repetition(s) (medians), {info["elapsed_s"]:.0f} s in all.

Every engine runs as a server process and a client process, started one engine after the
other by `bench/run.py`, against the local RabbitMQ (127.0.0.1:5672). Workloads:
**W1** 200 warm-up calls, then {info["sizes"]["w1"]:,} sequential `add(x=i, y=1)` calls
(calls/s, p50 and p99 latency); **W2** {info["sizes"]["w2"]:,} `add` calls with 64 in flight;
**W3** {info["sizes"]["w3"]:,} one-way `note(n=i)` casts published as fast as the client
allows (async clients: 64 publishes in flight; sync clients: a loop, unless the engine's
description below says otherwise), clocked from the first publish until the server handled
the last one (the server's own timestamp, read back with a `stats()` call).
Every answer is checked. CPU is the utime+stime delta of client, server and broker
(`beam.smp`) from `/proc/<pid>/stat` over each workload. **Ratios are only meaningful
within one run**: the absolute figures move with the machine and whatever else runs on it.

{md}{warn}

## The floors: the raw libraries doing Tavrida's wire work

The fair floor for a toolkit that speaks Tavrida's wire format is the raw library doing the
same broker work. **raw-pika-tavwire** and **raw-aiormq-tavwire** (`BENCH_TAVWIRE=1` in
bench/raw_pika.py and bench/raw_aiormq.py, the same work as ../shared/peers-bench's
pika-tavwire and aiormq-tavwire) send every request, answer and cast through a topic exchange
(routing key `bench.<method>`) with eight string headers and a `{{"context", "payload"}}` body,
mandatory, requests with an expiration on a channel without confirms, casts persistent into a
durable queue and confirmed (pika: one by one; aiormq: 64 in flight). The first target table
holds tavrida2 against them, written as users write their code: the async engine with an
`AsyncRPCClient` awaiting each call (W1) or 64 in flight (W2, W3); the sync engine with
`call()` (W1), 64 threads sharing one `RPCClient` (**tavrida2-sync-threads**, W2),
`call_async()` from one thread (tavrida2-sync W2), a loop of `cast()`
(**tavrida2-sync-cast-loop**, W3) and 64 `cast_async()` in flight (tavrida2-sync W3).
The rows whose W3 waits for each confirm in turn (raw-pika-tavwire, tavrida2-sync-cast-loop)
publish {TAV_LOOP_W3:.0%} of W3's casts, to keep `make bench` short; their rate is still
casts per second. The issue asks for medians of at least 3 repetitions: `make bench` runs 2
to stay within about 6 minutes; `python bench/run.py --reps 3` for the verdict.
`python bench/run.py --peers` then runs ../shared/peers-bench with tavrida2's adapter
(`--peer-dir bench/peer`) and appends the 1.5{TIMES}-best-peer check from that run (it says
why and skips if peers-bench or its venvs are missing).

CPU is shown per stage, µs per message in client, server and broker, so that a regression
shows where it came from.

## Persistent casts

By default tavrida2 sends casts (one-way requests, W3) and notifications *persistent*
(delivery mode 2, into a durable queue), as Tavrida 1.0 did, so that nothing queued is lost
if the broker restarts. What it costs: the broker writes such a message to disk and confirms
it only then (or once a consumer has taken and acked it, whichever comes first), so a
publisher that waits for each confirm in turn waits much longer (raw-pika against
raw-pika-persistent); with many publishes in flight the broker batches its disk writes and
the difference shrinks (raw-aiopika against raw-aiopika-persistent).
The plain raw rows publish transient casts (the default of pika and aio-pika), so the
issue's W3 targets, quoted literally in the first target table, set tavrida2's persistent
casts against transient ones. Like with like: **tavrida2-sync** and **tavrida2-async**
(persistent) against the **-persistent** raw rows, and **tavrida2-sync-transient** and
**tavrida2-async-transient** (`ConnectionConfig(persistent=False)`, or `?persistent=false`
in the URL: faster, but casts still queued are lost if the broker restarts) against the
plain raw rows; the second target table applies the issue's 0.7{TIMES} floor to these.
Calls (the requests of a caller that waits for the answer, and the answers) are always
transient, whatever the setting, since their caller gives up after its timeout anyway; so
W1 and W2 do not depend on it, and the -transient rows run W3 only ("—" elsewhere).

{findings}

Engines:

{engine_lines}

Machine: {m["cpus"]} CPUs ({m["cpu_model"]}), Python {m["python"]}, RabbitMQ {m["rabbitmq"]},
pika {v["pika"]}, aio-pika {v["aio-pika"]}, aiormq {v["aiormq"]}, pamqp {v["pamqp"]},
tavrida2 {v["tavrida2"]} at {m["commit"]}. Raw results: `bench/results/last.json`
(not committed).
"""


# ---------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", default="", help="comma-separated engines: " + ", ".join(BY_NAME))
    ap.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")))
    ap.add_argument(
        "--reps", type=int, default=2, help="repetitions (order rotated); the tables show medians"
    )
    ap.add_argument(
        "--profile",
        default=os.environ.get("BENCH_PROFILE_ENGINES", ""),
        help="comma-separated engines to run under pyinstrument (env BENCH_PROFILE_ENGINES); "
        "without --only, only these engines run",
    )
    ap.add_argument(
        "--peers",
        action="store_true",
        help="then run ../shared/peers-bench/run_all.py --peer-dir bench/peer (same --reps "
        "and --scale) and check tavrida2 against the best peer (skipped, with the reason, if "
        "peers-bench or its venvs are missing)",
    )
    ap.add_argument(
        "--render",
        action="store_true",
        help="write docs/benchmarks.md again from bench/results/last.json (a full run) and "
        "bench/findings.md, without running anything",
    )
    ap.add_argument(
        "--no-docs",
        action="store_true",
        help="do not write docs/benchmarks.md (only runs of every engine without --profile "
        "write it anyway)",
    )
    args = ap.parse_args()
    args.only = [n for n in args.only.split(",") if n]
    args.profile = [n for n in args.profile.split(",") if n]
    unknown = [n for n in args.only + args.profile if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; known: {', '.join(BY_NAME)}")
    return args


def report(args: argparse.Namespace, info: dict[str, Any], engines: list[Engine]) -> int:
    """Print the tables and errors; write last.json and (full runs) docs/benchmarks.md."""
    md = tables(info["summary"], engines, args.reps)
    if info.get("peers"):
        md += "\n" + "\n".join(peers_check(info["peers"]))
    say(
        f"\nMedians of {args.reps} repetition(s), scale {args.scale}, "
        f"{info['elapsed_s']:.0f} s in all.\n\n{md}"
    )
    errors = [(e.name, err) for e in engines for err in info["summary"][e.name]["errors"]]
    if errors:
        say("\nErrors:")
        for name, err in errors:
            say(f"- {name}: " + err.replace("\n", "\n    "))
    if info["disturbed"]:
        say(f"\nOther broker clients were connected before: {', '.join(info['disturbed'])}")
    if info["strays"]:
        say(f"\nNew on the broker during the run (not ours, not deleted): {info['strays']}")
    with open(os.path.join(RESULTS, "last.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    say(f"\nraw results: {os.path.relpath(os.path.join(RESULTS, 'last.json'), ROOT)}")
    if args.profile:
        say(f"profiles: bench/results/profile-<engine>-server|client.html/.txt for {args.profile}")
    if not (args.only or args.profile or args.no_docs):
        os.makedirs(os.path.dirname(DOCS), exist_ok=True)
        with open(DOCS, "w") as f:
            f.write(document(md, info, engines))
        say(f"written: {os.path.relpath(DOCS, ROOT)}")
    return 1 if errors else 0


def render(args: argparse.Namespace) -> int:
    """docs/benchmarks.md again from the last full run (bench/results/last.json) and the
    current bench/findings.md, without running anything."""
    with open(os.path.join(RESULTS, "last.json")) as f:
        info: dict[str, Any] = json.load(f)
    names = set(info["summary"])
    engines = [e for e in ENGINES if e.name in names]
    if len(engines) != len(ENGINES):
        sys.exit("--render: bench/results/last.json is not of a run of every engine")
    args.reps, args.scale = info["reps"], info["scale"]
    return report(args, info, engines)


def main() -> int:
    args = parse_args()
    if args.render:
        return render(args)
    selected = args.only or args.profile
    engines = [e for e in ENGINES if not selected or e.name in selected]
    if not broker_answers():
        sys.exit("RabbitMQ does not answer on 127.0.0.1:5672 (make rabbitmq starts it)")

    def give_up(signum: int, frame: object) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, give_up)
    logs = os.path.join(RESULTS, "logs")
    os.makedirs(logs, exist_ok=True)
    t0 = time.time()
    sizes = {"w1": common.W1_CALLS, "w2": common.W2_CALLS, "w3": common.W3_CASTS}
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command_line(),
        "scale": args.scale,
        "reps": args.reps,
        "machine": machine(),
        "sizes": {w: max(1, round(n * args.scale)) for w, n in sizes.items()},
    }
    known = broker_names()
    stale = {n for n in known if n.split(":", 1)[1].startswith(NAME_PREFIX)}
    if stale:
        say(f"deleting leftovers of an earlier run: {sorted(stale)}")
        delete_names(stale)
        known -= stale
    m = info["machine"]
    say(
        f"# tavrida2 bench: {', '.join(e.name for e in engines)}; scale {args.scale}, "
        f"reps {args.reps}; Python {m['python']}, RabbitMQ {m['rabbitmq']}, {m['cpus']} CPUs"
    )
    runs, strays, disturbed = [], set(), set()
    for rep in range(1, args.reps + 1):
        k = (rep - 1) % len(engines)  # rotate the order between repetitions
        for e in engines[k:] + engines[:k]:
            others = other_clients()
            if others:
                say(
                    f"warning: {others} other client(s) connected to the broker; the figures "
                    f"of {e.name} may be disturbed"
                )
                disturbed.add(e.name)
            runs.append(run_engine(e, rep, args.reps, args.scale, logs, e.name in args.profile))
            strays |= clean_broker(known)
    info["elapsed_s"] = round(time.time() - t0, 1)
    info.update(
        summary=summarize(runs, engines),
        runs=runs,
        strays=sorted(strays),
        disturbed=[e.name for e in engines if e.name in disturbed],
    )
    if args.peers:
        info["peers"] = run_peers(args)
    return report(args, info, engines)


if __name__ == "__main__":
    sys.exit(main())
