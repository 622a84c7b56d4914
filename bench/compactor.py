#!/usr/bin/env python3
"""Compaction throughput, and query latency over compacted blocks next to the same query over the head.

1. Compaction (in process, the compactor's own `merge_blocks`): six 2h level-1 blocks of `--series`
   series at a 15 s scrape interval (random-walk gauges and counters) merged into one 12h block
   (chunks copied as they are), and two overlapping 2h blocks with the same series merged (decoded,
   de-duplicated and re-encoded). Prints samples/s and MB/s of source blocks.
2. Query latency (through the HTTP API of a `mimird` process): `--query-series` series × 13h at 30 s
   are remote-written into a fresh daemon and queried from the head (`-querier.query-ingesters-within=0`
   so the 2023 data is read from the ingester); then flushed, compacted into a 12h block by the
   compactor (short intervals) and queried again after a restart, now only from the store-gateway.
   Each query is a range query over the first 12h at a 60 s step; 1 warm-up and 5 timed runs, median; the answers
   over the head and over the blocks must be identical.

    .venv/bin/python bench/compactor.py [--series 20000] [--query-series 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import snappy

from mimird import prompb
from mimird.compactor.compactor import merge_blocks
from mimird.tsdb.block import write_block

HOUR = 3600_000
T0 = 19675 * 24 * HOUR  # 2023-11-14T00:00:00Z
SCRAPE_MS = 15_000
QUERIES = ["sum(rate(bench_counter[5m]))", "sum by (job) (rate(bench_counter[5m]))",
           "max(max_over_time(bench_gauge[10m]))", "bench_gauge{instance=\"i0007\"}",
           "avg(bench_gauge)", "histogram_quantile(0.9, sum by (le) (rate(bench_counter[5m])))"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def series_data(n_series: int, start: int, end: int, step: int, rng) -> list[tuple]:
    ts = np.arange(start, end, step, dtype=np.int64)
    out = []
    for i in range(n_series):
        kind = "bench_counter" if i % 2 == 0 else "bench_gauge"
        labels = (("__name__", kind), ("instance", f"i{i:04d}"), ("job", f"job{i % 5}"),
                  ("le", str((i // 2) % 8)))
        if kind == "bench_counter":
            vals = np.cumsum(rng.poisson(30, len(ts)).astype(np.float64))
        else:
            vals = 100.0 + np.cumsum(rng.normal(0, 1.5, len(ts)))
        out.append((labels, ts, vals))
    return sorted(out, key=lambda s: s[0])


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_compaction(work: Path, n_series: int) -> dict:
    rng = np.random.default_rng(3)
    src = work / "src"
    src.mkdir(parents=True)
    dirs = []
    for b in range(6):
        start = T0 + b * 2 * HOUR
        dirs.append(src / write_block(src, series_data(n_series, start, start + 2 * HOUR, SCRAPE_MS, rng), start,
                                      start + 2 * HOUR, tenant="bench", source="bench"))
    samples = n_series * 6 * (2 * HOUR // SCRAPE_MS)
    size = sum(dir_bytes(d) for d in dirs)
    started = time.perf_counter()
    merge_blocks(dirs, work / "out", "bench")
    seconds = time.perf_counter() - started
    result = {"copy_samples": samples, "copy_seconds": seconds, "copy_source_bytes": size}
    print(f"compaction, 6 x 2h -> 12h, {n_series} series, {samples / 1e6:.1f}M samples, {size / 2**20:.0f} MiB: "
          f"{seconds:.2f}s = {samples / seconds / 1e6:.1f}M samples/s, {size / seconds / 2**20:.0f} MiB/s", flush=True)
    # two blocks over the same range, every series in both with interleaved samples: re-encoded
    overlap = work / "overlap"
    overlap.mkdir()
    pair = []
    for offset in (0, SCRAPE_MS // 2):
        data = series_data(n_series, T0 + offset, T0 + 2 * HOUR, SCRAPE_MS, rng)
        pair.append(overlap / write_block(overlap, data, T0, T0 + 2 * HOUR, tenant="bench", source="bench"))
    samples = 2 * n_series * (2 * HOUR // SCRAPE_MS)
    started = time.perf_counter()
    merge_blocks(pair, work / "out", "bench")
    seconds = time.perf_counter() - started
    print(f"compaction, 2 overlapping 2h blocks, {n_series} series, {samples / 1e6:.1f}M samples (decoded, merged, "
          f"re-encoded): {seconds:.2f}s = {samples / seconds / 1e6:.1f}M samples/s", flush=True)
    result.update(merge_samples=samples, merge_seconds=seconds)
    return result


class Mimird:
    def __init__(self, workdir: Path, *flags: str):
        self.workdir, self.flags = workdir, flags
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> Mimird:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = open(self.workdir / "mimird.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mimird", f"-server.http-listen-port={port}",
                                      *self.flags, *extra], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"mimird exited:\n{(self.workdir / 'mimird.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    self.client = httpx.Client(base_url=self.url, headers={"X-Scope-OrgID": "bench"}, timeout=120)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("mimird not ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def push(d: Mimird, data: list[tuple], slice_samples: int = 60, batch_series: int = 500) -> None:
    """Remote-write the data in time order (the head accepts samples only near its newest time)."""
    n_samples = len(data[0][1])
    for lo in range(0, n_samples, slice_samples):
        for first in range(0, len(data), batch_series):
            request = prompb.WriteRequest()
            for labels, ts, vals in data[first:first + batch_series]:
                series = request.timeseries.add()
                for name, value in labels:
                    series.labels.add(name=name, value=value)
                for t, v in zip(ts[lo:lo + slice_samples].tolist(), vals[lo:lo + slice_samples].tolist(), strict=True):
                    series.samples.add(timestamp=t, value=v)
            post(d, request)


def post(d: Mimird, request) -> None:
    resp = d.client.post("/api/v1/push", content=snappy.compress(request.SerializeToString()),
                         headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    if resp.status_code != 200:
        raise SystemExit(f"push: {resp.status_code} {resp.text[:300]}")


def time_queries(d: Mimird) -> tuple[dict, dict]:
    latencies, answers = {}, {}
    params = {"start": T0 / 1000, "end": (T0 + 12 * HOUR - 60_000) / 1000, "step": 60}
    for query in QUERIES:
        runs = []
        for attempt in range(6):
            started = time.perf_counter()
            resp = d.client.get("/prometheus/api/v1/query_range", params={"query": query, **params})
            elapsed = time.perf_counter() - started
            if resp.status_code != 200:
                raise SystemExit(f"{query}: {resp.status_code} {resp.text[:300]}")
            if attempt:
                runs.append(elapsed)
        latencies[query] = statistics.median(runs)
        answers[query] = resp.json()["data"]["result"]
    return latencies, answers


def bench_queries(work: Path, n_series: int) -> dict:
    workdir = work / "daemon"
    workdir.mkdir()
    d = Mimird(workdir, "-compactor.compaction-interval=500ms", "-compactor.first-level-compaction-wait-period=0s",
               "-blocks-storage.bucket-store.sync-interval=500ms", "-ingester.max-global-series-per-user=0",
               "-distributor.ingestion-rate-limit=1e9", "-distributor.ingestion-burst-size=1000000000")
    d.start("-querier.query-ingesters-within=0")
    # 13h: the planner compacts the 12h range once a block after it exists
    data = series_data(n_series, T0, T0 + 13 * HOUR, 30_000, np.random.default_rng(5))
    started = time.perf_counter()
    push(d, data)
    samples = n_series * 13 * HOUR // 30_000
    print(f"pushed {samples / 1e6:.1f}M samples in {time.perf_counter() - started:.1f}s", flush=True)
    head_latency, head_answers = time_queries(d)
    # flush: the ingester cuts 2h blocks and uploads them; the compactor merges them into a 12h block
    if d.client.post("/ingester/flush?wait=true").status_code != 204:
        raise SystemExit("flush failed")
    root = workdir / "data" / "blocks" / "bench"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metas = [json.loads(p.read_text()) for p in root.glob("*/meta.json")]
        if any(m["maxTime"] - m["minTime"] >= 12 * HOUR for m in metas):
            break
        time.sleep(0.2)
    else:
        raise SystemExit("no 12h block")
    d.stop()
    d.start()  # default -querier.query-ingesters-within: 2023 data comes from the store-gateway only
    time.sleep(1.5)
    block_latency, block_answers = time_queries(d)
    d.stop()
    print(f"query latency, {n_series} series at 30s, 12h range at 60s step (median of 5):")
    print(f"  {'query':70s} {'head':>9s} {'blocks':>9s} {'ratio':>6s} same")
    for query in QUERIES:
        same = head_answers[query] == block_answers[query]
        print(f"  {query:70s} {head_latency[query] * 1000:7.1f}ms {block_latency[query] * 1000:7.1f}ms "
              f"{block_latency[query] / head_latency[query]:6.2f} {'yes' if same else 'NO'}")
    return {"query_series": n_series, "head_seconds": head_latency, "block_seconds": block_latency,
            "identical": all(head_answers[q] == block_answers[q] for q in QUERIES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20000)
    parser.add_argument("--query-series", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-compactor-"))
    try:
        summary = bench_compaction(work, args.series)
        summary.update(bench_queries(work, args.query_series))
        out = Path(__file__).parent / "out"
        out.mkdir(exist_ok=True)
        (out / "compactor.json").write_text(json.dumps(summary, indent=1) + "\n")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
