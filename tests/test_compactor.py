"""The compactor through the real daemon (short intervals): 2h blocks merged into a 12h block that reads
back identically (also by promtool), de-duplication of overlapping blocks, deletion marks and the
deletion delay, retention, the planner, and the compactor pages."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import remote_write
from mimird.compactor.planner import plan_jobs
from mimird.tsdb.block import BlockReader, write_block

PROMTOOL = shutil.which("promtool")
HOUR = 3600_000
DAY = 24 * HOUR
T0 = 19675 * DAY  # 2023-11-14T00:00:00Z, aligned to 24h
FAST = ("-compactor.compaction-interval=500ms", "-compactor.cleanup-interval=500ms",
        "-compactor.first-level-compaction-wait-period=0s", "-blocks-storage.bucket-store.sync-interval=500ms")


def payload(n_series: int, start: int, end: int, step: int = 60_000, offset: float = 0.0) -> dict:
    return {(("__name__", "compact_me"), ("instance", f"i{i}")):
            [(t, float(i * 100000 + (t - start) // step) + offset) for t in range(start, end, step)]
            for i in range(n_series)}


def bucket_metas(daemon, tenant: str) -> dict[str, dict]:
    root = daemon.workdir / "data" / "blocks" / tenant
    if not root.exists():
        return {}
    return {p.name: json.loads((p / "meta.json").read_text()) for p in root.iterdir()
            if p.is_dir() and (p / "meta.json").exists()}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def read_all(block_dirs: list[Path]) -> dict:
    """Every series' samples over the given blocks (duplicates dropped), as {labels: [(t, v), ...]}."""
    out: dict = {}
    for block_dir in block_dirs:
        with BlockReader(block_dir) as reader:
            for ref, _, _ in reader.iter_series():
                labels, ts, vals = reader.series_samples(ref)
                out.setdefault(labels, {}).update(zip(ts.tolist(), vals.tolist(), strict=True))
    return {labels: sorted(samples.items()) for labels, samples in out.items()}


def as_expected(series: dict) -> dict:
    return {tuple(labels): sorted(samples) for labels, samples in series.items()}


def test_planner_groups_aligned_ranges():
    class B:
        def __init__(self, ulid, mint, maxt):
            self.ulid, self.min_time, self.max_time = ulid, mint, maxt

    ranges = [2 * HOUR, 12 * HOUR, 24 * HOUR]
    twos = [B(f"b{i:02d}", T0 + i * 2 * HOUR, T0 + (i + 1) * 2 * HOUR) for i in range(7)]
    jobs = plan_jobs(twos, ranges)
    assert [(j.range_start, j.range_end, [b.ulid for b in j.blocks]) for j in jobs] == \
        [(T0, T0 + 12 * HOUR, [f"b{i:02d}" for i in range(6)])]
    # the newest range is not compacted before it is full or over
    assert plan_jobs(twos[:5], ranges) == []
    # two overlapping 2h blocks are merged in their 2h range first
    dup = [B("x", T0, T0 + 2 * HOUR), B("y", T0, T0 + 2 * HOUR), B("z", T0 + 2 * HOUR, T0 + 3 * HOUR)]
    assert [[b.ulid for b in j.blocks] for j in plan_jobs(dup, ranges)] == [["x", "y"]]
    # 12h blocks become a 24h block; a block crossing its range end is in no group
    halves = [B("h1", T0, T0 + 12 * HOUR), B("h2", T0 + 12 * HOUR, T0 + DAY), B("c", T0 + DAY - HOUR, T0 + DAY + HOUR)]
    assert [[b.ulid for b in j.blocks] for j in plan_jobs(halves, ranges)] == [["h1", "h2"]]


