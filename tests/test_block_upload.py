"""Block upload through the real daemon: every status code and message of start, files, finish and check,
validation of good blocks (ours and promtool's) and of damaged ones, and the validation concurrency limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mimird.tsdb.block import write_block
from mimird.tsdb.block.meta import new_ulid

PROMTOOL = shutil.which("promtool")
HOUR = 3600_000
T0 = 19675 * 24 * HOUR  # 2023-11-14T00:00:00Z
TENANT = {"X-Scope-OrgID": "up"}
ENABLED = "-compactor.block-upload-enabled=true"


def make_block(parent: Path, n_series: int = 10, samples: int = 240, start: int = T0, step: int = 15_000) -> Path:
    ts = np.arange(start, start + samples * step, step, dtype=np.int64)
    series = [((("__name__", "uploaded"), ("i", f"{i:05d}")), ts, np.arange(samples, dtype=np.float64) + i)
              for i in range(n_series)]
    parent.mkdir(parents=True, exist_ok=True)
    return parent / write_block(parent, series, start, int(ts[-1]) + 1, tenant="up", source="test")


def block_meta(block_dir: Path) -> dict:
    """meta.json with the thanos.files list a client such as mimirtool sends."""
    meta = json.loads((block_dir / "meta.json").read_text())
    files = [{"rel_path": p.relative_to(block_dir).as_posix(), "size_bytes": p.stat().st_size}
             for p in sorted(block_dir.rglob("*")) if p.is_file() and p.name not in ("meta.json", "tombstones")]
    meta.setdefault("thanos", {"labels": {}, "downsample": {"resolution": 0}, "source": "promtool"})
    meta["thanos"]["files"] = files + [{"rel_path": "meta.json"}]
    return meta


def start(d, ulid: str, meta: dict | bytes, headers=TENANT):
    body = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return d.post(f"/api/v1/upload/block/{ulid}/start", content=body, headers=headers)


def put_file(d, ulid: str, path: str, data: bytes):
    return d.post(f"/api/v1/upload/block/{ulid}/files", params={"path": path}, content=data, headers=TENANT)


def check(d, ulid: str):
    return d.get(f"/api/v1/upload/block/{ulid}/check", headers=TENANT)


def upload_files(d, ulid: str, block_dir: Path, meta: dict) -> None:
    for entry in meta["thanos"]["files"]:
        if entry["rel_path"] != "meta.json":
            resp = put_file(d, ulid, entry["rel_path"], (block_dir / entry["rel_path"]).read_bytes())
            assert resp.status_code == 200, resp.text


def wait_result(d, ulid: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check(d, ulid).json()
        if result["result"] not in ("validating", "uploading"):
            return result
        time.sleep(0.05)
    raise AssertionError(f"validation of {ulid} did not finish")


def assert_error(resp, status: int, message: str) -> None:
    assert (resp.status_code, resp.text) == (status, message + "\n")


def test_upload_is_off_by_default(start_daemon):
    d = start_daemon()
    ulid = new_ulid()
    assert_error(start(d, ulid, {}), 400, "block upload is disabled")
    assert_error(check(d, ulid), 400, "block upload is disabled")
    assert start(d, ulid, {}, headers={}).status_code == 401


def test_start_checks_the_meta(start_daemon, tmp_path):
    d = start_daemon(ENABLED)
    good = block_meta(make_block(tmp_path / "b"))
    ulid = new_ulid()
    assert_error(start(d, "not-a-ulid", good), 400, "invalid block ID")
    assert_error(start(d, ulid, b"{"), 400, "malformed request body")
    assert_error(start(d, ulid, b" " * (1024 * 1024 + 1)), 413,
                 "The block metadata was too large (maximum size allowed is 1048576 bytes)")

    def variant(**changes) -> dict:
        meta = json.loads(json.dumps(good))
        for key, value in changes.items():
            if key == "files":
                meta["thanos"]["files"] = value
            elif key == "labels":
                meta["thanos"]["labels"] = value
            elif key == "resolution":
                meta["thanos"]["downsample"]["resolution"] = value
            else:
                meta[key] = value
        return meta

    assert_error(start(d, ulid, variant(resolution=300000)), 400, "block contains downsampled data")
    assert_error(start(d, ulid, variant(labels={"foo": "bar"})), 400, "unsupported external label: foo")
    assert_error(start(d, ulid, variant(labels={"__compactor_shard_id__": "x"})), 400,
                 'invalid __compactor_shard_id__ external label: "x"')
    assert_error(start(d, ulid, variant(files=[])), 400, "missing thanos.files in block metadata")
    assert_error(start(d, ulid, variant(files=[{"rel_path": "../index", "size_bytes": 3}])), 400,
                 "file with invalid path: ../index")
    assert_error(start(d, ulid, variant(files=[{"rel_path": "index", "size_bytes": 0}])), 400,
                 "file with invalid size: index")
    assert_error(start(d, ulid, variant(version=2)), 400, "version must be 1")
    assert_error(start(d, ulid, variant(minTime=T0 + 10, maxTime=T0)), 400,
                 f"invalid minTime/maxTime: minTime={T0 + 10}, maxTime={T0}")
    future = int(time.time() * 1000) + 10 * HOUR
    resp = start(d, ulid, variant(minTime=future, maxTime=future + 1))
    assert resp.status_code == 400 and resp.text.startswith(
        f"block time(s) greater than the present: minTime={future} (")
    assert_error(start(d, ulid, variant(minTime=T0, maxTime=T0 + 25 * HOUR)), 422,
                 "block duration (25h0m0s) is larger than max configured compactor time range (24h0m0s)")
    assert_error(start(d, ulid, variant(minTime=T0 + 23 * HOUR, maxTime=T0 + 25 * HOUR)), 422,
                 "block time range crosses boundary of configured compactor time range (24h0m0s)")
    assert_error(check(d, ulid), 404, "block doesn't exist")
    # a good meta: stored sanitised as uploading-meta.json
    assert start(d, ulid, variant(labels={"__org_id__": "up", "__compactor_shard_id__": ""})).status_code == 200
    stored = json.loads((d.workdir / "data/blocks/up" / ulid / "uploading-meta.json").read_text())
    assert stored["ulid"] == ulid and stored["compaction"]["sources"] == [ulid]
    assert stored["thanos"]["source"] == "upload" and stored["thanos"]["labels"] == {}
    assert check(d, ulid).json() == {"result": "uploading"}


def test_retention_rejects_old_blocks(start_daemon, tmp_path):
    d = start_daemon(ENABLED, "-compactor.blocks-retention-period=30d")
    resp = start(d, new_ulid(), block_meta(make_block(tmp_path / "b")))
    assert_error(resp, 422, "block max time (2023-11-14 00:59:45.001 +0000 UTC) older than retention period")


def test_file_upload_rules_then_validation_and_completion(start_daemon, tmp_path):
    d = start_daemon(ENABLED)
    block_dir = make_block(tmp_path / "b")
    meta = block_meta(block_dir)
    ulid = new_ulid()
    index = (block_dir / "index").read_bytes()
    assert_error(put_file(d, ulid, "index", index), 404, "block upload not started")
    assert_error(d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT), 404, "block upload not started")
    assert start(d, ulid, meta).status_code == 200
    assert_error(d.post(f"/api/v1/upload/block/{ulid}/files", content=b"x", headers=TENANT), 400,
                 "missing or invalid file path")
    assert_error(put_file(d, ulid, "meta.json", b"{}"), 400, "meta.json is not allowed")
    assert_error(put_file(d, ulid, "../index", b"x"), 400, 'invalid path: "../index"')
    assert_error(put_file(d, ulid, "chunks/1", b"x"), 400, 'invalid path: "chunks/1"')
    assert_error(put_file(d, ulid, "index", b""), 400, "file cannot be empty")
    assert_error(put_file(d, ulid, "chunks/000009", b"x"), 400, "unexpected file")
    assert_error(put_file(d, ulid, "index", index[:-1]), 400, "file size doesn't match meta.json")
    upload_files(d, ulid, block_dir, meta)
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    assert wait_result(d, ulid) == {"result": "complete"}
    root = d.workdir / "data/blocks/up" / ulid
    assert sorted(p.name for p in root.iterdir()) == ["chunks", "index", "meta.json"]
    done = json.loads((root / "meta.json").read_text())
    assert done["ulid"] == ulid and done["thanos"]["source"] == "upload"
    for resp in (start(d, ulid, meta), put_file(d, ulid, "index", index),
                 d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT)):
        assert_error(resp, 409, "block already exists")
    blocks = d.get("/store-gateway/tenant/up/blocks", headers={"Accept": "application/json"}).json()
    assert [m["ulid"] for m in blocks["metas"]] == [ulid]


def test_damaged_block_fails_validation(start_daemon, tmp_path):
    d = start_daemon(ENABLED)
    block_dir = make_block(tmp_path / "b")
    meta = block_meta(block_dir)
    chunk = block_dir / "chunks" / "000001"
    data = bytearray(chunk.read_bytes())
    data[40] ^= 0xFF  # inside the first chunk's data: its CRC no longer matches
    chunk.write_bytes(bytes(data))
    ulid = new_ulid()
    assert start(d, ulid, meta).status_code == 200
    upload_files(d, ulid, block_dir, meta)
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    result = wait_result(d, ulid)
    assert result["result"] == "failed" and result["error"].startswith("error validating block:"), result
    assert "checksum" in result["error"]
    assert_error(start(d, ulid, meta), 400, "block validation failed")
    assert not (d.workdir / "data/blocks/up" / ulid / "meta.json").exists()

    # a file listed in meta.json but never uploaded
    ulid = new_ulid()
    assert start(d, ulid, meta).status_code == 200
    assert put_file(d, ulid, "index", (block_dir / "index").read_bytes()).status_code == 200
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    assert wait_result(d, ulid) == {"result": "failed", "error": "missing block file: chunks/000001"}


def test_validation_concurrency_limit(start_daemon, tmp_path):
    # Validations are held at a failpoint until the release file exists, so the first one is still in
    # progress during the requests below however fast the machine validates.
    release = tmp_path / "release"
    d = start_daemon(ENABLED, env={"MIMIRD_FAILPOINT": f"upload-during-validation:hold={release}"})
    ids = {}
    for name in ("first", "second"):
        block_dir = make_block(tmp_path / name)
        meta = block_meta(block_dir)
        ids[name] = new_ulid()
        assert start(d, ids[name], meta).status_code == 200
        upload_files(d, ids[name], block_dir, meta)
    assert d.post(f"/api/v1/upload/block/{ids['first']}/finish", headers=TENANT).status_code == 200
    resp = d.post(f"/api/v1/upload/block/{ids['second']}/finish", headers=TENANT)
    assert check(d, ids["first"]).json() == {"result": "validating"}
    assert_error(resp, 429, "too many block upload validations in progress, limit is 1")
    assert_error(d.post(f"/api/v1/upload/block/{ids['first']}/finish", headers=TENANT), 400,
                 "block validation in progress")
    release.touch()
    assert wait_result(d, ids["first"], timeout=60) == {"result": "complete"}
    assert d.post(f"/api/v1/upload/block/{ids['second']}/finish", headers=TENANT).status_code == 200
    assert wait_result(d, ids["second"]) == {"result": "complete"}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)")
def test_block_made_by_promtool_uploads(start_daemon, tmp_path):
    lines = []
    for i in range(5):
        lines.append(f"# TYPE from_promtool_{i} gauge")
        lines += [f'from_promtool_{i}{{job="x"}} {k * 1.5} {(T0 + k * 30_000) / 1000:.3f}' for k in range(200)]
    (tmp_path / "in.om").write_text("\n".join(lines) + "\n# EOF\n")
    out = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "in.om", "out"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d = start_daemon(ENABLED)
    for block_dir in sorted(p for p in (tmp_path / "out").iterdir() if p.is_dir()):
        meta = block_meta(block_dir)
        ulid = block_dir.name
        assert start(d, ulid, meta).status_code == 200, start(d, ulid, meta).text
        upload_files(d, ulid, block_dir, meta)
        assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
        assert wait_result(d, ulid) == {"result": "complete"}


def test_size_limit_and_validation_off(start_daemon, tmp_path):
    d = start_daemon(ENABLED, "-compactor.block-upload-max-block-size-bytes=1000",
                     "-compactor.block-upload-validation-enabled=false")
    block_dir = make_block(tmp_path / "b")
    meta = block_meta(block_dir)
    assert_error(start(d, new_ulid(), meta), 400, "block exceeds the maximum block size limit of 1000 bytes")
    small = make_block(tmp_path / "s", n_series=1, samples=10)
    meta = block_meta(small)
    ulid = new_ulid()
    assert start(d, ulid, meta).status_code == 200
    upload_files(d, ulid, small, meta)
    # without validation, finish completes the block at once
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    assert check(d, ulid).json() == {"result": "complete"}
