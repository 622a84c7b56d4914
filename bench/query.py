#!/usr/bin/env python3
"""Dashboard-query latency, mimird next to Prometheus (and VictoriaMetrics) on the same data.

Loads the reference dataset (10k series x 2h at 15s by default, `../shared/tools/refpeers/rw.py`) into a fresh
mimird, a fresh Prometheus and, when Debian's victoria-metrics is installed, a fresh VictoriaMetrics, each
over one connection, and keeps all of them running; then runs each query of `bench/queries.txt` (the refpeers
queries plus subqueries) as a range query (1h at a 15s step unless `--range-hours`/`--step` say otherwise) and
as an instant query, one warm-up per store and then `--reps` rounds that query every store in turn (median),
prints the latencies and ratios, and compares mimird's results with Prometheus's (rtol 1e-6, metric names
ignored). Alternating the stores query by query keeps the machine's drift out of the ratios; each round starts
with the next store, and each run waits until no store is still busy with the previous one. The stores load in
`--stores` order, so the last (mimird by default) is queried right after its load and the others have settled
longer.

    .venv/bin/python bench/query.py [--series 10000] [--hours 2] [--reps 7] [--stores vm,prometheus,mimird]

Longer ranges read blocks: mimird and Prometheus cut the older hours into 2h blocks once their heads span more
than 3h. mimird checks every `-blocks-storage.tsdb.head-compaction-interval` (1m), Prometheus every minute, so
give mimird a short interval and both time to finish before the queries:

    .venv/bin/python bench/query.py --hours 6 --range-hours 6 --settle 90 \
        --mimird-flags=-blocks-storage.tsdb.head-compaction-interval=5s

To compare two builds of mimird in the same alternation, unpack and build the other one elsewhere and
name its `src` with `--baseline` (it runs as a fourth store, "base", loaded just before mimird):

    mkdir /tmp/old && git archive <commit> | tar -x -C /tmp/old
    (cd /tmp/old && $OLDPWD/.venv/bin/python setup.py build_ext --inplace -q)
    .venv/bin/python bench/query.py --baseline /tmp/old/src
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import ingest
from ingest import REFPEERS, STORES, free_port, rw  # noqa: F401  (rw comes from the shared folder)

SUBQUERY = re.compile(r"\[[^\]]*:[^\]]*\]")


def wait_idle(pid: int, quiet_cpu_s: float = 0.02, poll_s: float = 0.5, max_s: float = 120.0) -> float:
    """Wait until the store's background work after the load (WAL, merges, flushes) has settled: two polls in a
    row with under `quiet_cpu_s` CPU each. Returns the seconds waited (at least two polls)."""
    start = time.monotonic()
    quiet, last = 0, rw.proc_cpu(pid)
    while quiet < 2 and time.monotonic() - start < max_s:
        time.sleep(poll_s)
        now = rw.proc_cpu(pid)
        quiet = quiet + 1 if now - last < quiet_cpu_s else 0
        last = now
    return time.monotonic() - start


def print_table(results: dict) -> None:
    """Latencies and ratios to Prometheus per query; with VictoriaMetrics also mimird/VM."""
    by_store = {store: {(r["query"], r["type"]): r for r in dump["results"]} for store, dump in results.items()}
    has_vm = "vm" in by_store
    has_base = "base" in by_store
    footnote = False
    print(f"\n{'type':8s}{'mimird ms':>11s}{'prom ms':>10s}{'ratio':>8s}"
          + (f"{'vm ms':>9s}{'vm/prom':>9s}{'mim/vm':>8s}{'P>vm':>6s}" if has_vm else "")
          + (f"{'base ms':>9s}{'mim/base':>9s}{'P>base':>7s}" if has_base else "")
          + f"  {'equal points':14s} query")
    vm_ratios, base_ratios = [], []
    for mine in results["mimird"]["results"]:
        key = (mine["query"], mine["type"])
        theirs = by_store["prometheus"][key]
        verdict = rw.compare_result(mine, theirs, 1e-6, 1e-9, True)
        equal = ("error" if "error" in verdict else
                 f"{verdict['points_equal']}/{verdict['points_common']}"
                 + ("" if verdict["series_a"] == verdict["series_b"] == verdict["series_common"] else " series!"))
        mine_ms, prom_ms = mine["median_ms"] or 0, theirs["median_ms"] or 0
        line = f"{mine['type']:8s}{mine_ms:>11.1f}{prom_ms:>10.1f}{mine_ms / (prom_ms or 1):>8.2f}"
        if has_vm:
            vm_ms = by_store["vm"][key]["median_ms"] or 0
            slower = chance_slower(mine["timings_ms"], by_store["vm"][key]["timings_ms"])
            line += f"{vm_ms:>9.1f}{vm_ms / (prom_ms or 1):>9.2f}{mine_ms / (vm_ms or 1):>8.2f}{slower:>6.2f}"
            vm_ratios.append((mine_ms / (vm_ms or 1), slower, mine["type"], mine["query"]))
        if has_base:
            base = by_store["base"][key]
            base_ms = base["median_ms"] or 0
            slower = chance_slower(mine["timings_ms"], base["timings_ms"])
            line += f"{base_ms:>9.1f}{mine_ms / (base_ms or 1):>9.2f}{slower:>7.2f}"
            same = rw.compare_result(mine, base, 1e-12, 0.0, True)
            if "error" in same or same["points_equal"] != same["points_common"] or not (
                    same["series_a"] == same["series_b"] == same["series_common"]):
                equal += " base differs!"
            base_ratios.append(mine_ms / (base_ms or 1))
        if SUBQUERY.search(mine["query"]) and equal != f"{verdict.get('points_common')}/{verdict.get('points_common')}":
            equal += " (1)"
            footnote = True
        print(f"{line}  {equal:14s} {mine['query'][:70]}")
    if footnote:
        print("\n(1) The step grid is aligned to the subquery step, so subquery points fall on window edges: "
              "Prometheus 2.42 counts the left edge ([t-r, t]), 3.x and mimird do not ((t-r, t]); "
              "class 1 of tests/test_promql_vs_prometheus.py.")
    if vm_ratios:
        ratios = [ratio for ratio, *_ in vm_ratios]
        print(f"\nmimird/VM: {sum(r <= 1 for r in ratios)} of {len(ratios)} rows at or below 1, median "
              f"{statistics.median(ratios):.2f}, worst {max(ratios):.2f}. P>vm: the share of pairs of timed runs "
              "(one of each store) in which mimird took longer (ties count half); near 0.5 the two are alike.")
        for ratio, slower, kind, query in vm_ratios:
            if ratio > 1:
                print(f"  above 1: {ratio:.2f} (P>vm {slower:.2f}) {kind} {query}")
    if base_ratios:
        print(f"\nmimird/baseline: median {statistics.median(base_ratios):.2f}, best {min(base_ratios):.2f}, "
              f"worst {max(base_ratios):.2f}; P>base as P>vm, against the baseline build.")


def chance_slower(mine: list[float], theirs: list[float]) -> float:
    """The share of (mine, theirs) pairs of timings in which mine is the larger, ties counting half: the
    Mann-Whitney U statistic over the number of pairs (0.5 when neither store is faster)."""
    if not mine or not theirs:
        return math.nan
    larger = sum((a > b) + 0.5 * (a == b) for a in mine for b in theirs)
    return larger / (len(mine) * len(theirs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--stores", default=("vm," if Path("/usr/bin/victoria-metrics").exists() else "") + "prometheus,mimird",
                        help="stores to load, in this order, and query (vm = Debian's victoria-metrics, if installed)")
    parser.add_argument("--queries", default=str(Path(__file__).parent / "queries.txt"))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--range-hours", type=float, default=1.0,
                        help="the range queries' span, ending at the dataset's end (at most --hours)")
    parser.add_argument("--step", type=float, default=15.0, help="the range queries' step in seconds")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="extra seconds to wait after each store's load before querying (VictoriaMetrics "
                             "answers small instant queries several times faster once its data has settled)")
    parser.add_argument("--outdir", default=str(Path(__file__).parent / "out"))
    parser.add_argument("--baseline", default="",
                        help="another build's src folder (e.g. an older commit unpacked and built elsewhere): run "
                             "it as a fourth store, 'base', queried in the same alternation, to compare builds")
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
    stores = args.stores.split(",")
    if args.baseline:
        STORES["base"] = functools.partial(STORES["mimird"], src=str(Path(args.baseline).resolve()))
        stores.insert(stores.index("mimird"), "base")
    running = {}
    try:
        # Every store is loaded first and kept running; then each query's runs alternate between the
        # stores, so that the machine's speed, which drifts by tens of percent over minutes here, weighs
        # on all of them alike. The stores are loaded in the order given, so the last one is queried
        # right after its load and the first has settled longest.
        for store in stores:
            running[store] = load_store(store, per_shard, args.settle)
        results = query_interleaved(running, rw.read_queries(args.queries), dataset.meta()["end_ms"] / 1000,
                                    args.reps, args.step, args.range_hours * 3600)
    finally:
        for proc, _, workdir in running.values():
            proc.terminate()
            proc.wait(60)
            shutil.rmtree(workdir, ignore_errors=True)
    for store, dump in results.items():
        (outdir / f"query-{store}.json").write_text(json.dumps(dump))
    if {"mimird", "prometheus"} <= set(results):
        print_table(results)
    return 0


def load_store(store: str, per_shard, settle_s: float):
    """Start `store` on a free port, push the dataset, wait until it is idle; (process, query base, workdir)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{store}-"))
    port = free_port()
    proc, write_url = STORES[store](workdir, port)
    loaded = rw.push_all(write_url, per_shard, rw.rw_headers(), 900)
    print(f"{store}: loaded {loaded['samples_ok']:,} samples at {loaded['samples_per_s']:,}/s, "
          f"errors {loaded['errors']}", flush=True)
    if store == "vm":
        # VictoriaMetrics makes fresh samples searchable about a second later; flush to be sure.
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/internal/force_flush", method="POST"), timeout=30).read()
    settled = wait_idle(proc.pid)
    time.sleep(settle_s)
    print(f"{store}: idle after {settled:.1f}s (+{settle_s:g}s settle)", flush=True)
    return proc, f"http://127.0.0.1:{port}" + ("/prometheus" if store in ("mimird", "base") else ""), workdir


