#!/usr/bin/env python3
"""Store-gateway memory bound: query a tenant whose blocks are several times larger than an RSS budget.

Writes `--blocks` 2h blocks of `--series` series each (15 s scrape interval, 4 XOR chunks of
full-precision random floats per series and block, so ~1 kB per chunk) straight into a bucket
directory with `write_block` (chunks are encoded once per time layout from a pool and shared between
series, which keeps generation fast), starts `mimird` on that bucket and runs range queries over all
of it through `/prometheus/api/v1/query_range`, one metric name (1/48 of the series) at a time,
alternately `sum(rate(m[5m]))` and `max(max_over_time(m[10m]))` at a 5m step, in `--window-hours`
windows that together cover the whole time span (0: one query over all of it per metric name),
window after window, so that a block is read in one burst and then idles.
/proc/<pid>/status is sampled every 20 ms: peak VmRSS, and of it the anonymous part (heap, what the
budget is about) and the file-backed part (pages of the memory-mapped block files: page cache, which
the kernel drops under memory pressure).

Measured (2 cores, 48000 series x 12 blocks = 2.0 GiB): anonymous RSS grows by ~30 MiB per opened
48k-series block (the index's postings offset table and symbol cache are held whole) and stays until
the block is closed, so it is bounded by the blocks open at once: with `--idle-timeout 2` peak
anonymous RSS was 275 MiB and peak VmRSS 1.0 GiB; with the default 1h, 458 MiB and 2.5 GiB.

    .venv/bin/python bench/storegateway.py [--series 48000] [--blocks 12] [--budget-mb 300] [--idle-timeout 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from mimird._fast.xorchunk import encode
from mimird.tsdb.block import write_block

BLOCK_MS = 2 * 3600_000
SCRAPE_MS = 15_000
CHUNK_SAMPLES = 120
CHUNKS_PER_BLOCK = BLOCK_MS // SCRAPE_MS // CHUNK_SAMPLES  # 4
T0 = 19675 * 24 * 3600_000  # 2023-11-14: older than -querier.query-ingesters-within, the store answers
TENANT = "big"
METRICS = 48
POOL = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_bucket(bucket: Path, n_series: int, n_blocks: int, seed: int = 1) -> tuple[int, int]:
    """Write the tenant's blocks; return (total bytes, total samples)."""
    rng = np.random.default_rng(seed)
    tenant_dir = bucket / TENANT
    tenant_dir.mkdir(parents=True)
    labels = sorted((("__name__", f"big_metric_{i % METRICS:02d}"), ("instance", f"10.0.{i // 250}.{i % 250}:9100"),
                     ("job", "node"), ("series", f"{i:06d}")) for i in range(n_series))
    for b in range(n_blocks):
        start = T0 + b * BLOCK_MS
        # a pool of encoded chunks per position in the block; series pick from it
        pool = []
        for c in range(CHUNKS_PER_BLOCK):
            c_start = start + c * CHUNK_SAMPLES * SCRAPE_MS
            ts = c_start + np.arange(CHUNK_SAMPLES, dtype=np.int64) * SCRAPE_MS
            pool.append([(int(ts[0]), int(ts[-1]), encode(ts, np.cumsum(rng.random(CHUNK_SAMPLES)) * 1e3 + k))
                         for k in range(POOL)])
        picks = rng.integers(0, POOL, size=(n_series, CHUNKS_PER_BLOCK))
        series = ((lbl, [pool[c][picks[i, c]] for c in range(CHUNKS_PER_BLOCK)]) for i, lbl in enumerate(labels))
        write_block(tenant_dir, series, start, start + BLOCK_MS, tenant=TENANT, source="bench")
    total = sum(p.stat().st_size for p in tenant_dir.rglob("*") if p.is_file())
    return total, n_series * n_blocks * CHUNKS_PER_BLOCK * CHUNK_SAMPLES