def test_2h_blocks_compact_into_a_12h_block_that_reads_back_identically(start_daemon, tmp_path):
    d = start_daemon(*FAST, "-compactor.deletion-delay=2s")
    series = payload(20, T0, T0 + 13 * HOUR)
    assert remote_write(d, "t1", series).status_code == 200
    assert d.post("/ingester/flush?wait=true&tenant=t1").status_code == 204

    def compacted():
        metas = bucket_metas(d, "t1")
        big = [m for m in metas.values() if m["maxTime"] - m["minTime"] == 12 * HOUR]
        return (big[0], metas) if big else None

    big, metas = wait_for(compacted, what="a 12h block")
    assert big["minTime"] == T0 and big["compaction"]["level"] == 2 and big["thanos"]["source"] == "compactor"
    assert len(big["compaction"]["sources"]) == 6 and len(big["compaction"]["parents"]) == 6
    assert big["thanos"]["labels"] == {"__org_id__": "t1"}
    root = d.workdir / "data" / "blocks" / "t1"
    # the sources are marked (block mark and the global marker), then deleted after the delay

    def cleaned_up():
        index = json.loads(gzip.decompress((root / "bucket-index.json.gz").read_bytes()))
        return (all(not (root / s).exists() for s in big["compaction"]["sources"])
                and not any((root / "markers").glob("*-deletion-mark.json"))
                and len(index["blocks"]) == 2)

    wait_for(cleaned_up, what="sources, their markers and index entries deleted")
    remaining = sorted(bucket_metas(d, "t1"))
    assert len(remaining) == 2 and big["ulid"] in remaining
    assert read_all([root / u for u in remaining]) == as_expected(series)
    index = json.loads(gzip.decompress((root / "bucket-index.json.gz").read_bytes()))
    assert sorted(b["block_id"] for b in index["blocks"]) == remaining
    # the pages
    tenants = d.get("/compactor/tenants", headers={"Accept": "application/json"}).json()
    assert tenants["tenants"] == ["t1"]
    jobs = d.get("/compactor/tenant/t1/planned_jobs", headers={"Accept": "application/json"}).json()
    assert jobs["tenant"] == "t1" and jobs["jobs"] == [] and jobs["merge_jobs_count"] == 0
    assert d.get("/compactor/tenant/t1/planned_jobs").headers["content-type"].startswith("text/html")
    assert d.get("/compactor/tenant/nobody/planned_jobs").status_code == 404


