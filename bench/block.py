"""Block write/read speed and size, and the size of the block promtool makes from the same samples.

Run: .venv/bin/python bench/block.py [--series 10000] [--no-promtool]

Data: N series × 2 h at a 15 s scrape interval (480 samples each) with a few milliseconds of scrape
jitter, in one 2 h block range: half counters (Poisson increments), a quarter gauges doing a random
walk at full precision, a quarter gauges with few distinct values (like `up` or memory in pages).
Labels look like node-exporter targets. Prints bytes per sample of the chunks and of the whole
block, write throughput (cutting and encoding chunks included) and read throughput (select all,
decode every sample). Then writes the same samples as OpenMetrics text, runs
`promtool tsdb create-blocks-from openmetrics`, and compares the sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from mimird.tsdb.block import BlockReader, write_block
from mimird.tsdb.labels import Matcher, make_labels

BLOCK_RANGE_MS = 7_200_000
SCRAPE_INTERVAL_MS = 15_000
SAMPLES_PER_SERIES = 480
START_MS = (1_700_000_000_000 // BLOCK_RANGE_MS) * BLOCK_RANGE_MS


def make_series(num_series: int, seed: int = 42) -> list[tuple]:
    rng = np.random.default_rng(seed)
    series = []
    metrics = ["node_cpu_seconds_total", "node_network_receive_bytes_total", "node_memory_Active_bytes",
               "node_load1", "up", "http_requests_total", "process_resident_memory_bytes", "go_goroutines"]
    for index in range(num_series):
        metric = metrics[index % len(metrics)]
        labels = make_labels({"__name__": metric, "job": ("node", "api", "db")[index % 3],
                              "instance": f"10.0.{index // 250}.{index % 250}:9100",
                              "cpu": str(index // 8 % 16) if metric == "node_cpu_seconds_total" else "",
                              "series": str(index)})
        offset = int(rng.integers(3, 10_000))
        jitter = np.clip(rng.normal(0, 2, SAMPLES_PER_SERIES).round(), -3, 3).astype(np.int64)
        ts = START_MS + offset + np.arange(SAMPLES_PER_SERIES, dtype=np.int64) * SCRAPE_INTERVAL_MS + jitter
        kind = index % 4
        if kind in (0, 1):
            vals = np.cumsum(rng.poisson(40, SAMPLES_PER_SERIES).astype(np.float64))
        elif kind == 2:
            vals = 100.0 + np.cumsum(rng.normal(0, 1.5, SAMPLES_PER_SERIES))
        else:
            vals = 4096.0 * rng.integers(1000, 1004, SAMPLES_PER_SERIES)
        series.append((labels, ts, vals))
    return series


def dir_size(path: Path) -> tuple[int, int, int]:
    """(total bytes, chunk bytes, index bytes) of a block directory."""
    chunks = sum(p.stat().st_size for p in (path / "chunks").iterdir())
    index = (path / "index").stat().st_size
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return total, chunks, index


def write_openmetrics(path: Path, series: list[tuple]) -> None:
    with open(path, "w") as out:
        by_metric: dict[str, list[tuple]] = {}
        for item in series:
            by_metric.setdefault(dict(item[0])["__name__"], []).append(item)
        for metric, items in by_metric.items():
            family = metric[:-len("_total")] if metric.endswith("_total") else metric
            out.write(f"# TYPE {family} {'counter' if metric.endswith('_total') else 'gauge'}\n")
            for labels, ts, vals in items:
                label_text = ",".join(f'{name}="{value}"' for name, value in labels if name != "__name__")
                prefix = f"{metric}{{{label_text}}} "
                out.writelines(f"{prefix}{v!r} {t // 1000}.{t % 1000:03d}\n"
                               for t, v in zip(ts.tolist(), vals.tolist(), strict=True))
        out.write("# EOF\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--no-promtool", action="store_true", help="skip the promtool comparison")
    args = parser.parse_args()

    # Sorted by labels, the order in which a head or compactor hands series to the block writer.
    series = sorted(make_series(args.series), key=lambda item: item[0])
    num_samples = sum(len(ts) for _, ts, _ in series)
    work = Path(tempfile.mkdtemp(prefix="mimird-bench-block-"))
    try:
        ours_parent = work / "ours"
        ours_parent.mkdir()
        started = time.perf_counter()
        ulid = write_block(ours_parent, series, START_MS, START_MS + BLOCK_RANGE_MS, tenant="bench",
                           source="ingester")
        write_seconds = time.perf_counter() - started
        total, chunks, index = dir_size(ours_parent / ulid)

        started = time.perf_counter()
        read_samples = 0
        with BlockReader(ours_parent / ulid) as reader:
            for _, ts, _ in reader.read_series_samples([Matcher("=~", "__name__", ".+")]):
                read_samples += len(ts)
        read_seconds = time.perf_counter() - started
        assert read_samples == num_samples

        started = time.perf_counter()
        with BlockReader(ours_parent / ulid) as reader:
            for _ in range(100):
                refs = reader.select([Matcher("=", "__name__", "node_cpu_seconds_total"),
                                      Matcher("=~", "cpu", "1|3|5"), Matcher("!=", "job", "db")])
        select_ms = (time.perf_counter() - started) * 1000 / 100

        print(f"series {len(series)}, samples {num_samples} ({SAMPLES_PER_SERIES} per series, 15 s, 2 h)")
        print(f"mimird   block {total / 1e6:8.2f} MB  chunks {chunks / 1e6:8.2f} MB  index {index / 1e6:6.2f} MB  "
              f"{chunks / num_samples:.3f} B/sample (chunks)  {total / num_samples:.3f} B/sample (block)")
        print(f"write    {write_seconds:6.2f} s  {num_samples / write_seconds / 1e6:6.2f} M samples/s  "
              f"{len(series) / write_seconds:9.0f} series/s")
        print(f"read     {read_seconds:6.2f} s  {num_samples / read_seconds / 1e6:6.2f} M samples/s  "
              f"{len(series) / read_seconds:9.0f} series/s")
        print(f"select   {select_ms:6.2f} ms  ({len(refs)} series: name=, cpu=~, job!=)")

        promtool = shutil.which("promtool")
        if args.no_promtool or promtool is None:
            if promtool is None:
                print("promtool not installed: no comparison")
            return
        text = work / "input.om"
        write_openmetrics(text, series)
        started = time.perf_counter()
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(text), str(work / "prom")],
                       check=True, capture_output=True, timeout=3600)
        promtool_seconds = time.perf_counter() - started
        blocks = [p for p in (work / "prom").iterdir() if p.is_dir()]
        sizes = [dir_size(p) for p in blocks]
        p_total, p_chunks, p_index = (sum(s[i] for s in sizes) for i in range(3))
        print(f"promtool block {p_total / 1e6:8.2f} MB  chunks {p_chunks / 1e6:8.2f} MB  index "
              f"{p_index / 1e6:6.2f} MB  {p_chunks / num_samples:.3f} B/sample (chunks)  "
              f"{p_total / num_samples:.3f} B/sample (block)  ({len(blocks)} block, "
              f"{promtool_seconds:.1f} s from {text.stat().st_size / 1e6:.0f} MB of text)")
        print(f"size ratio mimird/promtool: block {total / p_total:.4f}  chunks {chunks / p_chunks:.4f}  "
              f"index {index / p_index:.4f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
