"""Reading a block directory: meta.json, the index and the chunk segment files, all memory-mapped.

Opening a block reads meta.json, checks the tombstones file, and opens the index (header, TOC, symbol
offsets, postings offset table) and the chunk segments (headers). Series, postings lists and chunks are
read on demand, each checked against its CRC. Any inconsistency surfaces as CorruptBlockError, a
ValueError that names the block and what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mimird._fast.blockselect import (
    BlockSnapshot,
    ChunkDecodeError,
    decode_merged,
    evaluate_merged,
    fold_merged,
)
from mimird._fast.headselect import HeadSnapshot
from mimird._fast.xorchunk import decode_chunks
from mimird.tsdb.block.chunks import ENCODING_XOR, SEGMENT_HEADER_SIZE, ChunkReader, CorruptChunkError
from mimird.tsdb.block.index import CorruptIndexError, IndexReader
from mimird.tsdb.block.meta import (
    CHUNKS_DIRNAME,
    INDEX_FILENAME,
    TOMBSTONES_FILENAME,
    BlockMeta,
    check_tombstones,
    read_meta,
)
from mimird.tsdb.fetchobserver import ChunkObserver, chunk_fetch_observer
from mimird.tsdb.labels import Labels, Matcher
from mimird.tsdb.seriesbatch import SeriesBatch

ChunkMeta = tuple[int, int, int]
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


class CorruptBlockError(ValueError):
    """A block's files are missing, malformed, or fail a checksum."""


def _with_series(sources: Sequence[BlockSnapshot | HeadSnapshot | SeriesBatch | None]) -> list:
    # The sources that may hold series (snapshots, and batches that are not empty).
    return [s for s in sources if s is not None and (isinstance(s, BlockSnapshot | HeadSnapshot) or len(s))]


def _as_merge_source(source: BlockSnapshot | HeadSnapshot | SeriesBatch):
    # A source as decode_merged takes it: a snapshot as it is, a batch as its four arrays.
    if isinstance(source, BlockSnapshot | HeadSnapshot):
        return source
    return (source.labels, np.ascontiguousarray(source.ts, dtype=np.int64),
            np.ascontiguousarray(source.vals, dtype=np.float64), np.ascontiguousarray(source.offsets, dtype=np.int64))


def _merge_sources(sources: Sequence[BlockSnapshot | HeadSnapshot | SeriesBatch | None]) -> list:
    # The sources with series, as the merged reads of blockselect take them.
    return [_as_merge_source(s) for s in _with_series(sources)]


def evaluate_range_merged(sources: Sequence[BlockSnapshot | HeadSnapshot | SeriesBatch | None], *kernel_args):
    """The range function of `kernel_args` (as `Head.evaluate_range` takes them after the range) over the
    series `read_merged(sources)` would give, each series merged and evaluated on its own
    (`blockselect.evaluate_merged`): (labels, values, present, counts) as `Head.evaluate_range` returns."""
    try:
        return evaluate_merged(_merge_sources(sources), *kernel_args)
    except ChunkDecodeError as exc:
        raise CorruptBlockError(f"block read: {exc}") from None


def select_fold_merged(sources: Sequence[BlockSnapshot | HeadSnapshot | SeriesBatch | None], *fold_args):
    """The aggregation of `fold_args` (as `Head.select_fold` takes them after latest_only) over the series
    `read_merged(sources)` would give, each series merged and folded on its own (`blockselect.fold_merged`):
    `Head.select_fold`'s tuple."""
    try:
        return fold_merged(_merge_sources(sources), *fold_args)
    except ChunkDecodeError as exc:
        raise CorruptBlockError(f"block read: {exc}") from None


