"""Write and replay speed of the WAL.

Run: .venv/bin/python bench/wal.py [--batches N] [--batch-size 2000] [--dir PATH]

Writes remote-write-shaped batches (2000 samples over 2000 series scraped every 15 s, values a mix of
counters and gauges) with log_samples under each fsync policy, and prints MB/s and samples/s; then
replays the log and prints the same for reading. The directory defaults to a temporary one on the
same filesystem as /tmp; pass --dir to measure a real data disk (fsync costs depend on it).
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mimird._fast import walrecords
from mimird.tsdb import wal


def make_batches(count: int, size: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    refs = np.arange(1, size + 1, dtype=np.uint64)
    counters = np.cumsum(rng.poisson(40, (count, size)), axis=0).astype(np.float64)
    gauges = 100.0 + np.cumsum(rng.normal(0, 1.5, (count, size)), axis=0)
    values = np.where(np.arange(size) % 2 == 0, counters, gauges)
    start = 1_700_000_000_000
    batches = []
    for index in range(count):
        timestamps = start + index * 15_000 + rng.integers(0, 5, size)
        batches.append((refs, timestamps.astype(np.int64), values[index]))
    return batches


def bench_write(directory: Path, batches, policy) -> tuple[float, int]:
    shutil.rmtree(directory, ignore_errors=True)
    started = time.perf_counter()
    written = 0
    with wal.WAL(directory, fsync=policy) as writer:
        for refs, timestamps, values in batches:
            written += writer.log_batch(samples=(refs, timestamps, values))
    return time.perf_counter() - started, written


def bench_encode(batches, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for refs, timestamps, values in batches:
            walrecords.encode_samples(refs, timestamps, values)
        best = min(best, time.perf_counter() - started)
    return best


def bench_replay(directory: Path, repeats: int = 3) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        count = 0
        for record in wal.replay(directory, repair=False):
            if isinstance(record, wal.SamplesRecord):
                count += len(record)
        best = min(best, time.perf_counter() - started)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    batches = make_batches(args.batches, args.batch_size)
    total_samples = args.batches * args.batch_size
    base = args.dir or Path(tempfile.mkdtemp(prefix="mimird-wal-bench-"))
    directory = base / "wal"
    print(f"{args.batches} batches of {args.batch_size} samples in {directory}")

    encode_seconds = bench_encode(batches)
    print(f"encode only:   {total_samples / encode_seconds / 1e6:8.2f} M samples/s")
    try:
        for policy in ("never", 1.0, "batch"):
            count = len(batches) if policy != "batch" else min(len(batches), 300)
            seconds, written = bench_write(directory, batches[:count], policy)
            samples = count * args.batch_size
            label = f"write {policy!s:>5}:"
            print(f"{label:14} {written / seconds / 1e6:8.1f} MB/s {samples / seconds / 1e6:8.2f} M samples/s"
                  f"  ({written / samples:.2f} bytes/sample, {seconds / count * 1e6:.0f} us/batch)")
        bench_write(directory, batches, "never")
        size = wal.segments_size(directory)
        seconds, count = bench_replay(directory)
        print(f"{'replay:':14} {size / seconds / 1e6:8.1f} MB/s {count / seconds / 1e6:8.2f} M samples/s")
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
