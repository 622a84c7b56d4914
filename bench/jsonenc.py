#!/usr/bin/env python3
"""Rendering speed of query results as JSON, the Cython kernel against the pure-Python reference.

Run: .venv/bin/python bench/jsonenc.py [--series N] [--points N]

Renders matrices shaped like range-query answers (a 15 s step grid of whole-second timestamps, one
series per label set) with three kinds of values: integral counters, full-precision gauges, and the
shape of `max_over_time(node_load1{job="api"}[10m])` from bench/query.py (load averages with two
decimals), plus full-precision values of any magnitude (1e-300 to 1e300, Go's exponent form and long fixed
notation) and a vector of the same label sets. Prints nanoseconds per point (per sample for the vector)
for each renderer and checks that both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mimird._fast import jsonenc
from mimird.promql.value import Matrix, Sample, Series, Vector

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import jsonenc_reference as reference  # noqa: E402

STEP_MS = 15_000
START_MS = 1_700_000_000_000


def label_sets(n: int) -> list[tuple[tuple[str, str], ...]]:
    return [(("__name__", "node_load1"), ("instance", f"host-{i:04d}:9100"), ("job", "api"))
            for i in range(n)]


def matrix(rng: np.random.Generator, series: int, points: int, kind: str) -> Matrix:
    ts = START_MS + np.arange(points, dtype=np.int64) * STEP_MS
    out = []
    for labels in label_sets(series):
        if kind == "counter":
            vals = np.cumsum(rng.poisson(40, points)).astype(np.float64)
        elif kind == "gauge":
            vals = 100.0 + np.cumsum(rng.normal(0, 1.5, points))
        elif kind == "wide-range":
            vals = rng.normal(0, 1, points) * 10.0 ** rng.integers(-300, 300, points)
        else:
            vals = np.round(rng.gamma(2.0, 0.8, points), 2)
        out.append(Series(labels, ts, vals))
    return Matrix(out)


def per_item_ns(render: Callable[[], str], items: int, min_seconds: float = 0.3) -> float:
    runs = 0
    started = time.process_time()
    while True:
        render()
        runs += 1
        elapsed = time.process_time() - started
        if elapsed >= min_seconds:
            return elapsed / runs / items * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=18)
    parser.add_argument("--points", type=int, default=241, help="points per series (241 = 1h at 15s)")
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    total = args.series * args.points
    print(f"{args.series} series x {args.points} points = {total} points per matrix")
    print(f"{'case':<22}{'python ns/pt':>14}{'cython ns/pt':>14}{'speed-up':>10}")
    for kind in ("counter", "gauge", "load-average", "wide-range"):
        value = matrix(rng, args.series, args.points, kind)
        if jsonenc.render_matrix(value) != reference.render_matrix(value):
            print(f"{kind}: outputs differ", file=sys.stderr)
            return 1
        slow = per_item_ns(lambda value=value: reference.render_matrix(value), total)
        fast = per_item_ns(lambda value=value: jsonenc.render_matrix(value), total)
        print(f"{'matrix ' + kind:<22}{slow:>14.0f}{fast:>14.0f}{slow / fast:>9.1f}x")
    samples = Vector(Sample(labels, START_MS + 500, float(v))
                     for labels, v in zip(label_sets(1000), rng.normal(0, 100, 1000), strict=True))
    if jsonenc.render_vector(samples) != reference.render_vector(samples):
        print("vector: outputs differ", file=sys.stderr)
        return 1
    slow = per_item_ns(lambda: reference.render_vector(samples), len(samples))
    fast = per_item_ns(lambda: jsonenc.render_vector(samples), len(samples))
    print(f"{'vector (per sample)':<22}{slow:>14.0f}{fast:>14.0f}{slow / fast:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
