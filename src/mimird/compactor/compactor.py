"""The compactor component: merges each tenant's blocks in the bucket, applies retention, deletes blocks
marked for deletion and tenants marked for deletion.

Two loops run, each in a worker thread so the event loop keeps serving: compaction every
`-compactor.compaction-interval` and cleanup every `-compactor.cleanup-interval`; one lock keeps them
from running at the same time. A compaction job streams its source blocks series by series into a new
block under `-compactor.data-dir`, uploads it (meta.json last, so a half-uploaded block is never
read), and only then marks the sources for deletion. The sources stay readable for
`-compactor.deletion-delay`; readers that see both the new block and its sources drop the sources
(`superseded_blocks`), and a crash between the upload and the marks is repaired by the next cycle,
which marks superseded blocks itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from mimird.bucket import FilesystemBucket
from mimird.compactor.blocks import (
    BUCKET_INDEX,
    BucketBlock,
    delete_block,
    list_block_ids,
    list_tenants,
    mark_for_deletion,
    mark_no_compact,
    read_block,
    read_deletion_time,
    scan_tenant,
    superseded_blocks,
    tenant_deletion_time,
)
from mimird.compactor.planner import Job, group_key, plan_jobs
from mimird.config.runtime import Overrides
from mimird.ingester.ingester import update_bucket_index, upload_block
from mimird.services import Service
from mimird.tsdb.block import BlockReader, ChunkReader, CorruptBlockError, CorruptChunkError, write_block
from mimird.tsdb.block.chunks import ENCODING_XOR
from mimird.tsdb.block.meta import CHUNKS_DIRNAME, TENANT_LABEL
from mimird.util.durations import parse_duration
from mimird.util.failpoints import failpoint
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.compactor")

# Each round of a tenant's compaction plans again over the blocks the previous round wrote, so six
# 2h blocks become a 12h block and two 12h blocks a 24h block in one cycle; the bound stops a cycle
# that keeps finding work (which would be a planning bug) from running forever.
MAX_ROUNDS_PER_CYCLE = 8


def parse_block_ranges(ranges: Sequence[str]) -> list[int]:
    """`-compactor.block-ranges` as milliseconds; ValueError unless each is a positive multiple of the first."""
    values = [int(round(parse_duration(text) * 1000)) for text in ranges]
    if not values or any(v <= 0 for v in values):
        raise ValueError("block ranges must be positive durations")
    if any(v % values[0] for v in values):
        raise ValueError("each block range must be a multiple of the first")
    return values


def merge_samples_dedup(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Samples of several blocks for one series, by time, one sample per timestamp (the first block's)."""
    ts = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    return ts[keep], vals[keep]


def _merged_series(readers: list[BlockReader], chunk_readers: list[ChunkReader]) -> Iterator[tuple]:
    """The union of the blocks' series in label order, one series at a time.

    A series whose chunks from the different blocks do not overlap in time keeps its chunks as they
    are (read a series' chunks of one block in one batch, checksums verified); one whose chunks
    overlap is decoded, merged with duplicates dropped, and re-cut.
    """
    def tagged(index: int, reader: BlockReader):
        for ref, labels, chunks in reader.iter_series():
            yield labels, index, ref, chunks

    streams = [tagged(index, reader) for index, reader in enumerate(readers)]
    merged = heapq.merge(*streams, key=lambda item: item[0])
    for labels, group in itertools.groupby(merged, key=lambda item: item[0]):
        parts = sorted(group, key=lambda part: part[3][0][0] if part[3] else 0)
        chunks = [c for part in parts for c in part[3]]
        if all(chunks[i][0] > chunks[i - 1][1] for i in range(1, len(chunks))):
            out = []
            for _, index, _, metas in parts:
                refs = np.fromiter((c_ref for _, _, c_ref in metas), dtype=np.uint64, count=len(metas))
                for (c_mint, c_maxt, c_ref), (encoding, data) in zip(metas, chunk_readers[index].chunks(refs),
                                                                     strict=True):
                    if encoding != ENCODING_XOR:
                        raise CorruptBlockError(f"{readers[index].dir}: series {labels}: chunk {c_ref:#x} has "
                                                f"encoding {encoding}, only XOR (1) is read")
                    out.append((c_mint, c_maxt, data))
            yield labels, out
            continue
        samples = [readers[index].series_samples(ref)[1:] for _, index, ref, _ in parts]
        ts, vals = merge_samples_dedup(samples)
        yield labels, ts, vals


class CompactionAborted(Exception):
    """The compactor is stopping; the job was abandoned."""


