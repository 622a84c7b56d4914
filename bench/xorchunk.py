"""Encode and decode speed of the XOR chunk codec, Cython against the pure-Python reference.

Run: .venv/bin/python bench/xorchunk.py [--series N] [--baseline PATH]

Four realistic shapes, cut into 120-sample chunks as the head does: a counter scraped every 15 s with
a few milliseconds of jitter, a gauge doing a random walk over full-precision floats, and two series
scraped on time whose values stay put (`up`, an error counter that rarely moves). Prints
samples per CPU second for each codec and operation, and bytes per sample.

With --baseline PATH (another build of the extension, e.g. one compiled from an older commit), each
Cython measurement alternates between that build and this one and the ratio is printed too: on a busy
machine the speed drifts between runs, and alternating within one process cancels most of the drift.
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from mimird._fast import xorchunk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import xor_reference as reference  # noqa: E402

SCRAPE_INTERVAL_MS = 15_000


def scrape_timestamps(rng: np.random.Generator, n: int) -> np.ndarray:
    start = 1_700_000_000_000 + int(rng.integers(0, SCRAPE_INTERVAL_MS))
    jitter = rng.normal(0, 3, n).round().astype(np.int64)
    return start + np.arange(n, dtype=np.int64) * SCRAPE_INTERVAL_MS + jitter


def counter_series(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    increments = rng.poisson(40, n).astype(np.float64)
    return scrape_timestamps(rng, n), np.cumsum(increments)


def gauge_series(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return scrape_timestamps(rng, n), 100.0 + np.cumsum(rng.normal(0, 1.5, n))


def up_series(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`up`: scraped on time (Prometheus's scrape loop keeps the interval to the millisecond) and always 1."""
    start = 1_700_000_000_000 + int(rng.integers(0, SCRAPE_INTERVAL_MS))
    return start + np.arange(n, dtype=np.int64) * SCRAPE_INTERVAL_MS, np.ones(n)


