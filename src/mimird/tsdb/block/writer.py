"""Writing a block directory: `<ulid>/{chunks/000001..., index, meta.json, tombstones}`.

`write_block` streams series into a block. Chunks go to the segment files as each series arrives;
what stays in memory until the index is written is what the index needs: the symbols, each series'
label symbol ids, and each chunk's (mint, maxt, ref), all in compact arrays. Everything is written
into `<ulid>.tmp`, synced, and renamed into place, so a crash leaves either no block or a whole one.

Series may arrive in any order; the index lists them in label order. When they do not arrive in
that order the chunk files are rewritten once in index order (the layout Prometheus's compactor
produces, which readers that fetch a series' chunks as one byte range rely on).
"""

from __future__ import annotations

import os
import shutil
import sys
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mimird._fast.blockindex import is_strictly_increasing
from mimird._fast.xorchunk import SAMPLES_PER_CHUNK, encode, num_samples
from mimird.tsdb.block.chunks import DEFAULT_SEGMENT_SIZE, ChunkReader, ChunkWriter, segment_name
from mimird.tsdb.block.index import IndexWriter
from mimird.tsdb.block.meta import (
    CHUNKS_DIRNAME,
    INDEX_FILENAME,
    META_FILENAME,
    TENANT_LABEL,
    TOMBSTONES_FILENAME,
    BlockFile,
    BlockMeta,
    empty_tombstones,
    fsync_dir,
    new_ulid,
    write_file_synced,
    write_meta,
)
from mimird.tsdb.labels import Labels

_SERIES_BATCH = 4096
ChunkInput = tuple[int, int, bytes]


def cut_chunks(ts: Sequence[int] | np.ndarray, vals: Sequence[float] | np.ndarray,
               samples_per_chunk: int = SAMPLES_PER_CHUNK) -> list[ChunkInput]:
    """Cut samples into XOR chunks of `samples_per_chunk`: a list of (mint, maxt, chunk bytes).

    Timestamps must be strictly increasing (ValueError otherwise).
    """
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    vals = np.ascontiguousarray(vals, dtype=np.float64)
    if ts.shape != vals.shape or ts.ndim != 1:
        raise ValueError("timestamps and values must be 1-d arrays of the same length")
    if not is_strictly_increasing(ts):
        raise ValueError("timestamps must be strictly increasing")
    count = len(ts)
    return [(int(ts[i]), int(ts[min(i + samples_per_chunk, count) - 1]),
             encode(ts[i:i + samples_per_chunk], vals[i:i + samples_per_chunk]))
            for i in range(0, count, samples_per_chunk)]


def _normalise_labels(labels: Labels | Iterable[tuple[str, str]]) -> Labels:
    """Sorted pairs without empty values; ValueError on empty or duplicate names."""
    result = tuple(sorted((sys.intern(n), sys.intern(v)) for n, v in labels if v != ""))
    for index, (name, _) in enumerate(result):
        if name == "":
            raise ValueError("label name must not be empty")
        if index and result[index - 1][0] == name:
            raise ValueError(f"duplicate label name {name!r} in {result}")
    if not result:
        raise ValueError("a series needs at least one label")
    return result


class _SeriesCollector:
    """What the index needs of every series written so far, in compact arrays."""

    def __init__(self) -> None:
        self.symbol_ids: dict[str, int] = {}
        self.label_ids = array("I")
        self.label_starts = array("q", [0])
        self.chunk_mint = array("q")
        self.chunk_maxt = array("q")
        self.chunk_refs = array("Q")
        self.chunk_starts = array("q", [0])
        self.in_label_order = True
        self.last_labels: Labels | None = None

    def symbol(self, text: str) -> int:
        symbol_id = self.symbol_ids.get(text)
        if symbol_id is None:
            symbol_id = self.symbol_ids[text] = len(self.symbol_ids)
        return symbol_id

    def add(self, labels: Labels, chunks: list[ChunkInput], refs: list[int]) -> None:
        if self.last_labels is not None:
            if labels == self.last_labels:
                raise ValueError(f"series {labels} given twice")
            if labels < self.last_labels:
                self.in_label_order = False
        self.last_labels = labels
        symbol = self.symbol
        for name, value in labels:
            self.label_ids.append(symbol(name))
            self.label_ids.append(symbol(value))
        self.label_starts.append(len(self.label_ids))
        self.chunk_mint.extend([c[0] for c in chunks])
        self.chunk_maxt.extend([c[1] for c in chunks])
        self.chunk_refs.extend(refs)
        self.chunk_starts.append(len(self.chunk_refs))

    @property
    def num_series(self) -> int:
        return len(self.label_starts) - 1


