"""Compaction planning: which blocks of a tenant are merged together, as Mimir's split-and-merge
planner plans merge jobs for one shard (no splitting).

Blocks are grouped into aligned time ranges (`-compactor.block-ranges`, 2h, 12h, 24h: a range starts
at a multiple of its length since the epoch). A group with two or more blocks that fall wholly inside
one range is a job. Each block goes to the job of the smallest range that takes it, so 2h blocks
become 12h blocks before 12h blocks become 24h ones. A job is run only once its range is over (its
end is at or before the newest block's max time) or its blocks already cover the whole range, so
the most recent blocks are not compacted before their range fills up.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class PlannedBlock(Protocol):
    """What planning needs of a block."""

    ulid: str
    min_time: int
    max_time: int


@dataclass
class Job:
    """One merge: the blocks and the aligned range [range_start, range_end) they fall in."""

    range_start: int
    range_end: int
    blocks: list = field(default_factory=list)
    group_key: str = ""

    @property
    def min_time(self) -> int:
        return min(b.min_time for b in self.blocks)

    @property
    def max_time(self) -> int:
        return max(b.max_time for b in self.blocks)

    @property
    def range_length(self) -> int:
        return self.range_end - self.range_start

    @property
    def key(self) -> str:
        """Mimir's job key shape: `<group>-merge-<shard>-<range start>-<range end>` (no shard here)."""
        return f"{self.group_key}-merge--{self.range_start}-{self.range_end}"


def group_key(external_labels: dict[str, str]) -> str:
    """A stable key for blocks that may be compacted together (same resolution and external labels)."""
    text = ",".join(f"{k}={v}" for k, v in sorted(external_labels.items()) if k != "__compactor_shard_id__")
    return f"0@{zlib.crc32(text.encode()):d}"


def range_start(min_time: int, range_ms: int) -> int:
    """Start of the aligned range of length `range_ms` that holds `min_time` (floor, also below 0)."""
    return min_time // range_ms * range_ms


def group_by_range(blocks: Sequence[PlannedBlock], range_ms: int) -> list[tuple[int, list]]:
    """Blocks (sorted by min time) grouped by aligned range; blocks crossing a range end are left out."""
    groups: list[tuple[int, list]] = []
    i = 0
    while i < len(blocks):
        start = range_start(blocks[i].min_time, range_ms)
        end = start + range_ms
        if blocks[i].max_time > end:
            i += 1  # larger than the range or misaligned: belongs to no group of this size
            continue
        members = []
        while i < len(blocks) and blocks[i].min_time < end:
            if blocks[i].max_time <= end:
                members.append(blocks[i])
            i += 1
        if members:
            groups.append((start, members))
    return groups


def plan_jobs(blocks: Sequence[PlannedBlock], ranges_ms: Sequence[int], key: str = "0@0") -> list[Job]:
    """The merge jobs for one group of blocks, ordered by range length then start."""
    if not blocks or not ranges_ms:
        return []
    ordered = sorted(blocks, key=lambda b: (b.min_time, b.ulid))
    newest_max_time = max(b.max_time for b in ordered)
    taken: set[str] = set()
    jobs = []
    for range_ms in sorted(ranges_ms):
        for start, members in group_by_range([b for b in ordered if b.ulid not in taken], range_ms):
            if len(members) < 2:
                continue
            job = Job(start, start + range_ms, members, key)
            if job.range_end > newest_max_time and job.max_time - job.min_time != job.range_length:
                continue  # the range is still filling up
            taken.update(b.ulid for b in members)
            jobs.append(job)
    return jobs
