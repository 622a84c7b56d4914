# cython: language_level=3
"""Batched reads of a block: every selected series' samples decoded into one pair of arrays.

Reading a block series by series costs a Python call, a list of chunk bytes and two numpy arrays per
series, far more than decoding the samples. `BlockSnapshot` reads the selected series in two steps:

1. `BlockSnapshot.take(...)`, without the GIL: each series entry of the index is decoded and its
   checksum verified, its label symbol ids noted, and each of its chunks that overlaps [mint, maxt]
   located in the memory-mapped segment files (bounds, checksum and XOR encoding checked). The chunk
   and byte counts are then known, for the querier's fetch limits, before anything is decoded.
2. `BlockSnapshot.decode()`: every chunk is decoded (without the GIL) into one timestamps array and
   one values array, series after series, keeping the samples in [mint, maxt]; series without samples
   in the range are left out, and the label sets of the others are built from the symbol table.

Series come in the order of the refs given, which for a block's postings is label order. Bytes that do
not parse raise ValueError naming the series or chunk (the module is compiled without bounds checks,
so every read is checked here).

`decode_merged(sources)` decodes several snapshots (blocks' and the head's, the latter through
`headselect.pxd`'s C view; decoded batches are copied) into one output in label order, merging a series'
parts from different sources: where they do not overlap in time each part is decoded straight into its
place, so blocks + head cost one decode and no copy. From
PARALLEL_MIN_SAMPLES samples on, the series are split over the cores (`mimird.util.cores`).
`evaluate_merged(sources, ...)` runs a range function over the same series without that output: each
series is merged into a buffer of its own and evaluated while in cache, as the head's
`HeadSnapshot.evaluate` does; `fold_merged(sources, ...)` likewise selects each at a step grid and folds
it into its aggregation group, as `HeadSnapshot.fold` does.
"""
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove

cimport numpy as cnp

from mimird._fast.aggregate cimport SelectFold
from mimird._fast.batchmerge cimport Part, merge_parts
from mimird._fast.crc32c cimport crc32c_update
from mimird._fast.headselect cimport HeadView, decode_head_series, head_labels, head_series_start, head_view
from mimird._fast.rangefn cimport Scratch as KernelScratch
from mimird._fast.rangefn cimport Series, StepGrid, evaluate_series, output_rows, prepare_grid
from mimird._fast.samples cimport GIL_RELEASE_MIN_WORK, drop_stale_markers, first_after
from mimird._fast.varint cimport read_uvarint_at, zigzag_decode
from mimird._fast.xorchunk cimport XORCursor, xor_cursor_init, xor_decode_range

import sys

import numpy as np

from mimird._fast.aggregate import group_series, select_fold
from mimird._fast.headselect import HeadSnapshot
from mimird.util import cores

cnp.import_array()

cdef enum:
    MAX_MERGE_PARTS = 4     # the most parts decode_merged splits its series into (cores.MAX_PARTS)
    _SERIES_ALIGN = 16
    _ENCODING_XOR = 1
    # error codes of the GIL-free pass
    _OK = 0
    _BAD_REF = 1
    _BAD_SERIES = 2
    _SERIES_CHECKSUM = 3
    _BAD_CHUNK_SEGMENT = 4
    _BAD_CHUNK_OFFSET = 5
    _BAD_CHUNK_LENGTH = 6
    _CHUNK_CHECKSUM = 7
    _BAD_CHUNK_ENCODING = 8
    _SHORT_CHUNK = 9
    _CORRUPT_CHUNK = 10
    _NO_MEMORY = 11

class ChunkDecodeError(ValueError):
    """A chunk of a merged read does not decode."""


_intern = sys.intern

# Below this many samples the decode keeps the GIL (handing it back can cost more than the loop).
cdef Py_ssize_t GIL_RELEASE_MIN_SAMPLES = 1 << 16
# From this many samples on, decode_merged splits its series over the cores (as the head's decode does).
PARALLEL_MIN_SAMPLES = 100_000
# fold_merged decodes on the cores into a batch only from this many samples on. Folding each series as it is
# merged, on one core, keeps its samples in cache and needs no batch: in process, over 6 h, it was faster at
# 104k and 207k samples (`count by (cluster) (up)` 3.9 -> 2.1 ms, a 144-series sum 5.8 -> 4.8-5.4 ms) and
# as fast at 3.3M (37 ms).
FOLD_PARALLEL_MIN_SAMPLES = 4_000_000
# From this much work on (samples plus series x steps) fold_merged folds ranges of steps on the cores at once.
# After 20 ms idle, 6 h at 15 s: 144 series (423k) 1.87 -> 1.45 ms in two parts; 72 series (216k) 0.60-0.96 ms
# either way, the fan-out's ~0.15 ms eating what the parts save.
FOLD_STEP_PARTS_MIN_WORK = 300_000


cdef inline uint32_t _get_be32(const uint8_t* data) noexcept nogil:
    return (<uint32_t>data[0] << 24) | (<uint32_t>data[1] << 16) | (<uint32_t>data[2] << 8) | data[3]


cdef inline bint _grow(void** buffer, Py_ssize_t* capacity, Py_ssize_t needed, size_t item_size) noexcept nogil:
    # False when out of memory (the old buffer stays valid and owned by the caller).
    cdef Py_ssize_t new_capacity
    cdef void* grown
    if needed <= capacity[0]:
        return True
    new_capacity = needed if needed > 2 * capacity[0] else 2 * capacity[0]
    if new_capacity < 64:
        new_capacity = 64
    grown = realloc(buffer[0], new_capacity * item_size)
    if grown == NULL:
        return False
    buffer[0] = grown
    capacity[0] = new_capacity
    return True


cdef struct ChunkLoc:
    const uint8_t* data     # the chunk's bytes (2-byte sample count, then the bit stream) in its segment
    Py_ssize_t size
    int64_t mint            # the chunk's time span, from the index
    int64_t maxt


