"""``tavrida2 topology CONFIG... --ds FILE... --format text|dot|mermaid|svg`` on the samples.

Each format must name every service, exchange and queue the files describe:
the exchanges and queues each server declares (:meth:`Server.topology`, the
per-instance broadcast queue shown as ``<queue>.broadcast.<instance>``) and the
services and exchanges of the .ds files. DOT is rendered by Graphviz when it is
installed (make test installs it); SVG is parsed as XML; Mermaid is checked line
by line against the shapes and arrows the renderer writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tavrida2 import cli, configfile
from tavrida2.discovery.dsfile import DSFile
from tavrida2.server import Server, file_server_arguments
from tavrida2.topology import (
    GraphSourceError,
    build_graph,
    render_dot,
    render_mermaid,
    render_text,
)
from tavrida2.topology.build import INSTANCE_QUEUE_SUFFIX
from tavrida2.topology.layout import render_svg_layout
from tavrida2.topology.model import (
    ANSWERED,
    BY_METHOD,
    CODE,
    DEAD_LETTERS,
    INSTANCE,
    METHOD,
    OTHER_METHODS,
    CallEdge,
)
from tavrida2.topology.svg import graphviz, render_svg
from tests.unit.test_cli import run_cli

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SYSTEMS = {
    "deploy": ([SAMPLES / "deploy" / "hello.ini", SAMPLES / "deploy" / "world.ini"], []),
    "agents": (sorted((SAMPLES / "agents").glob("*.ini")), []),
    "tutorial": ([], [SAMPLES / "tutorial" / "services.ds"]),
}
FORMATS = ("text", "dot", "mermaid", "svg")
SVG = "{http://www.w3.org/2000/svg}"


def expected_names(configs: list[Path], ds_files: list[Path]) -> dict[str, set[str]]:
    """What the files describe, worked out without the graph code."""
    names: dict[str, set[str]] = {"services": set(), "exchanges": set(), "queues": set()}
    ds_paths = list(ds_files)
    for path in configs:
        loaded = configfile.load(path, environ={})
        loaded.bind_discovery()
        server = Server(**file_server_arguments(loaded))
        topology = server.topology()
        names["exchanges"] |= {exchange.name for exchange in topology.exchanges}
        for queue in topology.queues:
            shown = queue.name
            if queue.name == server.broadcast_queue:
                shown = loaded.queue_name + INSTANCE_QUEUE_SUFFIX
            names["queues"].add(shown)
        ds_paths.append(path.parent / "services.ds")
    for path in ds_paths:
        for entry in DSFile(path).entries.values():
            names["services"].add(entry.service)
            names["exchanges"].add(entry.exchange)
            if entry.notifications:
                names["exchanges"].add(entry.notifications)
    return names


def draw(system: str, fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    configs, ds_files = SYSTEMS[system]
    argv = ["topology", *map(str, configs), "--format", fmt]
    if ds_files:
        argv += ["--ds", *map(str, ds_files)]
    code, out, err = run_cli(*argv, capsys=capsys)
    assert code == 0, err
    return out


def every_name(system: str) -> set[str]:
    configs, ds_files = SYSTEMS[system]
    names = expected_names(configs, ds_files)
    assert names["services"] and names["exchanges"]
    return names["services"] | names["exchanges"] | names["queues"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_graph_holds_every_service_exchange_and_queue(system: str) -> None:
    configs, ds_files = SYSTEMS[system]
    graph = build_graph(map(str, configs), map(str, ds_files))
    names = expected_names(configs, ds_files)
    assert set(graph.services) == names["services"]
    assert set(graph.exchanges) == names["exchanges"]
    assert set(graph.queues) == names["queues"]
    for binding in graph.bindings:
        assert binding.exchange in graph.exchanges
        assert binding.queue in graph.queues


@pytest.mark.parametrize("system", SYSTEMS)
def test_text_names_everything(system: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = draw(system, "text", capsys)
    for name in every_name(system):
        assert name in out, name
    assert out.startswith("services:\n")


@pytest.mark.parametrize("system", SYSTEMS)
def test_dot_names_everything_and_graphviz_draws_it(
    system: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = draw(system, "dot", capsys)
    assert out.startswith("digraph tavrida2 {\n") and out.rstrip().endswith("}")
    for name in every_name(system):
        assert f'label="{name}"' in out, name
    program = shutil.which("dot")
    if program is not None:  # make test installs graphviz; without it the text checks stand
        drawn = subprocess.run(
            [program, "-Tsvg"], input=out, capture_output=True, text=True, timeout=30, check=False
        )
        assert drawn.returncode == 0, drawn.stderr
        texts = {t.text for t in ET.fromstring(drawn.stdout).iter(f"{SVG}text")}
        assert every_name(system) <= texts


MERMAID_NODE = re.compile(r'    ([seq]\d+)(\(\[|\{\{|\[\()"([^"]*)"(\]\)|\}\}|\)\])$')
MERMAID_EDGE = re.compile(r'    ([seq]\d+) (-->|-\.->|==>)(\|"[^"]*"\|)? ([seq]\d+)$')
MERMAID_CLASS = re.compile(r"    (classDef \w+ fill:#[0-9a-f]{6}|class [seq]\d+(,[seq]\d+)* \w+)$")
BRACKETS = {"([": "])", "{{": "}}", "[(": ")]"}


@pytest.mark.parametrize("system", SYSTEMS)
def test_mermaid_is_well_formed(system: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = draw(system, "mermaid", capsys)
    lines = out.splitlines()
    assert lines[0] == "flowchart LR"
    defined: dict[str, str] = {}
    for line in lines[1:]:
        node, edge = MERMAID_NODE.match(line), MERMAID_EDGE.match(line)
        if node:
            key, opening, label, closing = node.groups()
            assert BRACKETS[opening] == closing, line
            assert key not in defined, f"{key} defined twice"
            defined[key] = label.replace("#lt;", "<").replace("#gt;", ">").replace("#35;", "#")
        elif edge:
            assert edge.group(1) in defined and edge.group(4) in defined, line
        else:
            assert MERMAID_CLASS.match(line), f"not a Mermaid line: {line!r}"
    assert set(defined.values()) == every_name(system)


@pytest.mark.parametrize("system", SYSTEMS)
def test_svg_is_xml_naming_every_service(system: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = draw(system, "svg", capsys)
    root = ET.fromstring(out.encode())
    assert root.tag == f"{SVG}svg"
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert every_name(system) <= texts


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_svg_without_graphviz_is_xml_naming_everything(system: str) -> None:
    configs, ds_files = SYSTEMS[system]
    graph = build_graph(map(str, configs), map(str, ds_files))
    for drawn in (render_svg_layout(graph), render_svg(graph, use_graphviz=False)):
        root = ET.fromstring(drawn.encode())
        texts = {t.text for t in root.iter(f"{SVG}text")}
        assert every_name(system) <= texts
        services = {
            g.get("data-name") for g in root.iter(f"{SVG}g") if "service" in g.get("class", "")
        }
        assert services == set(graph.services)


def test_graphviz_required_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert graphviz() is None
    graph = build_graph([], [str(SAMPLES / "tutorial" / "services.ds")])
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        render_svg(graph, use_graphviz=True)
    assert "<svg" in render_svg(graph)  # falls back to the pure-Python layout


def test_who_calls_whom_in_the_agents_sample() -> None:
    graph = build_graph(map(str, SYSTEMS["agents"][0]))
    assert CallEdge("users", "comments", "count", "call", ANSWERED) in graph.calls
    assert CallEdge("users", "emails", "mute", "broadcast", CODE) in graph.calls
    assert CallEdge("users", "comments", "add", "cast", CODE) in graph.calls
    assert CallEdge("comments", "emails", "send", "cast", CODE) in graph.calls
    assert {(s.subscriber, s.publisher, s.method) for s in graph.subscriptions} == {
        ("users", "comments", "add"),
        ("emails", "users", "register"),
    }
    instance = f"t2agents_emails_queue{INSTANCE_QUEUE_SUFFIX}"
    assert graph.queues[instance].kind == INSTANCE
    assert graph.exchanges["tavrida2.broadcast.emails"].type == "fanout"
    assert {q.name for q in graph.queues_of(DEAD_LETTERS)} == {
        f"t2agents_{name}_queue.dlq" for name in ("users", "comments", "emails")
    }
    dot = render_dot(graph)
    assert '"s:users" -> "s:emails" [label="mute (broadcast)"' in dot
    assert '"e:t2agents_users_notifications" -> "q:t2agents_emails_queue"' in dot
    assert "==>" in render_mermaid(graph)


def test_the_deploy_sample_calls_world_from_hello() -> None:
    graph = build_graph(map(str, SYSTEMS["deploy"][0]))
    assert [(c.caller, c.callee, c.method) for c in graph.calls] == [
        ("test_hello", "test_world", "world")
    ]


def test_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "tutorial.mmd"
    ds = str(SAMPLES / "tutorial" / "services.ds")
    code, out, err = run_cli(
        "topology", "--ds", ds, "--format", "mermaid", "-o", str(target), capsys=capsys
    )
    assert (code, out, err) == (0, "", "")
    assert target.read_text().startswith("flowchart LR\n")


def test_nothing_to_draw(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli("topology", capsys=capsys)
    assert code == cli.EXIT_USAGE
    assert "nothing to draw" in err


def test_a_bad_ds_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ds"
    bad.write_text("[svc]\nexchnage = x\n")
    code, _, err = run_cli("topology", "--ds", str(bad), capsys=capsys)
    assert code == cli.EXIT_USAGE
    assert str(bad) in err and "unknown key(s) exchnage" in err
    assert "Traceback" not in err


def test_an_unwritable_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = str(SAMPLES / "tutorial" / "services.ds")
    target = tmp_path / "no" / "such" / "folder.svg"
    code, _, err = run_cli("topology", "--ds", ds, "-o", str(target), capsys=capsys)
    assert code == cli.EXIT_USAGE
    assert f"cannot write {target}" in err


def test_on_error_collects_and_goes_on(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.ini")
    seen: list[GraphSourceError] = []
    graph = build_graph(
        [missing], [str(SAMPLES / "tutorial" / "services.ds")], on_error=seen.append
    )
    assert [error.path for error in seen] == [missing]
    assert missing in str(seen[0])
    assert set(graph.services) == {"test_hello", "test_world"}
    with pytest.raises(GraphSourceError, match=r"missing\.ini"):
        build_graph([missing])


def test_code_calls_follow_the_proxy_parameter_whatever_its_name() -> None:
    from tavrida2 import dispatcher, service
    from tavrida2.topology.calls import code_calls, declared_calls

    @dispatcher.rpc_service("t2topo_caller")
    class Caller(service.ServiceController):
        @dispatcher.rpc_method(service="t2topo_caller", method="go")
        def go(self, request, p):
            p.t2topo_other.run(x=1).cast()
            p.t2topo_other.ask().call(wait=True, timeout=1)
            p.publish(x=1)  # a notification, not a call
            other.t2topo_nobody.run().cast()  # noqa: F821 - never run, only read

        @dispatcher.rpc_error_method(service="t2topo_other", method="ask")
        def ask_failed(self, error, proxy):
            pass

    assert [(c.callee, c.method, c.how, c.known_by) for c in code_calls(Caller)] == [
        ("t2topo_other", "run", "cast", CODE),
        ("t2topo_other", "ask", "call", CODE),
    ]
    assert [(c.callee, c.method) for c in declared_calls(Caller)] == [("t2topo_other", "ask")]
    made = type("Made", (Caller,), {})  # no source of its own: its base class is read
    assert list(code_calls(made)) == list(code_calls(Caller))


def test_methods_with_queues_of_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t2topo_mq.py").write_text(
        "from tavrida2 import dispatcher, service\n\n"
        '@dispatcher.rpc_service("reports")\n'
        "class Reports(service.ServiceController):\n"
        '    @dispatcher.rpc_method(method="build", prefetch=2)\n'
        "    def build(self, request, proxy):\n"
        "        return {}\n\n"
        '    @dispatcher.rpc_method(method="list")\n'
        "    def list(self, request, proxy):\n"
        "        return {}\n"
    )
    (tmp_path / "services.ds").write_text("[reports]\nexchange = t2topo_reports_ex\n")
    config = tmp_path / "reports.ini"
    config.write_text(
        '[server]\nqueue_name = "t2topo_reports_q"\nexchange_name = "t2topo_reports_ex"\n'
        'discovery = "services.ds"\n'
        'services = [{"name": "reports", "controller": "t2topo_mq.Reports"}]\n'
    )
    graph = build_graph([str(config)])
    names = expected_names([config], [])
    assert set(graph.queues) == names["queues"]
    assert set(graph.exchanges) == names["exchanges"]
    own = graph.queues["t2topo_reports_q.reports.build"]
    assert (own.kind, own.entry_point, own.prefetch) == (METHOD, "reports.build", 2)
    assert [s.name for s in graph.services_on(own.name)] == ["reports"]
    by_method = graph.exchanges["t2topo_reports_q.reports.by-method"]
    assert (by_method.kind, by_method.alternate) == (
        BY_METHOD,
        "t2topo_reports_q.reports.other-methods",
    )
    assert graph.exchanges[by_method.alternate].kind == OTHER_METHODS
    assert [(e.source, e.destination, e.routing_key) for e in graph.exchange_bindings] == [
        ("t2topo_reports_ex", by_method.name, "reports.#")
    ]
    text = render_text(graph)
    assert "removed: t2topo_reports_ex --[reports.#]--> t2topo_reports_q" in text
    assert "reports.build: t2topo_reports_q.reports.build, prefetch 2" in text
    dot = render_dot(graph)
    assert f'"e:t2topo_reports_ex" -> "e:{by_method.name}" [label="reports.#"' in dot
    assert f'"e:{by_method.name}" -> "e:{by_method.alternate}" [label="others"' in dot
    everything = names["services"] | names["exchanges"] | names["queues"]
    code, out, err = run_cli("topology", str(config), "--format", "svg", capsys=capsys)
    assert code == 0, err
    assert everything <= {t.text for t in ET.fromstring(out.encode()).iter(f"{SVG}text")}
    mermaid = render_mermaid(graph)
    assert all(f'"{name}"' in mermaid for name in everything)
    layout = ET.fromstring(render_svg_layout(graph).encode())
    assert everything <= {t.text for t in layout.iter(f"{SVG}text")}