class RSSSampler(threading.Thread):
    """Peaks of VmRSS, RssAnon and RssFile of a process (kB), sampled every 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "VmHWM": 0}
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                key, _, rest = line.partition(":")
                if key in self.peaks:
                    self.peaks[key] = max(self.peaks[key], int(rest.split()[0]))
            time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=48000)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--budget-mb", type=int, default=600, help="the anonymous-RSS budget to check against")
    parser.add_argument("--window-hours", type=float, default=6.0,
                        help="time span of one query (0: each query spans all blocks)")
    parser.add_argument("--idle-timeout", type=float, default=3600.0,
                        help="seconds without queries after which the store-gateway closes a block")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sg-"))
    proc = None
    try:
        started = time.monotonic()
        total_bytes, total_samples = build_bucket(work / "data" / "blocks", args.series, args.blocks)
        print(f"bucket: {args.blocks} blocks x {args.series} series, {total_samples / 1e6:.0f}M samples, "
              f"{total_bytes / 2**30:.2f} GiB, written in {time.monotonic() - started:.1f}s", flush=True)
        port = free_port()
        log = open(work / "mimird.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "mimird", f"-server.http-listen-port={port}",
                                 "-compactor.compaction-interval=1h", "-compactor.cleanup-interval=1h",
                                 "-querier.max-fetched-chunks-per-query=0", "-blocks-storage.bucket-store.sync-interval=1s",
                                 "-blocks-storage.bucket-store.index-header.lazy-loading-idle-timeout="
                                 f"{args.idle_timeout}s"],
                                cwd=work, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"mimird exited:\n{(work / 'mimird.log').read_text()}")
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("mimird not ready")
            time.sleep(0.1)
        sampler = RSSSampler(proc.pid)
        sampler.start()
        idle_rss = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmRSS:")[1].split()[0])
        end = T0 + args.blocks * BLOCK_MS - SCRAPE_MS
        client = httpx.Client(base_url=url, headers={"X-Scope-OrgID": TENANT}, timeout=300)
        query_started = time.monotonic()
        checked = 0
        window = int(args.window_hours * 3600_000) if args.window_hours else end - T0 + SCRAPE_MS
        # window by window (a block is read in one burst, then idle), every metric name in each window;
        # alternately a rate and an over-time aggregation: every sample is read once
        for w_start in range(T0, end, window):
            for m in range(METRICS):
                expr = (f"sum(rate(big_metric_{m:02d}[5m]))", f"max(max_over_time(big_metric_{m:02d}[10m]))")[m % 2]
                w_end = min(w_start + window - SCRAPE_MS, end)
                resp = client.get("/prometheus/api/v1/query_range",
                                  params={"query": expr, "start": w_start / 1000, "end": w_end / 1000, "step": 300})
                if resp.status_code != 200:
                    raise SystemExit(f"{expr}: {resp.status_code} {resp.text[:500]}")
                result = resp.json()["data"]["result"]
                if len(result) != 1 or len(result[0]["values"]) < (w_end - w_start) // 300_000 - 2:
                    raise SystemExit(f"{expr}: unexpected result shape")
                checked += 1
        query_seconds = time.monotonic() - query_started
        sampler.running = False
        sampler.join()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        after_anon = int(status.split("RssAnon:")[1].split()[0])
        peaks = sampler.peaks
        print(f"queries: {checked} range queries ({args.window_hours or args.blocks * 2:g}h each, "
              f"{args.series // METRICS} series each) over all {args.series} series x {args.blocks * 2}h "
              f"in {query_seconds:.1f}s ({total_samples / query_seconds / 1e6:.1f}M samples/s read)")
        print(f"RSS idle after start: {idle_rss / 1024:.0f} MiB")
        print(f"peak RSS during queries: {peaks['VmRSS'] / 1024:.0f} MiB (VmHWM {peaks['VmHWM'] / 1024:.0f} MiB): "
              f"anonymous {peaks['RssAnon'] / 1024:.0f} MiB, file-backed (mapped block files) "
              f"{peaks['RssFile'] / 1024:.0f} MiB")
        print(f"anonymous RSS after the queries: {after_anon / 1024:.0f} MiB")
        print(f"total block size {total_bytes / 2**20:.0f} MiB = {total_bytes / 1024 / max(peaks['RssAnon'], 1):.1f}x "
              f"peak anonymous RSS, {total_bytes / 1024 / max(peaks['VmRSS'], 1):.1f}x peak RSS; budget "
              f"{args.budget_mb} MiB anonymous: {'OK' if peaks['RssAnon'] / 1024 <= args.budget_mb else 'EXCEEDED'}")
        summary = {"series": args.series, "blocks": args.blocks, "window_hours": args.window_hours,
                   "idle_timeout": args.idle_timeout, "samples": total_samples, "block_bytes": total_bytes,
                   "query_seconds": query_seconds, "idle_rss_kb": idle_rss, "after_anon_kb": after_anon, **{f"peak_{k}_kb": v for k, v in peaks.items()}}
        out = Path(__file__).parent / "out"
        out.mkdir(exist_ok=True)
        (out / "storegateway.json").write_text(json.dumps(summary, indent=1) + "\n")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