cdef class BlockSnapshot:
    """The located chunks of a block's selected series (see the module docstring)."""

    cdef object index_view          # keeps the index and segment buffers alive while pointers are held
    cdef object segment_views
    cdef object symbol_offsets
    cdef list symbol_cache
    cdef list pair_cache
    cdef const uint8_t* index
    cdef Py_ssize_t index_size
    cdef int64_t mint
    cdef int64_t maxt
    cdef Py_ssize_t num_series
    # per series: label ids [label_starts[i], label_starts[i + 1]), chunks [chunk_starts[i], ...)
    cdef Py_ssize_t* label_starts
    cdef Py_ssize_t* chunk_starts
    cdef uint32_t* label_ids
    cdef Py_ssize_t label_capacity
    cdef ChunkLoc* chunks
    cdef Py_ssize_t chunk_capacity
    cdef readonly Py_ssize_t num_chunks
    cdef readonly Py_ssize_t chunk_bytes
    cdef readonly Py_ssize_t max_samples

    def __cinit__(self):
        self.label_starts = NULL
        self.chunk_starts = NULL
        self.label_ids = NULL
        self.chunks = NULL

    def __dealloc__(self):
        free(self.label_starts)
        free(self.chunk_starts)
        free(self.label_ids)
        free(self.chunks)

    @staticmethod
    def take(const uint8_t[::1] index not None, const uint64_t[::1] refs not None,
             Py_ssize_t series_start, Py_ssize_t series_end, const uint64_t[::1] symbol_offsets not None,
             list symbol_cache not None, list pair_cache not None, list segments not None,
             Py_ssize_t segment_header_size, int64_t mint, int64_t maxt):
        """Decode the series entries `refs` of the index bytes `index` and locate their chunks in [mint, maxt].

        `series_start`..`series_end` bound the series section; `symbol_offsets` are where each symbol
        of the symbol table starts in `index`, `symbol_cache` a list of the same length holding decoded
        symbols or None (filled as label sets are built), `pair_cache` another such list of label pairs
        by their value's symbol; `segments` are the chunk segment files' bytes.
        Raises ValueError on a series entry or chunk that does not parse or fails its checksum.
        """
        cdef BlockSnapshot snap = BlockSnapshot.__new__(BlockSnapshot)
        cdef Py_ssize_t n = refs.shape[0], num_segments = len(segments), i
        if len(symbol_cache) != symbol_offsets.shape[0] or len(pair_cache) != symbol_offsets.shape[0]:
            raise ValueError("symbol or pair cache and symbol offsets differ in length")
        snap.index_view = index
        snap.index = &index[0] if index.shape[0] else NULL
        snap.index_size = index.shape[0]
        snap.symbol_offsets = symbol_offsets
        snap.symbol_cache = symbol_cache
        snap.pair_cache = pair_cache
        snap.mint = mint
        snap.maxt = maxt
        snap.num_series = n
        views = []
        for segment in segments:
            views.append(memoryview(segment).cast("B") if not isinstance(segment, bytes) else segment)
        snap.segment_views = views
        cdef const uint8_t** segment_data = <const uint8_t**>malloc((num_segments + 1) * sizeof(uint8_t*))
        cdef Py_ssize_t* segment_sizes = <Py_ssize_t*>malloc((num_segments + 1) * sizeof(Py_ssize_t))
        cdef const uint8_t[::1] segment_view
        snap.label_starts = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
        snap.chunk_starts = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
        if segment_data == NULL or segment_sizes == NULL or snap.label_starts == NULL or snap.chunk_starts == NULL:
            free(segment_data)
            free(segment_sizes)
            raise MemoryError()
        cdef int error = _OK
        cdef Py_ssize_t failed_series = -1
        cdef uint64_t failed_chunk = 0
        try:
            for i in range(num_segments):
                segment_view = views[i]
                segment_data[i] = &segment_view[0] if segment_view.shape[0] else NULL
                segment_sizes[i] = segment_view.shape[0]
            with nogil:
                error = snap._locate(&refs[0] if n else NULL, n, series_start, series_end, segment_data,
                                     segment_sizes, num_segments, segment_header_size, &failed_series,
                                     &failed_chunk)
        finally:
            free(segment_data)
            free(segment_sizes)
        if error != _OK:
            _raise(error, refs[failed_series] if 0 <= failed_series < n else 0, failed_chunk)
        return snap

    cdef int _locate(self, const uint64_t* refs, Py_ssize_t n, Py_ssize_t series_start, Py_ssize_t series_end,
                     const uint8_t** segment_data, Py_ssize_t* segment_sizes, Py_ssize_t num_segments,
                     Py_ssize_t header_size, Py_ssize_t* failed_series, uint64_t* failed_chunk) noexcept nogil:
        cdef const uint8_t* buf = self.index
        cdef Py_ssize_t i, j, offset, pos, end, num_labels_total = 0, num_chunks_total = 0, size
        cdef uint64_t length, value, num_labels, num_chunks, a, b, c, segment, chunk_offset
        cdef int64_t t0, ref0, chunk_mint, chunk_maxt
        cdef const uint8_t* seg
        cdef Py_ssize_t chunk_pos
        for i in range(n):
            failed_series[0] = i
            self.label_starts[i] = num_labels_total
            self.chunk_starts[i] = num_chunks_total
            if refs[i] > <uint64_t>(series_end // _SERIES_ALIGN):
                return _BAD_REF
            offset = <Py_ssize_t>(refs[i] * _SERIES_ALIGN)
            if offset < series_start or offset >= series_end or offset >= self.index_size:
                return _BAD_REF
            pos = read_uvarint_at(buf, offset, self.index_size, &length)
            if pos < 0 or length > <uint64_t>(self.index_size - pos) or <Py_ssize_t>length + 4 > self.index_size - pos:
                return _BAD_SERIES
            end = pos + <Py_ssize_t>length
            if crc32c_update(0, buf + pos, end - pos) != _get_be32(buf + end):
                return _SERIES_CHECKSUM
            pos = read_uvarint_at(buf, pos, end, &num_labels)
            if pos < 0 or num_labels > <uint64_t>(end - pos):
                return _BAD_SERIES
            if not _grow(<void**>&self.label_ids, &self.label_capacity, num_labels_total + 2 * <Py_ssize_t>num_labels,
                         sizeof(uint32_t)):
                return _NO_MEMORY
            for j in range(<Py_ssize_t>(2 * num_labels)):
                pos = read_uvarint_at(buf, pos, end, &value)
                if pos < 0 or value > <uint64_t>0xFFFFFFFF:
                    return _BAD_SERIES
                self.label_ids[num_labels_total + j] = <uint32_t>value
            num_labels_total += 2 * <Py_ssize_t>num_labels
            pos = read_uvarint_at(buf, pos, end, &num_chunks)
            if pos < 0 or num_chunks > <uint64_t>(end - pos):
                return _BAD_SERIES
            t0 = 0
            ref0 = 0
            for j in range(<Py_ssize_t>num_chunks):
                pos = read_uvarint_at(buf, pos, end, &a)
                if pos >= 0:
                    pos = read_uvarint_at(buf, pos, end, &b)
                if pos >= 0:
                    pos = read_uvarint_at(buf, pos, end, &c)
                if pos < 0:
                    return _BAD_SERIES
                if j == 0:
                    t0 = zigzag_decode(a)
                    ref0 = <int64_t>c
                else:
                    t0 = t0 + <int64_t>a
                    ref0 = ref0 + zigzag_decode(c)
                chunk_mint = t0
                t0 = t0 + <int64_t>b
                chunk_maxt = t0
                if chunk_maxt < self.mint or chunk_mint > self.maxt:
                    continue
                # the chunk overlaps the range: find it in its segment and check it
                failed_chunk[0] = <uint64_t>ref0
                segment = (<uint64_t>ref0) >> 32
                chunk_offset = (<uint64_t>ref0) & <uint64_t>0xFFFFFFFF
                if segment >= <uint64_t>num_segments:
                    return _BAD_CHUNK_SEGMENT
                seg = segment_data[segment]
                size = segment_sizes[segment]
                if chunk_offset < <uint64_t>header_size or chunk_offset >= <uint64_t>size:
                    return _BAD_CHUNK_OFFSET
                chunk_pos = read_uvarint_at(seg, <Py_ssize_t>chunk_offset, size, &length)
                if chunk_pos < 0 or length > <uint64_t>size or <Py_ssize_t>length + 5 > size - chunk_pos:
                    return _BAD_CHUNK_LENGTH
                if crc32c_update(0, seg + chunk_pos, <Py_ssize_t>length + 1) != _get_be32(seg + chunk_pos + 1 + length):
                    return _CHUNK_CHECKSUM
                if seg[chunk_pos] != _ENCODING_XOR:
                    return _BAD_CHUNK_ENCODING
                if length < 2:
                    return _SHORT_CHUNK
                if not _grow(<void**>&self.chunks, &self.chunk_capacity, num_chunks_total + 1, sizeof(ChunkLoc)):
                    return _NO_MEMORY
                self.chunks[num_chunks_total].data = seg + chunk_pos + 1
                self.chunks[num_chunks_total].size = <Py_ssize_t>length
                self.chunks[num_chunks_total].mint = chunk_mint
                self.chunks[num_chunks_total].maxt = chunk_maxt
                self.chunk_bytes += <Py_ssize_t>length
                self.max_samples += (<Py_ssize_t>seg[chunk_pos + 1] << 8) | seg[chunk_pos + 2]
                num_chunks_total += 1
            if pos != end:
                return _BAD_SERIES
        self.label_starts[n] = num_labels_total
        self.chunk_starts[n] = num_chunks_total
        self.num_chunks = num_chunks_total
        failed_series[0] = -1
        return _OK

    def decode(self):
        """(labels list, offsets int64, timestamps int64, values float64) of the series with samples in
        [mint, maxt], in the order of the refs taken; the samples of series i are
        `timestamps[offsets[i]:offsets[i + 1]]`. Raises ValueError naming a corrupt chunk."""
        cdef Py_ssize_t capacity = self.max_samples, n = self.num_series, i, filled, kept, failed
        cdef cnp.npy_intp dims[1]
        dims[0] = capacity
        cdef cnp.ndarray timestamps = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        cdef cnp.ndarray values = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        dims[0] = n + 1
        cdef cnp.ndarray offsets = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        cdef int64_t* out_t = <int64_t*>cnp.PyArray_DATA(timestamps)
        cdef double* out_v = <double*>cnp.PyArray_DATA(values)
        cdef int64_t* out_offsets = <int64_t*>cnp.PyArray_DATA(offsets)
        cdef Py_ssize_t* kept_series = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
        if kept_series == NULL:
            raise MemoryError()
        cdef Py_ssize_t[3] progress  # filled, kept, failed chunk (-1: none)
        try:
            if capacity >= GIL_RELEASE_MIN_SAMPLES:
                with nogil:
                    self._decode_all(out_t, out_v, out_offsets, kept_series, capacity, progress)
            else:
                self._decode_all(out_t, out_v, out_offsets, kept_series, capacity, progress)
            filled, kept, failed = progress[0], progress[1], progress[2]
            if failed >= 0:
                raise ValueError(f"chunk {failed} of the selection: corrupt or truncated XOR chunk")
            labels = [self._labels(kept_series[i]) for i in range(kept)]
        finally:
            free(kept_series)
        return labels, offsets[:kept + 1], timestamps[:filled], values[:filled]

    cdef void _decode_all(self, int64_t* out_t, double* out_v, int64_t* out_offsets, Py_ssize_t* kept_series,
                          Py_ssize_t capacity, Py_ssize_t* progress) noexcept nogil:
        cdef Py_ssize_t i, c, filled = 0, kept = 0, count, series_filled
        cdef XORCursor cursor
        out_offsets[0] = 0
        progress[2] = -1
        for i in range(self.num_series):
            series_filled = filled
            for c in range(self.chunk_starts[i], self.chunk_starts[i + 1]):
                xor_cursor_init(&cursor, self.chunks[c].data, self.chunks[c].size)
                count = xor_decode_range(&cursor, self.mint, self.maxt, out_t + filled, out_v + filled,
                                         capacity - filled)
                if count < 0:
                    progress[2] = c
                    break
                filled += count
            if progress[2] >= 0:
                break
            if filled > series_filled:
                kept_series[kept] = i
                kept += 1
                out_offsets[kept] = filled
        progress[0] = filled
        progress[1] = kept

    cdef tuple _labels(self, Py_ssize_t series):
        # A label pair is built once per block and shared by the label sets holding it, found by its
        # value's symbol (a value is mostly used by one name; when not, the slot holds the last pair built):
        # a label set costs one tuple, and sorting label sets compares their shared pairs by identity.
        cdef Py_ssize_t start = self.label_starts[series], end = self.label_starts[series + 1], j
        cdef list pairs = self.pair_cache, labels = []
        cdef uint32_t value_id
        cdef object name, pair
        for j in range(start, end, 2):
            name = self._symbol(self.label_ids[j])
            value_id = self.label_ids[j + 1]
            if value_id >= <uint32_t>len(pairs):
                raise ValueError(f"unknown symbol {value_id}")
            pair = pairs[value_id]
            if pair is None or (<tuple>pair)[0] is not name:
                pair = (name, self._symbol(value_id))
                pairs[value_id] = pair
            labels.append(pair)
        return tuple(labels)

    cdef object _symbol(self, uint32_t symbol_id):
        cdef list cache = self.symbol_cache
        cdef object text
        cdef const uint64_t[::1] offsets
        cdef uint64_t length
        cdef Py_ssize_t pos
        if symbol_id >= <uint32_t>len(cache):
            raise ValueError(f"unknown symbol {symbol_id}")
        text = cache[symbol_id]
        if text is not None:
            return text
        offsets = self.symbol_offsets
        pos = read_uvarint_at(self.index, <Py_ssize_t>offsets[symbol_id], self.index_size, &length)
        if pos < 0 or length > <uint64_t>(self.index_size - pos):
            raise ValueError(f"symbol {symbol_id} runs past the end of the index")
        # Interned, as the head's label strings are: label sets from several blocks and the head then
        # compare (as they are sorted and merged) by identity of their strings.
        text = _intern(PyUnicode_DecodeUTF8(<const char*>(self.index + pos), <Py_ssize_t>length, NULL))
        cache[symbol_id] = text
        return text


cdef _raise(int error, uint64_t ref, uint64_t chunk):
    if error == _NO_MEMORY:
        raise MemoryError()
    messages = {
        _BAD_REF: f"series ref {ref} is outside the series section",
        _BAD_SERIES: f"series at offset {ref * _SERIES_ALIGN}: entry does not parse",
        _SERIES_CHECKSUM: f"series at offset {ref * _SERIES_ALIGN}: checksum mismatch",
        _BAD_CHUNK_SEGMENT: f"chunk ref {chunk:#x}: segment {(chunk >> 32) + 1:06d} does not exist",
        _BAD_CHUNK_OFFSET: f"chunk ref {chunk:#x}: offset is outside its segment",
        _BAD_CHUNK_LENGTH: f"chunk ref {chunk:#x}: length runs past the end of its segment",
        _CHUNK_CHECKSUM: f"chunk ref {chunk:#x}: checksum mismatch",
        _BAD_CHUNK_ENCODING: f"chunk ref {chunk:#x}: not an XOR chunk (only encoding 1 is read)",
        _SHORT_CHUNK: f"chunk ref {chunk:#x}: shorter than the 2-byte XOR header",
    }
    raise ValueError(messages.get(error, f"series ref {ref}: unreadable"))


cdef struct Source:
    ChunkLoc* chunks        # a block snapshot's located chunks; NULL for a decoded batch or the head
    const int64_t* ts       # a decoded batch's samples
    const double* vals
    int64_t mint            # a block snapshot's range
    int64_t maxt
    bint is_head            # a head snapshot, read through `head`
    HeadView head


cdef struct Item:
    # one series of one source
    Py_ssize_t source
    Py_ssize_t first        # chunks [first, last) of a snapshot, or samples [first, last) of a batch
    Py_ssize_t last
    int64_t lo              # time span the samples can have (from chunk metas for a snapshot)
    int64_t hi
    Py_ssize_t max_samples


cdef struct MergeScratch:
    int64_t* ts             # where the parts of an overlapping group are decoded before the merge
    double* vals
    Part* parts
    Item* by_start          # a group's items by start time (the disjoint check)
    Py_ssize_t capacity     # samples ts/vals hold


cdef struct SeriesBuffer:
    # One merged series at a time, in buffers of its own: what evaluate_merged and fold_merged run on.
    int64_t* ts
    double* vals
    MergeScratch scratch


def decode_merged(list sources not None):
    """Decode and merge, in one pass, the series of several sources given in priority order.

    A source is a BlockSnapshot or a HeadSnapshot (their chunks are decoded straight into the output) or
    a decoded batch `(labels, ts int64, vals float64, offsets int64)` (copied). Each source's series are
    sorted by labels and unique. A series in several sources gets the union of their samples by timestamp, one
    sample per timestamp: the earliest source's (as `mimird._fast.batchmerge.merge_batches`). Where the
    sources' time spans of a series do not overlap (blocks, then the head) each part is decoded or
    copied to its place; otherwise the parts are decoded aside and merged. Returns (labels, offsets,
    ts, vals) of the series with samples, in label order.
    """
    return _Merge(sources).decode()


def evaluate_merged(list sources not None, str name, eval_ts, long long range_ms, tuple params=(),
                    long long intercept_shift_ms=0, between=None, Py_ssize_t slice_samples=0):
    """The range function `name` over the series `decode_merged(sources)` would give, without that batch:
    each series is decoded and merged on its own, its stale markers dropped, and the kernel run on it while
    its samples are in cache (as `HeadSnapshot.evaluate` does for the head). Arguments after `sources` are
    `rangefn.evaluate_batch`'s; `between()` is called between slices of about `slice_samples` samples.

    Returns (labels, out, present, counts) as `HeadSnapshot.evaluate`: a row per series with chunks in the
    range, in label order (one without samples in the range has no point present); counts[i] is (samples
    read, samples other than stale markers). Large selections are split over the cores. Raises
    ChunkDecodeError (a ValueError) on a corrupt chunk."""
    return _Merge(sources).evaluate(name, eval_ts, range_ms, params, intercept_shift_ms, between,
                                    slice_samples)


def fold_merged(list sources not None, str op, times, long long lookback_ms, tuple grouping, bint without):
    """The aggregation `op by (grouping)` (or `without`) of the series `decode_merged(sources)` would give,
    each selected at `times` with `lookback_ms` and folded as `aggregate.select_fold` folds a batch, without
    that batch: each series is merged into a buffer of its own and folded while in cache, as the head's
    `HeadSnapshot.fold` does. Selections of FOLD_PARALLEL_MIN_SAMPLES samples or more are decoded in parts
    on the cores into a batch instead, and folded after (a fold goes series by series in order, on one
    core).

    Returns (labels, num_samples, keys, order, result, seen, selected, n_seen) as `HeadSnapshot.fold`: the
    label sets of the series with samples and how many samples they hold, the groups' label sets, and
    select_fold's result. Raises ChunkDecodeError (a ValueError) on a corrupt chunk."""
    return _Merge(sources).fold(op, times, lookback_ms, grouping, without)


cdef class _Merge:
    """The sources of one merged read, and their series (items) sorted and grouped by label set: group g
    is one output series, items[group_starts[g]:group_starts[g + 1]] its parts in priority order, and
    decodes into at most group_room[g + 1] - group_room[g] samples."""

    cdef Source* srcs
    cdef Py_ssize_t num_sources
    cdef list keep_alive            # the snapshots and batch arrays the sources point into
    cdef Item* items
    cdef Py_ssize_t item_count
    cdef Py_ssize_t* group_starts
    cdef Py_ssize_t* group_room
    cdef Py_ssize_t num_groups
    cdef Py_ssize_t longest         # the most samples one group can hold
    cdef list labels                # per group

    def __cinit__(self, list sources not None):
        cdef Py_ssize_t s, i, k, n, item_capacity = 0
        cdef BlockSnapshot snap
        cdef const int64_t[::1] ts_view
        cdef const double[::1] vals_view
        cdef const int64_t[::1] offsets_view
        cdef Item* item
        cdef HeadView* head
        cdef list all_labels = []
        self.srcs = NULL
        self.items = NULL
        self.group_starts = NULL
        self.group_room = NULL
        self.keep_alive = []
        self.num_sources = len(sources)
        self.srcs = <Source*>malloc((self.num_sources + 1) * sizeof(Source))
        if self.srcs == NULL:
            raise MemoryError()
        for s in range(self.num_sources):
            source = sources[s]
            self.srcs[s].is_head = False
            if isinstance(source, HeadSnapshot):
                self.keep_alive.append(source)
                self.srcs[s].chunks = NULL
                self.srcs[s].head = head_view(source)
                self.srcs[s].is_head = True
                head = &self.srcs[s].head
                labels = head_labels(source)
                for i in range(head.num_series):
                    n = head.capacity_offsets[i + 1] - head.capacity_offsets[i]
                    if n == 0:
                        continue
                    if not _grow(<void**>&self.items, &item_capacity, self.item_count + 1, sizeof(Item)):
                        raise MemoryError()
                    item = &self.items[self.item_count]
                    item.source = s
                    item.first = i
                    item.last = i + 1
                    item.lo = head_series_start(head, i)
                    item.hi = head.maxt
                    item.max_samples = n
                    self.item_count += 1
                    all_labels.append(labels[i])
            elif isinstance(source, BlockSnapshot):
                snap = <BlockSnapshot>source
                self.keep_alive.append(snap)
                self.srcs[s].chunks = snap.chunks
                self.srcs[s].ts = NULL
                self.srcs[s].vals = NULL
                self.srcs[s].mint = snap.mint
                self.srcs[s].maxt = snap.maxt
                for i in range(snap.num_series):
                    if snap.chunk_starts[i] == snap.chunk_starts[i + 1]:
                        continue
                    if not _grow(<void**>&self.items, &item_capacity, self.item_count + 1, sizeof(Item)):
                        raise MemoryError()
                    item = &self.items[self.item_count]
                    item.source = s
                    item.first = snap.chunk_starts[i]
                    item.last = snap.chunk_starts[i + 1]
                    item.lo = max(snap.chunks[item.first].mint, snap.mint)
                    item.hi = min(snap.chunks[item.last - 1].maxt, snap.maxt)
                    item.max_samples = 0
                    for k in range(item.first, item.last):
                        item.max_samples += (<Py_ssize_t>snap.chunks[k].data[0] << 8) | snap.chunks[k].data[1]
                    self.item_count += 1
                    all_labels.append(snap._labels(i))
            else:
                labels, ts, vals, offsets = source
                ts_view = ts
                vals_view = vals
                offsets_view = offsets
                self.keep_alive.append((ts_view, vals_view))
                n = len(labels)
                if offsets_view.shape[0] != n + 1 or ts_view.shape[0] != vals_view.shape[0]:
                    raise ValueError(f"source {s}: offsets and samples do not fit the labels")
                self.srcs[s].chunks = NULL
                self.srcs[s].ts = &ts_view[0] if ts_view.shape[0] else NULL
                self.srcs[s].vals = &vals_view[0] if vals_view.shape[0] else NULL
                for i in range(n):
                    if offsets_view[i] < 0 or offsets_view[i + 1] > ts_view.shape[0] or \
                            offsets_view[i + 1] < offsets_view[i]:
                        raise ValueError(f"source {s}: offsets point outside the sample arrays")
                    if offsets_view[i + 1] == offsets_view[i]:
                        continue
                    if not _grow(<void**>&self.items, &item_capacity, self.item_count + 1, sizeof(Item)):
                        raise MemoryError()
                    item = &self.items[self.item_count]
                    item.source = s
                    item.first = offsets_view[i]
                    item.last = offsets_view[i + 1]
                    item.lo = ts_view[item.first]
                    item.hi = ts_view[item.last - 1]
                    item.max_samples = item.last - item.first
                    self.item_count += 1
                    all_labels.append(labels[i])
        self._group(all_labels)

    def __dealloc__(self):
        free(self.srcs)
        free(self.items)
        free(self.group_starts)
        free(self.group_room)

    cdef _group(self, list all_labels):
        # Sort the items by label set and note the groups. A stable sort: equal label sets stay in source
        # order, their priority.
        cdef list order = sorted(range(self.item_count), key=all_labels.__getitem__)
        cdef Item* sorted_items = <Item*>malloc((self.item_count + 1) * sizeof(Item))
        cdef Py_ssize_t k, num_groups = 0, room = 0, group_capacity = 0
        cdef object previous = None, current
        self.group_starts = <Py_ssize_t*>malloc((self.item_count + 1) * sizeof(Py_ssize_t))
        self.group_room = <Py_ssize_t*>malloc((self.item_count + 1) * sizeof(Py_ssize_t))
        if sorted_items == NULL or self.group_starts == NULL or self.group_room == NULL:
            free(sorted_items)
            raise MemoryError()
        self.labels = []
        self.longest = 0
        for k in range(self.item_count):
            sorted_items[k] = self.items[<Py_ssize_t>order[k]]
            current = all_labels[<Py_ssize_t>order[k]]
            if k == 0 or not PyObject_RichCompareBool(current, previous, Py_EQ):
                self.longest = max(self.longest, group_capacity)
                self.group_starts[num_groups] = k
                self.group_room[num_groups] = room
                num_groups += 1
                self.labels.append(current)
                group_capacity = 0
            group_capacity += sorted_items[k].max_samples
            room += sorted_items[k].max_samples
            previous = current
        self.longest = max(self.longest, group_capacity)
        self.group_starts[num_groups] = self.item_count
        self.group_room[num_groups] = room
        self.num_groups = num_groups
        free(self.items)
        self.items = sorted_items

    cdef list _split(self, Py_ssize_t first, Py_ssize_t last):
        # Groups [first, last) cut into parts for the cores when they hold enough samples, else one part.
        if cores.PARTS > 1 and self.group_room[last] - self.group_room[first] >= PARALLEL_MIN_SAMPLES:
            bounds = cores.split(np.asarray(<Py_ssize_t[:self.num_groups + 1]>self.group_room)[first:last + 1],
                                 min(cores.PARTS, MAX_MERGE_PARTS))
            return [(first + lo, first + hi) for lo, hi in bounds]
        return [(first, last)]

    cdef tuple decode(self):
        cdef Py_ssize_t capacity = self.group_room[self.num_groups], filled, n_parts, p
        cdef cnp.npy_intp dims[1]
        cdef cnp.ndarray out_ts, out_vals, out_offsets
        cdef _DecodeJob job
        dims[0] = capacity
        out_ts = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        out_vals = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        dims[0] = self.num_groups + 1
        out_offsets = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        bounds = self._split(0, self.num_groups)
        n_parts = len(bounds)
        job = _DecodeJob(self, n_parts)
        job.out_t = <int64_t*>cnp.PyArray_DATA(out_ts)
        job.out_v = <double*>cnp.PyArray_DATA(out_vals)
        job.out_offsets = <int64_t*>cnp.PyArray_DATA(out_offsets)
        job.out_offsets[0] = 0
        for p in range(n_parts):
            job.part_groups[p] = bounds[p][0]
        job.part_groups[n_parts] = self.num_groups
        if n_parts > 1:
            cores.run_parts(job.run, range(n_parts))
        elif capacity >= GIL_RELEASE_MIN_SAMPLES:
            job.run(0)
        else:
            job.run_part(0)
        if job.failed():
            raise ChunkDecodeError("corrupt or truncated XOR chunk")
        filled = job.close_gaps()
        # drop the series whose chunks overlapped the range but had no sample in it
        group_labels = self.labels
        offsets = out_offsets
        lengths = np.diff(offsets)
        if self.num_groups and not lengths.all():
            kept = np.flatnonzero(lengths)
            group_labels = [group_labels[i] for i in kept.tolist()]
            offsets = np.concatenate(([0], offsets[kept + 1]))
        if filled < capacity // 2:
            return group_labels, offsets, out_ts[:filled].copy(), out_vals[:filled].copy()
        return group_labels, offsets, out_ts[:filled], out_vals[:filled]

    cdef tuple fold(self, str op, times, long long lookback_ms, tuple grouping, bint without):
        cdef SelectFold folder
        cdef cnp.ndarray counts
        cdef Py_ssize_t g, num_samples = 0, failed
        cdef int64_t* count_of
        if cores.PARTS > 1 and self.group_room[self.num_groups] >= FOLD_PARALLEL_MIN_SAMPLES:
            labels, offsets, ts, vals = self.decode()
            group_ids, keys = group_series(labels, grouping, without)
            return (labels, int(offsets[len(offsets) - 1]), keys,
                    *select_fold(op, ts, vals, offsets, times, lookback_ms, group_ids, len(keys)))
        group_ids, keys = group_series(self.labels, grouping, without)
        folder = SelectFold(op, times, lookback_ms, group_ids, len(keys))
        counts = np.zeros(self.num_groups, dtype=np.int64)
        count_of = <int64_t*>cnp.PyArray_DATA(counts)
        cdef Groups groups = _groups_of(self)
        cdef Py_ssize_t work = self.group_room[self.num_groups] + self.num_groups * folder.n_steps
        if cores.PARTS > 1 and folder.n_steps > 1 and work >= FOLD_STEP_PARTS_MIN_WORK:
            failed = self._fold_in_parts(folder, min(cores.PARTS, MAX_MERGE_PARTS, folder.n_steps), count_of)
        elif work >= GIL_RELEASE_MIN_WORK:
            with nogil:
                failed = self._fold_groups(&groups, folder, count_of)
        else:
            failed = self._fold_groups(&groups, folder, count_of)
        if failed == _NO_MEMORY:
            raise MemoryError()
        if failed != _OK:
            raise ChunkDecodeError("corrupt or truncated XOR chunk")
        read_labels = []
        for g in range(self.num_groups):
            num_samples += count_of[g]
            if count_of[g]:
                read_labels.append(self.labels[g])
        return (read_labels, num_samples, keys, *folder.finish())

    cdef int _fold_in_parts(self, SelectFold folder, Py_ssize_t n_parts, int64_t* counts):
        # fold()'s work as a _FoldJob of n_parts step ranges on the cores; _OK, _CORRUPT_CHUNK or _NO_MEMORY.
        cdef _FoldJob job = _FoldJob(self, folder, n_parts)
        cdef Py_ssize_t p, g, selected
        cores.run_parts(job.run, range(n_parts))
        for p in range(n_parts):
            if job.part_failed[p] != _OK:
                return job.part_failed[p]
        for g in range(self.num_groups):
            selected = 0
            for p in range(n_parts):
                counts[g] += job.counts[p * self.num_groups + g]
                selected += job.selected[p * self.num_groups + g]
            folder.note_selected(g, selected)
        return _OK

    cdef int _fold_groups(self, const Groups* m, SelectFold folder, int64_t* counts) noexcept nogil:
        # fold()'s loop: each group merged into one buffer and folded; _OK, _CORRUPT_CHUNK or _NO_MEMORY.
        cdef Py_ssize_t g, count
        cdef int result = _OK
        cdef SeriesBuffer buffer
        if not _alloc_series_buffer(&buffer, m):
            result = _NO_MEMORY
        else:
            for g in range(self.num_groups):
                count = _merge_group(m, g, &buffer, INT64_MIN, INT64_MAX)
                if count < 0:
                    result = _CORRUPT_CHUNK
                    break
                counts[g] = count
                if count:
                    folder.add_series(g, buffer.ts, buffer.vals, count)
        _free_series_buffer(&buffer)
        return result

    cdef tuple evaluate(self, str name, eval_ts, long long range_ms, tuple params, long long intercept_shift_ms,
                        between, Py_ssize_t slice_samples):
        cdef _EvaluateJob job = _EvaluateJob(self)
        cdef tuple keep = prepare_grid(name, eval_ts, range_ms, params, intercept_shift_ms, &job.grid, &job.fn)
        cdef Py_ssize_t n = self.num_groups, first = 0, last, n_parts, p
        cdef cnp.ndarray out = output_rows(None, n, job.grid.n_steps, False)
        cdef cnp.ndarray present = output_rows(None, n, job.grid.n_steps, True)
        cdef cnp.ndarray counts = np.zeros((n, 2), dtype=np.int64)
        if n == 0 or job.grid.n_steps == 0:
            return self.labels, out, present, counts
        job.out = <double*>cnp.PyArray_DATA(out)
        job.present = <uint8_t*>cnp.PyArray_DATA(present)
        job.counts = <int64_t*>cnp.PyArray_DATA(counts)
        while first < n:
            last = n
            if slice_samples > 0:
                last = first + 1
                while last < n and self.group_room[last + 1] - self.group_room[first] <= slice_samples:
                    last += 1
            bounds = self._split(first, last)
            n_parts = len(bounds)
            job.n_parts = n_parts
            for p in range(n_parts):
                job.part_groups[p] = bounds[p][0]
            job.part_groups[n_parts] = last
            if n_parts > 1:
                cores.run_parts(job.run, range(n_parts))
            elif self.group_room[last] - self.group_room[first] + (last - first) * job.grid.n_steps \
                    >= GIL_RELEASE_MIN_WORK:
                job.run(0)
            else:
                job.part_failed[0] = job.run_part(0)
            for p in range(n_parts):
                if job.part_failed[p] == _NO_MEMORY:
                    raise MemoryError()
                if job.part_failed[p] != _OK:
                    raise ChunkDecodeError("corrupt or truncated XOR chunk")
            first = last
            if between is not None and first < n:
                between()
        return self.labels, out, present, counts


cdef struct Groups:
    # a _Merge's groups as plain pointers, for the GIL-free loops (the _Merge outlives them)
    const Source* srcs
    const Item* items
    const Py_ssize_t* group_starts
    const Py_ssize_t* group_room
    Py_ssize_t num_sources
    Py_ssize_t longest


cdef Groups _groups_of(_Merge merge):
    cdef Groups groups
    groups.srcs = merge.srcs
    groups.items = merge.items
    groups.group_starts = merge.group_starts
    groups.group_room = merge.group_room
    groups.num_sources = merge.num_sources
    groups.longest = merge.longest
    return groups


cdef bint _alloc_scratch(MergeScratch* scratch, Py_ssize_t capacity, Py_ssize_t max_items) noexcept nogil:
    # False when out of memory (whatever was allocated is freed by _free_scratch).
    scratch.capacity = capacity
    scratch.ts = <int64_t*>malloc((capacity + 1) * sizeof(int64_t))
    scratch.vals = <double*>malloc((capacity + 1) * sizeof(double))
    scratch.parts = <Part*>malloc((max_items + 1) * sizeof(Part))
    scratch.by_start = <Item*>malloc((max_items + 1) * sizeof(Item))
    return scratch.ts != NULL and scratch.vals != NULL and scratch.parts != NULL and scratch.by_start != NULL


cdef void _free_scratch(MergeScratch* scratch) noexcept nogil:
    free(scratch.ts)
    free(scratch.vals)
    free(scratch.parts)
    free(scratch.by_start)
    scratch.ts, scratch.vals, scratch.parts, scratch.by_start = NULL, NULL, NULL, NULL


cdef bint _alloc_series_buffer(SeriesBuffer* buffer, const Groups* m) noexcept nogil:
    # Room for the longest group; False when out of memory (_free_series_buffer frees what was allocated).
    buffer.ts = <int64_t*>malloc((m.longest + 1) * sizeof(int64_t))
    buffer.vals = <double*>malloc((m.longest + 1) * sizeof(double))
    return _alloc_scratch(&buffer.scratch, m.longest, m.num_sources) and buffer.ts != NULL and buffer.vals != NULL


cdef void _free_series_buffer(SeriesBuffer* buffer) noexcept nogil:
    _free_scratch(&buffer.scratch)
    free(buffer.ts)
    free(buffer.vals)
    buffer.ts, buffer.vals = NULL, NULL


cdef Py_ssize_t _merge_group(const Groups* m, Py_ssize_t g, SeriesBuffer* buffer, int64_t lo,
                             int64_t hi) noexcept nogil:
    # Group g merged into the buffer, at least its samples in [lo, hi]; returns the buffer's sample count, or
    # -1 on a corrupt chunk.
    return _decode_group(m.srcs, m.items + m.group_starts[g], m.group_starts[g + 1] - m.group_starts[g],
                         &buffer.scratch, buffer.ts, buffer.vals, 0, m.longest, lo, hi)


cdef class _DecodeJob:
    """One decode's groups cut into parts that decode at the same time, each into its own room of the
    output (part p starts at its first group's room) with its own scratch; `close_gaps` then moves the
    parts together."""

    cdef _Merge merge
    cdef Groups groups
    cdef int64_t* out_t
    cdef double* out_v
    cdef int64_t* out_offsets
    cdef Py_ssize_t n_parts
    cdef Py_ssize_t part_groups[MAX_MERGE_PARTS + 1]
    cdef Py_ssize_t part_filled[MAX_MERGE_PARTS]     # where each part's samples end
    cdef bint part_failed[MAX_MERGE_PARTS]
    cdef MergeScratch scratch[MAX_MERGE_PARTS]

    def __cinit__(self, _Merge merge, Py_ssize_t n_parts):
        cdef Py_ssize_t p
        if not 0 < n_parts <= MAX_MERGE_PARTS:
            raise ValueError(f"{n_parts} parts")
        self.merge = merge
        self.groups = _groups_of(merge)
        self.n_parts = n_parts
        for p in range(MAX_MERGE_PARTS):
            self.scratch[p].ts = NULL
            self.scratch[p].vals = NULL
            self.scratch[p].parts = NULL
            self.scratch[p].by_start = NULL
            self.part_failed[p] = False
        for p in range(n_parts):
            if not _alloc_scratch(&self.scratch[p], merge.longest, merge.num_sources):
                raise MemoryError()

    def __dealloc__(self):
        cdef Py_ssize_t p
        for p in range(MAX_MERGE_PARTS):
            _free_scratch(&self.scratch[p])

    def run(self, Py_ssize_t p):
        """Decode part `p` without the GIL (a helper thread's call)."""
        with nogil:
            self.run_part(p)

    cdef void run_part(self, Py_ssize_t p) noexcept nogil:
        cdef const Groups* m = &self.groups
        cdef Py_ssize_t g, first = self.part_groups[p], last = self.part_groups[p + 1]
        cdef Py_ssize_t filled = m.group_room[first], capacity = m.group_room[last]
        self.part_failed[p] = False
        for g in range(first, last):
            filled = _decode_group(m.srcs, m.items + m.group_starts[g], m.group_starts[g + 1] - m.group_starts[g],
                                   &self.scratch[p], self.out_t, self.out_v, filled, capacity, INT64_MIN, INT64_MAX)
            if filled < 0:
                self.part_failed[p] = True
                return
            self.out_offsets[g + 1] = filled
        self.part_filled[p] = filled

    cdef bint failed(self):
        cdef Py_ssize_t p
        for p in range(self.n_parts):
            if self.part_failed[p]:
                return True
        return False

    cdef Py_ssize_t close_gaps(self):
        # Each part after the first moves down to where the one before it ended; its groups' offsets too.
        cdef const Groups* m = &self.groups
        cdef Py_ssize_t p, g, start, count, end = self.part_filled[0], shift
        for p in range(1, self.n_parts):
            start = m.group_room[self.part_groups[p]]
            count = self.part_filled[p] - start
            shift = start - end
            if shift:
                memmove(self.out_t + end, self.out_t + start, count * sizeof(int64_t))
                memmove(self.out_v + end, self.out_v + start, count * sizeof(double))
                for g in range(self.part_groups[p], self.part_groups[p + 1]):
                    self.out_offsets[g + 1] -= shift
            end += count
        return end


cdef class _FoldJob:
    """fold_merged's fold with its steps cut into ranges that fold at the same time. Part p merges each
    series only where its steps can look (its window: the lookback before its first step to its last step)
    and folds it at its own steps, which are cells of the shared SelectFold no other part writes. Cells
    still take their series in order, so the result is one fold's to the bit. Each part counts the merged
    samples in its own slice of time (after the previous part's last step, to its own last step; the
    first and last parts open-ended), so the counts add up to one fold's too."""

    cdef _Merge merge
    cdef Groups groups
    cdef SelectFold folder
    cdef Py_ssize_t n_parts
    cdef Py_ssize_t part_steps[MAX_MERGE_PARTS + 1]
    cdef int part_failed[MAX_MERGE_PARTS]
    cdef int64_t* counts            # per part and group: merged samples in the part's slice of time
    cdef int64_t* selected          # per part and group: samples the part folded

    def __cinit__(self, _Merge merge, SelectFold folder, Py_ssize_t n_parts):
        cdef Py_ssize_t p, n_steps = folder.n_steps
        if not 0 < n_parts <= min(MAX_MERGE_PARTS, n_steps):
            raise ValueError(f"{n_parts} parts of {n_steps} steps")
        self.merge = merge
        self.groups = _groups_of(merge)
        self.folder = folder
        self.n_parts = n_parts
        for p in range(n_parts + 1):
            self.part_steps[p] = p * n_steps // n_parts
        self.counts = <int64_t*>calloc(n_parts * merge.num_groups + 1, sizeof(int64_t))
        self.selected = <int64_t*>calloc(n_parts * merge.num_groups + 1, sizeof(int64_t))
        if self.counts == NULL or self.selected == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.counts)
        free(self.selected)

    def run(self, Py_ssize_t p):
        """Fold part `p` without the GIL (a helper thread's call)."""
        with nogil:
            self.part_failed[p] = self.run_part(p)

    cdef int run_part(self, Py_ssize_t p) noexcept nogil:
        # _OK, _CORRUPT_CHUNK or _NO_MEMORY.
        cdef const Groups* m = &self.groups
        cdef const int64_t* times = self.folder.times
        cdef Py_ssize_t first = self.part_steps[p], end = self.part_steps[p + 1], g, count, skip
        cdef Py_ssize_t row = p * self.merge.num_groups
        cdef int64_t slice_lo = INT64_MIN, slice_hi = INT64_MAX, window_lo = INT64_MIN
        cdef int64_t reach = times[first] - self.folder.lookback_ms   # no sample at or before this is selected
        cdef int result = _OK
        cdef SeriesBuffer buffer
        if p > 0:
            slice_lo = times[first - 1]
            window_lo = min(reach, slice_lo) + 1
        if p < self.n_parts - 1:
            slice_hi = times[end - 1]
        if not _alloc_series_buffer(&buffer, m):
            result = _NO_MEMORY
        else:
            for g in range(self.merge.num_groups):
                count = _merge_group(m, g, &buffer, window_lo, slice_hi)
                if count < 0:
                    result = _CORRUPT_CHUNK
                    break
                self.counts[row + g] = (first_after(buffer.ts, 0, count, slice_hi)
                                        - first_after(buffer.ts, 0, count, slice_lo))
                skip = first_after(buffer.ts, 0, count, reach)
                self.selected[row + g] = self.folder.fold_steps(g, buffer.ts + skip, buffer.vals + skip,
                                                                count - skip, first, end)
        _free_series_buffer(&buffer)
        return result


