#!/usr/bin/env python3
"""Remote-write ingest, mimird next to Prometheus on the same machine and the same payloads.

For each dataset (SERIESxSAMPLES): pre-encode the requests once with the reference load generator
(`../shared/tools/refpeers/rw.py`), then for each store start a fresh process, push everything over
`--conns` keep-alive connections, and read the store's CPU time and RSS from /proc. Prints samples/s,
samples per CPU-second, RSS per series and bytes on disk, and mimird/Prometheus ratios.

    .venv/bin/python bench/ingest.py --datasets 10000x120,100000x20

To measure an older commit the same way (same load generator, same Prometheus run), unpack it
elsewhere, build its extensions there, and put its `src` first on the daemon's path:

    mkdir /tmp/old && git archive <commit> | tar -x -C /tmp/old
    (cd /tmp/old && $OLDPWD/.venv/bin/python setup.py build_ext --inplace -q)
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/ingest.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFPEERS = REPO.parent / "shared" / "tools" / "refpeers"
sys.path.insert(0, str(REFPEERS))
import rw  # noqa: E402  (the shared load generator: dataset, pre-encoding, pushing, /proc readings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout}s")


# Extra mimird flags for a run (e.g. frontend settings), set by the scripts' --mimird-flags.
MIMIRD_EXTRA_FLAGS: list[str] = []


def start_mimird(workdir: Path, port: int, src: str | None = None) -> tuple[subprocess.Popen, str]:
    """mimird from this checkout, or with `src` (another checkout's built `src` folder) first on its path."""
    args = [str(REPO / ".venv" / "bin" / "mimird"), *MIMIRD_EXTRA_FLAGS, f"-server.http-listen-port={port}",
            "-auth.multitenancy-enabled=false", "-ingester.max-global-series-per-user=0",
            "-distributor.ingestion-rate-limit=1e12", "-distributor.ingestion-burst-size=1000000000000",
            "-log.level=warn"]
    env = dict(os.environ, PYTHONPATH=src) if src else None
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"),
                            env=env)
    wait_http(f"http://127.0.0.1:{port}/ready", proc)
    return proc, f"http://127.0.0.1:{port}/api/v1/push"


def start_prometheus(workdir: Path, port: int) -> tuple[subprocess.Popen, str]:
    (workdir / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    args = ["/usr/bin/prometheus", f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver", "--storage.tsdb.retention.time=30d", "--log.level=warn"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"))
    wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
    return proc, f"http://127.0.0.1:{port}/api/v1/write"


def start_vm(workdir: Path, port: int) -> tuple[subprocess.Popen, str]:
    """Debian's VictoriaMetrics, run as the refpeers launcher runs it (range-result cache off)."""
    args = ["/usr/bin/victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir / 'vm'}",
            "-retentionPeriod=1y", "-search.disableCache", "-loggerLevel=WARN"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"))
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc, f"http://127.0.0.1:{port}/api/v1/write"


STORES = {"mimird": start_mimird, "prometheus": start_prometheus, "vm": start_vm}


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ingest_once(store: str, per_shard, n_series: int, settle: float, max_seconds: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{store}-"))
    proc, url = STORES[store](workdir, free_port())
    try:
        time.sleep(1.0)
        rss0, cpu0 = rw.proc_rss(proc.pid), rw.proc_cpu(proc.pid)
        result = rw.push_all(url, per_shard, rw.rw_headers(), max_seconds)
        time.sleep(settle)
        cpu1, rss1 = rw.proc_cpu(proc.pid), rw.proc_rss(proc.pid)
        result.update({
            "cpu_s": round(cpu1 - cpu0, 3),
            "samples_per_cpu_s": round(result["samples_ok"] / (cpu1 - cpu0)) if cpu1 > cpu0 else None,
            "rss_idle_mib": round(rss0 / 2**20, 1), "rss_after_mib": round(rss1 / 2**20, 1),
            "rss_per_series_bytes": round(rss1 / n_series), "rss_delta_per_series_bytes": round((rss1 - rss0) / n_series),
            "disk_bytes": disk_bytes(workdir),
        })
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="10000x120,100000x20", help="SERIESxSAMPLES,...")
    parser.add_argument("--stores", default="mimird,prometheus")
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "ingest.json"))
    args = parser.parse_args()
    stores = args.stores.split(",")
    if "prometheus" in stores and not os.path.exists("/usr/bin/prometheus"):
        print("prometheus is not installed (make peers); measuring mimird alone", file=sys.stderr)
        stores.remove("prometheus")
    report = {}
    for spec in args.datasets.split(","):
        n_series, samples = map(int, spec.split("x"))
        dataset = rw.Dataset(n_series, samples)
        encode_args = argparse.Namespace(batch_series=2000, batch_samples=1)
        per_shard, encoded = rw.pre_encode(dataset, encode_args, args.conns)
        key = f"{dataset.n_series}x{samples}"
        report[key] = {"encode": encoded}
        for store in stores:
            runs = [ingest_once(store, per_shard, dataset.n_series, args.settle, args.max_seconds)
                    for _ in range(args.reps)]
            best = max(runs, key=lambda r: r["samples_per_s"])
            report[key][store] = best
            print(f"{key} {store:10s} {best['samples_per_s']:>10,} samples/s  "
                  f"{best['samples_per_cpu_s'] or 0:>10,} per CPU-s  RSS {best['rss_after_mib']:>7} MiB "
                  f"({best['rss_per_series_bytes']} B/series)  disk {best['disk_bytes'] / 2**20:.1f} MiB  "
                  f"errors {best['errors']}", flush=True)
        if "mimird" in report[key] and "prometheus" in report[key]:
            m, p = report[key]["mimird"], report[key]["prometheus"]
            print(f"{key} ratio mimird/prometheus: samples/s {m['samples_per_s'] / p['samples_per_s']:.2f}, "
                  f"per CPU-s {(m['samples_per_cpu_s'] or 0) / (p['samples_per_cpu_s'] or 1):.2f}, "
                  f"RSS/series {m['rss_per_series_bytes'] / p['rss_per_series_bytes']:.2f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
