"""The results cache in memcached (`-query-frontend.results-cache.backend=memcached`): cache entries — a
query piece's extents — encoded to bytes, optionally snappy-compressed
(`-query-frontend.results-cache.compression=snappy`), and stored under Mimir's hashed key.

As Mimir's split-and-cache middleware does, an entry carries its unhashed key, and an entry whose key
differs from the one asked for (an FNV collision) is a miss; undecodable values are logged and missed.
Stores go through the client's asynchronous queue, so a response never waits for memcached.

Entry layout (little-endian): magic `MQRC2`, key (u32 length + UTF-8), extent count (u32), and per
extent start, end and query time (i64 ms), series count (u32) and per series the label count (u32),
each name and value (u32 length + UTF-8), the point count (u32), then the timestamps (int64) and
values (float64).
"""

from __future__ import annotations

import logging
import struct
import time

import numpy as np
import snappy

from mimird.frontend.memcached import RESULTS_CACHE_VERSION_PREFIX, MemcachedClient, cache_hash_key
from mimird.frontend.splitcache import Extent
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.frontend.resultscache")

MAGIC = b"MQRC2"
_U32 = struct.Struct("<I")
_EXTENT = struct.Struct("<qqqI")


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return _U32.pack(len(raw)) + raw


def encode_entry(key: str, extents: list[Extent]) -> bytes:
    """An entry's bytes."""
    parts = [MAGIC, _text(key), _U32.pack(len(extents))]
    for extent in extents:
        parts.append(_EXTENT.pack(extent.start_ms, extent.end_ms, extent.queried_ms, len(extent.series)))
        for labels, (ts, vals) in extent.series.items():
            parts.append(_U32.pack(len(labels)))
            for name, value in labels:
                parts += (_text(name), _text(value))
            parts.append(_U32.pack(len(ts)))
            parts.append(np.ascontiguousarray(ts, dtype="<i8").tobytes())
            parts.append(np.ascontiguousarray(vals, dtype="<f8").tobytes())
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError("truncated cache entry")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def text(self) -> str:
        return bytes(self.take(self.u32())).decode("utf-8", "surrogatepass")


def decode_entry(data: bytes) -> tuple[str, list[Extent]]:
    """The key and extents of an entry's bytes (ValueError when they are not an entry)."""
    if not data.startswith(MAGIC):
        raise ValueError("not a mimird results cache entry")
    reader = _Reader(data)
    reader.take(len(MAGIC))
    key = reader.text()
    extents = []
    for _ in range(reader.u32()):
        start_ms, end_ms, queried_ms, count = _EXTENT.unpack(reader.take(_EXTENT.size))
        series = {}
        for _ in range(count):
            labels = tuple((reader.text(), reader.text()) for _ in range(reader.u32()))
            points = reader.u32()
            ts = np.frombuffer(reader.take(8 * points), dtype="<i8").astype(np.int64)
            vals = np.frombuffer(reader.take(8 * points), dtype="<f8").astype(np.float64)
            series[labels] = (ts, vals)
        extents.append(Extent(start_ms, end_ms, series, queried_ms=queried_ms))
    if reader.pos != len(data):
        raise ValueError("trailing bytes after cache entry")
    return key, extents


class MemcachedResultsCache:
    """The results cache's entries kept in memcached (shared by every process pointing at it)."""

    def __init__(self, client: MemcachedClient, compression: str = ""):
        self.client = client
        self.compression = compression

    @staticmethod
    def storage_key(key: str) -> str:
        """The memcached key of a cache key: version prefix and Mimir's hash."""
        return RESULTS_CACHE_VERSION_PREFIX + cache_hash_key(key)

    def get_many(self, keys: list[str], now_s: float) -> dict[str, list[Extent]]:
        """The extents stored for each of `keys` that memcached has (memcached expires entries itself)."""
        hashed = {self.storage_key(key): key for key in keys}
        found = self.client.get_multi(list(hashed))
        self.client.metrics.lookups(len(hashed), len(found))
        out = {}
        for stored_key, value in found.items():
            key = hashed.get(stored_key)
            if key is None:
                continue
            try:
                if self.compression == "snappy":
                    value = snappy.uncompress(value)
                entry_key, extents = decode_entry(value)
            except Exception as exc:  # a foreign or corrupt value is a miss, never an error
                kv_log(log, logging.ERROR, "error decoding cached response", key=stored_key, err=exc)
                continue
            if entry_key == key:
                out[key] = extents
        return out

    def get(self, key: str, now_s: float) -> list[Extent]:
        """One entry's extents (empty when absent)."""
        return self.get_many([key], now_s).get(key, [])

    def put(self, key: str, extents: list[Extent], expires_s: float, now_s: float | None = None) -> None:
        """Queue the entry's store with the TTL left until `expires_s`."""
        value = encode_entry(key, extents)
        if self.compression == "snappy":
            value = snappy.compress(value)
        now_s = time.time() if now_s is None else now_s
        self.client.set_async(self.storage_key(key), value, max(expires_s - now_s, 1.0))
