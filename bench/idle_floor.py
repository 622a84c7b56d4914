#!/usr/bin/env python3
"""The fixed cost of one request after the machine idled: mimird, VictoriaMetrics and a bare uvloop server.

`bench/query.py` waits until every store is idle before each request, as a dashboard's refreshes are
seconds apart. The smallest queries then cost less in their own work than in the request around it:
waking up, parsing, routing, the query API, rendering, all with cold caches. This script measures that
fixed cost without data, over real sockets from another process, each request after `--gap` seconds
of silence (stores in turn, as `bench/query.py` takes them):

- `floor`: a bare uvloop protocol that answers every read with a fixed response (the kernel's and the
  event loop's share, which no server in Python can go below);
- `mimird /ready` and `vm /health`: a server's own least work;
- an instant query of a metric that does not exist, and `vector(1)`, on both: the query path's share.

Medians in milliseconds. Empty stores, so it runs in about a minute.

    .venv/bin/python bench/idle_floor.py [--gap 0.05] [--rounds 150]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest import STORES, free_port, rw, wait_http  # noqa: E402

FLOOR_SERVER = """
import asyncio, sys, uvloop
RESPONSE = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 5\\r\\n\\r\\nready"
class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(RESPONSE)
async def main():
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""


def query_path(prefix: str, query: str, time_s: float) -> str:
    return prefix + "/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{time_s:.3f}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=float, default=0.05, help="seconds of silence before each request")
    parser.add_argument("--rounds", type=int, default=150)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="idle-floor-"))
    procs = []
    try:
        floor_port = free_port()
        floor = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_port)])
        procs.append(floor)
        wait_http(f"http://127.0.0.1:{floor_port}/", floor)
        ports = {"floor": floor_port}
        for store in ("mimird", "vm"):
            if store == "vm" and not Path("/usr/bin/victoria-metrics").exists():
                continue
            (workdir / store).mkdir()
            port = free_port()
            proc, _ = STORES[store](workdir / store, port)
            procs.append(proc)
            ports[store] = port
        now_s = round(time.time())
        targets = [("floor", "floor", "/"), ("mimird /ready", "mimird", "/ready")]
        if "vm" in ports:
            targets.append(("vm /health", "vm", "/health"))
        for label, query in (("missing metric", "nonexistent_metric"), ("vector(1)", "vector(1)")):
            targets.append((f"mimird {label}", "mimird", query_path("/prometheus", query, now_s)))
            if "vm" in ports:
                targets.append((f"vm {label}", "vm", query_path("", query, now_s)))
        headers = {"Accept": "application/json", "User-Agent": "mimird-bench/1"}
        conns = [(label, rw.Conn(f"http://127.0.0.1:{ports[store]}/"), path) for label, store, path in targets]
        for _, conn, path in conns:
            for _ in range(3):
                conn.request("GET", path, headers)
        timings: dict[str, list[float]] = {label: [] for label, _, _ in conns}
        for round_no in range(args.rounds):
            shift = round_no % len(conns)
            for label, conn, path in conns[shift:] + conns[:shift]:
                time.sleep(args.gap)
                started = time.perf_counter()
                conn.request("GET", path, headers)
                timings[label].append(time.perf_counter() - started)
        floor_ms = statistics.median(timings["floor"]) * 1000
        print(f"gap {args.gap * 1000:.0f} ms, {args.rounds} rounds, medians (ms) and above the floor:")
        for label, values in timings.items():
            median_ms = statistics.median(values) * 1000
            print(f"  {label:26s} {median_ms:7.3f}  {median_ms - floor_ms:+7.3f}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