def read_merged(sources: Sequence[BlockSnapshot | HeadSnapshot | SeriesBatch | None]) -> SeriesBatch:
    """One SeriesBatch of several sources in priority order: block snapshots (`BlockReader.snapshot`,
    their readers still open), the head's snapshot (`Head.snapshot`) and decoded batches. Samples are merged
    per series as `merge_batches` merges batches (the earliest source wins a timestamp tie); the chunks of a
    series whose sources do not overlap in time are decoded straight into place."""
    present = _with_series(sources)
    if not present:
        return SeriesBatch.empty()
    if len(present) == 1 and isinstance(present[0], SeriesBatch):
        return present[0]
    parts = [_as_merge_source(s) for s in present]
    try:
        labels, offsets, ts, vals = decode_merged(parts)
    except ValueError as exc:
        raise CorruptBlockError(f"block read: {exc}") from None
    if not labels:
        return SeriesBatch.empty()
    return SeriesBatch(labels, ts, vals, offsets)


class BlockReader:
    """Read access to one block directory. Use as a context manager, or call `close()`."""

    def __init__(self, block_dir: str | os.PathLike) -> None:
        self.dir = Path(block_dir)
        self._index: IndexReader | None = None
        self._chunks: ChunkReader | None = None
        try:
            self.meta: BlockMeta = read_meta(self.dir)
            tombstones = self.dir / TOMBSTONES_FILENAME
            if tombstones.exists() and check_tombstones(tombstones.read_bytes()):
                raise CorruptBlockError(f"{self.dir}: tombstones are not supported by this reader")
            self._index = IndexReader(self.dir / INDEX_FILENAME)
            self._chunks = ChunkReader(self.dir / CHUNKS_DIRNAME)
        except FileNotFoundError as exc:
            self.close()
            raise CorruptBlockError(f"{self.dir}: missing {exc.filename}") from None
        except CorruptBlockError:
            self.close()
            raise
        except ValueError as exc:
            self.close()
            raise CorruptBlockError(f"{self.dir}: {exc}") from None

    @property
    def ulid(self) -> str:
        """The block's ULID."""
        return self.meta.ulid

    @property
    def min_time(self) -> int:
        """The block's first millisecond."""
        return self.meta.min_time

    @property
    def max_time(self) -> int:
        """The block's end (exclusive), in milliseconds."""
        return self.meta.max_time

    @property
    def index(self) -> IndexReader:
        """The index reader."""
        return self._index

    def label_names(self) -> list[str]:
        """Sorted label names of the block's series."""
        return self._index.label_names()

    def label_values(self, name: str) -> list[str]:
        """Sorted values of label `name`."""
        return self._index.label_values(name)

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted refs of the series with `name`=`value`."""
        return self._guard(self._index.postings, name, value)

    def select(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Sorted refs of the series that all `matchers` accept."""
        return self._guard(self._index.select, matchers)

    def series(self, ref: int) -> tuple[Labels, list[ChunkMeta]]:
        """(labels, [(chunk mint, chunk maxt, chunk ref), ...]) of series `ref`."""
        labels, mint, maxt, refs = self._guard(self._index.series, ref)
        return labels, list(zip(mint.tolist(), maxt.tolist(), refs.tolist(), strict=True))

    def chunk(self, ref: int) -> bytes:
        """The XOR chunk bytes of chunk `ref`."""
        encoding, data = self._guard(self._chunks.chunk_with_encoding, ref)
        if encoding != ENCODING_XOR:
            raise CorruptBlockError(f"{self.dir}: chunk {ref:#x} has encoding {encoding}, only XOR (1) is read")
        return bytes(data)

    def read_series_samples(self, matchers: Sequence[Matcher], mint: int | None = None,
                            maxt: int | None = None) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """(labels, timestamps int64, values float64) of each selected series, samples in [mint, maxt].

        Both bounds are inclusive (as a Prometheus querier's); None means unbounded. Series without
        samples in the range are skipped. Series come in label order.
        """
        observe = chunk_fetch_observer.get()
        for ref in self.select(matchers).tolist():
            labels, ts, vals = self.series_samples(ref, mint, maxt, observe)
            if len(ts):
                yield labels, ts, vals

    def select_batch(self, matchers: Sequence[Matcher], mint: int | None = None,
                     maxt: int | None = None) -> SeriesBatch:
        """What `read_series_samples` yields, as one SeriesBatch: the selected series' chunks located and
        checked in one pass over the index and decoded into one pair of arrays (no per-series arrays).

        The chunks and bytes read are reported to the query's chunk-fetch observer once, before decoding.
        """
        snapshot = self.snapshot(matchers, mint, maxt)
        if snapshot is None:
            return SeriesBatch.empty()
        try:
            labels, offsets, ts, vals = snapshot.decode()
        except ValueError as exc:
            raise CorruptBlockError(f"{self.dir}: {exc}") from None
        if not labels:
            return SeriesBatch.empty()
        return SeriesBatch(labels, ts, vals, offsets)

    def snapshot(self, matchers: Sequence[Matcher], mint: int | None = None,
                 maxt: int | None = None) -> BlockSnapshot | None:
        """The selected series' chunks overlapping [mint, maxt], located and checked but not decoded
        (None if no series matches); decode with `select_batch`'s `snapshot.decode()` or, merged with
        other sources, `read_merged`. The reader must stay open until then. The chunks and bytes are
        reported to the query's chunk-fetch observer here."""
        refs = self.select(matchers)
        if len(refs) == 0:
            return None
        lo = _INT64_MIN if mint is None else int(mint)
        hi = _INT64_MAX if maxt is None else int(maxt)
        index = self._index
        try:
            snapshot = BlockSnapshot.take(index.data, refs, index.toc_series, index.toc_label_indices,
                                          index.symbol_offsets, index.symbol_list(), index.pair_list(),
                                          self._chunks.segments, SEGMENT_HEADER_SIZE, lo, hi)
        except ValueError as exc:
            raise CorruptBlockError(f"{self.dir}: {exc}") from None
        observe = chunk_fetch_observer.get()
        if observe is not None and snapshot.num_chunks:
            observe(snapshot.num_chunks, snapshot.chunk_bytes)
        return snapshot

    def series_samples(self, ref: int, mint: int | None = None, maxt: int | None = None,
                       observe: ChunkObserver | None = None) -> tuple[Labels, np.ndarray, np.ndarray]:
        """(labels, timestamps, values) of series `ref`, only the samples in [mint, maxt] (inclusive);
        `observe(chunks, bytes)` is told what is fetched (the querier's per-query chunk limits)."""
        lo = _INT64_MIN if mint is None else int(mint)
        hi = _INT64_MAX if maxt is None else int(maxt)
        labels, chunk_mint, chunk_maxt, chunk_refs = self._guard(self._index.series, ref)
        if len(chunk_refs) == 0 or chunk_mint[0] < lo or chunk_maxt[-1] > hi:
            # Only the chunks that overlap the range; decoding trims the ones that stick out.
            chunk_refs = chunk_refs[(chunk_maxt >= lo) & (chunk_mint <= hi)]
        chunks = []
        for encoding, data in self._guard(self._chunks.chunks, chunk_refs):
            if encoding != ENCODING_XOR:
                raise CorruptBlockError(f"{self.dir}: series {labels}: chunk encoding {encoding}, only "
                                        "XOR (1) is read")
            chunks.append(data)
        if observe is not None:
            observe(len(chunks), sum(map(len, chunks)))
        try:
            ts, vals = decode_chunks(chunks, lo, hi)
        except ValueError as exc:
            raise CorruptBlockError(f"{self.dir}: series {labels}: {exc}") from None
        return labels, ts, vals

    def iter_series(self) -> Iterator[tuple[int, Labels, list[ChunkMeta]]]:
        """(ref, labels, chunk metas) of every series, in label order (what a compactor walks)."""
        for ref in self._guard(self._index.all_postings).tolist():
            labels, chunks = self.series(ref)
            yield ref, labels, chunks

    def _guard(self, method, *args):
        try:
            return method(*args)
        except (CorruptIndexError, CorruptChunkError) as exc:
            raise CorruptBlockError(f"{self.dir}: {exc}") from None

    def close(self) -> None:
        """Unmap the index and chunk files."""
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