def _stoppable(series: Iterator, should_stop: Callable[[], bool], every: int = 1024) -> Iterator:
    for count, item in enumerate(series):
        if count % every == 0 and should_stop():
            raise CompactionAborted("compactor stopping")
        yield item


def merge_blocks(block_dirs: Sequence[Path], out_parent: Path, tenant: str | None,
                 should_stop: Callable[[], bool] | None = None) -> str | None:
    """Merge the blocks in `block_dirs` into one new block under `out_parent`; return its ULID.

    Level is one above the highest source level, sources the union of the sources, parents the
    source blocks. Returns None (and writes nothing) when the sources hold no samples. When
    `should_stop` turns true the merge raises CompactionAborted and leaves nothing behind.
    """
    readers: list[BlockReader] = []
    chunk_readers: list[ChunkReader] = []
    try:
        for block_dir in block_dirs:
            readers.append(BlockReader(block_dir))
            chunk_readers.append(ChunkReader(Path(block_dir) / CHUNKS_DIRNAME))
        metas = [r.meta for r in readers]
        sources = sorted({s for m in metas for s in (m.sources or [m.ulid])})
        parents = [{"ulid": m.ulid, "minTime": m.min_time, "maxTime": m.max_time} for m in metas]
        mint = min(m.min_time for m in metas)
        maxt = max(m.max_time for m in metas)
        series = _merged_series(readers, chunk_readers)
        if should_stop is not None:
            series = _stoppable(series, should_stop)
        first = next(series, None)
        if first is None:
            return None
        return write_block(out_parent, itertools.chain([first], series), mint, maxt, tenant=tenant,
                           source="compactor", level=max(m.level for m in metas) + 1, sources=sources,
                           parents=parents)
    except CorruptChunkError as exc:
        raise CorruptBlockError(str(exc)) from None
    finally:
        for reader in readers + chunk_readers:
            reader.close()


