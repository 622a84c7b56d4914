"""Encode and decode speed of the XOR chunk codec, Cython against the pure-Python reference.

Run: .venv/bin/python bench/xorchunk.py [--series N]

Two realistic shapes, cut into 120-sample chunks as the head does: a counter scraped every 15 s with
a few milliseconds of jitter, and a gauge doing a random walk over full-precision floats. Prints
samples per CPU second for each codec and operation, and bytes per sample.
"""

import argparse
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


def bench_shape(name: str, series: list[tuple[np.ndarray, np.ndarray]]) -> None:
    pieces = [piece for timestamps, values in series for piece in cut_chunks(timestamps, values)]
    total = sum(len(t) for t, _ in pieces)

    def encode_all():
        return [xorchunk.encode(t, v) for t, v in pieces]

    chunks = encode_all()
    chunk_bytes = sum(len(c) for c in chunks)
    per_chunk = len(series[0][0]) // xorchunk.SAMPLES_PER_CHUNK + bool(len(series[0][0]) % xorchunk.SAMPLES_PER_CHUNK)
    chunks_by_series = [chunks[i : i + per_chunk] for i in range(0, len(chunks), per_chunk)]

    def decode_all():
        for chunk in chunks:
            xorchunk.decode(chunk)

    out_t, out_v = np.empty(total, dtype=np.int64), np.empty(total)

    def decode_into_all():
        filled = 0
        for chunk in chunks:
            filled += xorchunk.decode_into(chunk, out_t, out_v, offset=filled)

    def decode_chunks_all():
        for series_chunks in chunks_by_series:
            xorchunk.decode_chunks(series_chunks)

    # One chunk holding a whole long series: the nogil loop alone, without a Python call per chunk.
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

    rates = {
        "cython encode (120-sample chunks)": best_rate(encode_all, total),
        "cython decode (120-sample chunks)": best_rate(decode_all, total),
        "cython decode_into (120-sample chunks)": best_rate(decode_into_all, total),
        "cython decode_chunks (one call per series)": best_rate(decode_chunks_all, total),
        f"cython decode (one {len(long_t)}-sample chunk)": best_rate(
            lambda: xorchunk.decode(long_chunk), len(long_t), repeats=20
        ),
        "reference encode": best_rate(reference_encode, few_total, repeats=2),
        "reference decode": best_rate(reference_decode, few_total, repeats=2),
    }
    print(f"{name}: {len(series)} series, {total} samples, {len(chunks)} chunks, "
          f"{chunk_bytes / total:.3f} bytes/sample")
    for label, rate in rates.items():
        print(f"  {label:<44} {rate / 1e6:9.3f} M samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=200, help="series per shape")
    parser.add_argument("--samples", type=int, default=5_760, help="samples per series (5760 = 24 h at 15 s)")
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    bench_shape("counter, 15 s scrapes with jitter", [counter_series(rng, args.samples) for _ in range(args.series)])
    bench_shape("gauge, random walk", [gauge_series(rng, args.samples) for _ in range(args.series)])


if __name__ == "__main__":
    main()
