"""Long-term storage end to end: a promtool block uploaded and then queried sample for sample, damaged
uploads refused, and crashes during compaction and during upload validation leaving the bucket
consistent and the query answers unchanged."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import remote_write
from mimird.tsdb.block import BlockReader
from mimird.tsdb.block.meta import new_ulid
from test_block_upload import block_meta, check, put_file, start, upload_files, wait_result

PROMTOOL = shutil.which("promtool")
HOUR = 3600_000
T0 = 19675 * 24 * HOUR  # 2023-11-14T00:00:00Z: older than -querier.query-ingesters-within, so only the store answers
TENANT = {"X-Scope-OrgID": "up"}
STEP_MS = 30_000
SYNC = "-blocks-storage.bucket-store.sync-interval=200ms"


def runtime_config(tmp_path: Path) -> str:
    """A runtime config that turns block upload on for tenant `up` only."""
    path = tmp_path / "runtime.yaml"
    path.write_text("overrides:\n  up:\n    compactor_block_upload_enabled: true\n")
    return f"-runtime-config.file={path}"


def query_range(d, tenant: str, query: str, start_ms: int, end_ms: int, step_ms: int = STEP_MS) -> dict:
    """{frozenset(metric labels): [(t_ms, value), ...]} of a range query."""
    resp = d.get("/prometheus/api/v1/query_range", headers={"X-Scope-OrgID": tenant},
                 params={"query": query, "start": start_ms / 1000, "end": end_ms / 1000, "step": step_ms / 1000})
    assert resp.status_code == 200, resp.text
    return {frozenset(r["metric"].items()): [(round(t * 1000), float(v)) for t, v in r["values"]]
            for r in resp.json()["data"]["result"]}


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def openmetrics_input(n_series: int, n_samples: int) -> tuple[str, dict]:
    """OpenMetrics text of 2023 data with awkward float values, and the samples it holds."""
    rng = random.Random(7)
    families: dict[str, list[str]] = {}
    expected = {}
    for i in range(n_series):
        name = f"uploaded_{i % 3}"
        labels = {"__name__": name, "job": "up", "instance": f"i{i}"}
        samples = []
        for k in range(n_samples):
            value = rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 1e-300, float(rng.randint(-5, 5)), 0.1 * k])
            samples.append((T0 + k * STEP_MS, value))
        expected[frozenset(labels.items())] = samples
        # OpenMetrics wants a metric family's lines together, under one TYPE line
        families.setdefault(name, []).extend(f'{name}{{job="up",instance="i{i}"}} {v!r} {t / 1000:.3f}'
                                             for t, v in samples)
    lines = []
    for name, samples in sorted(families.items()):
        lines += [f"# TYPE {name} gauge", *samples]
    return "\n".join(lines) + "\n# EOF\n", expected


def promtool_blocks(tmp_path: Path, text: str) -> list[Path]:
    (tmp_path / "in.om").write_text(text)
    out = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "in.om", "out"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return sorted(p for p in (tmp_path / "out").iterdir() if p.is_dir())


def upload(d, block_dir: Path, ulid: str | None = None) -> dict:
    """Start, send every file, finish and wait; the final check result."""
    ulid = ulid or block_dir.name
    meta = block_meta(block_dir)
    resp = start(d, ulid, meta)
    assert resp.status_code == 200, resp.text
    upload_files(d, ulid, block_dir, meta)
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    return wait_result(d, ulid)


@pytest.mark.slow
@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)")
def test_promtool_block_uploaded_then_queried_sample_for_sample(start_daemon, tmp_path):
    text, expected = openmetrics_input(n_series=12, n_samples=600)  # 5h: promtool cuts 2h blocks
    blocks = promtool_blocks(tmp_path, text)
    assert len(blocks) >= 2
    d = start_daemon(runtime_config(tmp_path), SYNC)
    # the runtime config enables upload for `up` only
    other = start(d, new_ulid(), block_meta(blocks[0]), headers={"X-Scope-OrgID": "other"})
    assert (other.status_code, other.text) == (400, "block upload is disabled\n")
    for block_dir in blocks:
        assert upload(d, block_dir) == {"result": "complete"}
    end = T0 + 599 * STEP_MS

    def everything():
        got = query_range(d, "up", '{job="up"}', T0, end)
        # every block synced: each series reaches its last sample
        return got if all(got.get(k, [(0, 0)])[-1][0] == end for k in expected) else None

    got = wait_for(everything, what="the uploaded blocks to be queryable")
    assert got == expected
    # the same through a second, differently aligned step (every other sample)
    halves = query_range(d, "up", '{job="up"}', T0, end, 2 * STEP_MS)
    assert halves == {labels: samples[::2] for labels, samples in expected.items()}


def test_damaged_uploads_are_refused(start_daemon, tmp_path):
    from test_block_upload import make_block

    d = start_daemon(runtime_config(tmp_path))
    block_dir = make_block(tmp_path / "b", n_series=50, samples=120)
    meta = block_meta(block_dir)
    # a corrupted index: bytes in the middle of the series section overwritten
    index = bytearray((block_dir / "index").read_bytes())
    middle = len(index) // 3
    index[middle:middle + 16] = b"\xff" * 16
    ulid = new_ulid()
    assert start(d, ulid, meta).status_code == 200
    assert put_file(d, ulid, "index", bytes(index)).status_code == 200
    assert put_file(d, ulid, "chunks/000001", (block_dir / "chunks/000001").read_bytes()).status_code == 200
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    result = wait_result(d, ulid)
    assert result["result"] == "failed" and result["error"].startswith("error validating block:"), result
    assert not (d.workdir / "data/blocks/up" / ulid / "meta.json").exists()
    # a chunk file listed but never sent
    ulid = new_ulid()
    assert start(d, ulid, meta).status_code == 200
    assert put_file(d, ulid, "index", (block_dir / "index").read_bytes()).status_code == 200
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    assert wait_result(d, ulid) == {"result": "failed", "error": "missing block file: chunks/000001"}
    # paths: over-long chunk names and escapes, in meta.json and in the files call
    ulid = new_ulid()
    for bad in ("chunks/0000001", "../index", "chunks/../index", "index/" + "x" * 300):
        bad_meta = json.loads(json.dumps(meta))
        bad_meta["thanos"]["files"].append({"rel_path": bad, "size_bytes": 1})
        resp = start(d, ulid, bad_meta)
        assert (resp.status_code, resp.text) == (400, f"file with invalid path: {bad}\n")
    assert start(d, ulid, meta).status_code == 200
    for bad in ("chunks/0000001", "../index", "chunks/../../../etc/passwd", "chunks/00000" + "1" * 300):
        resp = put_file(d, ulid, bad, b"x")
        assert (resp.status_code, resp.text) == (400, f"invalid path: {json.dumps(bad)}\n")
    assert check(d, ulid).json() == {"result": "uploading"}
    assert sorted(p.name for p in (d.workdir / "data/blocks/up" / ulid).iterdir()) == ["uploading-meta.json"]


def payload(n_series: int, start_ms: int, end_ms: int, step: int = 120_000) -> dict:
    return {(("__name__", "crash_me"), ("instance", f"i{i}")):
            [(t, float(i * 1000 + (t - start_ms) // step) + 0.25) for t in range(start_ms, end_ms, step)]
            for i in range(n_series)}


def bucket_consistent(root: Path) -> dict[str, dict]:
    """Assert every visible block (one with meta.json) in a tenant's bucket dir is complete and readable,
    and every mark names an existing block; return the visible blocks' metas."""
    metas = {}
    for block in root.iterdir():
        if not block.is_dir() or block.name == "markers":
            continue
        if not (block / "meta.json").exists():
            continue
        meta = json.loads((block / "meta.json").read_text())
        for entry in meta.get("thanos", {}).get("files", []):
            if entry["rel_path"] != "meta.json":
                assert (block / entry["rel_path"]).stat().st_size == entry["size_bytes"], (block, entry)
        with BlockReader(block) as reader:
            assert sum(1 for _ in reader.iter_series()) == meta["stats"]["numSeries"]
        metas[block.name] = meta
    for mark in (root / "markers").glob("*-deletion-mark.json") if (root / "markers").exists() else []:
        assert mark.name.split("-")[0] in metas, mark
    return metas


