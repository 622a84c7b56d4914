#!/usr/bin/env python3
"""Query latency over blocks: range queries whose data lies mostly in blocks (local and in the bucket).

Builds `--series` series (15 s interval, `--metrics` metric names) over the last `--hours` hours: all but the
newest hour as 2h blocks written with `write_block` (into the tenant's ingester directory, marked as
shipped, and into the bucket the store-gateway reads), the newest hour pushed by remote write into the
head. Then:

1. in process: the querier's select over that data, the per-series path (`TenantQueryable._select`
   concatenated, what `select_batch` did before blocks were read batched) against `select_batch`,
   with the store-gateway asked too (`query_store_after` 0: every block is read twice, from the
   ingester's copy and from the bucket, and de-duplicated) and not;
2. end to end: `/prometheus/api/v1/query_range` over the whole span (step 60s) on a fresh mimird, with
   `-querier.query-store-after=0` and without (1 warm-up, `--reps` timed runs, median), and the same
   queries on Prometheus loaded with the same blocks and head samples.

Measured (2 shared cores, 10000 series x 6h = 3 local blocks + 1h of head, 14.4M samples; before =
86d697b, the per-series block readers; medians, seconds):

    query (6h, step 60s)                                   before   after   after+store  Prometheus 3
    sum by (job) (rate({__name__=~"bq_metric_.+"}[5m]))     3.50     0.50      1.08        3.18
    count_over_time({__name__=~"bq_metric_0[0-4]"}[5m])     0.39     0.14      0.16        0.31
    sum by (job) (rate(bq_metric_00[5m]))  (209 series)     0.061    0.016     0.028       0.042
    (before with the store-gateway: 5.53, 0.60, 0.12)

In process, the querier's select of all 10000 series: 2.9-3.7 s per-series, 0.37-0.54 s batched
(ingester only); 4.3-5.0 s and 0.87 s with the store-gateway reading the bucket's copies too.

To compare with an older commit, unpack it and build its extensions as bench/ingest.py describes, then
run the end-to-end part with its `src` first on the path: `PYTHONPATH=/tmp/old/src .venv/bin/python
bench/blockquery.py --skip-in-process`.

    .venv/bin/python bench/blockquery.py [--series 10000] [--hours 6] [--stores mimird,prometheus]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import snappy

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from ingest import free_port, wait_http  # noqa: E402

from mimird import prompb  # noqa: E402
from mimird.tsdb.block import write_block  # noqa: E402

HOUR = 3600_000
STEP_MS = 15_000
TENANT = "anonymous"
QUERIES = [
    'sum by (job) (rate(bq_metric_00[5m]))',
    'max(max_over_time(bq_metric_01[10m]))',
    'count_over_time({__name__=~"bq_metric_0[0-4]"}[5m])',
    'avg(bq_metric_02)',
    'sum by (job) (rate({__name__=~"bq_metric_.+"}[5m]))',
]


def make_labels(n_series: int, metrics: int) -> list[tuple]:
    return sorted((("__name__", f"bq_metric_{i % metrics:02d}"), ("instance", f"10.1.{i // 250}.{i % 250}:9100"),
                   ("job", f"job{i % 7}")) for i in range(n_series))


def values_for(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(np.cumsum(rng.random(n)) * 10, 1)


def build(workdir: Path, n_series: int, hours: int, metrics: int, end: int, seed: int = 1) -> dict:
    """Blocks into the ingester's directory and the bucket; returns the head hour's samples per series."""
    rng = np.random.default_rng(seed)
    labels = make_labels(n_series, metrics)
    tsdb_dir = workdir / "data" / "tsdb" / TENANT
    bucket_dir = workdir / "data" / "blocks" / TENANT
    tsdb_dir.mkdir(parents=True)
    bucket_dir.mkdir(parents=True)
    start = end - hours * HOUR
    ulids = []
    for block_start in range(start, end - HOUR, 2 * HOUR):
        block_end = min(block_start + 2 * HOUR, end - HOUR)
        ts = np.arange(block_start, block_end, STEP_MS, dtype=np.int64)
        series = ((lbl, ts, values_for(rng, len(ts))) for lbl in labels)
        ulid = write_block(tsdb_dir, series, block_start, block_end, tenant=TENANT, source="bench")
        shutil.copytree(tsdb_dir / ulid, bucket_dir / ulid)
        ulids.append(ulid)
    (tsdb_dir / "thanos.shipper.json").write_text(json.dumps({"version": 1, "uploaded": ulids}))
    head_ts = np.arange(end - HOUR, end + 1, STEP_MS, dtype=np.int64)
    return {lbl: (head_ts, values_for(rng, len(head_ts))) for lbl in labels}


def push(url: str, head: dict, batch: int = 500) -> None:
    items = list(head.items())
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    with httpx.Client(timeout=120) as client:
        for first in range(0, len(items), batch):
            request = prompb.WriteRequest()
            for labels, (ts, vals) in items[first:first + batch]:
                series = request.timeseries.add()
                for name, value in labels:
                    series.labels.add(name=name, value=value)
                for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
                    series.samples.add(timestamp=t, value=v)
            resp = client.post(url, content=snappy.compress(request.SerializeToString()), headers=headers)
            if resp.status_code >= 300:
                raise RuntimeError(f"push failed: {resp.status_code} {resp.text[:200]}")


def in_process(workdir: Path, head: dict, end: int, hours: int, reps: int) -> None:
    """Time the querier's select, per-series path against select_batch (same process, same data)."""
    from mimird.bucket import FilesystemBucket
    from mimird.config.runtime import Overrides
    from mimird.config.schema import Config
    from mimird.ingester.ingester import TenantTSDB
    from mimird.querier.queryable import TenantQueryable
    from mimird.storegateway.gateway import StoreGateway
    from mimird.tsdb.labels import Matcher
    from mimird.tsdb.seriesbatch import SeriesBatch

    config = Config.defaults()
    db = TenantTSDB(TENANT, workdir / "data" / "tsdb" / TENANT, block_range_ms=2 * HOUR, ooo_window_ms=0,
                    max_exemplars=0, wal_segment_size=1 << 27, wal_fsync="never")
    db.open()
    for labels, (ts, vals) in head.items():
        db.head.append([labels], [0, len(ts)], ts.tolist(), vals.tolist())
    ingester = SimpleNamespace(tenants={TENANT: db}, select=lambda t, m, lo, hi: db.select(m, lo, hi),
                               select_batch=lambda t, m, lo, hi: db.select_batch(m, lo, hi))
    gateway = StoreGateway(config, FilesystemBucket(workdir / "data" / "blocks"))
    gateway.sync_now()
    mint, maxt = end - hours * HOUR, end
    selections = [("1/48 of the series", [Matcher("=", "__name__", "bq_metric_00")]),
                  ("all series", [Matcher("=~", "__name__", "bq_metric_.+")])]
    print(f"in process, select over {hours}h ({len(db.blocks)} local blocks + head; store-gateway "
          f"{gateway.loaded_blocks(TENANT) and len(gateway.loaded_blocks(TENANT))} bucket blocks)")
    for store_after, label in ((12 * 3600.0, "ingester only"), (0.0, "ingester + store-gateway")):
        config._values["querier.query_store_after"] = store_after
        app = SimpleNamespace(config=config, overrides=Overrides(config, None), ingester=ingester,
                              store_gateway=gateway)
        for what, matchers in selections:
            timings = {}
            for path in ("per-series", "batched"):
                runs = []
                for _ in range(reps + 1):
                    queryable = TenantQueryable(app, [TENANT], now_ms=end)
                    began = time.perf_counter()
                    if path == "per-series":
                        batch = SeriesBatch.from_series(queryable._select(matchers, mint, maxt))
                    else:
                        batch = queryable.select_batch(matchers, mint, maxt)
                    runs.append(time.perf_counter() - began)
                timings[path] = (statistics.median(runs[1:]), len(batch), batch.num_samples)
            old, new = timings["per-series"], timings["batched"]
            assert old[1:] == new[1:]
            print(f"  {label:26s} {what:20s} {old[1]:6d} series {old[2]:9d} samples: per-series "
                  f"{old[0] * 1000:8.1f} ms  batched {new[0] * 1000:7.1f} ms  ({old[0] / new[0]:.1f}x)")
    db.close()


