"""Decode speed of remote write v1 requests: the Cython decoder against protobuf's parser plus a Python walk.

Run: .venv/bin/python bench/remotewrite.py [--series N] [--repeats R]

Two request shapes, as a Prometheus sender produces them: every series with one sample (a scrape's worth
of fresh data, label-heavy) and every series with 120 samples (a backlog being replayed, sample-heavy).
Series carry eight labels in the shapes of a node_exporter / kube-state-metrics scrape. Prints samples
per second and uncompressed megabytes per second for:

* cython:          decode_write_request on the uncompressed body (the ingest hot path)
* cython+snappy:   decode_push_body, i.e. snappy block decompression and the size checks as well
* protobuf:        prompb.WriteRequest.FromString alone
* protobuf+walk:   FromString plus the walk into the same layout (tests/remotewrite_reference.py)
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import snappy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mimird import prompb  # noqa: E402
from mimird._fast.remotewrite import decode_write_request  # noqa: E402
from mimird.distributor.remotewrite import decode_push_body  # noqa: E402
from remotewrite_reference import reference_decode  # noqa: E402

METRICS = [
    "node_cpu_seconds_total",
    "node_network_receive_bytes_total",
    "kube_pod_status_phase",
    "http_requests_total",
]


def build_request(n_series: int, samples_per_series: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    request = prompb.WriteRequest()
    start = 1_700_000_000_000
    for index in range(n_series):
        series = request.timeseries.add()
        labels = [
            ("__name__", METRICS[index % len(METRICS)]),
            ("cluster", "prod-eu-west-1"),
            ("container", f"app-{index % 17}"),
            ("instance", f"10.0.{index // 250}.{index % 250}:9100"),
            ("job", "kubernetes-pods"),
            ("mode", ("idle", "user", "system", "iowait")[index % 4]),
            ("namespace", f"team-{index % 9}"),
            ("pod", f"app-{index % 17}-{rng.integers(1 << 32):08x}"),
        ]
        for name, value in labels:
            series.labels.add(name=name, value=value)
        values = np.cumsum(rng.poisson(40, samples_per_series)).astype(np.float64) * 0.001
        for step in range(samples_per_series):
            series.samples.add(
                value=float(values[step]), timestamp=start + step * 15_000 + int(rng.integers(-5, 5))
            )
    return request.SerializeToString()


def best_seconds(operation, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
    return best


def bench_shape(n_series: int, samples_per_series: int, repeats: int) -> None:
    raw = build_request(n_series, samples_per_series)
    body = snappy.compress(raw)
    n_samples = n_series * samples_per_series
    batch = decode_write_request(raw)
    assert batch.num_series == n_series and batch.num_samples == n_samples
    print(
        f"\n{n_series} series x {samples_per_series} samples: {len(raw) / 1e6:.2f} MB raw, "
        f"{len(body) / 1e6:.2f} MB snappy, {len(raw) / n_samples:.1f} B/sample"
    )
    candidates = [
        ("cython", lambda: decode_write_request(raw), repeats),
        (
            "cython+snappy",
            lambda: decode_push_body(body, "snappy", "application/x-protobuf", "0.1.0"),
            repeats,
        ),
        ("protobuf", lambda: prompb.WriteRequest.FromString(raw), max(1, repeats // 4)),
        ("protobuf+walk", lambda: reference_decode(raw), max(1, repeats // 4)),
    ]
    baseline = None
    for name, operation, runs in candidates:
        seconds = best_seconds(operation, runs)
        if name == "cython":
            baseline = seconds
        print(
            f"  {name:<14} {seconds * 1e3:9.2f} ms  {n_samples / seconds / 1e6:8.2f} M samples/s  "
            f"{len(raw) / seconds / 1e6:8.1f} MB/s  ({seconds / baseline:5.1f}x cython)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    bench_shape(args.series, 1, args.repeats)
    bench_shape(args.series, 120, max(3, args.repeats // 4))


if __name__ == "__main__":
    main()
