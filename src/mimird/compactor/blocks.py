"""What the bucket holds for the compactor and the store-gateway: tenants, block metas and markers.

Layout, as Mimir's (reference 11.4): `<tenant>/<ULID>/{meta.json,index,chunks/...}`, a block's
`deletion-mark.json` and `no-compact-mark.json` beside it, global copies of deletion marks under
`<tenant>/markers/<ULID>-deletion-mark.json`, and `<tenant>/markers/tenant-deletion-mark.json` for a
tenant being deleted. A block without meta.json is partial (being uploaded, or left by a crash) and
is never read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from mimird.bucket import FilesystemBucket
from mimird.tsdb.block.meta import META_FILENAME, BlockMeta, is_ulid

DELETION_MARK = "deletion-mark.json"
NO_COMPACT_MARK = "no-compact-mark.json"
MARKERS_DIR = "markers"
TENANT_DELETION_MARK = f"{MARKERS_DIR}/tenant-deletion-mark.json"
BUCKET_INDEX = "bucket-index.json.gz"


@dataclass
class BucketBlock:
    """One complete block in the bucket: its meta, when meta.json was uploaded, and its marks."""

    meta: BlockMeta
    uploaded_at: float
    deletion_time: int | None = None
    no_compact: bool = False

    @property
    def ulid(self) -> str:
        return self.meta.ulid

    @property
    def min_time(self) -> int:
        return self.meta.min_time

    @property
    def max_time(self) -> int:
        return self.meta.max_time


def list_tenants(bucket: FilesystemBucket) -> list[str]:
    """Tenants with a directory in the bucket, sorted."""
    return [name.rstrip("/") for name in bucket.iter("") if name.endswith("/")]


def list_block_ids(bucket: FilesystemBucket, tenant: str) -> list[str]:
    """ULIDs of every block directory of `tenant`, complete or partial, sorted."""
    return [name.rstrip("/") for name in bucket.iter(f"{tenant}/")
            if name.endswith("/") and is_ulid(name.rstrip("/"))]


def read_block(bucket: FilesystemBucket, tenant: str, ulid: str) -> BucketBlock | None:
    """The block's meta and marks; None when it has no readable meta.json (a partial block)."""
    key = f"{tenant}/{ulid}/{META_FILENAME}"
    try:
        meta = BlockMeta.from_json(json.loads(bucket.get(key)))
        uploaded_at = bucket.local_path(key).stat().st_mtime
    except (FileNotFoundError, ValueError):
        return None
    return BucketBlock(meta, uploaded_at, read_deletion_time(bucket, tenant, ulid),
                       bucket.exists(f"{tenant}/{ulid}/{NO_COMPACT_MARK}"))


def scan_tenant(bucket: FilesystemBucket, tenant: str) -> list[BucketBlock]:
    """Every complete block of `tenant`, ordered by min time then ULID."""
    blocks = [b for ulid in list_block_ids(bucket, tenant) if (b := read_block(bucket, tenant, ulid)) is not None]
    blocks.sort(key=lambda b: (b.min_time, b.ulid))
    return blocks


def read_deletion_time(bucket: FilesystemBucket, tenant: str, ulid: str) -> int | None:
    """The Unix second a block was marked for deletion at, or None if it is not marked."""
    try:
        mark = json.loads(bucket.get(f"{tenant}/{ulid}/{DELETION_MARK}"))
        return int(mark.get("deletion_time", 0))
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError, TypeError):
        return 0  # a mark we cannot read still marks the block


def mark_for_deletion(bucket: FilesystemBucket, tenant: str, ulid: str, now: float | None = None,
                      details: str = "") -> None:
    """Write the block's deletion mark, then its global copy under markers/, as Mimir does."""
    if bucket.exists(f"{tenant}/{ulid}/{DELETION_MARK}"):
        return
    mark: dict = {"id": ulid, "deletion_time": int(time.time() if now is None else now), "version": 1}
    if details:
        mark["details"] = details
    data = json.dumps(mark).encode()
    bucket.put(f"{tenant}/{ulid}/{DELETION_MARK}", data)
    bucket.put(f"{tenant}/{MARKERS_DIR}/{ulid}-{DELETION_MARK}", data)


def mark_no_compact(bucket: FilesystemBucket, tenant: str, ulid: str, reason: str, details: str) -> None:
    """Write `<tenant>/<ULID>/no-compact-mark.json`: the compactor leaves the block out of its plans."""
    mark = {"id": ulid, "version": 1, "details": details, "no_compact_time": int(time.time()), "reason": reason}
    bucket.put(f"{tenant}/{ulid}/{NO_COMPACT_MARK}", json.dumps(mark).encode())


def delete_block(bucket: FilesystemBucket, tenant: str, ulid: str) -> None:
    """Remove a block: meta.json first (the block turns partial and unreadable), the rest, the marker."""
    bucket.delete(f"{tenant}/{ulid}/{META_FILENAME}")
    bucket.delete_prefix(f"{tenant}/{ulid}")
    bucket.delete(f"{tenant}/{MARKERS_DIR}/{ulid}-{DELETION_MARK}")


def tenant_deletion_time(bucket: FilesystemBucket, tenant: str) -> int | None:
    """When deletion of the whole tenant was requested (Unix seconds), or None."""
    try:
        return int(json.loads(bucket.get(f"{tenant}/{TENANT_DELETION_MARK}")).get("deletion_time", 0))
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError, TypeError):
        return 0


def mark_tenant_for_deletion(bucket: FilesystemBucket, tenant: str) -> None:
    """Write `<tenant>/markers/tenant-deletion-mark.json`."""
    bucket.put(f"{tenant}/{TENANT_DELETION_MARK}", json.dumps({"deletion_time": int(time.time())}).encode())


def superseded_blocks(blocks: list[BucketBlock]) -> set[str]:
    """ULIDs of blocks whose data another block already holds (as Thanos's deduplicate filter).

    A compacted block lists the level-1 blocks it came from in `sources`; a block whose sources are all
    in another block's sources is superseded by it (for equal source sets the newer ULID wins). So
    after a crash between uploading a compacted block and marking its sources, readers still see
    every sample once.
    """
    source_sets = {b.ulid: frozenset(b.meta.sources or [b.ulid]) for b in blocks}
    holders: dict[str, list[str]] = {}
    for ulid, sources in source_sets.items():
        for source in sources:
            holders.setdefault(source, []).append(ulid)
    superseded = set()
    for ulid, sources in source_sets.items():
        # only blocks holding one of this block's sources can hold all of them
        for other in holders[next(iter(sources))]:
            other_sources = source_sets[other]
            if other != ulid and sources <= other_sources and (sources < other_sources or other > ulid):
                superseded.add(ulid)
                break
    return superseded