cdef class _EvaluateJob:
    """One evaluate_merged's kernel run over a slice of groups cut into parts that run at the same time,
    each group decoded into its part's own buffers and evaluated into its row of the output."""

    cdef _Merge merge
    cdef Groups groups
    cdef StepGrid grid
    cdef int fn
    cdef double* out
    cdef uint8_t* present
    cdef int64_t* counts
    cdef Py_ssize_t n_parts
    cdef Py_ssize_t part_groups[MAX_MERGE_PARTS + 1]
    cdef int part_failed[MAX_MERGE_PARTS]

    def __cinit__(self, _Merge merge):
        self.merge = merge
        self.groups = _groups_of(merge)

    def run(self, Py_ssize_t p):
        """Evaluate part `p` without the GIL (a helper thread's call)."""
        with nogil:
            self.part_failed[p] = self.run_part(p)

    cdef int run_part(self, Py_ssize_t p) noexcept nogil:
        # _OK, _CORRUPT_CHUNK or _NO_MEMORY.
        cdef const Groups* m = &self.groups
        cdef Py_ssize_t g, count, kept, n_steps = self.grid.n_steps, longest = m.longest
        cdef int result = _OK
        cdef SeriesBuffer buffer
        cdef KernelScratch kernel_scratch
        cdef Series series
        kernel_scratch.values = <double*>malloc((2 * longest + 1) * sizeof(double))
        kernel_scratch.indexes = <Py_ssize_t*>malloc((longest + 1) * sizeof(Py_ssize_t))
        if not _alloc_series_buffer(&buffer, m) or kernel_scratch.values == NULL or kernel_scratch.indexes == NULL:
            result = _NO_MEMORY
        else:
            series.ts = buffer.ts
            series.vals = buffer.vals
            for g in range(self.part_groups[p], self.part_groups[p + 1]):
                count = _merge_group(m, g, &buffer, INT64_MIN, INT64_MAX)
                if count < 0:
                    result = _CORRUPT_CHUNK
                    break
                kept = drop_stale_markers(buffer.ts, buffer.vals, count)
                self.counts[2 * g] = count
                self.counts[2 * g + 1] = kept
                series.n = kept
                evaluate_series(self.fn, &series, &self.grid, &kernel_scratch, self.out + g * n_steps,
                                self.present + g * n_steps)
        _free_series_buffer(&buffer)
        free(kernel_scratch.values)
        free(kernel_scratch.indexes)
        return result