@pytest.mark.slow
@pytest.mark.parametrize("point", ["compactor-before-upload", "compactor-after-upload"])
def test_crash_during_compaction_keeps_bucket_and_answers(start_daemon, tmp_path, point):
    quiet = ("-compactor.compaction-interval=1h", SYNC, "-compactor.deletion-delay=1h")
    d = start_daemon(*quiet)
    series = payload(8, T0, T0 + 13 * HOUR)
    assert remote_write(d, "t", series).status_code == 200
    assert d.post("/ingester/flush?wait=true").status_code == 204
    end = T0 + 13 * HOUR - 120_000

    def answer():
        return query_range(d, "t", "crash_me", T0, end, 120_000)

    before = wait_for(lambda: (a := answer()) and all(v[-1][0] == end for v in a.values()) and a,
                      what="flushed blocks queryable")
    assert before == {frozenset(labels): samples for labels, samples in series.items()}
    root = d.workdir / "data" / "blocks" / "t"
    assert sorted(m["compaction"]["level"] for m in bucket_consistent(root).values()) == [1] * 7
    d.stop()
    # the compactor runs at start-up and dies at the failpoint in the middle of the 12h job
    d.args = [a for a in d.args if not a.startswith("-compactor.compaction-interval")]
    d.args += ["-compactor.compaction-interval=300ms", "-compactor.first-level-compaction-wait-period=0s"]
    d.env["MIMIRD_FAILPOINT"] = point
    d.start(wait_ready=False)
    assert d.proc.wait(30) == 137
    levels = sorted(m["compaction"]["level"] for m in bucket_consistent(root).values())
    assert levels == ([1] * 7 if point == "compactor-before-upload" else [1] * 7 + [2])
    assert not list(root.glob("*/deletion-mark.json"))
    del d.env["MIMIRD_FAILPOINT"]
    d.start()
    assert answer() == before
    metas = wait_for(lambda: (m := bucket_consistent(root)) and len(list(root.glob("*/deletion-mark.json"))) == 6
                     and m, what="compaction finished after restart")
    assert sorted(m["compaction"]["level"] for m in metas.values()) == [1] * 7 + [2]
    wait_for(lambda: answer() == before, what="same answer after compaction")
    assert answer() == before


