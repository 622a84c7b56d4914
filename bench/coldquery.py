"""Benchmark: small queries in process, warm and with cold caches, each PromQL shortcut on and off.

Dashboards refresh every few seconds, and between two refreshes the machine's caches forget mimird's
code and data. A small query then pays for every line of code it touches more than for its work, and
a tight loop hides that. This script loads the reference peers' dataset into an in-process mimird
(the real write path), then times each query through the HTTP dispatcher twice per round: right after
a first run (warm) and right after writing a large buffer (`--thrash-mb`, more than the caches hold)
(cold). Each round does this with the shortcut on, then off:

- `fastpath`: instant queries of the shapes `mimird.promql.fastpath` answers, against the evaluator;
- `select_fold`: aggregations of a selector folded in one kernel, against select-then-aggregate.

Medians in microseconds. The alternation keeps the machine's drift out of the comparison.

Run: .venv/bin/python bench/coldquery.py [--series 10000] [--runs 150] [--shortcut fastpath]
     ['instant:max_over_time(node_load1{job="api"}[10m])' 'range:count by (cluster) (up)' ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
import uvloop

REFPEERS = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "refpeers"
sys.path.insert(0, str(REFPEERS))
import rw  # noqa: E402  (the shared load generator: dataset and pre-encoding)

import mimird.promql.engine as engine_module  # noqa: E402
import mimird.promql.evaluator as evaluator_module  # noqa: E402
from mimird.app import App  # noqa: E402
from mimird.config.schema import load_config  # noqa: E402
from mimird.http.request import Request  # noqa: E402

DEFAULT_QUERIES = [
    'instant:max_over_time(node_load1{job="api"}[10m])',
    "instant:count by (cluster) (up)",
    "instant:sum by (job) (node_memory_MemAvailable_bytes)",
    'instant:up{instance="host-00001:9100"}',
    "range:count by (cluster) (up)",
    "range:sum by (job) (node_memory_MemAvailable_bytes)",
]


def shortcut_switch(name: str):
    """A function that turns the named shortcut on (True) or off (False)."""
    if name == "fastpath":
        real = engine_module._instant_plan

        def switch(on: bool) -> None:
            engine_module._instant_plan = real if on else (lambda query: None)
    else:
        real = evaluator_module._FOLDED_AGGREGATIONS

        def switch(on: bool) -> None:
            evaluator_module._FOLDED_AGGREGATIONS = real if on else frozenset()
    return switch


async def run(args) -> None:
    work = tempfile.mkdtemp(prefix="coldquery-")
    config, _ = load_config([f"-blocks-storage.tsdb.dir={work}/tsdb", f"-blocks-storage.filesystem.dir={work}/bucket",
                             "-auth.multitenancy-enabled=false", "-server.http-listen-port=0", "-log.level=warn",
                             "-ingester.max-global-series-per-user=0", "-distributor.ingestion-rate-limit=1e12",
                             "-distributor.ingestion-burst-size=1000000000000"])
    dataset = rw.Dataset(args.series, int(args.hours * 240))
    per_shard, _ = rw.pre_encode(dataset, argparse.Namespace(batch_series=2000, batch_samples=1), 1)
    end_s = (dataset.end_ms // 1000) // 15 * 15
    app = App(config)
    await app.start()
    headers = {name.lower(): value for name, value in rw.rw_headers().items()}
    for _, body in per_shard[0]:
        response = await app.http.dispatch(Request("POST", "/api/v1/push", "", dict(headers), body))
        if response.status not in (200, 204):
            raise SystemExit(f"push failed: {response.status} {bytes(response.body)[:200]!r}")
    buffer = np.zeros(args.thrash_mb * 1024 * 1024 // 8)
    switch = shortcut_switch(args.shortcut)
    print(f"{args.series} series x {args.hours} h, {args.runs} rounds, {args.thrash_mb} MB written for cold runs; "
          f"shortcut {args.shortcut}; medians in us")
    print(f"{'on warm':>8} {'on cold':>8} {'off warm':>8} {'off cold':>8}  query")
    for spec in args.queries:
        kind, _, query = spec.partition(":")
        if kind == "range":
            path = "/prometheus/api/v1/query_range"
            params = {"query": query, "start": end_s - 3600, "end": end_s, "step": 15}
        else:
            path = "/prometheus/api/v1/query"
            params = {"query": query, "time": end_s}
        request_args = (path, urllib.parse.urlencode(params))
        times: dict[tuple[bool, str], list[float]] = {}
        for _ in range(args.runs):
            for on in (True, False):
                switch(on)
                await app.http.dispatch(Request("GET", *request_args, {"host": "x"}, b""))
                for state in ("warm", "cold"):
                    if state == "cold":
                        buffer[::8] += 1.0  # one write per cache line
                    started = time.perf_counter()
                    await app.http.dispatch(Request("GET", *request_args, {"host": "x"}, b""))
                    times.setdefault((on, state), []).append(time.perf_counter() - started)
        switch(True)
        medians = [statistics.median(times[(on, state)]) * 1e6 for on in (True, False) for state in ("warm", "cold")]
        print(" ".join(f"{m:8.0f}" for m in medians), f" {kind} {query}", flush=True)
    await app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("queries", nargs="*", default=DEFAULT_QUERIES, help="kind:query, kind instant or range")
    parser.add_argument("--series", type=int, default=10000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--thrash-mb", type=int, default=512)
    parser.add_argument("--shortcut", choices=("fastpath", "select_fold"), default="fastpath")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
