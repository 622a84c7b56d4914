"""Prometheus TSDB blocks on disk: the index (format v2), chunk segment files, meta.json and tombstones.

A block is a directory named by its ULID holding `chunks/000001...`, `index`, `meta.json` and
`tombstones`, byte-compatible with what Prometheus, Mimir and Thanos write and read
(docs/format/block.md, docs/format/index.md). `write_block` makes one from series; `BlockReader`
reads one; `read_merged` decodes the selections of several blocks (and the head's) into one batch,
`evaluate_range_merged` runs a range function over them series by series, `select_fold_merged` an
aggregation of their selection.
"""

from mimird.tsdb.block.chunks import ChunkReader, ChunkWriter, CorruptChunkError
from mimird.tsdb.block.index import CorruptIndexError, IndexReader, IndexWriter
from mimird.tsdb.block.meta import BlockMeta, new_ulid, read_meta
from mimird.tsdb.block.reader import (
    BlockReader,
    CorruptBlockError,
    evaluate_range_merged,
    read_merged,
    select_fold_merged,
)
from mimird.tsdb.block.writer import cut_chunks, write_block

__all__ = [
    "BlockMeta",
    "BlockReader",
    "ChunkReader",
    "ChunkWriter",
    "CorruptBlockError",
    "CorruptChunkError",
    "CorruptIndexError",
    "IndexReader",
    "IndexWriter",
    "cut_chunks",
    "evaluate_range_merged",
    "new_ulid",
    "read_merged",
    "read_meta",
    "select_fold_merged",
    "write_block",
]