def query_interleaved(running: dict, queries: list[str], end_s: float, reps: int, step_s: float = 15.0,
                      range_s: float = 3600.0) -> dict:
    """Each query as a range query (range_s at step_s, ending at the dataset's end) and as an instant one,
    against every store: one warm-up each, then `reps` rounds of one timed run per store. Returns per store
    what refpeers' `rw.py query` writes (timings, median, the answer's data)."""
    end = math.floor(end_s / step_s) * step_s  # on the step grid, as rw.py aligns it
    start = math.ceil((end - range_s) / step_s) * step_s
    conns = {store: (rw.Conn(base), urllib.parse.urlsplit(base).path) for store, (_, base, _) in running.items()}
    pids = [proc.pid for proc, _, _ in running.values()]
    headers = {"Accept": "application/json", "User-Agent": "mimird-bench/1"}
    results = {store: {"start": start, "end": end, "step": step_s, "repeat": reps, "warmup": 1, "results": []}
               for store in running}
    for query in queries:
        for kind in ("range", "instant"):
            if kind == "range":
                endpoint = "/api/v1/query_range"
                params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
            else:
                endpoint, params = "/api/v1/query", {"query": query, "time": f"{end:.3f}"}
            timings = {store: [] for store in running}
            bodies = {}
            order = list(conns)
            for rep in range(1 + reps):
                # Each round starts with another store, and every run waits until no store is still busy
                # (a Go store collects the garbage of a heavy query after answering it, on the cores the
                # next store's run needs).
                for store in order[rep % len(order):] + order[:rep % len(order)]:
                    conn, prefix = conns[store]
                    wait_all_idle(pids)
                    started = time.perf_counter()
                    status, body = conn.request("GET", prefix + endpoint + "?" + urllib.parse.urlencode(params),
                                                headers)
                    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
                    if rep:
                        timings[store].append(elapsed_ms)
                    bodies[store] = (status, body)
            line = []
            for store in running:
                status, body = bodies[store]
                entry = answer_entry(query, kind, status, body, timings[store])
                results[store]["results"].append(entry)
                line.append(f"{store} {entry['median_ms']:8.2f}")
            print(f"{kind:8s}", "  ".join(line), " ms ", query[:80], flush=True)
    return results


