"""The ingester component: one TSDB per tenant, the push path into it, cutting and shipping blocks.

Mimir's ingester keeps a Prometheus TSDB per tenant under `-blocks-storage.tsdb.dir/<tenant>/`; so do
we: a head in memory, its WAL in `wal/`, and the blocks cut from the head, which are shipped to the
bucket (`<bucket>/<tenant>/<ULID>/`) and kept locally for `-blocks-storage.tsdb.retention-period`.

Crash safety comes from the order of the steps. A push is logged to the WAL before it is answered.
A block is cut from a head whose min valid time was first raised to the block's end (no sample for the
block's range can arrive while it is written), renamed into place atomically, and only then is the
head truncated and the WAL checkpointed. On start, the WAL is replayed on top of the blocks, skipping
the samples that a block already holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mimird.bucket import FilesystemBucket
from mimird.config.runtime import Overrides
from mimird.services import RUNNING, Service
from mimird.tsdb import wal as walmod
from mimird.tsdb.block import (
    BlockReader,
    evaluate_range_merged,
    read_merged,
    read_meta,
    select_fold_merged,
    write_block,
)
from mimird.tsdb.block.meta import BlockMeta, is_ulid
from mimird.tsdb.head import DISCARD_REASONS, INT64_MAX, INT64_MIN, AppendResult, Head, merge_samples
from mimird.tsdb.labels import Labels, Matcher
from mimird.tsdb.seriesbatch import SeriesBatch
from mimird.util.failpoints import failpoint
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.ingester")

SHUTDOWN_MARKER = "shutdown-requested.txt"
SHIPPER_FILE = "thanos.shipper.json"


class IngesterUnavailable(Exception):
    """The ingester is not running (starting, stopping or shut down), or refuses writes."""


class TenantTSDB:
    """One tenant's head, WAL and local blocks, and the shipping of its blocks to the bucket."""

    def __init__(self, tenant: str, directory: Path, *, block_range_ms: int, ooo_window_ms: int,
                 max_exemplars: int, wal_segment_size: int, wal_fsync: str):
        self.tenant = tenant
        self.dir = directory
        self.head = Head(block_range_ms=block_range_ms, ooo_window_ms=ooo_window_ms, max_exemplars=max_exemplars)
        self.wal_segment_size = wal_segment_size
        self.wal_fsync = wal_fsync
        self.wal: walmod.WAL | None = None
        self.blocks: dict[str, BlockMeta] = {}
        self.shipped: set[str] = set()
        self.samples_appended = 0
        self.series_created = 0
        self.series_removed = 0
        self.exemplars_appended = 0
        self.discarded: dict[str, int] = {}
        self.replayed_samples = 0
        self.compactions = 0
        self.last_write = 0.0
        # Open readers of local blocks, kept between queries (opening one parses its index tables).
        self._readers: dict[str, BlockReader] = {}
        self._readers_lock = threading.Lock()

    @property
    def wal_dir(self) -> Path:
        return self.dir / "wal"

    # opening: blocks first, then the WAL on top of them
    def open(self) -> None:
        """Load local blocks, replay the WAL into the head, and open the WAL for writing."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for entry in self.dir.iterdir():
            if entry.name.endswith(".tmp") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)  # a block cut interrupted by a crash
            elif is_ulid(entry.name) and (entry / "meta.json").is_file():
                try:
                    self.blocks[entry.name] = read_meta(entry)
                except ValueError as exc:
                    kv_log(log, logging.ERROR, "skipping unreadable block", tenant=self.tenant, block=entry.name,
                           err=str(exc))
        shipper = self.dir / SHIPPER_FILE
        if shipper.is_file():
            try:
                self.shipped = set(json.loads(shipper.read_text()).get("uploaded") or [])
            except (ValueError, AttributeError):
                self.shipped = set()
        if self.blocks:
            self.head.min_valid_time = max(meta.max_time for meta in self.blocks.values())
        self._replay()
        self.wal = walmod.WAL(self.wal_dir, segment_size=self.wal_segment_size, fsync=self.wal_fsync, compress=True)

    def _replay(self) -> None:
        if not self.wal_dir.is_dir():
            return
        stats = walmod.ReplayStats()
        by_wal_ref = {}
        started = time.monotonic()
        for record in walmod.replay(self.wal_dir, stats=stats):
            if isinstance(record, walmod.SeriesRecord):
                for ref, labels in record.series:
                    try:
                        series, _ = self.head.get_or_create_series(labels, ref if ref not in by_wal_ref else None)
                    except ValueError:  # a ref out of order in a damaged log: take a fresh one
                        series, _ = self.head.get_or_create_series(labels)
                    by_wal_ref[ref] = series
            elif isinstance(record, walmod.SamplesRecord):
                self.replayed_samples += self.head.replay_samples(
                    record.refs.tolist(), record.timestamps.tolist(), record.values.tolist(), by_wal_ref)
            elif isinstance(record, walmod.ExemplarsRecord):
                self.head.add_exemplars([(by_wal_ref[ref].labels, labels, v, t)
                                         for ref, t, v, labels in record.exemplars if ref in by_wal_ref])
        # series the WAL knew but whose samples all went into blocks are not kept
        self.head.truncate(self.head.min_valid_time)
        kv_log(log, logging.INFO, "WAL replay completed", tenant=self.tenant, series=self.head.num_series,
               samples=self.replayed_samples, torn_tails=len(stats.torn_tails), corruptions=len(stats.corruptions),
               duration=f"{time.monotonic() - started:.3f}s")

    def close(self) -> None:
        if self.wal is not None:
            self.wal.close()
            self.wal = None

    # writing
    def append(self, series_labels, offsets, timestamps, values, *, limits: dict,
               exemplars=(), metadata=(), fast=None, positions=(), validated_under=None) -> AppendResult:
        """Append to the head, then log what was kept to the WAL before returning.

        `fast`/`positions`: the request's fast part, see `Head.append`. `validated_under`: when not None,
        the distributor checked these series' labels under these label limits: the fast path may take them.
        """
        head = self.head
        head.ooo_window = int(limits["out_of_order_time_window"] * 1000)
        head.set_max_exemplars(limits["max_global_exemplars_per_user"])
        result = head.append(series_labels, offsets, timestamps, values,
                             max_series=limits["max_global_series_per_user"],
                             max_series_per_metric=limits["max_global_series_per_metric"],
                             fast=fast, positions=positions)
        wal_exemplars = []
        if exemplars and head.max_exemplars:
            kept = []
            for series_labels_, ex_labels, value, ts in exemplars:
                series = head.by_labels.get(series_labels_)
                if series is not None:
                    kept.append((series_labels_, ex_labels, value, ts))
                    wal_exemplars.append((series.ref, ts, value, ex_labels))
            result.exemplars_appended = head.add_exemplars(kept)
        if metadata:
            head.set_metadata(metadata)
        samples = result.wal_samples()
        if result.new_series or samples is not None or wal_exemplars:
            self.wal.log_batch(series=result.new_series, samples=samples, exemplars=wal_exemplars)
        if validated_under is not None and series_labels:
            head.remember_validated(series_labels, validated_under)
        self.count(result)
        self.last_write = time.time()
        return result

    def count(self, result: AppendResult) -> None:
        self.samples_appended += result.samples_appended
        self.series_created += result.series_created
        self.exemplars_appended += result.exemplars_appended
        for reason, count in result.discarded.items():
            key = DISCARD_REASONS.get(reason, reason)
            self.discarded[key] = self.discarded.get(key, 0) + count

    # cutting blocks
    def next_block_range(self, force: bool) -> tuple[int, int] | None:
        """The [mint, maxt) of the next block to cut, if the head has one (all of it when forced)."""
        head = self.head
        if head.min_time == INT64_MAX:
            return None
        if not force and not head.compactable():
            return None
        lo = head.min_time // head.block_range * head.block_range
        hi = lo + head.block_range
        if force:
            hi = min(hi, head.max_time + 1)
        return lo, hi

    def write_block(self, lo: int, hi: int) -> str | None:
        """Write the head's samples in [lo, hi) as a block (runs in a worker thread). Returns its ULID."""
        series = self.head.series_for_block(lo, hi)
        first = next(series, None)
        if first is None:
            return None
        ulid = write_block(self.dir, _chain(first, series), lo, hi, tenant=self.tenant, source="ingester")
        return ulid

    # reading
    def select(self, matchers: Sequence[Matcher], mint: int, maxt: int
               ) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """Samples of the matching series from local blocks and the head, merged per series."""
        blocks = self._blocks_overlapping(mint, maxt)
        if not blocks:
            yield from self.head.select(matchers, mint, maxt)
            return
        parts: dict[Labels, list[tuple[np.ndarray, np.ndarray]]] = {}
        for ulid in blocks:
            with BlockReader(self.dir / ulid) as reader:
                for labels, ts, vals in reader.read_series_samples(matchers, mint, maxt):
                    parts.setdefault(labels, []).append((ts, vals))
        for labels, ts, vals in self.head.select(matchers, mint, maxt):
            parts.setdefault(labels, []).append((ts, vals))
        for labels in sorted(parts):
            pieces = parts[labels]
            ts, vals = pieces[0]
            for more_ts, more_vals in pieces[1:]:
                ts, vals = merge_samples(ts, vals, more_ts.tolist(), more_vals.tolist())
            yield labels, ts, vals

    def _blocks_overlapping(self, mint: int, maxt: int) -> list[str]:
        return [ulid for ulid, meta in sorted(self.blocks.items())
                if meta.max_time > mint and meta.min_time <= maxt]

    def select_batch(self, matchers: Sequence[Matcher], mint: int, maxt: int, latest_only: bool = False
                     ) -> SeriesBatch:
        """`select` as one SeriesBatch: each overlapping local block and the head read batched, merged as
        `select` merges them (blocks in ULID order, then the head; the first one's sample wins a tie).
        `latest_only` is passed to the head (`Head.select_batch`); blocks are read whole."""
        blocks = self._blocks_overlapping(mint, maxt)
        if not blocks:
            return self.head.select_batch(matchers, mint, maxt, latest_only)
        return read_merged(self._snapshots(blocks, matchers, mint, maxt, latest_only))

    def evaluate_range(self, matchers: Sequence[Matcher], mint: int, maxt: int, *kernel_args):
        """A range function over the series `select_batch` would read, as `Head.evaluate_range` gives it:
        the head's own when it alone holds samples in [mint, maxt], else each series merged from the
        overlapping local blocks and the head and evaluated on its own (`evaluate_range_merged`)."""
        blocks = self._blocks_overlapping(mint, maxt)
        if not blocks:
            return self.head.evaluate_range(matchers, mint, maxt, *kernel_args)
        return evaluate_range_merged(self._snapshots(blocks, matchers, mint, maxt), *kernel_args)

    def _snapshots(self, blocks: list[str], matchers: Sequence[Matcher], mint: int, maxt: int,
                   latest_only: bool = False) -> list:
        # The sources of a merged read in priority order: the local blocks' snapshots (ULID order), then the
        # head's (`latest_only` as in `Head.select_batch`; blocks are read whole).
        sources = [self.block_reader(ulid).snapshot(matchers, mint, maxt) for ulid in blocks]
        sources.append(self.head.snapshot(matchers, mint, maxt, latest_only))
        return sources

    def select_fold(self, matchers: Sequence[Matcher], mint: int, maxt: int, latest_only: bool, *fold_args):
        """An aggregation of the series `select_batch` would read, as `Head.select_fold` gives it: the head's
        own when it alone holds samples in [mint, maxt], else each series merged from the overlapping local
        blocks and the head and folded on its own (`select_fold_merged`)."""
        blocks = self._blocks_overlapping(mint, maxt)
        if not blocks:
            return self.head.select_fold(matchers, mint, maxt, latest_only, *fold_args)
        return select_fold_merged(self._snapshots(blocks, matchers, mint, maxt, latest_only), *fold_args)

    def block_reader(self, ulid: str) -> BlockReader:
        """An open reader of local block `ulid`, shared by queries. Readers of blocks no longer in
        `blocks` (retention, compaction) are forgotten, not closed: the maps go when the last query
        holding one lets go of it."""
        with self._readers_lock:
            for gone in [u for u in self._readers if u not in self.blocks]:
                del self._readers[gone]
            reader = self._readers.get(ulid)
            if reader is None:
                reader = self._readers[ulid] = BlockReader(self.dir / ulid)
            return reader