cdef inline bint _outside(int64_t first, int64_t last, int64_t lo, int64_t hi) noexcept nogil:
    # True when [first, last] and [lo, hi] do not overlap.
    return last < lo or first > hi


cdef Py_ssize_t _write_item(const Source* src, const Item* item, int64_t* out_t, double* out_v,
                            Py_ssize_t filled, Py_ssize_t capacity, int64_t lo, int64_t hi) noexcept nogil:
    # The item's samples at out[filled:], its chunks decoded or its samples copied; -1 on a corrupt chunk.
    # A snapshot's chunks are read only where they overlap [lo, hi], and only those samples kept; the head's
    # and a batch's samples come whole (a windowed reader ignores the ones outside).
    cdef Py_ssize_t c, count, failed = -1
    cdef int64_t mint = max(src.mint, lo), maxt = min(src.maxt, hi)
    cdef XORCursor cursor
    if src.is_head:
        # (the item's room, max_samples, is the series' capacity in the head)
        count = decode_head_series(&src.head, item.first, out_t + filled, out_v + filled, &failed)
        return -1 if failed >= 0 else filled + count
    if src.chunks == NULL:
        count = item.last - item.first
        memcpy(out_t + filled, src.ts + item.first, count * sizeof(int64_t))
        memcpy(out_v + filled, src.vals + item.first, count * sizeof(double))
        return filled + count
    for c in range(item.first, item.last):
        if _outside(src.chunks[c].mint, src.chunks[c].maxt, lo, hi):
            continue
        xor_cursor_init(&cursor, src.chunks[c].data, src.chunks[c].size)
        count = xor_decode_range(&cursor, mint, maxt, out_t + filled, out_v + filled, capacity - filled)
        if count < 0:
            return -1
        filled += count
    return filled


