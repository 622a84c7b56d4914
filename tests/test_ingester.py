"""The ingester through the real daemon: remote write in, WAL replay, blocks that promtool reads,
crash safety, and the ingester's admin endpoints."""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import snappy

from conftest import remote_write

PROMTOOL = shutil.which("promtool")
HOUR = 3600_000
T0 = 1_700_000_000_000  # inside a 2h block range


def series_payload(n_series: int, start: int, count: int, step: int = 15_000) -> dict:
    return {(("__name__", "test_metric"), ("instance", f"i{i}"), ("job", "node")):
            [(start + k * step, float(i * 1000 + k)) for k in range(count)] for i in range(n_series)}


def bucket_blocks(daemon, tenant: str) -> list[Path]:
    root = daemon.workdir / "data" / "blocks" / tenant
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "meta.json").exists()) if root.exists() else []


def promtool_dump(blocks: list[Path], tmp_path: Path) -> dict[str, list[tuple[int, float]]]:
    db = tmp_path / "promdb"
    shutil.rmtree(db, ignore_errors=True)
    (db / "wal").mkdir(parents=True)
    for block in blocks:
        shutil.copytree(block, db / block.name)
    out = subprocess.run([PROMTOOL, "tsdb", "dump", "--min-time=0", f"--max-time={2**62}", str(db)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    samples: dict[str, list[tuple[int, float]]] = {}
    for line in out.stdout.splitlines():
        labels_text, value_text, ts_text = line.rsplit(" ", 2)
        samples.setdefault(labels_text, []).append((int(ts_text), float(value_text)))
    return samples


def expected_dump(payload: dict) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for labels, samples in payload.items():
        key = "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"
        out.setdefault(key, []).extend(samples)
    return {k: sorted(v) for k, v in out.items()}


def test_push_errors(start_daemon):
    d = start_daemon()
    labels = (("__name__", "up"), ("job", "a"))
    assert remote_write(d, None, {labels: [(T0, 1.0)]}).status_code == 401
    resp = d.post("/api/v1/push", content=b"not snappy", headers={"X-Scope-OrgID": "t"})
    assert resp.status_code == 400 and "snappy" in resp.text
    resp = d.post("/api/v1/push", content=snappy.compress(b"\xff\xff\xff"), headers={"X-Scope-OrgID": "t"})
    assert resp.status_code == 400
    assert remote_write(d, "t", {labels: [(T0, 1.0), (T0 + 1000, 2.0)]}).status_code == 200
    resp = remote_write(d, "t", {labels: [(T0 + 500, 5.0)]})
    assert resp.status_code == 400
    assert resp.text.startswith("failed pushing to ingester ")
    assert "user=t: the sample has been rejected because another sample with a more recent timestamp" in resp.text
    resp = remote_write(d, "t", {labels: [(T0 + 1000, 3.0)]})
    assert resp.status_code == 400 and "(err-mimir-sample-duplicate-timestamp)" in resp.text
    resp = remote_write(d, "t", {(("__name__", "x"), ("a", "1"), ("a", "2")): [(T0, 1.0)]})
    assert resp.status_code == 400 and "(err-mimir-duplicate-label-names)" in resp.text
    assert d.get("/ready").status_code == 200


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)")
def test_flush_ships_blocks_that_promtool_reads(start_daemon, tmp_path):
    d = start_daemon()
    payload = series_payload(50, T0, 300)  # 75 minutes at 15s, several chunks per series
    for start in range(0, 300, 100):
        part = {k: v[start:start + 100] for k, v in payload.items()}
        assert remote_write(d, "team-a", part).status_code == 200
    assert d.post("/ingester/flush?wait=true&tenant=team-a").status_code == 204
    blocks = bucket_blocks(d, "team-a")
    assert blocks, "flush shipped no block"
    meta = json.loads((blocks[0] / "meta.json").read_text())
    assert meta["thanos"]["labels"] == {"__org_id__": "team-a"} and meta["thanos"]["source"] == "ingester"
    index = json.loads(gzip.decompress((d.workdir / "data/blocks/team-a/bucket-index.json.gz").read_bytes()))
    assert {b["block_id"] for b in index["blocks"]} == {b.name for b in blocks}
    analyze = subprocess.run([PROMTOOL, "tsdb", "analyze", str(blocks[0].parent), blocks[0].name],
                             capture_output=True, text=True, timeout=120)
    assert analyze.returncode == 0, analyze.stderr
    assert promtool_dump(blocks, tmp_path) == expected_dump(payload)
    page = d.get("/ingester/tsdb/team-a", headers={"Accept": "application/json"}).json()
    assert page["head"]["series"] == 0 and all(b["uploaded"] for b in page["blocks"])


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)")
def test_wal_replay_after_sigkill_keeps_every_acknowledged_sample(start_daemon, tmp_path):
    d = start_daemon()
    payload = series_payload(20, T0, 40)
    acked = {}
    for k in range(40):
        part = {labels: [samples[k]] for labels, samples in payload.items()}
        assert remote_write(d, "t", part).status_code == 200
        for labels, samples in part.items():
            acked.setdefault(labels, []).extend(samples)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.start()
    # a resend of the last batch after the crash is harmless
    part = {labels: [samples[-1]] for labels, samples in payload.items()}
    assert remote_write(d, "t", part).status_code == 200
    page = d.get("/ingester/tsdb/t", headers={"Accept": "application/json"}).json()
    assert page["head"]["series"] == 20
    assert d.post("/ingester/flush?wait=true").status_code == 204
    assert promtool_dump(bucket_blocks(d, "t"), tmp_path) == expected_dump(acked)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)")