class Compactor(Service):
    """Compaction, retention, block deletion and tenant deletion over the bucket."""

    name = "compactor"

    def __init__(self, config, overrides: Overrides, bucket: FilesystemBucket, ingester=None, metrics=None):
        super().__init__()
        settings = config.compactor
        self.overrides = overrides
        self.bucket = bucket
        self.ingester = ingester
        self.ranges_ms = parse_block_ranges(settings.block_ranges)
        self.compaction_interval = settings.compaction_interval
        self.cleanup_interval = settings.cleanup_interval
        self.deletion_delay = settings.deletion_delay
        self.tenant_cleanup_delay = settings.tenant_cleanup_delay
        self.first_level_wait = settings.first_level_compaction_wait_period
        self.max_validations = settings.max_block_upload_validation_concurrency
        self.data_dir = Path(settings.data_dir)
        self.compact_dir = self.data_dir / "compact"
        self.validation_dir = self.data_dir / "upload-validation"
        self.cycle_lock = asyncio.Lock()
        self.validations_in_flight = 0
        self.validation_lock = threading.Lock()
        registry = metrics.registry if metrics is not None else CollectorRegistry()
        self.runs_started = Counter("cortex_compactor_runs_started_total", "Total number of compaction runs started.",
                                    registry=registry)
        self.runs_completed = Counter("cortex_compactor_runs_completed_total",
                                      "Total number of compaction runs successfully completed.", registry=registry)
        self.runs_failed = Counter("cortex_compactor_runs_failed_total", "Total number of compaction runs failed.",
                                   registry=registry)
        self.last_success = Gauge("cortex_compactor_last_successful_run_timestamp_seconds",
                                  "Unix timestamp of the last successful compaction run.", registry=registry)
        self.compactions = Counter("cortex_compactor_group_compactions_total",
                                   "Total number of group compaction attempts that resulted in a new block.",
                                   registry=registry)
        self.blocks_marked = Counter("cortex_compactor_blocks_marked_for_deletion_total",
                                     "Total number of blocks marked for deletion in compactor.", ["reason"],
                                     registry=registry)
        self.blocks_cleaned = Counter("cortex_compactor_blocks_cleaned_total",
                                      "Total number of blocks deleted in compactor.", registry=registry)
        self.cleanups_completed = Counter("cortex_compactor_block_cleanup_completed_total",
                                          "Total number of blocks cleanup runs successfully completed.",
                                          registry=registry)
        self.cleanups_failed = Counter("cortex_compactor_block_cleanup_failed_total",
                                       "Total number of blocks cleanup runs failed.", registry=registry)
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # lifecycle
    async def starting(self) -> None:
        # What a previous run left behind (jobs and validations cut short by a stop or crash) is
        # removed; only the compactor's own subdirectories, whatever else the data dir holds.
        for work_dir in (self.compact_dir, self.validation_dir):
            shutil.rmtree(work_dir, ignore_errors=True)
            work_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(self.compaction_interval, self.run_compaction)),
                       loop.create_task(self._loop(self.cleanup_interval, self.run_cleanup))]

    async def stopping(self) -> None:
        # The loops are not cancelled: a worker thread cannot be, and the loop must still own the cycle
        # lock while its thread runs. A running merge sees the flag and gives up (its half-written block
        # is removed), and the loops end after their current step.
        self._stopping = True
        self._stop_event.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self, interval: float, cycle) -> None:
        while not self._stopping:
            try:
                await cycle()
            except CompactionAborted:
                break
            except Exception as exc:  # one failed cycle must not end the loop
                kv_log(log, logging.ERROR, "compactor cycle failed", cycle=cycle.__name__,
                       err=f"{type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(self._stop_event.wait(), interval)
            except TimeoutError:
                pass

    # compaction
    async def run_compaction(self) -> int:
        """One compaction cycle over every tenant; returns the number of jobs run."""
        async with self.cycle_lock:
            self.runs_started.inc()
            jobs = 0
            try:
                for tenant in await asyncio.to_thread(list_tenants, self.bucket):
                    if self._stopping:
                        break
                    jobs += await asyncio.to_thread(self.compact_tenant, tenant)
            except Exception:
                self.runs_failed.inc()
                raise
            self.runs_completed.inc()
            self.last_success.set_to_current_time()
            return jobs

    def plan(self, blocks: Sequence[BucketBlock]) -> list[Job]:
        """Merge jobs for a tenant's compactable blocks, grouped by external labels (but the tenant's)."""
        groups: dict[str, list[BucketBlock]] = {}
        for block in blocks:
            labels = {k: v for k, v in block.meta.thanos_labels.items() if k != TENANT_LABEL}
            groups.setdefault(group_key(labels), []).append(block)
        jobs = []
        for key, members in sorted(groups.items()):
            jobs += plan_jobs(members, self.ranges_ms, key)
        return jobs

    def _wait_elapsed(self, job: Job, now: float) -> bool:
        # Level-1 blocks wait so that every ingester's block for the range is in before the merge.
        return all(b.meta.level > 1 or now - b.uploaded_at >= self.first_level_wait for b in job.blocks)

    def compact_tenant(self, tenant: str) -> int:
        """Plan and run the tenant's merge jobs until none is left (runs in a worker thread)."""
        if tenant_deletion_time(self.bucket, tenant) is not None:
            return 0
        done = 0
        changed = False
        for _ in range(MAX_ROUNDS_PER_CYCLE):
            live = [b for b in scan_tenant(self.bucket, tenant) if b.deletion_time is None]
            superseded = superseded_blocks(live)
            for ulid in sorted(superseded):
                mark_for_deletion(self.bucket, tenant, ulid, details="superseded by a compacted block")
                self.blocks_marked.labels("compaction").inc()
                changed = True
            now = time.time()
            jobs = [job for job in self.plan([b for b in live if b.ulid not in superseded and not b.no_compact])
                    if self._wait_elapsed(job, now)]
            if not jobs:
                break
            for job in jobs:
                if self._stopping:
                    break
                try:
                    self._run_job(tenant, job)
                except CorruptBlockError as exc:
                    # A damaged source would fail every cycle: set it aside (as Mimir's no-compact mark
                    # for critical errors) so that the tenant's other blocks are still compacted.
                    culprits = [b.ulid for b in job.blocks if b.ulid in str(exc)] or [b.ulid for b in job.blocks]
                    for ulid in culprits:
                        mark_no_compact(self.bucket, tenant, ulid, "critical", str(exc))
                    kv_log(log, logging.ERROR, "compaction failed on a damaged block; marked it no-compact",
                           tenant=tenant, blocks=",".join(culprits), err=str(exc))
                    continue
                done += 1
                changed = True
            if self._stopping:
                break
        if changed:
            update_bucket_index(self.bucket, tenant)
        return done

    def _run_job(self, tenant: str, job: Job) -> None:
        started = time.monotonic()
        out_parent = self.compact_dir / tenant
        out_parent.mkdir(parents=True, exist_ok=True)
        block_dirs = [self.bucket.local_path(f"{tenant}/{b.ulid}") for b in job.blocks]
        ulid = merge_blocks(block_dirs, out_parent, tenant, should_stop=lambda: self._stopping)
        if ulid is not None:
            failpoint("compactor-before-upload")
            try:
                upload_block(self.bucket, tenant, out_parent / ulid)
            finally:
                shutil.rmtree(out_parent / ulid, ignore_errors=True)
            failpoint("compactor-after-upload")
        for block in job.blocks:
            mark_for_deletion(self.bucket, tenant, block.ulid, details="source of a compacted block")
            self.blocks_marked.labels("compaction").inc()
        self.compactions.inc()
        kv_log(log, logging.INFO, "compacted blocks", tenant=tenant, new_block=ulid or "none",
               sources=",".join(b.ulid for b in job.blocks), range_start=job.range_start,
               range_end=job.range_end, duration=f"{time.monotonic() - started:.3f}s")

    # cleanup: tenant deletion, retention, deleting marked blocks
    async def run_cleanup(self) -> None:
        """One cleanup cycle over every tenant."""
        async with self.cycle_lock:
            try:
                for tenant in await asyncio.to_thread(list_tenants, self.bucket):
                    if self._stopping:
                        break
                    deleted_tenant = await asyncio.to_thread(self.cleanup_tenant, tenant)
                    if deleted_tenant and self.ingester is not None:
                        await self.ingester.forget_tenant(tenant)
            except Exception:
                self.cleanups_failed.inc()
                raise
            self.cleanups_completed.inc()

    def cleanup_tenant(self, tenant: str) -> bool:
        """Apply the tenant's retention and delete what is due (worker thread). True if the tenant is
        marked for deletion (all its blocks were deleted)."""
        bucket = self.bucket
        deletion_requested = tenant_deletion_time(bucket, tenant)
        if deletion_requested is not None:
            ulids = list_block_ids(bucket, tenant)
            for ulid in ulids:
                delete_block(bucket, tenant, ulid)
            bucket.delete(f"{tenant}/{BUCKET_INDEX}")
            self.blocks_cleaned.inc(len(ulids))
            if ulids:
                kv_log(log, logging.INFO, "deleted blocks of tenant marked for deletion", tenant=tenant,
                       blocks=len(ulids))
            elif time.time() - deletion_requested >= self.tenant_cleanup_delay:
                # the marks go last: until then the tenant stays deleted for every component
                bucket.delete_prefix(tenant)
                kv_log(log, logging.INFO, "removed the remaining files of a deleted tenant", tenant=tenant)
            return True
        now = time.time()
        retention_ms = int(self.overrides.get(tenant, "compactor_blocks_retention_period") * 1000)
        partial_delay = self.overrides.get(tenant, "compactor_partial_block_deletion_delay")
        for ulid in list_block_ids(bucket, tenant):
            block = read_block(bucket, tenant, ulid)
            if block is None:
                # A partial block is being uploaded, unless it carries a mark (a deletion cut short) or
                # nothing in it changed for the partial block deletion delay (an upload abandoned or cut
                # short by a crash).
                if read_deletion_time(bucket, tenant, ulid) is not None:
                    delete_block(bucket, tenant, ulid)
                elif partial_delay > 0 and self._last_modified(tenant, ulid) < now - partial_delay:
                    mark_for_deletion(bucket, tenant, ulid, now, details="partial block")
                    self.blocks_marked.labels("partial").inc()
                    kv_log(log, logging.INFO, "marked partial block for deletion", tenant=tenant, block=ulid)
                continue
            if block.deletion_time is not None:
                if now - block.deletion_time >= self.deletion_delay:
                    delete_block(bucket, tenant, ulid)
                    self.blocks_cleaned.inc()
                    kv_log(log, logging.INFO, "deleted block marked for deletion", tenant=tenant, block=ulid)
            elif retention_ms > 0 and block.max_time < now * 1000 - retention_ms:
                mark_for_deletion(bucket, tenant, ulid, now, details="block exceeding retention period")
                self.blocks_marked.labels("retention").inc()
                kv_log(log, logging.INFO, "marked block for deletion: beyond retention", tenant=tenant,
                       block=ulid)
        # Rewritten every cycle, as Mimir's blocks cleaner does: a writer that crashed between its block's
        # meta.json and the index update left the index behind the bucket.
        if list_block_ids(bucket, tenant):
            update_bucket_index(bucket, tenant)
        return False

    def _last_modified(self, tenant: str, ulid: str) -> float:
        """The newest modification time of anything in a block's directory."""
        newest = 0.0
        for root, dirs, files in os.walk(self.bucket.local_path(f"{tenant}/{ulid}")):
            for name in files + dirs:
                try:
                    newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    pass
        return newest

    # what the pages show
    def tenants(self) -> list[str]:
        """Tenants with blocks in the bucket."""
        return [t for t in list_tenants(self.bucket) if list_block_ids(self.bucket, t)]

    def tenant_blocks_deleted(self, tenant: str) -> bool:
        """Whether no block directory of the tenant is left (delete_tenant_status)."""
        return not list_block_ids(self.bucket, tenant)
