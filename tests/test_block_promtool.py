"""Blocks against the real Prometheus: `promtool` (Debian's prometheus package, `make peers`) reads the
blocks we write, we read the blocks it writes, and re-writing its series through our writer gives
byte-identical index, chunk and tombstones files.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mimird._fast.xorchunk import STALE_NAN
from mimird.tsdb.block import BlockReader, read_meta, write_block
from mimird.tsdb.labels import Matcher, format_labels, make_labels

PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)"),
]

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, 13:20 into a 2 h block range
STEP = 15_000


def promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_db_dir(tmp_path: Path) -> Path:
    """A directory promtool opens as a TSDB: blocks plus the (empty) WAL directory 2.42 insists on."""
    db = tmp_path / "db"
    (db / "wal").mkdir(parents=True)
    return db


def parse_dump(text: str) -> dict[str, list[tuple[int, float]]]:
    """promtool tsdb dump lines `{labels} value ts` (Go's %s %g %d) grouped by the labels text."""
    samples: dict[str, list[tuple[int, float]]] = {}
    for line in text.splitlines():
        labels_text, value_text, ts_text = line.rsplit(" ", 2)
        samples.setdefault(labels_text, []).append((int(ts_text), float(value_text)))
    return samples


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def make_series(rng: random.Random, count: int) -> list[tuple]:
    series = []
    seen = set()
    while len(series) < count:
        pairs = {"__name__": rng.choice(["http_requests_total", "node_cpu_seconds_total", "temperature"]),
                 "instance": f"host-{rng.randrange(40)}:9100", "job": rng.choice(["node", "api", "db"])}
        if rng.random() < 0.3:
            pairs["path"] = rng.choice(["/", "/api/v1/query", 'quote"and\\back', "日本語", "tab\there"])
        labels = make_labels(pairs)
        if labels in seen:
            continue
        seen.add(labels)
        n = rng.randrange(1, 700)
        ts = T0 + rng.randrange(0, 60_000) + np.cumsum(np.full(n, STEP) + np.array(
            [rng.choice((0, 0, 0, -3, 250)) for _ in range(n)]))
        if rng.random() < 0.5:
            vals = np.cumsum(np.array([rng.choice((0.0, 1.0, 2.5, 1e-9, 1234567.0)) for _ in range(n)]))
        else:
            vals = np.array([rng.uniform(-1e3, 1e3) if rng.random() > 0.05 else
                             rng.choice((math.inf, -math.inf, math.nan, STALE_NAN, 0.0, 1e300, 5e-324))
                             for _ in range(n)])
        series.append((labels, ts.astype(np.int64), vals))
    return series


def check_dump_matches(dump: str, series: list[tuple], lo: int, hi: int) -> None:
    got = parse_dump(dump)
    expected = {}
    for labels, ts, vals in series:
        keep = (ts >= lo) & (ts <= hi)
        if keep.any():
            expected[format_labels(labels)] = list(zip(ts[keep].tolist(), vals[keep].tolist(), strict=True))
    assert set(got) == set(expected)
    for key, samples in expected.items():
        assert len(got[key]) == len(samples), key
        for (t1, v1), (t2, v2) in zip(got[key], samples, strict=True):
            assert t1 == t2 and same_value(v1, v2), (key, t1, v1, t2, v2)


def test_promtool_reads_our_block(tmp_path):
    series = make_series(random.Random(1), 150)
    db = make_db_dir(tmp_path)
    ulid = write_block(db, series, tenant="tenant-1", source="ingester")
    meta = read_meta(db / ulid)

    analysis = promtool("tsdb", "analyze", str(db), ulid, cwd=tmp_path)
    assert f"Block ID: {ulid}" in analysis
    assert f"Series: {len(series)}" in analysis
    label_pairs = {pair for labels, _, _ in series for pair in labels}
    assert f"Postings (unique label pairs): {len(label_pairs)}" in analysis
    assert f"Postings entries (total label pairs): {sum(len(labels) for labels, _, _ in series)}" in analysis

    listing = promtool("tsdb", "list", str(db), cwd=tmp_path)
    assert ulid in listing and str(meta.num_samples) in listing and str(meta.num_chunks) in listing

    dump = promtool("tsdb", "dump", f"--min-time={meta.min_time}", f"--max-time={meta.max_time}", str(db),
                    cwd=tmp_path)
    check_dump_matches(dump, series, meta.min_time, meta.max_time)

    # A window inside the block: both ends inclusive, cutting through chunks.
    lo, hi = T0 + 1_800_000, T0 + 3_600_000
    dump = promtool("tsdb", "dump", f"--min-time={lo}", f"--max-time={hi}", str(db), cwd=tmp_path)
    check_dump_matches(dump, series, lo, hi)


def test_promtool_reads_unsorted_multi_segment_block(tmp_path):
    series = make_series(random.Random(2), 60)
    random.Random(3).shuffle(series)
    db = make_db_dir(tmp_path)
    ulid = write_block(db, series, tenant="t", source="compactor", segment_size=16 * 1024)
    assert len(os.listdir(db / ulid / "chunks")) > 2
    meta = read_meta(db / ulid)
    dump = promtool("tsdb", "dump", f"--min-time={meta.min_time}", f"--max-time={meta.max_time}", str(db),
                    cwd=tmp_path)
    check_dump_matches(dump, series, meta.min_time, meta.max_time)


def openmetrics_text(rng: random.Random) -> tuple[str, dict]:
    """OpenMetrics exposition with timestamps (seconds, millisecond precision) and the samples it holds."""
    lines = []
    expected: dict = {}
    families = [("requests", "counter", "_total"), ("queue_depth", "gauge", ""), ("latency_seconds", "gauge", "")]
    # Stay inside one 2 h block range so promtool makes one block.
    start_ms = (T0 // 7_200_000) * 7_200_000 + 1_000
    for family, kind, suffix in families:
        lines.append(f"# TYPE {family} {kind}")
        for instance in range(8):
            for code in ("200", "500"):
                labels = make_labels({"__name__": family + suffix, "instance": f"i-{instance}", "code": code})
                text_labels = f'code="{code}",instance="i-{instance}"'
                value = 0.0
                samples = []
                for k in range(rng.randrange(100, 460)):
                    ts = start_ms + k * STEP + rng.randrange(0, 999)
                    value = value + rng.randrange(0, 100) if kind == "counter" else round(rng.uniform(-50, 50), 6)
                    samples.append((ts, value))
                expected[labels] = samples
                lines.extend(f"{family}{suffix}{{{text_labels}}} {v!r} {ts // 1000}.{ts % 1000:03d}"
                             for ts, v in samples)
    lines.append("# EOF")
    # OpenMetrics wants each family's lines together; samples of one series in time order.
    return "\n".join(lines) + "\n", expected


def test_we_read_promtool_blocks(tmp_path):
    text, expected = openmetrics_text(random.Random(4))
    source = tmp_path / "input.om"
    source.write_text(text)
    out = tmp_path / "out"
    promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(out), cwd=tmp_path)
    blocks = [p for p in out.iterdir() if p.is_dir()]
    assert blocks
    got: dict = {}
    for block_dir in blocks:
        with BlockReader(block_dir) as reader:
            assert reader.meta.num_series and reader.meta.thanos_labels == {}
            for labels, ts, vals in reader.read_series_samples([Matcher("=~", "__name__", ".+")]):
                got.setdefault(labels, []).extend(zip(ts.tolist(), vals.tolist(), strict=True))
            names = sorted({name for labels in expected for name, _ in labels})
            assert reader.label_names() == names
            selected = reader.select([Matcher("=", "code", "500"), Matcher("!~", "instance", "i-[0-3]")])
            assert {reader.series(r)[0] for r in selected.tolist()} == {
                labels for labels in expected if ("code", "500") in labels
                and dict(labels)["instance"] not in ("i-0", "i-1", "i-2", "i-3")}
    assert set(got) == set(expected)
    for labels, samples in expected.items():
        assert sorted(got[labels]) == samples, labels


def test_rewriting_promtool_block_is_byte_identical(tmp_path):
    text, _ = openmetrics_text(random.Random(5))
    source = tmp_path / "input.om"
    source.write_text(text)
    out = tmp_path / "out"
    promtool("tsdb", "create-blocks-from", "openmetrics", str(source), str(out), cwd=tmp_path)
    (theirs,) = [p for p in out.iterdir() if p.is_dir()]
    with BlockReader(theirs) as reader:
        series = []
        for ref in reader.index.all_postings().tolist():
            labels, chunks = reader.series(ref)
            series.append((labels, [(mint, maxt, reader.chunk(chunk_ref)) for mint, maxt, chunk_ref in chunks]))
        meta = reader.meta
    ours_parent = tmp_path / "ours"
    ours_parent.mkdir()
    ulid = write_block(ours_parent, series, meta.min_time, meta.max_time, tenant=None, source="test",
                       ulid=meta.ulid)
    ours = ours_parent / ulid
    for name in ["index", "tombstones", *(f"chunks/{s}" for s in sorted(os.listdir(theirs / "chunks")))]:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert sorted(os.listdir(ours / "chunks")) == sorted(os.listdir(theirs / "chunks"))
    ours_meta = read_meta(ours)
    assert (ours_meta.min_time, ours_meta.max_time, ours_meta.num_samples, ours_meta.num_series,
            ours_meta.num_chunks) == (meta.min_time, meta.max_time, meta.num_samples, meta.num_series,
                                      meta.num_chunks)
