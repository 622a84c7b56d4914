"""A memcached client for the query-frontend's results cache, configured as Mimir configures its
`-query-frontend.results-cache.memcached.*` client (dskit's memcached client over gomemcache).

* Text protocol over blocking TCP sockets: `get k1 k2 ...` for multi-key lookups and
  `set <key> <flags> <exptime> <bytes>` for stores, with the expiry an absolute unix time (as gomemcache
  sends it). Each operation has one deadline `-...memcached.timeout` (100ms) for all its socket reads
  and writes.
* Addresses: comma-separated `host:port`, or `dns+host:port` (looked up as A/AAAA, every address a
  server; looked up again every 30s as Mimir's DNS provider does). Servers are naturally sorted and a
  key's server is picked by jump hash over xxhash64 of the key (dskit's MemcachedJumpHashSelector).
* Per server at most `max_idle_connections` idle connections are kept; the client is thread-safe (the
  frontend's query pieces run in worker threads).
* Stores are asynchronous: a bounded queue of `max_async_buffer_size` operations worked off by up to
  `max_async_concurrency` threads; a full queue drops the store. Values over `max_item_size` are not
  stored.
* Nothing here raises to the caller: a timeout, a refused connection or a server error is logged,
  counted (`thanos_memcached_operation_failures_total{reason}`) and answered as a miss.

Key hashing (`cache_hash_key`) is Mimir's: the FNV-1a 64-bit hash of the full key in hex, behind the
results cache's version prefix `1@`, so every key stays well under memcached's 250-byte limit.
"""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from mimird.util.logging import kv_log

log = logging.getLogger("mimird.frontend.memcached")

# memcached's own limit on key length, and gomemcache's rule for legal key bytes.
MAX_KEY_BYTES = 250
# dskit re-resolves `dns+` addresses this often.
DNS_UPDATE_INTERVAL_S = 30.0
# The results cache's version prefix (Mimir's resultsCacheVersion = 1 through cache.NewVersioned).
RESULTS_CACHE_VERSION_PREFIX = "1@"

_MASK64 = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK64


def _xxh_round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _MASK64
    return (_rotl(acc, 31) * _P1) & _MASK64


def _xxh_merge(acc: int, value: int) -> int:
    acc ^= _xxh_round(0, value)
    return (acc * _P1 + _P4) & _MASK64


