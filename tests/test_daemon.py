"""The real daemon on a loopback port: the all-services endpoints, tenancy, runtime config, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import httpx
import pytest
from ruamel.yaml import YAML


def yaml_load(text: str):
    return YAML(typ="safe").load(text)


def test_index_links_every_page(daemon):
    resp = daemon.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    for path in ("/services", "/ready", "/config", "/runtime_config", "/metrics", "/memberlist",
                 "/ingester/ring", "/store-gateway/ring", "/api/v1/status/buildinfo"):
        assert f'href="{path}"' in resp.text
        assert daemon.get(path).status_code == 200, path


def test_ready_and_services(daemon):
    resp = daemon.get("/ready")
    assert (resp.status_code, resp.text) == (200, "ready")
    services = daemon.get("/services", headers={"Accept": "application/json"}).json()["services"]
    names = [s["name"] for s in services]
    assert names == sorted(names)
    assert {"server", "runtime-config", "ring"} <= set(names)
    assert all(s["status"] == "Running" for s in services)
    assert "<td>Running</td>" in daemon.get("/services").text


def test_config_modes(daemon):
    full = yaml_load(daemon.get("/config").text)
    assert full["server"]["http_listen_port"] == daemon.port
    assert full["multitenancy_enabled"] is True
    diff = yaml_load(daemon.get("/config?mode=diff").text)
    assert diff == {"server": {"http_listen_port": daemon.port}, "runtime_config": {"file": "runtime.yaml"}}
    defaults = yaml_load(daemon.get("/config?mode=defaults").text)
    assert defaults["server"]["http_listen_port"] == 8080
    assert defaults["runtime_config"]["period"] == "10s"
    assert daemon.get("/config?mode=bogus").status_code == 400


def test_prometheus_status_endpoints(daemon):
    flags = daemon.get("/api/v1/status/flags").json()
    assert flags["status"] == "success"
    assert flags["data"]["server.http-listen-port"] == str(daemon.port)
    assert flags["data"]["auth.multitenancy-enabled"] == "true"
    config = daemon.get("/api/v1/status/config").json()
    assert yaml_load(config["data"]["yaml"])["server"]["http_listen_port"] == daemon.port
    for path in ("/api/v1/status/buildinfo", "/prometheus/api/v1/status/buildinfo",
                 "/alertmanager/api/v1/status/buildinfo"):
        body = daemon.get(path).json()
        assert body["status"] == "success" and body["data"]["version"]
        assert all(v in ("true", "false") for v in body["data"]["features"].values())


def test_metrics_exposition(daemon):
    daemon.get("/ready")
    daemon.get("/no/such/page")
    text = daemon.get("/metrics").text
    assert 'cortex_request_duration_seconds_bucket{le="0.005",method="GET",route="ready",status_code="200",ws="false"}' in text
    assert 'route="notfound",status_code="404"' in text
    assert "process_resident_memory_bytes" in text
    assert "cortex_build_info{" in text


def test_ring_pages(daemon):
    for ring in ("distributor", "ingester", "ruler", "compactor", "store-gateway", "query-scheduler",
                 "overrides-exporter", "multitenant_alertmanager"):
        page = daemon.get(f"/{ring}/ring")
        assert page.status_code == 200 and "ACTIVE" in page.text and "single member" in page.text
        data = daemon.get(f"/{ring}/ring", headers={"Accept": "application/json"}).json()
        [shard] = data["shards"]
        assert shard["state"] == "ACTIVE" and shard["address"].endswith(f":{daemon.port}")
        assert len(shard["tokens"]) == 128 and shard["tokens"] == sorted(shard["tokens"])
    resp = daemon.post("/ingester/ring", data={"forget": "someone"})
    assert resp.status_code == 302 and resp.headers["location"] == "#"
    assert "Tokens</h2>" in daemon.get("/ingester/ring?tokens=true").text


def test_memberlist_says_there_is_no_gossip(daemon):
    page = daemon.get("/memberlist")
    assert page.status_code == 200 and "no gossip" in page.text
    data = daemon.get("/memberlist", headers={"Accept": "application/json"}).json()
    assert data["gossip"] is False and len(data["members"]) == 1


def test_unbuilt_endpoints_are_404(daemon):
    # Components of later work are not registered at all: no fake answers.
    for path in ("/prometheus/api/v1/rules", "/api/v1/alerts", "/debug/pprof/heap"):
        assert daemon.get(path).status_code == 404


def test_wrong_method_is_405(daemon):
    resp = daemon.post("/ready")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"


@pytest.mark.parametrize("tenant,message", [
    (None, "no org id"),
    ("", "no org id"),
    ("../x", "tenant ID '../x' contains unsupported character '/'"),
    ("a/b", "tenant ID 'a/b' contains unsupported character '/'"),
    (".", "tenant ID is '.' or '..'"),
    ("..", "tenant ID is '.' or '..'"),
    ("x" * 151, "tenant ID is too long: max 150 characters"),
    ("tenant with space", "tenant ID 'tenant with space' contains unsupported character ' '"),
])
def test_tenant_validation(daemon, tenant, message):
    headers = {} if tenant is None else {"X-Scope-OrgID": tenant}
    resp = daemon.get("/api/v1/user_limits", headers=headers)
    assert resp.status_code == 401
    assert resp.text == message + "\n"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"


def test_user_limits(daemon):
    assert daemon.get("/api/v1/user_limits", headers={"X-Scope-OrgID": "x" * 150}).status_code == 200
    resp = daemon.get("/api/v1/user_limits", headers={"X-Scope-OrgID": "team-a"})
    assert resp.status_code == 200
    assert list(resp.json()) == [
        "compactor_blocks_retention_period_seconds", "ingestion_rate", "ingestion_burst_size",
        "ingestion_burst_factor", "max_global_series_per_user", "max_global_series_per_metric",
        "max_global_exemplars_per_user", "max_fetched_chunks_per_query", "max_fetched_series_per_query",
        "max_fetched_chunk_bytes_per_query", "ruler_max_rules_per_rule_group", "ruler_max_rule_groups_per_tenant"]
    assert resp.json()["ingestion_rate"] == 500
    other = daemon.get("/api/v1/user_limits", headers={"X-Scope-OrgID": "team-b"}).json()
    assert other["ingestion_rate"] == 10000 and other["max_global_series_per_user"] == 150000
    resp = daemon.get("/api/v1/user_limits", headers={"X-Scope-OrgID": "team-a|team-b"})
    assert resp.status_code == 422


def test_without_runtime_config_those_pages_are_404(start_daemon):
    d = start_daemon()
    assert d.get("/runtime_config").status_code == 404
    assert d.get("/api/v1/user_limits", headers={"X-Scope-OrgID": "t"}).status_code == 404


def test_multitenancy_disabled_uses_no_auth_tenant(start_daemon):
    d = start_daemon("-auth.multitenancy-enabled=false", "-auth.no-auth-tenant=solo",
                     "-runtime-config.file=rt.yaml", wait_ready=False)
    (d.workdir / "rt.yaml").write_text("overrides:\n  solo:\n    max_global_series_per_user: 7\n")
    d.wait_ready()
    resp = d.get("/api/v1/user_limits")
    assert resp.status_code == 200 and resp.json()["max_global_series_per_user"] == 7
    # the header is ignored entirely when multi-tenancy is off
    assert d.get("/api/v1/user_limits", headers={"X-Scope-OrgID": "../bad"}).json()["max_global_series_per_user"] == 7


def test_runtime_config_reload_and_bad_file_keeps_last_good(start_daemon):
    d = start_daemon("-runtime-config.file=rt.yaml", "-runtime-config.reload-period=100ms", wait_ready=False)
    rt = d.workdir / "rt.yaml"
    rt.write_text("overrides:\n  t1:\n    ingestion_rate: 1\n")
    d.wait_ready()
    headers = {"X-Scope-OrgID": "t1"}
    assert d.get("/api/v1/user_limits", headers=headers).json()["ingestion_rate"] == 1
    full = yaml_load(d.get("/runtime_config").text)
    assert full["overrides"]["t1"]["ingestion_rate"] == 1
    assert full["overrides"]["t1"]["max_global_series_per_user"] == 150000
    assert yaml_load(d.get("/runtime_config?mode=diff").text) == {"overrides": {"t1": {"ingestion_rate": 1}}}

    _replace_file(rt, "overrides:\n  t1:\n    ingestion_rate: 2\n    compactor_blocks_retention_period: 1w\n")
    _wait_for(lambda: d.get("/api/v1/user_limits", headers=headers).json()["ingestion_rate"] == 2)
    assert d.get("/api/v1/user_limits", headers=headers).json()["compactor_blocks_retention_period_seconds"] == 604800

    _replace_file(rt, "overrides:\n  t1:\n    no_such_limit: 3\n")
    _wait_for(lambda: "failed to load runtime config" in d.log())
    assert "no_such_limit" in d.log()
    assert d.get("/api/v1/user_limits", headers=headers).json()["ingestion_rate"] == 2
    _replace_file(rt, "overrides: [broken\n")
    time.sleep(0.4)
    assert d.get("/api/v1/user_limits", headers=headers).json()["ingestion_rate"] == 2
    assert d.get("/ready").status_code == 200


def test_runtime_config_missing_at_start_fails(start_daemon):
    d = start_daemon("-runtime-config.file=missing.yaml", wait_ready=False)
    assert d.proc.wait(20) == 1
    assert "failed to read runtime config" in d.log()


def _replace_file(path, text: str) -> None:
    """Swap the file's content in one rename: a reload between write_text's truncate and its write would
    read an empty file, which is a valid runtime config without overrides."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    staged.replace(path)


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(start_daemon, sig):
    d = start_daemon()
    assert d.stop(sig) == 0
    log = d.log()
    assert "received stop signal" in log and "mimird stopped" in log


