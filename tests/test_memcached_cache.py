"""The query-frontend's results cache in a real memcached (Debian's `memcached`): the client's protocol,
key hashing, size limit and failure handling, and through running daemons a repeated range query
answered from memcached, tenants kept apart, a second daemon sharing the first one's entries, and
queries still answered correctly once memcached is gone."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import snappy

from conftest import Daemon, free_port, remote_write
from mimird.frontend.memcached import (
    CacheClientMetrics,
    MemcachedClient,
    cache_hash_key,
    fnv1a64,
    jump_hash,
    legal_key,
    parse_addresses,
    resolve,
    xxhash64,
)
from mimird.frontend.remotecache import MemcachedResultsCache, decode_entry, encode_entry
from mimird.frontend.splitcache import Extent, split_by_interval

MEMCACHED = Path("/usr/bin/memcached")
pytestmark = pytest.mark.skipif(not MEMCACHED.exists(),
                                reason="needs Debian's memcached package (/usr/bin/memcached; `make peers`)")

P = "/prometheus/api/v1"
MINUTE = 60_000


class Memcached:
    """A memcached server on a free loopback port, started and killed by the test."""

    def __init__(self):
        self.port = free_port()
        args = [str(MEMCACHED), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64", "-t", "2"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # memcached refuses to run as root without a user to switch to
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("memcached did not start") from None
                time.sleep(0.02)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stats(self) -> dict[str, str]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"stats\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                data += sock.recv(65536)
        return {parts[1]: parts[2] for parts in (line.split(" ") for line in data.decode().splitlines())
                if len(parts) == 3}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def memcached():
    server = Memcached()
    yield server
    server.kill()


# --- the client ---------------------------------------------------------------------------------------

def test_hashes_match_mimirs_and_dskits():
    # FNV-1a 64 (Go's hash/fnv) and XXH64 reference values
    assert fnv1a64(b"") == 0xCBF29CE484222325 and fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert xxhash64(b"") == 0xEF46DB3751D8E999 and xxhash64(b"a") == 0xD24EC4F1A98C6E5B
    assert xxhash64(b"abc") == 0x44BC2CF5AD770999
    assert xxhash64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1
    long_key = "tenant:" + "sum(rate(http_requests_total[5m])) by (job)" * 20 + ":60000:480000"
    hashed = MemcachedResultsCache.storage_key(long_key)
    assert hashed == "1@" + cache_hash_key(long_key) and len(hashed) == 18 and legal_key(hashed)
    assert not legal_key(long_key) and not legal_key("has space") and not legal_key("x" * 251)
    # jump hash: always in range, and growing the server list only moves keys onto the new server
    for key in (xxhash64(str(i).encode()) for i in range(200)):
        buckets = [jump_hash(key, n) for n in range(1, 8)]
        assert all(0 <= b < n for b, n in zip(buckets, range(1, 8), strict=True))
        assert all(after in (before, n) for before, after, n in zip(buckets[:-1], buckets[1:], range(1, 7), strict=True))
    assert parse_addresses("127.0.0.1:11211, dns+localhost:11211") == ["127.0.0.1:11211", "dns+localhost:11211"]
    # servers in natural order (dskit sorts them so that adding one moves few keys), dns+ names resolved
    assert resolve(["10.0.0.10:5", "dns+127.0.0.1:7", "10.0.0.2:5"]) == [
        ("10.0.0.2", 5), ("10.0.0.10", 5), ("127.0.0.1", 7)]
    for bad in ("dnssrv+_memcached._tcp.example", "nohostport"):
        with pytest.raises(ValueError):
            parse_addresses(bad)


def test_client_multi_get_set_and_size_limit(memcached):
    metrics = CacheClientMetrics(None)
    client = MemcachedClient(memcached.address, timeout_s=1.0, max_item_size=1000, metrics=metrics)
    assert client.set("k1", b"one", 60) and client.set("k2", b"\r\ntwo\x00 END\r\n", 60)
    assert client.set("k3", b"", 60)
    assert client.get_multi(["k1", "k2", "missing", "k3", "k1"]) == {
        "k1": b"one", "k2": b"\r\ntwo\x00 END\r\n", "k3": b""}
    assert not client.set("big", b"x" * 1001, 60)  # over max_item_size: refused, not stored
    assert client.get_multi(["big"]) == {}
    assert metrics.skipped.labels(**metrics.labels, operation="set", reason="max-item-size")._value.get() == 1
    assert not client.set("bad key", b"v", 60) and client.get_multi(["bad key"]) == {}
    # asynchronous stores arrive once the queue is worked off
    for i in range(20):
        assert client.set_async(f"async{i}", str(i).encode(), 60)
    client.wait_async()
    assert client.get_multi([f"async{i}" for i in range(20)]) == {f"async{i}": str(i).encode() for i in range(20)}
    # the TTL goes out as an absolute unix time, which memcached accepts as such
    assert client.set("short", b"v", 1)
    assert client.get_multi(["short"]) == {"short": b"v"}
    client.close()


def test_keys_spread_over_several_servers(memcached):
    other = Memcached()
    try:
        client = MemcachedClient(f"{memcached.address},{other.address}", timeout_s=1.0)
        before = [int(server.stats()["curr_items"]) for server in (memcached, other)]
        for i in range(40):
            assert client.set(f"spread{i}", b"%d" % i, 60)
        added = [int(server.stats()["curr_items"]) - n for server, n in zip((memcached, other), before, strict=True)]
        assert sum(added) == 40 and min(added) > 5
        assert client.get_multi([f"spread{i}" for i in range(40)]) == {f"spread{i}": b"%d" % i for i in range(40)}
        # each key sits where the jump hash puts it
        picked = {client.pick_server(f"spread{i}") for i in range(40)}
        assert picked == {("127.0.0.1", memcached.port), ("127.0.0.1", other.port)}
    finally:
        other.kill()


def test_dead_and_silent_servers_are_misses():
    metrics = CacheClientMetrics(None)
    closed = MemcachedClient(f"127.0.0.1:{free_port()}", timeout_s=0.2, metrics=metrics)
    assert closed.get_multi(["a", "b"]) == {} and not closed.set("a", b"v", 60)
    failures = metrics.failures.labels(**metrics.labels, operation="getmulti", reason="network-error")
    assert failures._value.get() == 1
    with socket.socket() as silent:  # accepts connections (the backlog does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = MemcachedClient(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.1, metrics=metrics)
        started = time.monotonic()
        assert client.get_multi(["a"]) == {}
        assert time.monotonic() - started < 1.0
        assert metrics.failures.labels(**metrics.labels, operation="getmulti", reason="timeout")._value.get() == 1


def test_entries_round_trip_and_collisions_are_misses(memcached):
    stale = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]
    extents = [Extent(0, 120_000, {(("__name__", "a"), ("x", "caf\udce9")): (
        np.array([0, 60_000, 120_000], dtype=np.int64), np.array([1.5, math.inf, stale]))}),
        Extent(300_000, 300_000, {})]
    key, decoded = decode_entry(encode_entry("t:q:60000:0", extents))
    assert key == "t:q:60000:0" and [(e.start_ms, e.end_ms) for e in decoded] == [(0, 120_000), (300_000, 300_000)]
    (labels, (ts, vals)), = decoded[0].series.items()
    assert labels == (("__name__", "a"), ("x", "caf\udce9")) and ts.tolist() == [0, 60_000, 120_000]
    assert vals.view(np.uint64).tolist() == extents[0].series[labels][1].view(np.uint64).tolist()
    for compression in ("", "snappy"):
        cache = MemcachedResultsCache(MemcachedClient(memcached.address, timeout_s=1.0), compression)
        cache.put(f"k-{compression}", extents, time.time() + 60)
        cache.client.wait_async()
        got = cache.get_many([f"k-{compression}", "absent"], time.time())
        assert list(got) == [f"k-{compression}"] and got[f"k-{compression}"][0].series.keys() == extents[0].series.keys()
    # a value stored under the hashed key of another key (an FNV collision) or not ours is a miss
    client = MemcachedClient(memcached.address, timeout_s=1.0)
    client.set(MemcachedResultsCache.storage_key("wanted"), encode_entry("other", extents), 60)
    client.set(MemcachedResultsCache.storage_key("foreign"), b"\x0a\x05hello", 60)
    client.set(MemcachedResultsCache.storage_key("packed"), snappy.compress(b"garbage"), 60)
    assert MemcachedResultsCache(client).get_many(["wanted", "foreign"], time.time()) == {}
    assert MemcachedResultsCache(client, "snappy").get_many(["packed", "foreign"], time.time()) == {}


# --- through the daemon -------------------------------------------------------------------------------

NOW_MS = int(time.time() * 1000)
BASE = (NOW_MS // MINUTE - 180) * MINUTE  # three hours ago: all outside the 10m freshness window
START, END = BASE // 1000, BASE // 1000 + 120 * 60
SERIES = {
    (("__name__", "jobs_total"), ("job", "a")): [(BASE + i * 30_000, float(i)) for i in range(240)],
    (("__name__", "jobs_total"), ("job", "b")): [(BASE + i * 45_000, 2.0 * i) for i in range(160)],
}
# two hours split at 30m boundaries: one cache entry per piece
PIECES = len(split_by_interval(START * 1000, END * 1000, MINUTE, 30 * MINUTE))
OTHER = {(("__name__", "jobs_total"), ("job", "z")): [(BASE + i * 60_000, 7.0) for i in range(120)]}


def _daemon(tmp_path_factory, name: str, memcached: Memcached) -> Daemon:
    return Daemon(tmp_path_factory.mktemp(name), [
        "-query-frontend.cache-results=true", "-query-frontend.results-cache.backend=memcached",
        f"-query-frontend.results-cache.memcached.addresses=dns+127.0.0.1:{memcached.port}"
        if name == "second" else f"-query-frontend.results-cache.memcached.addresses={memcached.address}",
        "-query-frontend.results-cache.compression=snappy", "-query-frontend.split-queries-by-interval=30m",
        "-query-frontend.results-cache.memcached.timeout=500ms"]).start()


def _query(daemon: Daemon, tenant: str, query: str = "rate(jobs_total[5m])") -> tuple[str, dict[str, str]]:
    response = daemon.get(P + "/query_range", params={"query": query, "start": str(START), "end": str(END),
                                                      "step": "60"},
                          headers={"X-Scope-OrgID": tenant, "X-Mimir-Response-Query-Stats": "true"})
    assert response.status_code == 200, response.text
    timing = dict(part.split(";", 1) for part in response.headers["server-timing"].split(", "))
    return response.text, timing


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


def _wait_items(memcached: Memcached, items: int) -> None:
    deadline = time.monotonic() + 10
    while int(memcached.stats()["curr_items"]) < items:
        assert time.monotonic() < deadline, memcached.stats()
        time.sleep(0.05)


def test_results_served_from_memcached_shared_and_surviving_its_death(tmp_path_factory):
    server = Memcached()
    first = _daemon(tmp_path_factory, "first", server)
    second = None
    try:
        assert remote_write(first, "t", SERIES).status_code == 200
        assert remote_write(first, "u", OTHER).status_code == 200
        cold, cold_timing = _query(first, "t")
        assert '"result":[]' not in cold and cold_timing["results_cache_hit_bytes"] == "val=0"
        _wait_items(server, PIECES)
        warm, warm_timing = _query(first, "t")
        assert warm == cold  # byte for byte
        assert warm_timing["results_cache_miss_bytes"] == "val=0" and warm_timing["results_cache_hit_bytes"] != "val=0"
        assert warm_timing["fetched_chunks_count"] == "val=0"

        # another tenant asking the same query gets its own answer, not the cached one
        other, other_timing = _query(first, "u")
        assert other != cold and '"job":"z"' in other and other_timing["results_cache_hit_bytes"] == "val=0"
        _wait_items(server, 2 * PIECES)

        # a second daemon on the same memcached (through a dns+ address too) answers from the shared entries
        second = _daemon(tmp_path_factory, "second", server)
        assert remote_write(second, "t", SERIES).status_code == 200
        shared, shared_timing = _query(second, "t")
        assert shared == cold and shared_timing["results_cache_miss_bytes"] == "val=0"
        metrics = second.get("/metrics").text
        assert _metric(metrics, 'thanos_cache_hits_total{backend="memcached",component="query-frontend",'
                                'name="frontend-cache"}') == PIECES
        assert _metric(metrics, 'cortex_frontend_query_result_cache_hits_total{request_type="query_range"}') == PIECES

        # memcached gone: every lookup and store fails, every answer is still right
        server.kill()
        for daemon in (first, second):
            again, again_timing = _query(daemon, "t")
            assert again == cold and again_timing["results_cache_hit_bytes"] == "val=0"
            assert _query(daemon, "t", "sum(jobs_total)")[0].startswith('{"status":"success"')
        failed = _metric(first.get("/metrics").text, 'thanos_memcached_operation_failures_total{component='
                         '"query-frontend",name="frontend-cache",operation="getmulti",reason="network-error"}')
        assert failed >= 2
    finally:
        server.kill()
        for daemon in (first, second):
            if daemon is not None:
                daemon.stop(signal.SIGKILL)


def test_memcached_backend_needs_addresses(tmp_path):
    daemon = Daemon(tmp_path, ["-query-frontend.cache-results=true", "-query-frontend.results-cache.backend=memcached"])
    daemon.start(wait_ready=False)
    assert daemon.proc.wait(timeout=20) == 1
    daemon.stop()
    assert "query-frontend results cache: no memcached addresses configured" in daemon.log()


def test_unsupported_backend_and_compression_are_refused(tmp_path):
    for flag, message in (("-query-frontend.results-cache.backend=redis",
                           'unsupported cache backend: "redis", supported values: [memcached]'),
                          ("-query-frontend.results-cache.compression=gzip", "unsupported compression")):
        result = subprocess.run([sys.executable, "-m", "mimird", flag], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1 and message in result.stderr