def idle_counter_series(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An error counter scraped on time that rarely moves: long runs of unchanged values."""
    start = 1_700_000_000_000 + int(rng.integers(0, SCRAPE_INTERVAL_MS))
    return (start + np.arange(n, dtype=np.int64) * SCRAPE_INTERVAL_MS,
            np.cumsum(rng.random(n) < 0.02).astype(np.float64))


def cut_chunks(timestamps: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    size = xorchunk.SAMPLES_PER_CHUNK
    return [(timestamps[i : i + size], values[i : i + size]) for i in range(0, len(timestamps), size)]


def best_rate(operation, samples: int, repeats: int = 5) -> float:
    """Samples per CPU second of the fastest of `repeats` runs.

    Process CPU time rather than wall time: the codec is single-threaded, so this is the per-core
    rate, and other load on the machine distorts it less.
    """
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        operation()
        best = min(best, time.process_time() - started)
    return samples / best


def best_rates_alternating(operations, samples: int, repeats: int = 5) -> list[float]:
    """best_rate of each operation, running them in turn `repeats` times."""
    best = [float("inf")] * len(operations)
    for _ in range(repeats):
        for i, operation in enumerate(operations):
            started = time.process_time()
            operation()
            best[i] = min(best[i], time.process_time() - started)
    return [samples / seconds for seconds in best]


def load_baseline(path: str):
    """The extension module at `path` (a build of mimird._fast.xorchunk), loaded beside the current one."""
    spec = importlib.util.spec_from_file_location("baseline.xorchunk", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cython_operations(codec, pieces, chunks, chunks_by_series, long_chunk, total):
    """{label: (operation, samples, repeats)} for the Cython codec module `codec`."""

    def encode_all():
        return [codec.encode(t, v) for t, v in pieces]

    def decode_all():
        for chunk in chunks:
            codec.decode(chunk)

    out_t, out_v = np.empty(total, dtype=np.int64), np.empty(total)

    def decode_into_all():
        filled = 0
        for chunk in chunks:
            filled += codec.decode_into(chunk, out_t, out_v, offset=filled)

    def decode_chunks_all():
        for series_chunks in chunks_by_series:
            codec.decode_chunks(series_chunks)

    long_samples = codec.num_samples(long_chunk)
    return {
        "cython encode (120-sample chunks)": (encode_all, total, 5),
        "cython decode (120-sample chunks)": (decode_all, total, 5),
        "cython decode_into (120-sample chunks)": (decode_into_all, total, 5),
        "cython decode_chunks (one call per series)": (decode_chunks_all, total, 5),
        # One chunk holding a whole long series: the nogil loop alone, without a Python call per chunk.
        f"cython decode (one {long_samples}-sample chunk)": (lambda: codec.decode(long_chunk), long_samples, 20),
    }


def bench_shape(name: str, series: list[tuple[np.ndarray, np.ndarray]], baseline=None) -> None:
    pieces = [piece for timestamps, values in series for piece in cut_chunks(timestamps, values)]
    total = sum(len(t) for t, _ in pieces)
    chunks = [xorchunk.encode(t, v) for t, v in pieces]
    chunk_bytes = sum(len(c) for c in chunks)
    per_chunk = len(series[0][0]) // xorchunk.SAMPLES_PER_CHUNK + bool(len(series[0][0]) % xorchunk.SAMPLES_PER_CHUNK)
    chunks_by_series = [chunks[i : i + per_chunk] for i in range(0, len(chunks), per_chunk)]
    long_t, long_v = series[0][0][: xorchunk.MAX_SAMPLES], series[0][1][: xorchunk.MAX_SAMPLES]
    long_chunk = xorchunk.encode(long_t, long_v)

    few = pieces[: max(1, 2000 // xorchunk.SAMPLES_PER_CHUNK)]
    few_total = sum(len(t) for t, _ in few)
    few_chunks = [xorchunk.encode(t, v) for t, v in few]

    def reference_encode():
        for t, v in few:
            reference.encode(zip(t.tolist(), v.tolist(), strict=True))

    def reference_decode():
        for chunk in few_chunks:
            reference.decode(chunk)

    current = cython_operations(xorchunk, pieces, chunks, chunks_by_series, long_chunk, total)
    print(f"{name}: {len(series)} series, {total} samples, {len(chunks)} chunks, "
          f"{chunk_bytes / total:.3f} bytes/sample")
    if baseline is not None:
        previous = cython_operations(baseline, pieces, chunks, chunks_by_series, long_chunk, total)
        for label, (operation, samples, repeats) in current.items():
            old_rate, new_rate = best_rates_alternating([previous[label][0], operation], samples, repeats)
            print(f"  {label:<44} {old_rate / 1e6:9.3f} -> {new_rate / 1e6:9.3f} M samples/s "
                  f"({new_rate / old_rate:.2f}x)")
        return
    rates = {label: best_rate(operation, samples, repeats) for label, (operation, samples, repeats) in current.items()}
    rates["reference encode"] = best_rate(reference_encode, few_total, repeats=2)
    rates["reference decode"] = best_rate(reference_decode, few_total, repeats=2)
    for label, rate in rates.items():
        print(f"  {label:<44} {rate / 1e6:9.3f} M samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=200, help="series per shape")
    parser.add_argument("--samples", type=int, default=5_760, help="samples per series (5760 = 24 h at 15 s)")
    parser.add_argument("--baseline", help="path of another build of the xorchunk extension to compare with")
    args = parser.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    rng = np.random.default_rng(42)
    bench_shape("counter, 15 s scrapes with jitter", [counter_series(rng, args.samples) for _ in range(args.series)],
                baseline)
    bench_shape("gauge, random walk", [gauge_series(rng, args.samples) for _ in range(args.series)], baseline)
    bench_shape("up, on time and unchanged", [up_series(rng, args.samples) for _ in range(args.series)], baseline)
    bench_shape("idle counter, on time", [idle_counter_series(rng, args.samples) for _ in range(args.series)],
                baseline)


if __name__ == "__main__":
    main()
