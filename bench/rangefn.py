"""Benchmark: `rate(x[5m])` over 10k series and a 241-step grid, Cython batch kernel vs Python reference.

The data is 2h (plus one window of lead-in) of 15 s scrapes with a little jitter, counters with an
occasional reset, and the grid is a 2h range query at a 30 s step. The pure-Python reference is run on
a sample of the series and its time is scaled up to the full query, since running it on all 10k
would take tens of minutes.

Run: .venv/bin/python bench/rangefn.py [--series N] [--reference-series M] [--function rate]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import rangefn_reference  # noqa: E402
from mimird._fast import rangefn  # noqa: E402

SCRAPE_MS = 15_000
RANGE_MS = 5 * 60_000
STEP_MS = 30_000
QUERY_MS = 2 * 3600_000
# Scalar arguments used when --function names a function that takes them.
DEFAULT_PARAMS = {"quantile_over_time": (0.9,), "predict_linear": (3600.0,),
                  "double_exponential_smoothing": (0.5, 0.5)}


def make_series(n_series: int, seed: int = 1):
    """Concatenated counter series with jittered timestamps, as evaluate_batch takes them."""
    rng = np.random.default_rng(seed)
    per_series = (QUERY_MS + RANGE_MS) // SCRAPE_MS + 1
    base = np.arange(per_series, dtype=np.int64) * SCRAPE_MS
    jitter = rng.integers(-500, 500, size=(n_series, per_series))
    jitter[:, 0] = 0
    ts = (base + jitter).reshape(-1)
    increments = rng.exponential(5.0, size=(n_series, per_series))
    vals = np.cumsum(increments, axis=1)
    # About one reset per series: subtract the running level at a random point onwards.
    reset_at = rng.integers(1, per_series, size=n_series)
    for k in range(n_series):
        vals[k, reset_at[k]:] -= vals[k, reset_at[k] - 1]
    offsets = np.arange(n_series + 1, dtype=np.int64) * per_series
    eval_ts = np.arange(RANGE_MS, RANGE_MS + QUERY_MS + 1, STEP_MS, dtype=np.int64)
    return ts, vals.reshape(-1), offsets, eval_ts


def window_samples(ts, offsets, eval_ts) -> int:
    """Samples summed over all windows: what Prometheus reports as samples processed."""
    total = 0
    for k in range(len(offsets) - 1):
        series_ts = ts[offsets[k]:offsets[k + 1]]
        hi = np.searchsorted(series_ts, eval_ts, side="right")
        lo = np.searchsorted(series_ts, eval_ts - RANGE_MS, side="right")
        total += int(np.sum(hi - lo))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--reference-series", type=int, default=20)
    parser.add_argument("--function", default="rate")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    params = DEFAULT_PARAMS.get(args.function, ())

    ts, vals, offsets, eval_ts = make_series(args.series)
    n_samples = len(ts)
    in_windows = window_samples(ts, offsets, eval_ts)
    print(f"{args.function}(x[5m]{''.join(f', {p}' for p in params)}): {args.series} series x {len(eval_ts)} steps, "
          f"{n_samples / args.series:.0f} samples per series, {n_samples} samples in all, "
          f"{in_windows} samples summed over windows")

    rangefn.evaluate_batch(args.function, ts, vals, offsets, eval_ts, RANGE_MS, params)  # warm-up
    walls, cpus = [], []
    for _ in range(args.repeat):
        started, started_cpu = time.perf_counter(), time.thread_time()
        rangefn.evaluate_batch(args.function, ts, vals, offsets, eval_ts, RANGE_MS, params)
        walls.append(time.perf_counter() - started)
        cpus.append(time.thread_time() - started_cpu)
    best = min(walls)
    # On a shared machine the CPU time of the calling thread is the steadier figure.
    print(f"cython batch:     {best * 1e3:9.1f} ms per query (best of {args.repeat}; "
          f"{min(cpus) * 1e3:.1f} ms CPU), {n_samples / best / 1e6:8.1f} M input samples/s, "
          f"{in_windows / best / 1e6:8.1f} M window samples/s")

    m = min(args.reference_series, args.series)
    started = time.perf_counter()
    for k in range(m):
        lo, hi = offsets[k], offsets[k + 1]
        rangefn_reference.evaluate(args.function, ts[lo:hi], vals[lo:hi], eval_ts, RANGE_MS, params)
    per_series = (time.perf_counter() - started) / m
    reference_query = per_series * args.series
    print(f"python reference: {reference_query * 1e3:9.0f} ms per query (scaled from {m} series), "
          f"{n_samples / reference_query / 1e6:8.3f} M input samples/s, "
          f"{in_windows / reference_query / 1e6:8.3f} M window samples/s")
    print(f"speed-up: {reference_query / best:.0f}x")


if __name__ == "__main__":
    main()