def xxhash64(data: bytes, seed: int = 0) -> int:
    """XXH64 of `data` (the hash dskit's server selector uses; keys are short, so plain Python will do)."""
    n = len(data)
    i = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _MASK64
        v2 = (seed + _P2) & _MASK64
        v3 = seed & _MASK64
        v4 = (seed - _P1) & _MASK64
        while i + 32 <= n:
            v1 = _xxh_round(v1, int.from_bytes(data[i:i + 8], "little"))
            v2 = _xxh_round(v2, int.from_bytes(data[i + 8:i + 16], "little"))
            v3 = _xxh_round(v3, int.from_bytes(data[i + 16:i + 24], "little"))
            v4 = _xxh_round(v4, int.from_bytes(data[i + 24:i + 32], "little"))
            i += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK64
        for v in (v1, v2, v3, v4):
            h = _xxh_merge(h, v)
    else:
        h = (seed + _P5) & _MASK64
    h = (h + n) & _MASK64
    while i + 8 <= n:
        h ^= _xxh_round(0, int.from_bytes(data[i:i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _MASK64
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * _P1) & _MASK64
        h = (_rotl(h, 23) * _P2 + _P3) & _MASK64
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _MASK64
        h = (_rotl(h, 11) * _P1) & _MASK64
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _MASK64
    h ^= h >> 29
    h = (h * _P3) & _MASK64
    h ^= h >> 32
    return h


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash: a bucket in [0, buckets) for a 64-bit key."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits (Go's hash/fnv New64a)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & _MASK64
    return h


def cache_hash_key(key: str) -> str:
    """Mimir's cacheHashKey: the key's FNV-1a 64 hash in hex (memcached keys must be short and printable)."""
    return fnv1a64(key.encode("utf-8", "surrogatepass")).to_bytes(8, "big").hex()


def legal_key(key: str) -> bool:
    """gomemcache's legalKey: at most 250 bytes, no spaces or control characters."""
    raw = key.encode("utf-8", "surrogatepass")
    return 0 < len(raw) <= MAX_KEY_BYTES and all(32 < byte < 127 or byte > 127 for byte in raw)


def _natural_key(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"invalid memcached address {address!r}: want host:port")
    return host.strip("[]"), int(port)


def parse_addresses(addresses: str | Sequence[str]) -> list[str]:
    """The configured addresses as a list; raises ValueError for a form this client cannot use."""
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    out = []
    for item in (item.strip() for item in items):
        if not item:
            continue
        if item.startswith(("dnssrv+", "dnssrvnoa+")):
            raise ValueError(f"memcached address {item!r}: SRV lookups are not supported, use host:port or "
                             "dns+host:port")
        _split_host_port(item.removeprefix("dns+"))
        out.append(item)
    return out


def resolve(addresses: Iterable[str]) -> list[tuple[str, int]]:
    """(host, port) of every server: `dns+` names expanded to all their A/AAAA addresses."""
    servers = []
    for address in addresses:
        if address.startswith("dns+"):
            host, port = _split_host_port(address[4:])
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                kv_log(log, logging.WARNING, "failed to resolve memcached address", address=address, err=exc)
                continue
            for info in infos:
                server = (info[4][0], port)
                if server not in servers:
                    servers.append(server)
        else:
            servers.append(_split_host_port(address))
    servers.sort(key=lambda server: _natural_key(f"{server[0]}:{server[1]}"))
    return servers


class CacheClientMetrics:
    """dskit's cache client metrics under the `thanos_` prefix Mimir gives the frontend's results cache,
    labelled `component="query-frontend"` and `name="frontend-cache"`."""

    def __init__(self, registry: CollectorRegistry | None, name: str = "frontend-cache",
                 component: str = "query-frontend"):
        registry = registry if registry is not None else CollectorRegistry()
        self.labels = {"component": component, "name": name}
        names = ["component", "name"]
        self.operations = Counter("thanos_memcached_operations", "Total number of operations against cache.",
                                  names + ["operation"], registry=registry)
        self.failures = Counter("thanos_memcached_operation_failures",
                                "Total number of operations against cache that failed.",
                                names + ["operation", "reason"], registry=registry)
        self.skipped = Counter("thanos_memcached_operation_skipped",
                               "Total number of operations against cache that have been skipped.",
                               names + ["operation", "reason"], registry=registry)
        self.duration = Histogram("thanos_memcached_operation_duration_seconds",
                                  "Duration of operations against cache.", names + ["operation"],
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 3, 6, 10),
                                  registry=registry)
        self.requests = Counter("thanos_cache_requests", "Total number of items requests to cache.",
                                ["backend"] + names, registry=registry)
        self.hits = Counter("thanos_cache_hits", "Total number of items requests to the cache that were a hit.",
                            ["backend"] + names, registry=registry)
        for operation in ("getmulti", "set", "delete"):
            self.operations.labels(**self.labels, operation=operation)
            for reason in ("timeout", "malformed-key", "server-error", "network-error", "other"):
                self.failures.labels(**self.labels, operation=operation, reason=reason)
        for operation, reason in (("getmulti", "max-item-size"), ("set", "max-item-size"),
                                  ("set", "async-buffer-full")):
            self.skipped.labels(**self.labels, operation=operation, reason=reason)
        self.requests.labels(backend="memcached", **self.labels)
        self.hits.labels(backend="memcached", **self.labels)

    def operation(self, operation: str) -> None:
        self.operations.labels(**self.labels, operation=operation).inc()

    def failure(self, operation: str, reason: str) -> None:
        self.failures.labels(**self.labels, operation=operation, reason=reason).inc()

    def skip(self, operation: str, reason: str) -> None:
        self.skipped.labels(**self.labels, operation=operation, reason=reason).inc()

    def observe(self, operation: str, seconds: float) -> None:
        self.duration.labels(**self.labels, operation=operation).observe(seconds)

    def lookups(self, requested: int, found: int) -> None:
        self.requests.labels(backend="memcached", **self.labels).inc(requested)
        self.hits.labels(backend="memcached", **self.labels).inc(found)


class MemcachedError(Exception):
    """A failed operation; `reason` is the failure label dskit counts it under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class _Connection:
    """One socket with a read buffer and a per-operation deadline."""

    def __init__(self, server: tuple[str, int], timeout_s: float):
        self.server = server
        self.deadline = time.monotonic() + timeout_s
        try:
            self.sock = socket.create_connection(server, timeout=timeout_s)
        except TimeoutError as exc:
            raise MemcachedError("timeout", f"connect to {server[0]}:{server[1]}: {exc}") from None
        except OSError as exc:
            raise MemcachedError("network-error", f"connect to {server[0]}:{server[1]}: {exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise MemcachedError("timeout", "i/o timeout")
        return left

    def send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self._remaining())
            self.sock.sendall(data)
        except TimeoutError:
            raise MemcachedError("timeout", "i/o timeout") from None
        except OSError as exc:
            raise MemcachedError("network-error", str(exc)) from None

    def _fill(self) -> None:
        try:
            self.sock.settimeout(self._remaining())
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise MemcachedError("timeout", "i/o timeout") from None
        except OSError as exc:
            raise MemcachedError("network-error", str(exc)) from None
        if not chunk:
            raise MemcachedError("network-error", "connection closed by server")
        self.buffer += chunk

    def readline(self) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 2]
                return line
            self._fill()

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _server_error(line: bytes) -> MemcachedError:
    text = line.decode("latin-1")
    return MemcachedError("server-error", f"memcached: {text}")


class MemcachedClient:
    """A thread-safe memcached client for one set of servers."""

    def __init__(self, addresses: str | Sequence[str], timeout_s: float = 0.1, max_idle_connections: int = 100,
                 max_item_size: int = 1024 * 1024, max_async_concurrency: int = 50,
                 max_async_buffer_size: int = 25000, metrics: CacheClientMetrics | None = None):
        self.addresses = parse_addresses(addresses)
        if not self.addresses:
            raise ValueError("no memcached addresses configured")
        self.timeout_s = timeout_s
        self.max_idle = max_idle_connections
        self.max_item_size = max_item_size
        self.metrics = metrics or CacheClientMetrics(None)
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._servers: list[tuple[str, int]] = []
        self._resolved_at = float("-inf")
        self._dynamic = any(address.startswith("dns+") for address in self.addresses)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_async_buffer_size))
        self._max_workers = max(1, max_async_concurrency)
        self._workers = 0
        self._busy = 0
        self._closed = False

    # --- servers and connections ----------------------------------------------------------------------
    def servers(self) -> list[tuple[str, int]]:
        """The current server list (static addresses once, `dns+` ones looked up again every 30s)."""
        now = time.monotonic()
        with self._lock:
            if self._servers and (not self._dynamic or now - self._resolved_at < DNS_UPDATE_INTERVAL_S):
                return self._servers
        servers = resolve(self.addresses)
        with self._lock:
            if servers or not self._servers:
                self._servers = servers
            self._resolved_at = now
            return self._servers

    def pick_server(self, key: str) -> tuple[str, int] | None:
        """The server that holds `key` (jump hash over xxhash64, as dskit picks it)."""
        servers = self.servers()
        if not servers:
            return None
        if len(servers) == 1:
            return servers[0]
        return servers[jump_hash(xxhash64(key.encode("utf-8", "surrogatepass")), len(servers))]

    def _checkout(self, server: tuple[str, int]) -> _Connection:
        with self._lock:
            idle = self._idle.get(server)
            conn = idle.pop() if idle else None
        if conn is None:
            return _Connection(server, self.timeout_s)
        conn.deadline = time.monotonic() + self.timeout_s
        return conn

    def _checkin(self, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.server, [])
            if len(idle) < self.max_idle and not self._closed:
                idle.append(conn)
                return
        conn.close()

    # --- operations -----------------------------------------------------------------------------------
    def get_multi(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The values found for `keys`; failed lookups are logged and count as misses."""
        by_server: dict[tuple[str, int], list[str]] = {}
        for key in dict.fromkeys(keys):
            if not legal_key(key):
                self.metrics.failure("getmulti", "malformed-key")
                continue
            server = self.pick_server(key)
            if server is None:
                self.metrics.failure("getmulti", "other")
                continue
            by_server.setdefault(server, []).append(key)
        found: dict[str, bytes] = {}
        for server, server_keys in by_server.items():
            started = time.perf_counter()
            self.metrics.operation("getmulti")
            try:
                found.update(self._get_from(server, server_keys))
            except MemcachedError as exc:
                self.metrics.failure("getmulti", exc.reason)
                kv_log(log, logging.WARNING, "failed to fetch items from memcached", numKeys=len(server_keys),
                       firstKey=server_keys[0], server=f"{server[0]}:{server[1]}", err=exc)
                continue
            self.metrics.observe("getmulti", time.perf_counter() - started)
        return found

    def _get_from(self, server: tuple[str, int], keys: list[str]) -> dict[str, bytes]:
        conn = self._checkout(server)
        try:
            conn.send(b"get " + " ".join(keys).encode("utf-8", "surrogatepass") + b"\r\n")
            found = {}
            while True:
                line = conn.readline()
                if line == b"END":
                    break
                parts = line.split(b" ")
                if parts[0] != b"VALUE" or len(parts) < 4:
                    raise _server_error(line)
                size = int(parts[3])
                data = conn.read(size + 2)
                if data[-2:] != b"\r\n":
                    raise MemcachedError("other", "memcached: corrupt get result read")
                if self.max_item_size and size > self.max_item_size:
                    self.metrics.skip("getmulti", "max-item-size")
                    continue
                found[parts[1].decode("utf-8", "surrogatepass")] = data[:-2]
        except BaseException:
            conn.close()
            raise
        self._checkin(conn)
        return found

    def set(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Store `value` under `key` for `ttl_s` seconds (0: no expiry), waiting for the answer; False when it
        was skipped or failed (logged and counted)."""
        if self.max_item_size and len(value) > self.max_item_size:
            self.metrics.skip("set", "max-item-size")
            return False
        if not legal_key(key):
            self.metrics.failure("set", "malformed-key")
            return False
        server = self.pick_server(key)
        if server is None:
            self.metrics.failure("set", "other")
            return False
        # gomemcache sends the expiry as an absolute unix time, which memcached reads as such
        expires = int(time.time() + ttl_s) if ttl_s > 0 else 0
        started = time.perf_counter()
        self.metrics.operation("set")
        try:
            conn = self._checkout(server)
            try:
                header = f"set {key} 0 {expires} {len(value)}\r\n".encode("utf-8", "surrogatepass")
                conn.send(header + value + b"\r\n")
                line = conn.readline()
                if line != b"STORED":
                    raise _server_error(line)
            except BaseException:
                conn.close()
                raise
            self._checkin(conn)
        except MemcachedError as exc:
            self.metrics.failure("set", exc.reason)
            kv_log(log, logging.WARNING, "failed to set item in memcached", key=key, err=exc)
            return False
        self.metrics.observe("set", time.perf_counter() - started)
        return True

    def set_async(self, key: str, value: bytes, ttl_s: float) -> bool:
        """Queue a store; False (counted as skipped) when the queue is full or the value too large."""
        if self.max_item_size and len(value) > self.max_item_size:
            self.metrics.skip("set", "max-item-size")
            return False
        try:
            self._queue.put_nowait((key, value, ttl_s))
        except queue.Full:
            self.metrics.skip("set", "async-buffer-full")
            return False
        with self._lock:
            start_worker = self._busy >= self._workers and self._workers < self._max_workers
            if start_worker:
                self._workers += 1
        if start_worker:
            threading.Thread(target=self._work, name="memcached-set", daemon=True).start()
        return True

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            with self._lock:
                self._busy += 1
            try:
                self.set(*item)
            finally:
                with self._lock:
                    self._busy -= 1
                self._queue.task_done()

    def wait_async(self) -> None:
        """Block until every queued store has been sent (for tests and orderly shutdown)."""
        self._queue.join()

    def close(self) -> None:
        """Stop the store workers and close idle connections."""
        with self._lock:
            self._closed = True
            workers = self._workers
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for _ in range(workers):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for conn in idle:
            conn.close()
