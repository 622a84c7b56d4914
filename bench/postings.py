"""Benchmark of the head's series index (mimird.tsdb.series_index) and its Cython postings kernels.

Builds an index of N series (1M by default) shaped like node-exporter and HTTP server metrics, then prints
the build time, the memory per series (RSS growth, or traced allocations with --tracemalloc) and the time
of a few selectors, starting with {__name__="http_requests_total", job="api", code=~"5.."}.

    .venv/bin/python bench/postings.py [--series 1000000] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import time
import tracemalloc
from collections.abc import Iterator

from mimird.tsdb.labels import Matcher, make_labels
from mimird.tsdb.series_index import SeriesIndex

CLUSTERS = ["eu-west-1", "us-east-1", "ap-south-1"]
JOBS = ["api", "web", "auth", "billing", "search", "checkout", "cart", "users", "gateway", "media"]
HANDLERS = [f"/api/v1/{name}" for name in ("query", "query_range", "series", "labels", "push", "rules",
                                            "alerts", "targets", "metadata", "status")] + [
    f"/{name}" for name in ("", "login", "logout", "health", "ready", "metrics", "static", "cart", "pay", "me")]
CODES = ["200", "201", "204", "301", "304", "400", "401", "404", "500", "503"]
METHODS = ["GET", "POST", "PUT", "DELETE"]
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
CPU_MODES = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"]
NODE_METRICS = ["node_load1", "node_load5", "node_load15", "node_memory_MemFree_bytes",
                "node_memory_MemAvailable_bytes", "node_memory_Cached_bytes", "node_boot_time_seconds"]
DEVICES = ["eth0", "eth1", "lo", "docker0"]
NETWORK_METRICS = ["node_network_receive_bytes_total", "node_network_transmit_bytes_total",
                   "node_network_receive_packets_total", "node_network_transmit_packets_total",
                   "node_network_receive_errs_total", "node_network_transmit_errs_total"]


def http_series() -> Iterator[dict[str, str]]:
    for cluster, job, instance, handler, code, method in itertools.product(
            CLUSTERS, JOBS, range(10), HANDLERS, CODES, METHODS):
        yield {"__name__": "http_requests_total", "cluster": cluster, "job": job,
               "instance": f"{job}-{instance}.{cluster}:8080", "handler": handler, "code": code, "method": method}


def http_histogram_series() -> Iterator[dict[str, str]]:
    for cluster, job, instance, handler, le in itertools.product(CLUSTERS, JOBS, range(10), HANDLERS, BUCKETS):
        yield {"__name__": "http_request_duration_seconds_bucket", "cluster": cluster, "job": job,
               "instance": f"{job}-{instance}.{cluster}:8080", "handler": handler, "le": le}


def node_series(nodes: int = 800) -> Iterator[dict[str, str]]:
    for cluster, node in itertools.product(CLUSTERS, range(nodes)):
        base = {"cluster": cluster, "job": "node", "instance": f"node-{node}.{cluster}:9100"}
        for cpu, mode in itertools.product(range(32), CPU_MODES):
            yield {"__name__": "node_cpu_seconds_total", **base, "cpu": str(cpu), "mode": mode}
        for device, metric in itertools.product(DEVICES, NETWORK_METRICS):
            yield {"__name__": metric, **base, "device": device}
        for metric in NODE_METRICS:
            yield {"__name__": metric, **base}


def generate_series() -> Iterator[dict[str, str]]:
    """About 1M distinct label sets: the three families interleaved, so that a prefix has some of each."""
    families = [http_series(), http_histogram_series(), node_series()]
    # Weights roughly proportional to the family sizes (312k HTTP, 72k histogram, 689k node series).
    weights = [4, 1, 9]
    while families:
        for family, weight in list(zip(families, weights, strict=True)):
            for _ in range(weight):
                labels = next(family, None)
                if labels is None:
                    index = families.index(family)
                    del families[index], weights[index]
                    break
                yield labels


SELECTORS = [
    [("=", "__name__", "http_requests_total"), ("=", "job", "api"), ("=~", "code", "5..")],
    [("=", "__name__", "http_requests_total"), ("=~", "job", "api|web"), ("=~", "handler", "/api/v1/.*"),
     ("!=", "method", "GET")],
    [("=", "__name__", "node_cpu_seconds_total"), ("!=", "mode", "idle"), ("=", "cluster", "eu-west-1")],
    [("=~", "instance", "node-1.*"), ("=", "job", "node")],
    [("=", "__name__", "http_request_duration_seconds_bucket"), ("=", "le", "+Inf"), ("=", "handler", "/health")],
    [("=~", "__name__", "node_network_.*_total"), ("=", "device", "")],
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20, help="runs of each selector (the best is shown)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="measure memory with tracemalloc (exact, but slows the build down)")
    args = parser.parse_args()

    # Warm up (imports numpy does lazily, regex caches) so that one-off costs are not charged to the index.
    warm = SeriesIndex()
    warm.get_or_create(make_labels({"warm": "up"}))
    warm.label_values("warm", warm.select([Matcher("=~", "warm", "u.")]))
    gc.collect()
    if args.tracemalloc:
        tracemalloc.start()
    rss_before = rss_bytes()
    started = time.perf_counter()
    cpu_started = time.process_time()
    index = SeriesIndex()
    for labels in itertools.islice(generate_series(), args.series):
        index.get_or_create(make_labels(labels))
    build_seconds = time.perf_counter() - started
    build_cpu_seconds = time.process_time() - cpu_started
    gc.collect()
    if args.tracemalloc:
        memory_bytes, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        memory_source = "tracemalloc"
    else:
        memory_bytes = rss_bytes() - rss_before
        memory_source = "RSS growth"
    series = index.num_series
    print(f"series:            {series:,}")
    print(f"build:             {build_seconds:.2f} s wall, {build_cpu_seconds:.2f} s CPU "
          f"({build_cpu_seconds / series * 1e6:.2f} us/series, label sets built with make_labels)")
    print(f"memory:            {memory_bytes / 2**20:.1f} MiB, {memory_bytes / series:.0f} bytes/series "
          f"({memory_source}; numpy arrays alone {index.memory_bytes() / series:.0f} bytes/series)")
    print(f"label names/values: {len(index.label_names())} names, "
          f"{sum(len(index.label_values(n)) for n in index.label_names())} values")

    for selector in SELECTORS:
        matchers = [Matcher(*m) for m in selector]
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            refs = index.select(matchers)
            timings.append(time.perf_counter() - started)
        text = "{" + ", ".join(str(m) for m in matchers) + "}"
        print(f"select {text}: {len(refs):,} series in {min(timings) * 1e3:.3f} ms "
              f"(median {sorted(timings)[len(timings) // 2] * 1e3:.3f} ms)")

    refs = index.select([Matcher(*m) for m in SELECTORS[0]])
    started = time.perf_counter()
    values = index.label_values("instance", refs)
    print(f"label_values(instance) over the first selection: {len(values)} values in "
          f"{(time.perf_counter() - started) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
