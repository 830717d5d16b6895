"""Config-file keys of living services: stop_timeout, announce, announce_period, [trace]."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tavrida2 import exceptions, server, tracing

DEPLOY = Path(__file__).resolve().parents[2] / "samples" / "deploy"


def config_with(tmp_path: Path, server_keys: str, extra: str = "") -> Path:
    for name in ("hello_world.py", "services.ds"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    text = (DEPLOY / "hello.ini").read_text()
    text = text.replace("[server]\n", f"[server]\n{server_keys}\n", 1) + extra
    path = tmp_path / "hello.ini"
    path.write_text(text)
    return path


def test_stop_timeout_announce_period_and_a_trace_store_come_from_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TAVRIDA2_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    path = config_with(
        tmp_path,
        "stop_timeout = 7\nannounce_period = 2.5",
        f"\n[trace]\nsize = 50\ndb = sqlite:///{tmp_path / 'trace.db'}\n",
    )
    srv = server.CLIServer(path)
    try:
        assert srv.stop_timeout == 7.0
        assert srv.announce_period == 2.5
        assert isinstance(srv.tracer, tracing.TraceStore)
    finally:
        srv.tracer.close()


def test_announce_false_turns_announcements_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TAVRIDA2_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    srv = server.CLIServer(config_with(tmp_path, "announce = false"))
    assert srv.announce_period is None and srv.tracer is None
    assert "tavrida2.heartbeat" not in [e.name for e in srv.topology().exchanges]


def test_on_the_memory_broker_servers_do_not_announce_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("TAVRIDA2_URL", "memory://living-config")
    assert server.CLIServer(config_with(tmp_path, "")).announce_period is None
    told = server.CLIServer(config_with(tmp_path, "announce_period = 1"))
    assert told.announce_period == 1.0


@pytest.mark.parametrize(
    ("keys", "complaint"),
    [
        ("stop_timeout = 0", "stop_timeout"),
        ("announce_period = -1", "announce_period"),
        ("announce = maybe", "announce"),
    ],
)
def test_bad_values_are_one_paragraph_errors(tmp_path, keys, complaint):
    with pytest.raises(exceptions.ConfigError, match=complaint):
        server.CLIServer(config_with(tmp_path, keys))


def test_a_trace_database_that_cannot_be_used_names_the_key(tmp_path):
    path = config_with(tmp_path, "", "\n[trace]\ndb = nosuchdialect://x\n")
    with pytest.raises(exceptions.ConfigError, match=r"\[trace\].*db"):
        server.CLIServer(path)