def _label_order(label_ids: np.ndarray, label_starts: np.ndarray) -> np.ndarray:
    """Series indices sorted by label set, given symbol ids whose order is the strings' order.

    Comparing label sets pair by pair with the shorter set first on a tie is comparing the rows of
    symbol ids padded with -1, lexicographically.
    """
    num_series = len(label_starts) - 1
    lengths = np.diff(label_starts)
    width = int(lengths.max()) if num_series else 0
    matrix = np.full((num_series, width), -1, dtype=np.int32)
    rows = np.repeat(np.arange(num_series), lengths)
    columns = np.arange(len(label_ids)) - np.repeat(label_starts[:-1], lengths)
    matrix[rows, columns] = label_ids
    order = np.lexsort(matrix.T[::-1]) if width else np.arange(num_series)
    sorted_rows = matrix[order]
    duplicates = np.flatnonzero(np.all(sorted_rows[1:] == sorted_rows[:-1], axis=1))
    if len(duplicates):
        raise ValueError(f"series given twice (series #{int(order[duplicates[0]])} and "
                         f"#{int(order[duplicates[0] + 1])})")
    return order.astype(np.int64)


def _rewrite_chunks_in_order(block_dir: Path, order: np.ndarray, chunk_starts: np.ndarray,
                             chunk_refs: np.ndarray, segment_size: int) -> tuple[np.ndarray, list[int]]:
    """Copy the chunks into new segment files in series `order`; return the new refs and segment sizes."""
    old_dir = block_dir / CHUNKS_DIRNAME
    new_dir = block_dir / (CHUNKS_DIRNAME + ".ordered")
    new_refs = np.empty_like(chunk_refs)
    reader = ChunkReader(old_dir)
    try:
        with ChunkWriter(new_dir, segment_size) as writer:
            for series in order.tolist():
                start, end = int(chunk_starts[series]), int(chunk_starts[series + 1])
                # The writer wrote every chunk as XOR, so one series' chunks go back as one batch.
                datas = [data for _, data in reader.chunks(chunk_refs[start:end])]
                new_refs[start:end] = writer.write_chunks(datas)
            sizes = writer.close()
    finally:
        reader.close()
    shutil.rmtree(old_dir)
    os.rename(new_dir, old_dir)
    return new_refs, sizes


