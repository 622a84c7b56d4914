#!/usr/bin/env python3
"""Dashboard-query latency, mimird next to Prometheus on the same data.

Loads the reference dataset (10k series x 2h at 15s by default, `../shared/tools/refpeers/rw.py`) into a
fresh mimird and a fresh Prometheus over one connection, then runs each query of
`../shared/tools/refpeers/queries.txt` as a 1h range query at a 15s step and as an instant query (1 warm-up,
3 timed runs, median), prints both latencies and the ratio, and compares the results (rtol 1e-6, metric
names ignored).

    .venv/bin/python bench/query.py [--series 10000] [--hours 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ingest
from ingest import REFPEERS, STORES, free_port, rw  # noqa: F401  (rw comes from the shared folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--stores", default="mimird,prometheus")
    parser.add_argument("--queries", default=str(REFPEERS / "queries.txt"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--outdir", default=str(Path(__file__).parent / "out"))
    parser.add_argument("--mimird-flags", default="",
                        help="extra mimird flags, space-separated (e.g. -query-frontend.cache-results=true)")
    args = parser.parse_args()
    ingest.MIMIRD_EXTRA_FLAGS[:] = args.mimird_flags.split()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    dataset = rw.Dataset(args.series, int(round(args.hours * 3600 / 15)))
    meta_path = outdir / "query-dataset.json"
    meta_path.write_text(json.dumps(dataset.meta()))
    per_shard, _ = rw.pre_encode(dataset, argparse.Namespace(batch_series=2000, batch_samples=1), 1)
    results = {}
    for store in args.stores.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{store}-"))
        port = free_port()
        proc, write_url = STORES[store](workdir, port)
        try:
            loaded = rw.push_all(write_url, per_shard, rw.rw_headers(), 900)
            print(f"{store}: loaded {loaded['samples_ok']:,} samples at {loaded['samples_per_s']:,}/s, "
                  f"errors {loaded['errors']}", flush=True)
            time.sleep(2)
            base = f"http://127.0.0.1:{port}" + ("/prometheus" if store == "mimird" else "")
            out = outdir / f"query-{store}.json"
            rw.main(["query", base, "--file", args.queries, "--meta", str(meta_path), "--range", "1h",
                     "--step", "15s", "--repeat", str(args.reps), "--warmup", "1", "--out", str(out)])
            results[store] = json.loads(out.read_text())
        finally:
            proc.terminate()
            proc.wait(60)
            shutil.rmtree(workdir, ignore_errors=True)
    if {"mimird", "prometheus"} <= set(results):
        index = {(r["query"], r["type"]): r for r in results["prometheus"]["results"]}
        print(f"\n{'type':8s}{'mimird ms':>11s}{'prom ms':>10s}{'ratio':>8s}  {'equal points':14s} query")
        for mine in results["mimird"]["results"]:
            theirs = index[(mine["query"], mine["type"])]
            verdict = rw.compare_result(mine, theirs, 1e-6, 1e-9, True)
            equal = ("error" if "error" in verdict else
                     f"{verdict['points_equal']}/{verdict['points_common']}"
                     + ("" if verdict["series_a"] == verdict["series_b"] == verdict["series_common"] else " series!"))
            ratio = (mine["median_ms"] or 0) / (theirs["median_ms"] or 1)
            print(f"{mine['type']:8s}{mine['median_ms'] or 0:>11.1f}{theirs['median_ms'] or 0:>10.1f}{ratio:>8.2f}"
                  f"  {equal:14s} {mine['query'][:70]}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())