@pytest.mark.parametrize("point", ["during-block-write", "after-block-write", "after-checkpoint", "after-upload"])
def test_crash_while_cutting_blocks_loses_and_doubles_nothing(start_daemon, tmp_path, point):
    d = start_daemon(env={"MIMIRD_FAILPOINT": point})
    first = series_payload(10, T0, 20)
    second = series_payload(10, T0 + 3 * HOUR, 20)  # a later block range: the first becomes cuttable
    assert remote_write(d, "t", first).status_code == 200
    assert remote_write(d, "t", second).status_code == 200
    with pytest.raises(httpx.HTTPError):
        d.post("/ingester/flush?wait=true")  # the failpoint kills the daemon mid-flush
    assert d.proc.wait(30) == 137
    d.env.pop("MIMIRD_FAILPOINT")
    d.start()
    assert d.post("/ingester/flush?wait=true").status_code == 204
    everything = {labels: first[labels] + second.get(labels, []) for labels in first}
    local = sorted(p for p in (d.workdir / "data/tsdb/t").iterdir() if (p / "meta.json").exists())
    assert not [p for p in (d.workdir / "data/tsdb/t").iterdir() if p.name.endswith(".tmp")]
    assert promtool_dump(local, tmp_path) == expected_dump(everything)
    assert {p.name for p in bucket_blocks(d, "t")} == {p.name for p in local}


def test_sigterm_flushes_when_prepare_shutdown_is_set(start_daemon):
    d = start_daemon()
    assert d.get("/ingester/prepare-shutdown").text == "unset\n"
    assert remote_write(d, "t", series_payload(3, T0, 5)).status_code == 200
    assert d.post("/ingester/prepare-shutdown").status_code == 204
    assert d.get("/ingester/prepare-shutdown").text == "set\n"
    assert d.stop() == 0
    assert bucket_blocks(d, "t")
    d.start()  # the marker survives a restart
    assert d.get("/ingester/prepare-shutdown").text == "set\n"
    assert d.request("DELETE", "/ingester/prepare-shutdown").status_code == 204
    assert d.get("/ingester/prepare-shutdown").text == "unset\n"


def test_sigterm_without_flush_keeps_data_in_the_wal(start_daemon):
    d = start_daemon()
    assert remote_write(d, "t", series_payload(3, T0, 5)).status_code == 200
    assert d.stop() == 0
    assert not bucket_blocks(d, "t")
    d.start()
    assert d.get("/ingester/tsdb/t", headers={"Accept": "application/json"}).json()["head"]["series"] == 3


def test_shutdown_endpoint(start_daemon):
    d = start_daemon()
    assert remote_write(d, "t", series_payload(2, T0, 5)).status_code == 200
    assert d.post("/ingester/shutdown").status_code == 204
    assert bucket_blocks(d, "t")
    ready = d.get("/ready")
    assert ready.status_code == 503 and "ingester: Terminated" in ready.text
    assert remote_write(d, "t", series_payload(1, T0 + HOUR, 1)).status_code == 503
    assert d.post("/ingester/flush").status_code == 503


def test_read_only_mode_refuses_writes(start_daemon):
    d = start_daemon()
    assert d.get("/ingester/prepare-instance-ring-downscale").json() == {"timestamp": 0}
    stamp = d.post("/ingester/prepare-instance-ring-downscale").json()["timestamp"]
    assert stamp > 0
    assert d.post("/ingester/prepare-instance-ring-downscale").json()["timestamp"] == stamp
    resp = remote_write(d, "t", series_payload(1, T0, 1))
    assert resp.status_code == 503 and "read-only" in resp.text
    assert d.request("DELETE", "/ingester/prepare-instance-ring-downscale").json() == {"timestamp": 0}
    assert remote_write(d, "t", series_payload(1, T0, 1)).status_code == 200


def test_admin_endpoints(start_daemon):
    d = start_daemon()
    assert d.get("/ingester/prepare-partition-downscale").status_code == 405
    assert d.get("/ingester/unregister-on-shutdown").json() == {"unregister": True}
    assert d.request("PUT", "/ingester/unregister-on-shutdown", json={"unregister": False}).json() == {"unregister": False}
    assert d.request("PUT", "/ingester/unregister-on-shutdown", content=b"{}").status_code == 400
    assert d.request("DELETE", "/ingester/unregister-on-shutdown").json() == {"unregister": True}
    assert d.get("/ingester/tsdb/nobody").text == "TSDB not found for tenant nobody\n"
    assert d.get("/ingester/tsdb_metrics", headers={"X-Scope-OrgID": "t"}).status_code == 404
    assert d.get("/ingester/tsdb_metrics").status_code == 401
    assert remote_write(d, "t", series_payload(4, T0, 3)).status_code == 200
    metrics = d.get("/ingester/tsdb_metrics", headers={"X-Scope-OrgID": "t"}).text
    assert "prometheus_tsdb_head_series 4" in metrics
    assert 'prometheus_tsdb_head_samples_appended_total{type="float"} 12' in metrics
    tenants = d.get("/ingester/tenants", headers={"Accept": "application/json"}).json()
    assert [t["Tenant"] for t in tenants["Tenants"]] == ["t"]
    assert 'href="tsdb/t"' in d.get("/ingester/tenants").text
    assert "Number of series: 4" in d.get("/ingester/tsdb/t").text