cdef Py_ssize_t _decode_group(const Source* srcs, const Item* items, Py_ssize_t n, MergeScratch* scratch,
                              int64_t* out_t, double* out_v, Py_ssize_t filled, Py_ssize_t capacity,
                              int64_t lo, int64_t hi) noexcept nogil:
    # One series' n parts (items, in priority order) decoded into out[filled:capacity] as one run of samples
    # by timestamp; returns where it ends, or -1 on a corrupt chunk. Only the parts and chunks that overlap
    # [lo, hi] are read: every merged sample in [lo, hi] is there (and may be joined by others around it).
    cdef Py_ssize_t i, j, kept = 0, scratch_filled, start
    cdef bint disjoint
    cdef Item moving
    # by start time (an insertion sort: a group has a part per source at most)
    for i in range(n):
        moving = items[i]
        if _outside(moving.lo, moving.hi, lo, hi):
            continue
        j = kept
        while j > 0 and scratch.by_start[j - 1].lo > moving.lo:
            scratch.by_start[j] = scratch.by_start[j - 1]
            j -= 1
        scratch.by_start[j] = moving
        kept += 1
    disjoint = True
    for i in range(1, kept):
        if scratch.by_start[i - 1].hi >= scratch.by_start[i].lo:
            disjoint = False
            break
    if disjoint:
        for i in range(kept):
            filled = _write_item(&srcs[scratch.by_start[i].source], &scratch.by_start[i], out_t, out_v,
                                 filled, capacity, lo, hi)
            if filled < 0:
                return -1
        return filled
    # the merge takes the parts in priority order
    scratch_filled = 0
    kept = 0
    for i in range(n):
        if _outside(items[i].lo, items[i].hi, lo, hi):
            continue
        start = scratch_filled
        scratch_filled = _write_item(&srcs[items[i].source], &items[i], scratch.ts, scratch.vals, scratch_filled,
                                     scratch.capacity, lo, hi)
        if scratch_filled < 0:
            return -1
        scratch.parts[kept].ts = scratch.ts
        scratch.parts[kept].vals = scratch.vals
        scratch.parts[kept].pos = start
        scratch.parts[kept].end = scratch_filled
        kept += 1
    return merge_parts(scratch.parts, kept, out_t, out_v, filled)
