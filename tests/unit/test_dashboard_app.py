"""The dashboard's JSON API without a broker (Starlette's TestClient, lifespan not run).

The management API is pointed at a closed port: the state says it does not
answer, and shows the rest. Bad input: a config that does not load (named with
its error), unknown queues and letters (404), replay without --allow-replay
(403) or without a JSON confirmation (415/400), no trace database (404).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tavrida2.config import ConnectionConfig
from tavrida2.dashboard.app import DashboardSettings, create_app
from tavrida2.dashboard.instances import InstanceListener
from tavrida2.dashboard.management import ManagementAPI, ManagementUnavailable, default_url
from tavrida2.dashboard.system import load_system
from tavrida2.drivers.base import Disposition
from tavrida2.messages import AMQPMessage
from tavrida2.tracing.database import ensure_table, to_row, trace_table
from tavrida2.tracing.records import TraceRecord
from tests.unit.test_cli import run_cli

DEPLOY = Path(__file__).resolve().parents[2] / "samples" / "deploy"
CONFIGS = [str(DEPLOY / "hello.ini"), str(DEPLOY / "world.ini")]
HOSTS = ["testserver"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client(**settings: Any) -> TestClient:
    settings.setdefault("configs", CONFIGS)
    settings.setdefault("management_url", f"http://guest:s3cret@127.0.0.1:{closed_port()}/")
    settings.setdefault("allowed_hosts", HOSTS)
    return TestClient(create_app(DashboardSettings(**settings)))


def test_the_page_and_its_files_are_served() -> None:
    web = client()
    page = web.get("/")
    assert page.status_code == 200
    assert 'id="topology-picture"' in page.text
    assert web.get("/static/app.js").status_code == 200
    picture = web.get("/api/topology.svg")
    assert picture.headers["content-type"].startswith("image/svg+xml")
    assert picture.text.startswith("<svg")
    for name in ("test_hello", "test_world", "t2sample_world_queue.dlq"):
        assert name in picture.text


def test_an_unreachable_management_api_is_said_and_the_rest_shown() -> None:
    state = client().get("/api/state").json()
    assert state["management"]["ok"] is False
    assert "127.0.0.1" in state["management"]["error"]
    assert [s["name"] for s in state["services"]] == ["test_hello", "test_world"]
    queues = {q["name"]: q for q in state["queues"]}
    assert queues["t2sample_hello_queue"]["messages"] is None
    assert queues["t2sample_hello_queue"]["services"] == ["test_hello"]
    assert {q["name"] for q in state["dead_letters"]} == {
        "t2sample_hello_queue.dlq",
        "t2sample_world_queue.dlq",
    }
    assert state["allow_replay"] is False
    assert state["errors"] == []


def test_secrets_are_masked() -> None:
    web = client(url="amqp://guest:hush-hush@127.0.0.1:1/%2F")
    text = web.get("/api/state").text
    assert "s3cret" not in text and "hush-hush" not in text
    state = json.loads(text)
    assert state["broker"] == "amqp://guest:***@127.0.0.1:1/%2F"
    assert state["management"]["url"].startswith("http://guest:***@127.0.0.1:")


def test_a_config_that_does_not_load_is_named_with_its_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ini"
    broken.write_text("[server]\nqueue_name = q\n")
    state = client(configs=[*CONFIGS, str(broken)]).get("/api/state").json()
    assert len(state["errors"]) == 1
    error = state["errors"][0]
    assert error["path"] == str(broken)
    assert str(broken) in error["error"] and "is missing" in error["error"]
    assert len(state["services"]) == 2  # the others still shown


def test_unknown_queues_and_letters_are_404() -> None:
    web = client(allow_replay=True)
    for url in (
        "/api/queues/no_such_queue",
        "/api/deadletters/no_such_queue",
        "/api/deadletters/t2sample_hello_queue/some-id",  # a server queue, not a DLQ
    ):
        answer = web.get(url)
        assert answer.status_code == 404, url
        assert "no_such_queue" in answer.json()["error"] or "t2sample_hello_queue" in answer.text
    replay = web.post("/api/deadletters/no_such.dlq/replay", json={"confirm": True})
    assert replay.status_code == 404
    assert "no dead-letter queue 'no_such.dlq'" in replay.json()["error"]


def test_a_known_queue_without_the_management_api_is_502() -> None:
    answer = client().get("/api/queues/t2sample_hello_queue")
    assert answer.status_code == 502
    assert "management API does not answer" in answer.json()["error"]


def test_replay_is_403_unless_allowed() -> None:
    answer = client().post(
        "/api/deadletters/t2sample_hello_queue.dlq/replay", json={"confirm": True}
    )
    assert answer.status_code == 403
    assert "--allow-replay" in answer.json()["error"]


def test_replay_needs_a_json_confirmation() -> None:
    web = client(allow_replay=True)
    url = "/api/deadletters/t2sample_hello_queue.dlq/replay"
    form = web.post(url, data={"confirm": "true"})
    assert form.status_code == 415
    assert web.post(url, json={"confirm": False}).status_code == 400
    assert (
        web.post(url, content=b"{", headers={"content-type": "application/json"}).status_code == 400
    )


def test_another_host_header_is_refused() -> None:
    web = TestClient(
        create_app(DashboardSettings(configs=CONFIGS, management_url="http://127.0.0.1:1/")),
        base_url="http://evil.example",
    )
    assert web.get("/api/state").status_code == 400


def record(at: float, correlation_id: str, source: str, destination: str) -> TraceRecord:
    return TraceRecord(
        at=at,
        direction="sent",
        service=source.partition(".")[0],
        message_type="request",
        correlation_id=correlation_id,
        request_id=f"r-{at}",
        message_id=f"m-{at}",
        source=source,
        destination=destination,
        exchange="ex",
        routing_key=destination,
        headers={"password": "***"},
        payload_preview='{"param": 1}',
    )


@pytest.fixture
def trace_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'trace.db'}"
    engine = sa.create_engine(url)
    table = trace_table()
    ensure_table(engine, table)
    with engine.begin() as connection:
        for at, chain, source, destination in [
            (1.0, "chain-a", "client.x", "test_hello.hello"),
            (2.0, "chain-a", "test_hello.hello", "test_world.world"),
            (3.0, "chain-b", "client.x", "test_world.world"),
        ]:
            connection.execute(
                table.insert().values(**to_row(record(at, chain, source, destination)))
            )
    engine.dispose()
    return url


def test_recent_traces_newest_first_and_a_chain(trace_db: str) -> None:
    web = client(trace_db=trace_db)
    recent = web.get("/api/traces?limit=2").json()["records"]
    assert [r["correlation_id"] for r in recent] == ["chain-b", "chain-a"]
    chain = web.get("/api/traces/chain-a").json()
    assert [r["destination"] for r in chain["records"]] == ["test_hello.hello", "test_world.world"]
    assert "test_hello.hello -> test_world.world" in chain["chain"]
    missing = web.get("/api/traces/chain-zzz")
    assert missing.status_code == 404
    assert "chain-zzz" in missing.json()["error"]
    assert web.get("/api/traces?limit=x").status_code == 400


def test_traces_without_a_database(tmp_path: Path) -> None:
    assert client().get("/api/traces").status_code == 404
    gone = client(trace_db=f"sqlite:///{tmp_path / 'none.db'}").get("/api/traces")
    assert gone.status_code == 502
    assert "none.db" in gone.json()["error"]


def test_the_management_client_names_a_bad_url() -> None:
    with pytest.raises(ValueError, match="expected http"):
        ManagementAPI("ftp://x")
    api = ManagementAPI(f"http://u:p@127.0.0.1:{closed_port()}/")
    with pytest.raises(ManagementUnavailable, match=r"http://u:\*\*\*@127\.0\.0\.1"):
        api.queues()
    conf = ConnectionConfig.from_url("amqp://ann:p%40ss@rabbit:5672/%2F")
    assert default_url(conf) == "http://ann:p%40ss@rabbit:15672/"


def test_the_first_config_gives_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAVRIDA2_URL", raising=False)
    system = load_system(CONFIGS)
    assert system.connection.host == "localhost"
    assert system.server_queues == ["t2sample_hello_queue", "t2sample_world_queue"]
    monkeypatch.setenv("TAVRIDA2_URL", "amqp://guest:guest@elsewhere:5672/%2F")
    assert load_system(CONFIGS).connection.host == "elsewhere"


def test_the_instance_listener_keeps_the_last_announcement() -> None:
    listener = InstanceListener(ConnectionConfig.from_url("memory://"))

    def announce(instance: str, state: str, at: float) -> None:
        body = {
            "instance": instance,
            "services": ["svc"],
            "host": "h",
            "pid": 1,
            "started_at": at - 10,
            "state": state,
        }
        assert listener._on_announcement(AMQPMessage(json.dumps(body).encode(), {})) is (
            Disposition.ACK
        )

    announce("a", "alive", time.time())
    announce("b", "alive", time.time())
    assert [row["instance"] for row in listener.peers()] == ["a", "b"]
    announce("b", "stopping", time.time())
    assert [row["instance"] for row in listener.peers()] == ["a"]
    assert listener._on_announcement(AMQPMessage(b"not json", {})) is Disposition.ACK
    assert [row["instance"] for row in listener.peers(now=time.time() + 3600)] == []


def test_the_command_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli("dashboard", "--config", *CONFIGS, "--port", "70000", capsys=capsys)
    assert code == 2
    assert "--port 70000" in err


def test_the_command_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli("dashboard", "--help", capsys=capsys)
    assert code == 0
    assert "--allow-replay" in out and "127.0.0.1:8765" in out


def test_only_the_systems_instances_are_shown() -> None:
    web = client()
    dashboard = web.app.state.dashboard
    listener = dashboard.instances
    for instance, queue, services in [
        ("ours", "t2sample_world_queue", ["test_world"]),
        ("same-name-elsewhere", "other_queue", ["test_world"]),
    ]:
        body = {
            "instance": instance,
            "services": services,
            "host": "h",
            "pid": 1,
            "started_at": time.time(),
            "queue": queue,
        }
        listener._on_announcement(AMQPMessage(json.dumps(body).encode(), {}))
    shown = web.get("/api/state").json()["instances"]["announced"]
    assert [peer["instance"] for peer in shown] == ["ours"]