def write_block(dir_parent: str | os.PathLike, series_iter: Iterable, mint: int | None = None,
                maxt: int | None = None, *, tenant: str | None, source: str, level: int = 1,
                sources: Sequence[str] | None = None, parents: Sequence[dict] | None = None,
                segment_size: int = DEFAULT_SEGMENT_SIZE, ulid: str | None = None) -> str:
    """Write a block under `dir_parent` from `series_iter`; return its ULID (the directory name).

    `series_iter` yields `(labels, ts_array, vals_array)` (cut into 120-sample XOR chunks here) or
    `(labels, [(chunk_mint, chunk_maxt, xor_chunk_bytes), ...])` with chunks in time order. Labels
    are (name, value) pairs; pairs with an empty value are dropped. Series without samples are left
    out, as Prometheus's compactor does.

    `mint`/`maxt` are the block's time range, maxt exclusive; every sample must lie inside it. When
    not given they are the first sample's time and the last sample's time + 1. The meta.json carries
    `tenant` as the `__org_id__` external label (no thanos labels if None), `source`, the compaction
    `level`, `sources` (the block's own ULID if None) and `parents`.
    """
    parent = Path(dir_parent)
    ulid = ulid or new_ulid()
    tmp_dir = parent / f"{ulid}.tmp"
    final_dir = parent / ulid
    if final_dir.exists():
        raise FileExistsError(f"block {final_dir} already exists")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    try:
        meta = _write_block_files(tmp_dir, series_iter, mint, maxt, ulid=ulid, tenant=tenant, source=source,
                                  level=level, sources=sources, parents=parents, segment_size=segment_size)
        write_meta(tmp_dir, meta)
        fsync_dir(tmp_dir / CHUNKS_DIRNAME)
        fsync_dir(tmp_dir)
        os.rename(tmp_dir, final_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return ulid


def _check_chunk_order(chunks: list[ChunkInput], labels) -> None:
    previous_maxt = None
    for c_mint, c_maxt, _ in chunks:
        if c_maxt < c_mint or (previous_maxt is not None and c_mint <= previous_maxt):
            raise ValueError(f"series {labels}: chunks overlap or are out of order")
        previous_maxt = c_maxt


def _write_block_files(block_dir: Path, series_iter: Iterable, mint: int | None, maxt: int | None, *,
                       ulid: str, tenant: str | None, source: str, level: int,
                       sources: Sequence[str] | None, parents: Sequence[dict] | None,
                       segment_size: int) -> BlockMeta:
    collector = _SeriesCollector()
    total_samples = 0
    data_mint, data_maxt = None, None
    with ChunkWriter(block_dir / CHUNKS_DIRNAME, segment_size) as chunk_writer:
        for item in series_iter:
            if len(item) == 3:
                labels, ts, vals = item
                # cut_chunks checks the timestamps, so its chunks are ordered and disjoint.
                chunks = cut_chunks(ts, vals)
                datas = [data for _, _, data in chunks]
                series_samples = len(ts)
            elif len(item) == 2:
                labels, chunks = item
                chunks = [(int(c_mint), int(c_maxt), bytes(data)) for c_mint, c_maxt, data in chunks]
                _check_chunk_order(chunks, labels)
                datas = [data for _, _, data in chunks]
                series_samples = sum(map(num_samples, datas))
            else:
                raise ValueError("series must be (labels, ts, vals) or (labels, chunks)")
            labels = _normalise_labels(labels)
            if not chunks:
                continue
            first, last = chunks[0][0], chunks[-1][1]
            if (mint is not None and first < mint) or (maxt is not None and last >= maxt):
                raise ValueError(f"series {labels}: samples [{first}, {last}] outside the block range "
                                 f"[{mint}, {maxt})")
            data_mint = first if data_mint is None else min(data_mint, first)
            data_maxt = last if data_maxt is None else max(data_maxt, last)
            refs = chunk_writer.write_chunks(datas)
            total_samples += series_samples
            collector.add(labels, chunks, refs)
        segment_sizes = chunk_writer.close()

    # Prometheus's blocks always carry the empty string as symbol 0 (it comes from the head's all-series
    # postings key); keeping it makes our index byte-identical to Prometheus's for the same series.
    collector.symbol("")
    symbols = sorted(collector.symbol_ids)
    final_id = np.empty(len(symbols), dtype=np.uint32)
    for position, text in enumerate(symbols):
        final_id[collector.symbol_ids[text]] = position
    collector.symbol_ids = {}
    label_ids = final_id[np.frombuffer(collector.label_ids, dtype=np.uint32)] if len(collector.label_ids) \
        else np.empty(0, np.uint32)
    label_starts = np.frombuffer(collector.label_starts, dtype=np.int64)
    chunk_starts = np.frombuffer(collector.chunk_starts, dtype=np.int64)
    chunk_mint = np.frombuffer(collector.chunk_mint, dtype=np.int64)
    chunk_maxt = np.frombuffer(collector.chunk_maxt, dtype=np.int64)
    chunk_refs = np.frombuffer(collector.chunk_refs, dtype=np.uint64)
    num_series = collector.num_series

    if collector.in_label_order:
        order = np.arange(num_series, dtype=np.int64)
    else:
        order = _label_order(label_ids.astype(np.int32), label_starts)
        chunk_refs, segment_sizes = _rewrite_chunks_in_order(block_dir, order, chunk_starts, chunk_refs,
                                                             segment_size)

    index_writer = IndexWriter(block_dir / INDEX_FILENAME)
    try:
        index_writer.add_symbols(symbols)
        for start in range(0, num_series, _SERIES_BATCH):
            index_writer.add_series(order[start:start + _SERIES_BATCH], label_starts, label_ids,
                                    chunk_starts, chunk_mint, chunk_maxt, chunk_refs)
        index_size = index_writer.close()
    except BaseException:
        index_writer.abort()
        raise
    write_file_synced(block_dir / TOMBSTONES_FILENAME, empty_tombstones())

    if mint is None:
        mint = data_mint if data_mint is not None else 0
    if maxt is None:
        maxt = data_maxt + 1 if data_maxt is not None else mint
    segment_files = [segment_name(i) for i in range(len(segment_sizes))]
    files = [BlockFile(f"{CHUNKS_DIRNAME}/{name}", size)
             for name, size in zip(segment_files, segment_sizes, strict=True)]
    files.append(BlockFile(INDEX_FILENAME, index_size))
    files.append(BlockFile(META_FILENAME))
    return BlockMeta(
        ulid=ulid, min_time=int(mint), max_time=int(maxt), num_samples=total_samples, num_series=num_series,
        num_chunks=len(chunk_refs), level=level, sources=list(sources) if sources is not None else [ulid],
        parents=list(parents or []),
        thanos_labels={TENANT_LABEL: tenant} if tenant is not None else {}, source=source,
        segment_files=segment_files, files=files,
    )