def test_port_in_use_exits_1(start_daemon):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        d = start_daemon(f"-server.http-listen-port={port}", wait_ready=False)
        assert d.proc.wait(20) == 1
    assert "address already in use" in d.log().lower()


def test_sd_notify_ready_and_stopping(start_daemon, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(20)
        d = start_daemon(env={"NOTIFY_SOCKET": sock_path})
        assert sock.recv(256) == b"READY=1"
        assert d.get("/ready").status_code == 200
        d.proc.send_signal(signal.SIGTERM)
        assert sock.recv(256) == b"STOPPING=1"
        assert d.proc.wait(20) == 0


def test_systemd_unit_is_sound():
    from conftest import REPO

    unit = (REPO / "systemd" / "mimird.service").read_text()
    for needle in ("Type=notify", "ExecStart=", "Restart=on-failure", "LimitNOFILE=", "TimeoutStopSec=",
                   "ProtectSystem=strict", "ReadWritePaths=", "NoNewPrivileges=yes", "User=mimird",
                   "KillSignal=SIGTERM"):
        assert needle in unit, needle
    assert os.path.exists(REPO / "docs" / "operations.md")


def test_logs_are_logfmt(start_daemon):
    d = start_daemon("-log.level=debug")
    d.get("/ready")
    d.stop()
    lines = [line for line in d.log().splitlines() if line.startswith("ts=")]
    assert any('msg="http request"' in line and "uri=/ready" in line and "level=debug" in line for line in lines)
    d2 = start_daemon("-log.format=json")
    d2.stop()
    assert json.loads(d2.log().splitlines()[0])["level"] == "info"


def test_httpx_concurrent_clients(daemon):
    with httpx.Client() as client:
        for _ in range(50):
            assert client.get(daemon.url + "/ready").status_code == 200