@pytest.mark.slow
@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)")
def test_promtool_reads_the_compacted_block(start_daemon, tmp_path):
    d = start_daemon(*FAST)
    series = payload(5, T0, T0 + 13 * HOUR, step=120_000)
    assert remote_write(d, "t1", series).status_code == 200
    assert d.post("/ingester/flush?wait=true&tenant=t1").status_code == 204
    root = d.workdir / "data" / "blocks" / "t1"
    big = wait_for(lambda: [u for u, m in bucket_metas(d, "t1").items() if m["compaction"]["level"] == 2],
                   what="a compacted block")[0]
    db = tmp_path / "promdb"
    (db / "wal").mkdir(parents=True)
    shutil.copytree(root / big, db / big)
    analyzed = subprocess.run([PROMTOOL, "tsdb", "analyze", str(db), big], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr
    assert f"Block ID: {big}" in analyzed.stdout and "\nSeries: 5\n" in analyzed.stdout, analyzed.stdout
    out = subprocess.run([PROMTOOL, "tsdb", "dump", "--min-time=0", f"--max-time={2**62}", str(db)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    dumped: dict = {}
    for line in out.stdout.splitlines():
        labels_text, value_text, ts_text = line.rsplit(" ", 2)
        dumped.setdefault(labels_text, []).append((int(ts_text), float(value_text)))
    expected = {"{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}":
                sorted(s for s in samples if s[0] < T0 + 12 * HOUR) for labels, samples in series.items()}
    assert dumped == expected


def _put_block(root: Path, series: dict, mint: int, maxt: int, tenant: str) -> str:
    items = [(labels, np.array([t for t, _ in s], np.int64), np.array([v for _, v in s]))
             for labels, s in sorted(series.items())]
    root.mkdir(parents=True, exist_ok=True)
    return write_block(root, items, mint, maxt, tenant=tenant, source="test")


def test_overlapping_blocks_are_merged_without_duplicate_samples(start_daemon):
    d = start_daemon(*FAST, "-compactor.deletion-delay=1h")
    root = d.workdir / "data" / "blocks" / "t2"
    # two "ingesters" wrote the same range; the second has every other sample plus extra series
    a = payload(4, T0, T0 + 2 * HOUR, step=30_000)
    b = {labels: s[::2] for labels, s in payload(6, T0, T0 + 2 * HOUR, step=30_000).items()}
    ua = _put_block(root, a, T0, T0 + 2 * HOUR, "t2")
    ub = _put_block(root, b, T0, T0 + 2 * HOUR, "t2")
    newer = _put_block(root, payload(1, T0 + 2 * HOUR, T0 + 3 * HOUR), T0 + 2 * HOUR, T0 + 3 * HOUR, "t2")

    def merged():
        if not all((root / u / "deletion-mark.json").exists() for u in (ua, ub)):
            return []  # the marks follow the upload of the merged block
        return [u for u, m in bucket_metas(d, "t2").items() if set(m["compaction"]["sources"]) == {ua, ub}]

    ulid = wait_for(merged, what="merged block")[0]
    expected = as_expected({**b, **a})
    assert read_all([root / ulid]) == expected
    with BlockReader(root / ulid) as reader:
        assert reader.meta.num_samples == sum(len(s) for s in expected.values())
    # the sources stay (marked) during the delay; the newer block is untouched
    for source in (ua, ub):
        mark = json.loads((root / source / "deletion-mark.json").read_text())
        assert mark["id"] == source and mark["version"] == 1 and mark["deletion_time"] <= time.time()
        assert (root / "markers" / f"{source}-deletion-mark.json").exists()
    assert not (root / newer / "deletion-mark.json").exists()

    def index_marks():
        # the index is rewritten once the compaction cycle ends, after the marks
        path = root / "bucket-index.json.gz"
        if not path.exists():
            return None
        return {m["block_id"] for m in json.loads(gzip.decompress(path.read_bytes()))["block_deletion_marks"]}

    wait_for(lambda: index_marks() == {ua, ub}, what="the deletion marks in the bucket index")
    assert index_marks() == {ua, ub}
    wait_for(lambda: 'cortex_compactor_blocks_marked_for_deletion_total{reason="compaction"} 2.0' in
             (metrics := d.get("/metrics").text) and "cortex_compactor_group_compactions_total 1.0" in metrics,
             what="compactor metrics")


def test_retention_marks_then_deletes_old_blocks(start_daemon):
    d = start_daemon(*FAST, "-compactor.blocks-retention-period=30d", "-compactor.deletion-delay=0s")
    root = d.workdir / "data" / "blocks" / "t3"
    now = int(time.time() * 1000)
    old = _put_block(root, payload(2, T0, T0 + HOUR), T0, T0 + HOUR, "t3")
    recent_start = now // (2 * HOUR) * (2 * HOUR) - 4 * HOUR
    recent = _put_block(root, payload(2, recent_start, recent_start + HOUR), recent_start, recent_start + HOUR, "t3")
    wait_for(lambda: not (root / old).exists(), what="old block deleted")
    assert (root / recent / "meta.json").exists() and not (root / recent / "deletion-mark.json").exists()


def test_crash_between_upload_and_marks_never_doubles_samples(start_daemon, tmp_path):
    from mimird.bucket import FilesystemBucket
    from mimird.config.schema import Config
    from mimird.storegateway.gateway import StoreGateway
    from mimird.tsdb.labels import Matcher

    d = start_daemon(*FAST, "-compactor.deletion-delay=1h", env={"MIMIRD_FAILPOINT": "compactor-after-upload"})
    series = payload(10, T0, T0 + 13 * HOUR, step=120_000)
    assert remote_write(d, "t1", series).status_code == 200
    try:
        d.post("/ingester/flush?wait=true&tenant=t1")
    except Exception:
        pass  # the failpoint may kill the daemon before the flush answers
    assert d.proc.wait(30) == 137
    metas = bucket_metas(d, "t1")
    root = d.workdir / "data" / "blocks" / "t1"
    assert sorted(m["compaction"]["level"] for m in metas.values()) == [1] * 7 + [2]
    assert not list(root.glob("*/deletion-mark.json"))
    # a reader of the bucket now sees the compacted block instead of its sources, not both
    config = Config.defaults()
    gateway = StoreGateway(config, FilesystemBucket(root.parent))
    gateway.sync_now()
    assert len(gateway.loaded_blocks("t1")) == 2
    every = [Matcher("=~", "__name__", ".+")]
    got = {labels: list(zip(ts.tolist(), vals.tolist(), strict=True)) for labels, ts, vals in gateway.select("t1", every)}
    assert got == as_expected(series)
    # after a restart the compactor marks the superseded sources itself
    d.env.pop("MIMIRD_FAILPOINT")
    d.start()
    wait_for(lambda: len(list(root.glob("*/deletion-mark.json"))) == 6
             and len(list(root.glob("markers/*-deletion-mark.json"))) == 6, what="sources marked")
    assert len([m for m in bucket_metas(d, "t1").values() if m["compaction"]["level"] == 2]) == 1


def test_abandoned_partial_blocks_are_deleted(start_daemon):
    import os

    d = start_daemon(*FAST, "-compactor.partial-block-deletion-delay=1h", "-compactor.deletion-delay=0s")
    root = d.workdir / "data" / "blocks" / "t4"
    old = _put_block(root, payload(1, T0, T0 + HOUR), T0, T0 + HOUR, "t4")
    fresh = _put_block(root, payload(1, T0 + HOUR, T0 + 2 * HOUR), T0 + HOUR, T0 + 2 * HOUR, "t4")
    for ulid in (old, fresh):
        (root / ulid / "meta.json").unlink()  # an upload cut short before its meta.json
    stale = time.time() - 2 * 3600
    for path in [root / old, *(root / old).rglob("*")]:
        os.utime(path, (stale, stale))
    wait_for(lambda: not (root / old).exists(), what="abandoned partial block deleted")
    assert (root / fresh / "index").exists() and not (root / fresh / "deletion-mark.json").exists()
    assert 'cortex_compactor_blocks_marked_for_deletion_total{reason="partial"} 1.0' in d.get("/metrics").text


def test_sigterm_during_compaction_stops_cleanly(start_daemon):
    d = start_daemon(*FAST)
    assert remote_write(d, "t5", payload(120, T0, T0 + 13 * HOUR, step=30_000)).status_code == 200
    assert d.post("/ingester/flush?wait=true&tenant=t5").status_code == 204
    time.sleep(0.3)  # the compaction cycle is likely merging now
    assert d.stop(timeout=30) == 0
    root = d.workdir / "data" / "blocks" / "t5"
    assert all((p / "meta.json").exists() for p in root.iterdir() if p.is_dir() and p.name != "markers")
    merged = [m for m in bucket_metas(d, "t5").values() if m["compaction"]["level"] == 2]
    marked = list(root.glob("*/deletion-mark.json"))
    assert len(marked) == (6 if merged else 0)


def test_merge_gives_up_cleanly_when_told_to_stop(tmp_path):
    from mimird.compactor.compactor import CompactionAborted, merge_blocks

    dirs = [tmp_path / "src" / _put_block(tmp_path / "src", payload(3000, T0 + i * HOUR, T0 + (i + 1) * HOUR,
                                                                    step=600_000), T0 + i * HOUR,
                                          T0 + (i + 1) * HOUR, "t") for i in range(2)]
    calls = []
    with pytest.raises(CompactionAborted):
        merge_blocks(dirs, tmp_path / "out", "t", should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert list((tmp_path / "out").iterdir()) == []
    ulid = merge_blocks(dirs, tmp_path / "out", "t", should_stop=lambda: False)
    assert read_all([tmp_path / "out" / ulid]) == read_all(dirs)


def test_damaged_block_is_marked_no_compact_and_the_rest_still_compacts(start_daemon):
    d = start_daemon(*FAST)
    root = d.workdir / "data" / "blocks" / "t6"
    bad = _put_block(root, payload(3, T0, T0 + HOUR), T0, T0 + HOUR, "t6")
    good = [_put_block(root, payload(3, T0 + h * HOUR, T0 + (h + 1) * HOUR), T0 + h * HOUR, T0 + (h + 1) * HOUR, "t6")
            for h in (2, 3)]
    chunk = root / bad / "chunks" / "000001"
    data = bytearray(chunk.read_bytes())
    data[40] ^= 0xFF
    chunk.write_bytes(bytes(data))
    _put_block(root, payload(1, T0 + 13 * HOUR, T0 + 14 * HOUR), T0 + 13 * HOUR, T0 + 14 * HOUR, "t6")
    mark = json.loads(wait_for(lambda: (root / bad / "no-compact-mark.json").exists()
                               and (root / bad / "no-compact-mark.json").read_text(), what="no-compact mark"))
    assert mark["id"] == bad and mark["reason"] == "critical" and "checksum" in mark["details"]
    merged = wait_for(lambda: [m for m in bucket_metas(d, "t6").values() if set(m["compaction"]["sources"]) ==
                               set(good)], what="the good blocks compacted")
    assert merged[0]["minTime"] == T0 + 2 * HOUR