def test_crash_during_upload_validation(start_daemon, tmp_path):
    from test_block_upload import make_block

    block_dir = make_block(tmp_path / "b", n_series=5, samples=120)
    d = start_daemon(runtime_config(tmp_path), SYNC, env={"MIMIRD_FAILPOINT": "upload-during-validation"})
    ulid = new_ulid()
    meta = block_meta(block_dir)
    assert start(d, ulid, meta).status_code == 200
    upload_files(d, ulid, block_dir, meta)
    try:
        d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT)
    except Exception:
        pass  # the daemon may die before answering
    assert d.proc.wait(30) == 137
    root = d.workdir / "data" / "blocks" / "up"
    assert sorted(p.name for p in (root / ulid).iterdir()) == ["chunks", "index", "uploading-meta.json",
                                                               "validation.json"]
    del d.env["MIMIRD_FAILPOINT"]
    d.start()
    # not visible: no meta.json, nothing loaded, nothing answered
    assert bucket_consistent(root) == {}
    assert query_range(d, "up", "uploaded", T0, T0 + HOUR) == {}
    # the dead validation's heartbeat holds the block in "validating" until it is stale (5m)
    assert check(d, ulid).json() == {"result": "validating"}
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).text == "block validation in progress\n"
    (root / ulid / "validation.json").write_text(json.dumps({"LastUpdate": int(time.time() * 1000) - 301_000,
                                                            "Error": ""}))
    assert check(d, ulid).json() == {"result": "uploading"}
    assert d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT).status_code == 200
    assert wait_result(d, ulid) == {"result": "complete"}
    assert sorted(p.name for p in (root / ulid).iterdir()) == ["chunks", "index", "meta.json"]
    assert list(bucket_consistent(root)) == [ulid]
    got = wait_for(lambda: query_range(d, "up", "uploaded", T0, T0 + 119 * 15_000, 15_000), what="block queryable")
    assert len(got) == 5 and all(len(v) == 120 for v in got.values())
    assert not list((d.workdir / "data").rglob("upload-validation/*"))


def test_crash_between_meta_and_cleanup_of_an_upload(start_daemon, tmp_path):
    from test_block_upload import make_block

    block_dir = make_block(tmp_path / "b", n_series=5, samples=120)
    d = start_daemon(runtime_config(tmp_path), SYNC, "-compactor.cleanup-interval=300ms",
                     env={"MIMIRD_FAILPOINT": "upload-after-meta"})
    ulid = new_ulid()
    meta = block_meta(block_dir)
    assert start(d, ulid, meta).status_code == 200
    upload_files(d, ulid, block_dir, meta)
    try:
        d.post(f"/api/v1/upload/block/{ulid}/finish", headers=TENANT)
    except Exception:
        pass
    assert d.proc.wait(30) == 137
    del d.env["MIMIRD_FAILPOINT"]
    d.start()
    # meta.json went up last of the block's own files: the block is complete, the leftovers harmless
    root = d.workdir / "data" / "blocks" / "up"
    assert list(bucket_consistent(root)) == [ulid]
    assert check(d, ulid).json() == {"result": "complete"}
    assert start(d, ulid, meta).text == "block already exists\n"
    got = wait_for(lambda: query_range(d, "up", "uploaded", T0, T0 + 119 * 15_000, 15_000), what="block queryable")
    assert len(got) == 5 and all(len(v) == 120 for v in got.values())
    # the bucket index, which the crash left without the block, is rewritten by the next cleanup
    index = root / "bucket-index.json.gz"
    wait_for(lambda: index.exists() and [b["block_id"] for b in json.loads(gzip.decompress(index.read_bytes()))["blocks"]]
             == [ulid], what="bucket index updated")