def _chain(first, rest):
    yield first
    failpoint("during-block-write")
    yield from rest


class Ingester(Service):
    """Owns every tenant's TSDB and the ingester's lifecycle flags."""

    name = "ingester"

    def __init__(self, config, overrides: Overrides, instance_id: str, bucket: FilesystemBucket):
        super().__init__()
        self.config = config
        self.overrides = overrides
        self.instance_id = instance_id
        self.bucket = bucket
        tsdb = config.blocks_storage.tsdb
        self.tsdb_dir = Path(tsdb.dir)
        self.block_range_ms = int(tsdb.block_ranges_period * 1000)
        self.retention_ms = int(tsdb.retention_period * 1000)
        self.compaction_interval = tsdb.head_compaction_interval
        self.tenants: dict[str, TenantTSDB] = {}
        self.read_only_since = 0.0
        self.unregister_on_shutdown = config.ingester.ring.unregister_on_shutdown
        self.flush_on_shutdown = tsdb.flush_blocks_on_shutdown
        self.flush_lock = asyncio.Lock()
        self._loop_task: asyncio.Task | None = None

    # lifecycle
    async def starting(self) -> None:
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)
        if self.shutdown_marker.exists():
            self.flush_on_shutdown = True
            self.unregister_on_shutdown = True
        for entry in sorted(self.tsdb_dir.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                await asyncio.to_thread(self._open_tenant, entry.name)
        self._loop_task = asyncio.get_running_loop().create_task(self._background())

    def _open_tenant(self, tenant: str) -> TenantTSDB:
        limits = self.overrides.for_tenant(tenant)
        tsdb = self.config.blocks_storage.tsdb
        db = TenantTSDB(tenant, self.tsdb_dir / tenant, block_range_ms=self.block_range_ms,
                        ooo_window_ms=int(limits["out_of_order_time_window"] * 1000),
                        max_exemplars=limits["max_global_exemplars_per_user"],
                        wal_segment_size=tsdb.wal_segment_size_bytes, wal_fsync=tsdb.wal_fsync)
        db.open()
        self.tenants[tenant] = db
        return db

    async def stopping(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self.flush_on_shutdown:
            await self.flush(None)
        for db in self.tenants.values():
            db.close()
        self.tenants.clear()

    async def shutdown_now(self) -> None:
        """POST /ingester/shutdown: flush everything and stop the ingester service."""
        self.flush_on_shutdown = True
        await self.stop()

    async def _background(self) -> None:
        while True:
            await asyncio.sleep(self.compaction_interval)
            try:
                await self.compact_and_ship(force=False, tenants=None)
            except Exception as exc:  # one failed cycle must not end the loop
                kv_log(log, logging.ERROR, "head compaction cycle failed", err=f"{type(exc).__name__}: {exc}")

    @property
    def shutdown_marker(self) -> Path:
        return self.tsdb_dir / SHUTDOWN_MARKER

    def check_writable(self) -> None:
        if self.state != RUNNING:
            raise IngesterUnavailable(f"ingester is unavailable (current state: {self.state})")
        if self.read_only_since:
            raise IngesterUnavailable("ingester is in read-only mode (prepare-instance-ring-downscale): "
                                      "writes are refused until the mode is cleared")

    def tsdb(self, tenant: str, create: bool = True) -> TenantTSDB | None:
        db = self.tenants.get(tenant)
        if db is None and create:
            db = self._open_tenant(tenant)
        return db

    # write path
    def push(self, tenant: str, series_labels: Sequence[Labels], offsets: Sequence[int],
             timestamps: Sequence[int], values: Sequence[float],
             exemplars: Sequence[tuple[Labels, Labels, float, int]] = (),
             metadata: Sequence[tuple[int, str, str, str]] = (), *, fast=None, positions: Sequence[int] = (),
             validated_under=None) -> AppendResult:
        """Append a decoded request for `tenant`, logged to its WAL before this returns.

        `fast`, `positions` and `validated_under`: see `TenantTSDB.append`.
        """
        self.check_writable()
        db = self.tsdb(tenant)
        return db.append(series_labels, offsets, timestamps, values, limits=self.overrides.for_tenant(tenant),
                         exemplars=exemplars, metadata=metadata, fast=fast, positions=positions,
                         validated_under=validated_under)

    # read path
    def select(self, tenant: str, matchers: Sequence[Matcher], mint: int = INT64_MIN, maxt: int = INT64_MAX):
        """The tenant's matching series with samples in [mint, maxt] from its head and local blocks."""
        db = self.tenants.get(tenant)
        if db is None:
            return iter(())
        return db.select(matchers, mint, maxt)

    def select_batch(self, tenant: str, matchers: Sequence[Matcher], mint: int = INT64_MIN,
                     maxt: int = INT64_MAX, latest_only: bool = False) -> SeriesBatch:
        """`select` as one SeriesBatch (labels, and the samples of all series end to end); `latest_only`
        as in `Head.select_batch`."""
        db = self.tenants.get(tenant)
        if db is None:
            return SeriesBatch.empty()
        return db.select_batch(matchers, mint, maxt, latest_only)

    def evaluate_range(self, tenant: str, matchers: Sequence[Matcher], mint: int, maxt: int, *kernel_args):
        """The tenant's `TenantTSDB.evaluate_range`, or None when it has no TSDB."""
        db = self.tenants.get(tenant)
        if db is None:
            return None
        return db.evaluate_range(matchers, mint, maxt, *kernel_args)

    def select_fold(self, tenant: str, matchers: Sequence[Matcher], mint: int, maxt: int, latest_only: bool,
                    *fold_args):
        """The tenant's `TenantTSDB.select_fold`, or None when it has no TSDB or its local blocks hold part of
        the range."""
        db = self.tenants.get(tenant)
        if db is None:
            return None
        return db.select_fold(matchers, mint, maxt, latest_only, *fold_args)

    # cutting, shipping, retention
    def start_flush(self, tenants: Sequence[str] | None) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self.flush(tenants))

    async def flush(self, tenants: Sequence[str] | None) -> None:
        """Cut the whole head of each tenant (all when None) into blocks and ship them."""
        await self.compact_and_ship(force=True, tenants=tenants)

    async def compact_and_ship(self, force: bool, tenants: Sequence[str] | None) -> None:
        async with self.flush_lock:
            for tenant in list(self.tenants) if tenants is None else tenants:
                db = self.tenants.get(tenant)
                if db is None:
                    continue
                while (window := db.next_block_range(force)) is not None:
                    await self._cut_block(db, *window)
                await self._ship(db)
                self._apply_local_retention(db)

    async def _cut_block(self, db: TenantTSDB, lo: int, hi: int) -> None:
        head = db.head
        with head.lock:
            # no sample for [lo, hi) may arrive while the block is written
            head.min_valid_time = max(head.min_valid_time, hi)
        started = time.monotonic()
        ulid = await asyncio.to_thread(db.write_block, lo, hi)
        failpoint("after-block-write")
        if ulid is not None:
            db.blocks[ulid] = read_meta(db.dir / ulid)
        removed = head.truncate(hi)
        db.series_removed += removed
        db.compactions += 1
        # Checkpoint what is still alive, then drop the segments the block and checkpoint cover.
        last_segment = db.wal.next_segment() - 1
        keep = head.series.__contains__
        await asyncio.to_thread(walmod.checkpoint, db.wal_dir, keep, hi, last_segment)
        failpoint("after-checkpoint")
        db.wal.truncate(last_segment)
        kv_log(log, logging.INFO, "head compacted into block", tenant=db.tenant, block=ulid or "none",
               mint=lo, maxt=hi, series_removed=removed, duration=f"{time.monotonic() - started:.3f}s")

    async def _ship(self, db: TenantTSDB) -> None:
        pending = sorted(set(db.blocks) - db.shipped)
        if not pending:
            return
        for ulid in pending:
            await asyncio.to_thread(upload_block, self.bucket, db.tenant, db.dir / ulid)
            failpoint("after-upload")
            db.shipped.add(ulid)
            _write_json_atomic(db.dir / SHIPPER_FILE, {"version": 1, "uploaded": sorted(db.shipped)})
            kv_log(log, logging.INFO, "block shipped", tenant=db.tenant, block=ulid)
        await asyncio.to_thread(update_bucket_index, self.bucket, db.tenant)

    def _apply_local_retention(self, db: TenantTSDB) -> None:
        if not db.blocks:
            return
        newest = max(meta.max_time for meta in db.blocks.values())
        for ulid, meta in list(db.blocks.items()):
            if ulid in db.shipped and meta.max_time <= newest - self.retention_ms:
                shutil.rmtree(db.dir / ulid, ignore_errors=True)
                del db.blocks[ulid]

    async def forget_tenant(self, tenant: str) -> bool:
        """Drop a deleted tenant's head, WAL and local blocks (the compactor calls this after deleting the
        tenant's blocks from the bucket). Returns whether the ingester had the tenant."""
        async with self.flush_lock:
            db = self.tenants.pop(tenant, None)
            if db is None:
                return False
            db.close()
            await asyncio.to_thread(shutil.rmtree, db.dir, True)
        kv_log(log, logging.INFO, "forgot deleted tenant", tenant=tenant)
        return True

    # admin state
    def set_prepare_shutdown(self, enabled: bool) -> None:
        if enabled:
            self.shutdown_marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
            self.flush_on_shutdown = True
            self.unregister_on_shutdown = True
        else:
            try:
                os.unlink(self.shutdown_marker)
            except FileNotFoundError:
                pass
            self.flush_on_shutdown = self.config.blocks_storage.tsdb.flush_blocks_on_shutdown
            self.unregister_on_shutdown = self.config.ingester.ring.unregister_on_shutdown
        kv_log(log, logging.INFO, "prepare-shutdown " + ("set" if enabled else "unset"))

    # pages and metrics
    def tenant_rows(self) -> list[dict]:
        rows = []
        for tenant, db in sorted(self.tenants.items()):
            limits = self.overrides.for_tenant(tenant)
            warning = ""
            if db.head.max_time != INT64_MIN and db.head.max_time > (time.time() + 600) * 1000:
                ahead = db.head.max_time / 1000 - time.time()
                warning = f"TSDB Head max timestamp too far in the future: {ahead:.0f}s"
            rows.append({"tenant": tenant, "blocks": len(db.blocks), "min_time": db.head.min_time,
                         "max_time": db.head.max_time, "past_grace": _seconds(limits["out_of_order_time_window"]),
                         "future_grace": "10m", "warning": warning})
        return rows

    def tenant_details(self, tenant: str) -> dict | None:
        db = self.tenants.get(tenant)
        if db is None:
            return None
        head = db.head
        ooo = [t for s in head.series.values() for t in (s.ooo_t[:1] + s.ooo_t[-1:])]
        min_valid = head.appendable_min_time()
        return {
            "tenant": tenant,
            "head": {"series": head.num_series, "min_time": head.min_time, "max_time": head.max_time,
                     "appendable_min_time": "N/A" if min_valid == INT64_MIN else str(min_valid),
                     "min_ooo_time": min(ooo) if ooo else INT64_MAX, "max_ooo_time": max(ooo) if ooo else INT64_MIN},
            "blocks": [{"id": ulid, "min_time": m.min_time, "max_time": m.max_time, "series": m.num_series,
                        "chunks": m.num_chunks, "samples": m.num_samples, "uploaded": ulid in db.shipped}
                       for ulid, m in sorted(db.blocks.items())],
        }

    def tenant_metrics_text(self, tenant: str) -> bytes:
        """The tenant's TSDB metrics, named as Prometheus's TSDB names them."""
        db = self.tenants[tenant]
        head = db.head
        wal_metrics = db.wal.metrics if db.wal is not None else walmod.WALMetrics()
        lines = []

        def metric(name, kind, help_text, samples):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{labels} {value}")

        chunks = sum(s.num_closed + (1 if s.open is not None else 0) for s in head.series.values())
        metric("prometheus_tsdb_head_series", "gauge", "Total number of series in the head block.",
               [("", head.num_series)])
        metric("prometheus_tsdb_head_chunks", "gauge", "Total number of chunks in the head block.", [("", chunks)])
        metric("prometheus_tsdb_head_series_created_total", "counter", "Total number of series created in the head",
               [("", db.series_created)])
        metric("prometheus_tsdb_head_series_removed_total", "counter", "Total number of series removed in the head",
               [("", db.series_removed)])
        metric("prometheus_tsdb_head_samples_appended_total", "counter", "Total number of appended samples.",
               [('{type="float"}', db.samples_appended)])
        metric("prometheus_tsdb_head_min_time", "gauge", "Minimum time bound of the head block.",
               [("", head.min_time if head.min_time != INT64_MAX else 0)])
        metric("prometheus_tsdb_head_max_time", "gauge", "Maximum timestamp of the head block.",
               [("", head.max_time if head.max_time != INT64_MIN else 0)])
        metric("prometheus_tsdb_blocks_loaded", "gauge", "Number of currently loaded data blocks",
               [("", len(db.blocks))])
        metric("prometheus_tsdb_compactions_total", "counter", "Total number of head compactions that ran.",
               [("", db.compactions)])
        metric("prometheus_tsdb_out_of_order_samples_total", "counter",
               "Total number of out of order samples ingestion failed attempts.",
               [('{type="float"}', db.discarded.get("sample-out-of-order", 0))])
        metric("prometheus_tsdb_wal_records_written_total", "counter", "Records written to the WAL.",
               [("", wal_metrics.records_written)])
        metric("prometheus_tsdb_wal_fsync_duration_seconds_count", "counter", "Number of WAL fsyncs.",
               [("", wal_metrics.fsyncs)])
        metric("prometheus_tsdb_exemplar_exemplars_in_storage", "gauge",
               "Number of exemplars currently in circular storage.", [("", len(head.exemplars))])
        return ("\n".join(lines) + "\n").encode()


def _seconds(value: float) -> str:
    from mimird.util.durations import format_duration

    return format_duration(value)


def _write_json_atomic(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def upload_block(bucket: FilesystemBucket, tenant: str, block_dir: Path) -> None:
    """Copy a block into `<tenant>/<ulid>/`: chunks and index first, meta.json last, as Mimir's shipper
    does, so that a block is visible in the bucket only once it is whole."""
    ulid = block_dir.name
    files = sorted(p for p in block_dir.rglob("*") if p.is_file() and p.name != "meta.json")
    for path in files:
        bucket.upload_file(f"{tenant}/{ulid}/{path.relative_to(block_dir).as_posix()}", path)
    bucket.upload_file(f"{tenant}/{ulid}/meta.json", block_dir / "meta.json")


def update_bucket_index(bucket: FilesystemBucket, tenant: str) -> None:
    """Rewrite `<tenant>/bucket-index.json.gz` from the blocks and deletion marks in the bucket."""
    with _BUCKET_INDEX_LOCK:  # the ingester's shipper and the compactor rewrite it from different threads
        _write_bucket_index(bucket, tenant)


_BUCKET_INDEX_LOCK = threading.Lock()


def _write_bucket_index(bucket: FilesystemBucket, tenant: str) -> None:
    import gzip

    blocks, marks = [], []
    for name in bucket.iter(f"{tenant}/"):
        ulid = name.rstrip("/")
        if not name.endswith("/") or not is_ulid(ulid) or not bucket.exists(f"{tenant}/{ulid}/meta.json"):
            continue
        meta = BlockMeta.from_json(json.loads(bucket.get(f"{tenant}/{ulid}/meta.json")))
        uploaded = int(bucket.local_path(f"{tenant}/{ulid}/meta.json").stat().st_mtime)
        blocks.append({"block_id": ulid, "min_time": meta.min_time, "max_time": meta.max_time,
                       "uploaded_at": uploaded, "segments_format": "1b6d", "segments_num": len(meta.segment_files),
                       "source": meta.source})
        mark_key = f"{tenant}/{ulid}/deletion-mark.json"
        if bucket.exists(mark_key):
            mark = json.loads(bucket.get(mark_key))
            marks.append({"block_id": ulid, "deletion_time": mark.get("deletion_time", 0)})
    index = {"version": 1, "blocks": blocks, "block_deletion_marks": marks, "updated_at": int(time.time())}
    bucket.put(f"{tenant}/bucket-index.json.gz", gzip.compress(json.dumps(index).encode()))