def start_mimird(workdir: Path, port: int, flags: list[str]) -> subprocess.Popen:
    args = [str(REPO / ".venv" / "bin" / "mimird"), f"-server.http-listen-port={port}", "-auth.multitenancy-enabled=false",
            "-ingester.max-global-series-per-user=0", "-distributor.ingestion-rate-limit=1e12",
            "-distributor.ingestion-burst-size=1000000000000", "-log.level=warn", *flags]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"))
    wait_http(f"http://127.0.0.1:{port}/ready", proc)
    return proc


def start_prometheus(workdir: Path, port: int, source: Path) -> subprocess.Popen:
    tsdb = workdir / "tsdb"
    tsdb.mkdir(parents=True)
    for block in (source / "data" / "tsdb" / TENANT).iterdir():
        if block.is_dir() and (block / "meta.json").is_file():
            shutil.copytree(block, tsdb / block.name)
    (workdir / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    args = ["/usr/bin/prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=30d", "--log.level=warn"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"))
    wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    return proc


def time_queries(base: str, end: int, hours: int, reps: int) -> dict[str, float]:
    out = {}
    with httpx.Client(timeout=600) as client:
        for query in QUERIES:
            params = {"query": query, "start": (end - hours * HOUR) / 1000, "end": end / 1000, "step": 60}
            runs = []
            for _ in range(reps + 1):
                began = time.perf_counter()
                resp = client.get(f"{base}/api/v1/query_range", params=params)
                runs.append(time.perf_counter() - began)
                if resp.status_code != 200 or resp.json()["status"] != "success":
                    raise RuntimeError(f"{query}: {resp.status_code} {resp.text[:300]}")
            out[query] = statistics.median(runs[1:])
    return out


def end_to_end(source: Path, head: dict, end: int, hours: int, reps: int, stores: list[str]) -> None:
    results: dict[str, dict[str, float]] = {}
    for store in stores:
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-blockquery-{store}-"))
        port = free_port()
        try:
            if store == "prometheus":
                proc = start_prometheus(workdir, port, source)
                push_url, base = f"http://127.0.0.1:{port}/api/v1/write", f"http://127.0.0.1:{port}"
            else:
                shutil.copytree(source / "data", workdir / "data")
                flags = ["-querier.query-store-after=0"] if store == "mimird+store" else []
                proc = start_mimird(workdir, port, flags)
                push_url, base = f"http://127.0.0.1:{port}/api/v1/push", f"http://127.0.0.1:{port}/prometheus"
            try:
                push(push_url, head)
                results[store] = time_queries(base, end, hours, reps)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"end to end, query_range over {hours}h at a 60s step (median of {reps}, seconds)")
    print("  " + f"{'query':56s}" + "".join(f"{store:>14s}" for store in stores))
    for query in QUERIES:
        print("  " + f"{query:56s}" + "".join(f"{results[store][query]:14.3f}" for store in stores))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10000)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--metrics", type=int, default=48)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--stores", default="mimird,mimird+store,prometheus")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    end = (int(time.time() * 1000) // STEP_MS) * STEP_MS
    source = Path(tempfile.mkdtemp(prefix="bench-blockquery-data-"))
    try:
        began = time.perf_counter()
        head = build(source, args.series, args.hours, args.metrics, end)
        print(f"built {args.series} series x {args.hours}h in {time.perf_counter() - began:.1f}s "
              f"(mimird from {os.path.dirname(prompb.__file__)})")
        if not args.skip_in_process:
            scratch = Path(tempfile.mkdtemp(prefix="bench-blockquery-inproc-"))
            try:
                shutil.copytree(source / "data", scratch / "data")
                in_process(scratch, head, end, args.hours, args.reps)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        stores = [s for s in args.stores.split(",") if s]
        if stores:
            end_to_end(source, head, end, args.hours, args.reps, stores)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