def wait_all_idle(pids: list[int], window_s: float = 0.03, max_s: float = 2.0) -> None:
    """Wait until none of the processes used CPU during one window (the kernel counts CPU time in 10 ms
    ticks, so a window of 30 ms without a tick means at most a few ms of work), or max_s passed."""
    deadline = time.monotonic() + max_s
    last = sum(rw.proc_cpu(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = sum(rw.proc_cpu(pid) for pid in pids)
        if now == last:
            return
        last = now


def answer_entry(query: str, kind: str, status: int, body: bytes, timings: list[float]) -> dict:
    """One result record in refpeers' `rw.py query` shape."""
    try:
        data = json.loads(body)
    except ValueError:
        data = {"status": "error", "error": body[:500].decode("utf-8", "replace")}
    result = data.get("data", {}).get("result") if isinstance(data.get("data"), dict) else None
    if not (isinstance(result, list) and all(isinstance(series, dict) for series in result)):
        result = None  # a scalar or string answer
    entry = {"query": query, "type": kind, "http_status": status, "status": data.get("status"),
             "timings_ms": timings, "median_ms": statistics.median(timings) if timings else None,
             "n_series": len(result) if result is not None else None,
             "n_points": sum(len(series.get("values", [])) or 1 for series in result) if result is not None
             else None, "data": data.get("data")}
    if data.get("status") != "success":
        entry["error"] = data.get("error") or data.get("errorType")
    return entry


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())
