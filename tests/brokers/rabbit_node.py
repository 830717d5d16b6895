"""Extra RabbitMQ nodes on this machine, beside the shared broker: start, stop, status.

A node here is ``<name>@localhost`` with its own AMQP port, Erlang distribution
port, data folder, log folder, config file, plugins file (none: no management
listener to clash on) and Erlang cookie, all under one base folder. The shared
node (``rabbit@localhost`` on 5672, ``/etc/rabbitmq``) is never read nor touched:
``RABBITMQ_CONF_ENV_FILE`` points at a file of the base folder, and ``HOME`` too,
so the CLI tools use the base folder's cookie. Nodes that share a base folder
share its cookie and can form a cluster (:class:`Cluster`).

Command line (``scripts/rabbit-node.sh`` and ``scripts/rabbit-cluster.sh`` call it)::

    python -m tests.brokers.rabbit_node node start NAME --port 5680 [--base DIR]
                                             [--ssl-port 5681 --ca CA --cert C --key K]
    python -m tests.brokers.rabbit_node node stop|status|kill NAME [--base DIR]
    python -m tests.brokers.rabbit_node cluster start|stop|status [--base DIR]
                                             [--ports 5701,5702,5703]

Start is idempotent (a running node is left as it is), stop removes nothing
but ``--clean`` removes the node's folders; both print where the logs are.
Only the standard library is used, so the scripts run with any ``python3``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "localhost"
#: Where the scripts put their nodes unless told otherwise.
DEFAULT_BASE = Path(os.environ.get("T2_RABBIT_BASE", "/tmp/tavrida2-rabbit-nodes"))
BOOT_TIMEOUT = 90.0
CTL_TIMEOUT = 60.0


class NodeError(RuntimeError):
    """A node did not start, stop or answer as asked; the message names its log."""


def sbin_dir() -> Path:
    """The folder of the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that runs the tools as
    the ``rabbitmq`` user with the shared node's cookie and logs; its target
    folder (``/usr/lib/rabbitmq/bin``) holds the plain scripts, which honour
    the environment. ``RABBITMQ_SBIN`` overrides the search.
    """
    if os.environ.get("RABBITMQ_SBIN"):
        return Path(os.environ["RABBITMQ_SBIN"])
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise NodeError(
            "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server), "
            "or set RABBITMQ_SBIN to the folder of its scripts"
        )
    return Path(os.path.realpath(found)).parent


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, first: int = 5680, last: int = 5799) -> list[int]:
    """``count`` ports from ``first`` to ``last`` that are free, as is each one's
    ``+ 20000`` (the Erlang distribution port a node on it gets) and ``+ 30000``
    (its CLI tools' ports): the ranges stay those of RabbitMQ's defaults."""
    found = [
        port
        for port in range(first, last + 1)
        if all(_bindable(port + offset) for offset in (0, 20000, 30000))
    ]
    if len(found) < count:
        raise NodeError(f"fewer than {count} free ports from {first} to {last}")
    return found[:count]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class TLSListener:
    """A TLS listener: its port and the node's CA, certificate and key files."""

    port: int
    cacertfile: Path
    certfile: Path
    keyfile: Path
    verify_peer: bool = True
    fail_if_no_peer_cert: bool = False

    def config_lines(self) -> list[str]:
        return [
            f"listeners.ssl.default = 127.0.0.1:{self.port}",
            f"ssl_options.cacertfile = {self.cacertfile}",
            f"ssl_options.certfile = {self.certfile}",
            f"ssl_options.keyfile = {self.keyfile}",
            f"ssl_options.verify = {'verify_peer' if self.verify_peer else 'verify_none'}",
            f"ssl_options.fail_if_no_peer_cert = {str(self.fail_if_no_peer_cert).lower()}",
        ]


@dataclass
class RabbitNode:
    """One node ``<name>@localhost`` whose files all live under ``base / name``.

    ``dist_port`` (Erlang distribution) defaults to ``port + 20000``, as
    RabbitMQ's own default; ``extra_config`` lines are appended to its
    ``rabbitmq.conf``.
    """

    name: str
    port: int
    base: Path = DEFAULT_BASE
    dist_port: int | None = None
    tls: TLSListener | None = None
    extra_config: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = Path(self.base).resolve()
        if self.dist_port is None:
            self.dist_port = self.port + 20000

    # -- names and files ---------------------------------------------------------------

    @property
    def node(self) -> str:
        return f"{self.name}@{HOST}"

    @property
    def home(self) -> Path:
        """The folder of all this node's files."""
        return self.base / self.name

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.node}.log"

    @property
    def launch_log(self) -> Path:
        """What ``rabbitmq-server -detached`` printed (a bad config shows here)."""
        return self.home / "launch.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "beam.pid"

    @property
    def cookie_file(self) -> Path:
        """The Erlang cookie, shared by the nodes of one base folder (a cluster)."""
        return self.base / ".erlang.cookie"

    def config_text(self) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users.guest = true",
            # several nodes on one machine: each must not think it owns most of it
            "vm_memory_high_watermark.absolute = 1GB",
            "disk_free_limit.absolute = 50MB",
            "log.file.level = info",
            "log.console = false",
        ]
        if self.tls is not None:
            lines += self.tls.config_lines()
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def env(self) -> dict[str, str]:
        """The environment of the node and of the CLI tools aimed at it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self.base),  # the cookie: $HOME/.erlang.cookie
            RABBITMQ_CONF_ENV_FILE=str(self.home / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_DIST_PORT=str(self.dist_port),
            # the CLI tools' own distribution ports, away from the shared node's CLI
            RABBITMQ_CTL_DIST_PORT_MIN=str(self.port + 30000),
            RABBITMQ_CTL_DIST_PORT_MAX=str(self.port + 30009),
            RABBITMQ_MNESIA_BASE=str(self.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_CONFIG_FILE=str(self.home / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.home / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.home / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    def where(self) -> str:
        return f"{self.node} (files in {self.home}; log {self.log_file}, launch {self.launch_log})"

    # -- the CLI tools -----------------------------------------------------------------

    def ctl(
        self,
        *args: str,
        tool: str = "rabbitmqctl",
        timeout: float = CTL_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``<tool> -n NODE args`` with this node's environment."""
        command = [str(sbin_dir() / tool), "-n", self.node, *args]
        try:
            done = subprocess.run(
                command,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"{' '.join(command)} took more than {timeout} s") from exc
        if check and done.returncode != 0:
            raise NodeError(
                f"{tool} {' '.join(args)} on {self.node} failed ({done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-2000:]}\nsee {self.where()}"
            )
        return done

    def ctl_json(self, *args: str, tool: str = "rabbitmqctl") -> list[dict[str, object]]:
        done = self.ctl(*args, "-q", "--formatter", "json", tool=tool)
        return json.loads(done.stdout or "[]")  # type: ignore[no-any-return]

    # -- state -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The node's OS process (its ``beam.smp``), if it is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        if "beam" not in _process_name(pid):
            return None  # the number went to another process
        return pid

    def running(self) -> bool:
        """Whether the node answers (RabbitMQ application running)."""
        if self.pid() is None:
            return False
        done = self.ctl("-q", "ping", tool="rabbitmq-diagnostics", timeout=30, check=False)
        return done.returncode == 0

    def status(self) -> str:
        if self.pid() is None:
            return f"{self.node}: stopped ({self.home})"
        state = "running" if self.running() else "not answering"
        return f"{self.node}: {state}, pid {self.pid()}, amqp {self.port}, " + self.where()

    # -- start and stop ----------------------------------------------------------------

    def _write_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        if not self.cookie_file.exists():
            self.cookie_file.write_text(secrets.token_hex(20))
            self.cookie_file.chmod(0o400)
        (self.home / "rabbitmq.conf").write_text(self.config_text())
        (self.home / "rabbitmq-env.conf").write_text("# this node's settings are in its env\n")
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "advanced.config").write_text("[].\n")

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start the node and wait until it serves; nothing to do if it runs already."""
        if self.running():
            print(f"already running: {self.where()}", flush=True)
            return
        if self.pid() is not None:
            self.kill()  # a beam that does not answer: a leftover of a crash
        busy = [p for p in (self.port, self.dist_port, self.tls and self.tls.port) if p]
        busy = [p for p in busy if port_open(p)]
        if busy:
            raise NodeError(f"cannot start {self.node}: ports {busy} are in use")
        self._write_files()
        with self.launch_log.open("a") as log:
            launched = subprocess.run(
                [str(sbin_dir() / "rabbitmq-server"), "-detached"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        if launched.returncode != 0:
            raise NodeError(f"rabbitmq-server -detached failed: see {self.where()}")
        deadline = time.monotonic() + timeout
        # the pid file is written early in the boot; await_startup needs the node up
        while self.ctl(
            "-q", "ping", tool="rabbitmq-diagnostics", timeout=30, check=False
        ).returncode:
            if time.monotonic() > deadline:
                self.kill()
                raise NodeError(f"{self.node} did not answer within {timeout} s: {self._tail()}")
            time.sleep(0.5)
        self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
        print(f"started {self.where()}", flush=True)

    def stop(self, clean: bool = False, timeout: float = 60.0) -> None:
        """Stop the node (``rabbitmqctl stop``, else SIGKILL); ``clean``: remove its files."""
        pid = self.pid()
        if pid is not None:
            self.ctl("stop", "--idempotent", timeout=timeout, check=False)
            if not _wait_gone(pid, timeout):
                self.kill()
        print(f"stopped {self.node}; its logs are in {self.log_dir}", flush=True)
        if clean:
            shutil.rmtree(self.home, ignore_errors=True)
            print(f"removed {self.home}", flush=True)
            if self.base.is_dir() and {p.name for p in self.base.iterdir()} <= {".erlang.cookie"}:
                shutil.rmtree(self.base, ignore_errors=True)  # no other node uses it

    def kill(self) -> None:
        """SIGKILL the node's beam process: a crash, as a test wants it."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, 10):
            raise NodeError(f"{self.node} (pid {pid}) survived SIGKILL")

    def _tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self.launch_log, self.log_file):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or "(no log yet)"


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ended within ``timeout`` (a detached node is init's child:
    init reaps it; its last threads may outlive the main one by a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@dataclass
class Cluster:
    """Nodes ``<prefix>1..N@localhost`` of one base folder (one cookie), joined to the first."""

    ports: Sequence[int] = (5701, 5702, 5703)
    base: Path = DEFAULT_BASE / "cluster"
    prefix: str = "t2c"

    def __post_init__(self) -> None:
        self.nodes = [
            RabbitNode(f"{self.prefix}{index}", port, self.base)
            for index, port in enumerate(self.ports, start=1)
        ]

    def node_of(self, node_name: str) -> RabbitNode:
        for node in self.nodes:
            if node.node == node_name:
                return node
        raise KeyError(node_name)

    def start(self) -> None:
        """Start every node, join the others to the first one; idempotent."""
        self.base.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if first.node in self.running_nodes(node):
                continue
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
            node.ctl("await_startup")
        members = self.running_nodes(first)
        wanted = {n.node for n in self.nodes}
        if set(members) != wanted:
            raise NodeError(f"cluster of {sorted(wanted)} formed as {members}")
        print(f"cluster up: {', '.join(members)}; ports {list(self.ports)}", flush=True)

    def running_nodes(self, node: RabbitNode) -> list[str]:
        """The cluster's running nodes as ``node`` sees them."""
        done = node.ctl("cluster_status", "-q", "--formatter", "json", check=False)
        if done.returncode != 0:
            return []
        return sorted(json.loads(done.stdout).get("running_nodes", []))

    def stop(self, clean: bool = False) -> None:
        for node in reversed(self.nodes):
            node.stop(clean=clean)
        if clean:
            shutil.rmtree(self.base, ignore_errors=True)

    def status(self) -> str:
        return "\n".join(node.status() for node in self.nodes)


# -- command line ----------------------------------------------------------------------


def _ports(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rabbit_node", description=__doc__.split("\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    one = kinds.add_parser("node", help="one extra node")
    one.add_argument("action", choices=("start", "stop", "status", "kill"))
    one.add_argument("name", help="node name before @localhost, e.g. t2tls")
    one.add_argument("--port", type=int, default=5680, help="AMQP port")
    one.add_argument("--dist-port", type=int, default=None)
    one.add_argument("--base", type=Path, default=DEFAULT_BASE)
    one.add_argument("--ssl-port", type=int, default=None)
    one.add_argument("--ca", type=Path)
    one.add_argument("--cert", type=Path)
    one.add_argument("--key", type=Path)
    one.add_argument("--clean", action="store_true", help="stop: remove the node's files")
    many = kinds.add_parser("cluster", help="a cluster of nodes t2c1, t2c2, ...")
    many.add_argument("action", choices=("start", "stop", "status"))
    many.add_argument("--ports", type=_ports, default=[5701, 5702, 5703])
    many.add_argument("--base", type=Path, default=DEFAULT_BASE / "cluster")
    many.add_argument("--clean", action="store_true", help="stop: remove the nodes' files")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.kind == "cluster":
            cluster = Cluster(args.ports, args.base)
            if args.action == "start":
                cluster.start()
            elif args.action == "stop":
                cluster.stop(clean=args.clean)
            print(cluster.status())
            return 0
        tls = None
        if args.ssl_port is not None:
            if not (args.ca and args.cert and args.key):
                parser.error("--ssl-port needs --ca, --cert and --key")
            tls = TLSListener(
                args.ssl_port, args.ca.resolve(), args.cert.resolve(), args.key.resolve()
            )
        node = RabbitNode(args.name, args.port, args.base, args.dist_port, tls)
        if args.action == "start":
            node.start()
        elif args.action == "stop":
            node.stop(clean=args.clean)
        elif args.action == "kill":
            node.kill()
        print(node.status())
        return 0
    except NodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
