"""The store-gateway component: keeps the bucket's blocks open and answers selects over them.

Every `-blocks-storage.bucket-store.sync-interval` the block list of each tenant is read from the
bucket: new complete blocks (with meta.json) are added, blocks gone from the bucket are closed.
Left out are partial blocks, blocks whose deletion mark is older than
`-blocks-storage.bucket-store.ignore-deletion-marks-delay`, blocks superseded by a compacted block
that is visible too, and every block of a tenant marked for deletion. An open block is one
`BlockReader`: the index and chunk files are memory-mapped and read on demand, never whole (a
query's series of all its blocks are decoded in one batch, `select_batch`).
Blocks are opened by the first query that reads them and closed again after
`-blocks-storage.bucket-store.index-header.lazy-loading-idle-timeout` without queries (as Mimir's lazy
index-headers), so that memory maps and file descriptors follow what is queried, not the bucket's size.

Queries hold the blocks they read: a block dropped by a sync while a query iterates it is closed
when that query finishes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from prometheus_client import Gauge

from mimird.bucket import FilesystemBucket
from mimird.compactor.blocks import (
    BucketBlock,
    list_tenants,
    scan_tenant,
    superseded_blocks,
    tenant_deletion_time,
)
from mimird.compactor.compactor import merge_samples_dedup
from mimird.services import Service
from mimird.tsdb.block import BlockReader, read_merged
from mimird.tsdb.labels import Labels, Matcher
from mimird.tsdb.seriesbatch import SeriesBatch
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.storegateway")

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class LoadedBlock:
    """A block the store-gateway serves: its meta, its reader when open, and the queries reading it."""

    def __init__(self, block: BucketBlock, path: Path):
        self.block = block
        self.path = path
        self.reader: BlockReader | None = None
        self.readers = 0
        self.dropped = False
        self.last_used = 0.0
        self.open_lock = threading.Lock()

    @property
    def meta(self):
        return self.block.meta


class StoreGateway(Service):
    """Serves the bucket's blocks to the querier (`select`, `label_names`, `label_values`)."""

    name = "store-gateway"

    def __init__(self, config, bucket: FilesystemBucket, metrics=None):
        super().__init__()
        store = config.blocks_storage.bucket_store
        self.bucket = bucket
        self.sync_interval = store.sync_interval
        self.ignore_deletion_marks_delay = store.ignore_deletion_marks_delay
        self.idle_timeout = store.index_header.lazy_loading_idle_timeout
        self.blocks: dict[str, dict[str, LoadedBlock]] = {}
        self.prepare_shutdown = False
        self.last_sync = 0.0
        self.syncs = 0
        self._lock = threading.Lock()
        self._sync_lock = asyncio.Lock()
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task | None = None
        if metrics is not None:
            Gauge("cortex_bucket_store_blocks_loaded", "Number of currently loaded blocks.",
                  registry=metrics.registry).set_function(self.num_loaded)

    # lifecycle
    async def starting(self) -> None:
        await self.sync()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stopping(self) -> None:
        # not cancelled: a sync's worker thread cannot be, and it must finish before the blocks close
        self._stop_event.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        async with self._sync_lock:
            with self._lock:
                for tenant_blocks in self.blocks.values():
                    for loaded in tenant_blocks.values():
                        self._drop(loaded)
                self.blocks.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop_event.wait(), self.sync_interval)
                return
            except TimeoutError:
                pass
            try:
                await self.sync()
            except Exception as exc:  # one failed sync must not end the loop
                kv_log(log, logging.ERROR, "store-gateway sync failed", err=f"{type(exc).__name__}: {exc}")

    # syncing with the bucket
    async def sync(self) -> None:
        """Bring the open blocks in line with the bucket (in a worker thread)."""
        async with self._sync_lock:
            await asyncio.to_thread(self.sync_now)

    def visible_blocks(self, tenant: str, now: float | None = None) -> list[BucketBlock]:
        """The tenant's blocks that queries should read."""
        if tenant_deletion_time(self.bucket, tenant) is not None:
            return []
        now = time.time() if now is None else now
        blocks = [b for b in scan_tenant(self.bucket, tenant)
                  if b.deletion_time is None or now - b.deletion_time < self.ignore_deletion_marks_delay]
        superseded = superseded_blocks(blocks)
        return [b for b in blocks if b.ulid not in superseded]

    def sync_now(self) -> None:
        """One sync pass (blocking)."""
        tenants = list_tenants(self.bucket)
        loaded = dropped = 0
        for tenant in tenants:
            wanted = {b.ulid: b for b in self.visible_blocks(tenant)}
            current = self.blocks.get(tenant, {})
            added = {}
            for ulid, block in wanted.items():
                if ulid in current:
                    current[ulid].block = block
                else:
                    added[ulid] = LoadedBlock(block, self.bucket.local_path(f"{tenant}/{ulid}").absolute())
            loaded += len(added)
            with self._lock:
                tenant_blocks = self.blocks.setdefault(tenant, {})
                tenant_blocks.update(added)
                for ulid in [u for u in tenant_blocks if u not in wanted]:
                    self._drop(tenant_blocks.pop(ulid))
                    dropped += 1
                if not tenant_blocks:
                    del self.blocks[tenant]
        idle_before = time.monotonic() - self.idle_timeout
        with self._lock:
            for tenant in [t for t in self.blocks if t not in tenants]:
                for block in self.blocks.pop(tenant).values():
                    self._drop(block)
                    dropped += 1
            if self.idle_timeout > 0:
                for tenant_blocks in self.blocks.values():
                    for block in tenant_blocks.values():
                        if block.reader is not None and block.readers == 0 and block.last_used < idle_before:
                            self._close(block)
        self.last_sync = time.time()
        self.syncs += 1
        if loaded or dropped:
            kv_log(log, logging.INFO, "synced blocks", loaded=loaded, dropped=dropped)

    @staticmethod
    def _close(loaded: LoadedBlock) -> None:
        # called with self._lock held and no query reading the block
        if loaded.reader is not None:
            loaded.reader.close()
            loaded.reader = None

    def _drop(self, loaded: LoadedBlock) -> None:
        # called with self._lock held
        loaded.dropped = True
        if loaded.readers == 0:
            self._close(loaded)

    def _acquire(self, tenant: str, mint: int, maxt: int) -> list[LoadedBlock]:
        """The tenant's blocks overlapping [mint, maxt], open and held for the caller (release them)."""
        now = time.monotonic()
        with self._lock:
            blocks = [b for b in self.blocks.get(tenant, {}).values()
                      if b.meta.max_time > mint and b.meta.min_time <= maxt]
            for block in blocks:
                block.readers += 1
                block.last_used = now
        usable, failed = [], []
        for block in blocks:
            # Held blocks are never closed, so the reader can be opened outside the gateway's lock.
            with block.open_lock:
                if block.reader is None:
                    try:
                        block.reader = BlockReader(block.path)
                    except (OSError, ValueError) as exc:
                        kv_log(log, logging.WARNING, "failed to open block", tenant=tenant, block=block.meta.ulid,
                               err=str(exc))
            (usable if block.reader is not None else failed).append(block)
        self._release(failed)
        usable.sort(key=lambda b: (b.meta.min_time, b.meta.ulid))
        return usable

    def _release(self, blocks: list[LoadedBlock]) -> None:
        with self._lock:
            for block in blocks:
                block.readers -= 1
                if block.dropped and block.readers == 0:
                    self._close(block)

    # reads
    def select(self, tenant: str, matchers: Sequence[Matcher], mint: int = INT64_MIN, maxt: int = INT64_MAX
               ) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """(labels, timestamps, values) of the tenant's matching series with samples in [mint, maxt]
        (both inclusive), in label order, merged across blocks with duplicate samples dropped."""
        blocks = self._acquire(tenant, mint, maxt)
        try:
            streams = [b.reader.read_series_samples(matchers, mint, maxt) for b in blocks]
            if len(streams) == 1:
                yield from streams[0]
                return
            merged = heapq.merge(*streams, key=lambda item: item[0])
            for labels, group in itertools.groupby(merged, key=lambda item: item[0]):
                parts = [(ts, vals) for _, ts, vals in group]
                if len(parts) == 1:
                    yield labels, parts[0][0], parts[0][1]
                else:
                    ts, vals = merge_samples_dedup(parts)
                    yield labels, ts, vals
        finally:
            self._release(blocks)

    def select_batch(self, tenant: str, matchers: Sequence[Matcher], mint: int = INT64_MIN,
                     maxt: int = INT64_MAX) -> SeriesBatch:
        """What `select` yields, as one SeriesBatch: each block read batched, the blocks merged in the
        order `select` merges them (by min time, then ULID; the first block's sample wins a tie)."""
        blocks = self._acquire(tenant, mint, maxt)
        try:
            return read_merged([b.reader.snapshot(matchers, mint, maxt) for b in blocks])
        finally:
            self._release(blocks)

    def series_labels(self, tenant: str, matchers: Sequence[Matcher], mint: int = INT64_MIN,
                      maxt: int = INT64_MAX) -> list[Labels]:
        """Sorted label sets of the matching series in blocks overlapping [mint, maxt]."""
        blocks = self._acquire(tenant, mint, maxt)
        try:
            found: set[Labels] = set()
            for block in blocks:
                for ref in block.reader.select(matchers).tolist():
                    found.add(block.reader.series(ref)[0])
            return sorted(found)
        finally:
            self._release(blocks)

    def label_names(self, tenant: str, matchers: Sequence[Matcher] = (), mint: int = INT64_MIN,
                    maxt: int = INT64_MAX) -> list[str]:
        """Sorted label names of the tenant's series (of the matching ones if `matchers` are given)."""
        if matchers:
            return sorted({name for labels in self.series_labels(tenant, matchers, mint, maxt) for name, _ in labels})
        blocks = self._acquire(tenant, mint, maxt)
        try:
            return sorted({name for block in blocks for name in block.reader.label_names()})
        finally:
            self._release(blocks)

    def label_values(self, tenant: str, name: str, matchers: Sequence[Matcher] = (), mint: int = INT64_MIN,
                     maxt: int = INT64_MAX) -> list[str]:
        """Sorted values of label `name` (over the matching series if `matchers` are given)."""
        if matchers:
            return sorted({value for labels in self.series_labels(tenant, matchers, mint, maxt)
                           for label, value in labels if label == name})
        blocks = self._acquire(tenant, mint, maxt)
        try:
            return sorted({value for block in blocks for value in block.reader.label_values(name)})
        finally:
            self._release(blocks)

    def num_open(self) -> int:
        """How many blocks have an open reader."""
        with self._lock:
            return sum(b.reader is not None for blocks in self.blocks.values() for b in blocks.values())

    def num_loaded(self) -> int:
        """How many blocks are open, over all tenants."""
        with self._lock:
            return sum(len(blocks) for blocks in self.blocks.values())

    def loaded_blocks(self, tenant: str) -> list[str]:
        """ULIDs of the tenant's open blocks."""
        with self._lock:
            return sorted(self.blocks.get(tenant, {}))
