# cython: language_level=3
"""Batched reads of the head's series: many series' samples decoded into one pair of arrays.

A query selects thousands of series at once. Reading them one by one (a Python snapshot, a decode
call and a pair of numpy arrays per series) costs far more than decoding the samples, so the head
reads them in two steps:

1. `HeadSnapshot.take(series_by_ref, refs, mint, maxt)`, under the head's lock: for each series (refs
   already in label order) it notes the closed chunks overlapping the range (pointers into the series'
   immutable chunk packs, which the snapshot keeps alive), copies the open chunk's bytes into one
   scratch buffer, and copies the out-of-order samples in range.
2. `HeadSnapshot.decode()`, without the lock and without the GIL: every series is decoded into one
   timestamps array and one values array, laid end to end, and merged with its out-of-order samples
   (an in-order sample wins a tie, as the head's `merge_samples`). Series without samples in the range
   are left out.

An instant selection wants only each series' newest sample before its time. With `latest_only`, `take`
gives a series whose newest sample (the open chunk's last) is in the range just that sample, so that a
dashboard's query at "now" decodes nothing.
"""
from cpython.object cimport PyObject
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove

cimport numpy as cnp

from mimird._fast.aggregate cimport SelectFold
from mimird._fast.arrays cimport vector
from mimird._fast.bstream cimport store_be64
from mimird._fast.headseries cimport ClosedChunk, MemSeries, SeriesByRef, pack_data, pack_records
from mimird._fast.prefetch cimport prefetch
from mimird._fast.rangefn cimport Scratch, Series, StepGrid, evaluate_series, output_rows, prepare_grid
from mimird._fast.samples cimport GIL_RELEASE_MIN_WORK, drop_stale_markers
from mimird._fast.varint cimport read_uvarint_at, zigzag_decode
from mimird._fast.xorchunk cimport XOR_CORRUPT, XORChunk, XORCursor, xor_cursor_init, xor_decode_until

import numpy as np

from mimird._fast.aggregate import group_series, select_fold
from mimird.util import cores

cnp.import_array()


# From this many samples decode() may split its series over several threads (about a millisecond of work).
PARALLEL_MIN_SAMPLES = 100_000
cdef enum:
    MAX_PARTS = 8  # the most parts decode() cuts its series into


cdef int _grow(void** buffer, Py_ssize_t* capacity, Py_ssize_t needed, size_t item_size) except -1:
    cdef Py_ssize_t new_capacity
    cdef void* grown
    if needed <= capacity[0]:
        return 0
    new_capacity = max(needed, 2 * capacity[0], 64)
    grown = realloc(buffer[0], new_capacity * item_size)
    if grown == NULL:
        raise MemoryError()
    buffer[0] = grown
    capacity[0] = new_capacity
    return 0


cdef Py_ssize_t _bisect_left(object sorted_ints, int64_t x) except -1:
    cdef Py_ssize_t lo = 0, hi = len(sorted_ints), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if <int64_t>sorted_ints[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef Py_ssize_t _bisect_right(object sorted_ints, int64_t x) except -1:
    cdef Py_ssize_t lo = 0, hi = len(sorted_ints), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x < <int64_t>sorted_ints[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef Py_ssize_t _decode_chunk(const uint8_t* data, Py_ssize_t size, int64_t mint, int64_t maxt,
                              int64_t* out_t, double* out_v, bint* past_maxt) noexcept nogil:
    """Decode the samples mint <= t <= maxt of one chunk; stops at the first t > maxt (and says so)."""
    cdef XORCursor cursor
    if xor_cursor_init(&cursor, data, size) == XOR_CORRUPT:
        return XOR_CORRUPT
    # The outputs have room for the chunk's sample count, so XOR_OUT_OF_SPACE cannot happen.
    return xor_decode_until(&cursor, mint, maxt, out_t, out_v, cursor.num_total, past_maxt)


cdef Py_ssize_t _merge_ooo(int64_t* ts, double* vals, Py_ssize_t n_in_order, const int64_t* ooo_t,
                           const double* ooo_v, Py_ssize_t n_ooo) noexcept nogil:
    """Merge the sorted out-of-order samples into the sorted in-order ones at ts/vals[0:n_in_order]
    (room for n_in_order + n_ooo); an in-order sample wins a tie. Returns the merged length."""
    # Backwards from the end, so no sample is moved before it is read; ties leave a gap at the front.
    cdef Py_ssize_t i = n_in_order - 1, j = n_ooo - 1, w = n_in_order + n_ooo - 1, merged
    while j >= 0:
        if i >= 0 and ts[i] >= ooo_t[j]:
            if ts[i] == ooo_t[j]:
                j -= 1
            ts[w] = ts[i]
            vals[w] = vals[i]
            i -= 1
        else:
            ts[w] = ooo_t[j]
            vals[w] = ooo_v[j]
            j -= 1
        w -= 1
    # What is left of the in-order samples is already in place when nothing was dropped.
    merged = n_in_order + n_ooo - 1 - w + (i + 1)
    if w != i:
        memmove(ts + i + 1, ts + w + 1, (n_in_order + n_ooo - 1 - w) * sizeof(int64_t))
        memmove(vals + i + 1, vals + w + 1, (n_in_order + n_ooo - 1 - w) * sizeof(double))
    return merged


cdef void _prefetch_series(PyObject** found, Py_ssize_t n_found, Py_ssize_t* max_chunks,
                           Py_ssize_t* open_bytes) noexcept:
    # Ask for what `take` reads of each series, in two waves: the objects a series points to, then the
    # chunk records and open chunk's bytes those point to. Prefetches never fault and change nothing; the
    # reads later find them cached. The second wave also sums up how many chunks the series have and how
    # many bytes their open chunks hold, so that `take` sizes its buffers once.
    cdef MemSeries s
    cdef XORChunk open_chunk
    cdef Py_ssize_t chunks = 0, nbytes = 0, i
    for i in range(n_found):
        s = <MemSeries>found[i]
        prefetch(<PyObject*>s.labels)
        prefetch(<PyObject*>s.open)
        prefetch(<PyObject*>s.closed)
    for i in range(n_found):
        s = <MemSeries>found[i]
        open_chunk = s.open
        if open_chunk is not None:
            prefetch(open_chunk.buf + (open_chunk.pending_start >> 3))
            chunks += 1
            nbytes += <Py_ssize_t>(open_chunk.pending_start >> 3) + 8
        if s.num_closed:
            # the newest records, which a query's range most often starts in
            prefetch(pack_records(s.closed) + s.num_closed - 1)
            chunks += s.num_closed
    max_chunks[0] = chunks
    open_bytes[0] = nbytes


cdef class HeadSnapshot:
    """The chunks and out-of-order samples of a list of head series in [mint, maxt], to decode later."""

    cdef readonly Py_ssize_t num_series
    cdef readonly Py_ssize_t num_chunks
    cdef readonly Py_ssize_t chunk_bytes
    cdef int64_t mint
    cdef int64_t maxt
    cdef list closed            # the chunk packs the snapshot points into, alive as long as it is
    cdef list labels            # the label sets of the series found
    cdef ChunkRef* chunks
    cdef Py_ssize_t chunks_capacity
    cdef Py_ssize_t* chunk_offsets     # series i's chunks are chunks[chunk_offsets[i]:chunk_offsets[i+1]]
    cdef uint8_t* scratch              # copies of the open chunks
    cdef Py_ssize_t scratch_used
    cdef Py_ssize_t scratch_capacity
    cdef int64_t* ooo_t
    cdef double* ooo_v
    cdef Py_ssize_t ooo_capacity
    cdef Py_ssize_t* ooo_offsets       # series i's OOO samples are ooo_t[ooo_offsets[i]:ooo_offsets[i+1]]
    # series i decodes into [capacity_offsets[i], capacity_offsets[i+1]) (its noted chunks' samples plus its
    # OOO samples); capacity_offsets[num_series] is room for all
    cdef Py_ssize_t* capacity_offsets
    # While decode() runs in parts: where the outputs are and each part's series, rows and result.
    cdef int64_t* out_t
    cdef double* out_v
    cdef int64_t* out_rows
    cdef int64_t* part_offsets         # part p's offsets start at part_offsets + part_first[p] + p
    cdef Py_ssize_t part_first[MAX_PARTS + 1]
    cdef Py_ssize_t part_rows[MAX_PARTS]
    cdef Py_ssize_t part_failed[MAX_PARTS]
    # what evaluate() hands its parts
    cdef StepGrid grid
    cdef int fn
    cdef double* eval_out
    cdef uint8_t* eval_present
    cdef int64_t* eval_counts          # per row: samples decoded, then samples left without stale markers
    cdef int64_t* eval_rows            # per series: its row of the output, or -1 (no chunk in the range)

    def __cinit__(self):
        self.closed = []
        self.labels = []
        self.chunks = NULL
        self.chunk_offsets = NULL
        self.scratch = NULL
        self.ooo_t = NULL
        self.ooo_v = NULL
        self.ooo_offsets = NULL
        self.capacity_offsets = NULL
        self.eval_out = NULL
        self.eval_present = NULL
        self.eval_counts = NULL
        self.eval_rows = NULL

    def __dealloc__(self):
        free(self.chunks)
        free(self.chunk_offsets)
        free(self.scratch)
        free(self.ooo_t)
        free(self.ooo_v)
        free(self.ooo_offsets)
        free(self.capacity_offsets)

    cdef int _reserve_ooo(self, Py_ssize_t needed) except -1:
        # Room for `needed` out-of-order samples in both arrays, which share one capacity.
        cdef Py_ssize_t capacity = self.ooo_capacity
        _grow(<void**>&self.ooo_t, &capacity, needed, sizeof(int64_t))
        _grow(<void**>&self.ooo_v, &self.ooo_capacity, needed, sizeof(double))
        return 0

    @staticmethod
    def take(SeriesByRef series_by_ref, refs, int64_t mint, int64_t maxt, bint latest_only=False):
        """Note what the series `refs` (in `series_by_ref`; refs missing there are skipped)
        hold in [mint, maxt]. Call it under the head's lock.

        With `latest_only`, a series whose newest sample lies in [mint, maxt] gives only that sample
        (an instant selection reads nothing else), without decoding; its chunks are still counted in
        `num_chunks` and `chunk_bytes`, as the read they stand for."""
        cdef HeadSnapshot snap = HeadSnapshot()
        # The refs' data read in place: a typed memoryview's buffer request and format check is a few
        # hundred lines of C that a dashboard's query runs cold, for one pointer and one length.
        cdef cnp.ndarray ref_array = vector(refs, cnp.NPY_UINT64, "refs")
        cdef const uint64_t* ref_view = <const uint64_t*>cnp.PyArray_DATA(ref_array)
        cdef Py_ssize_t n = 0, n_refs = cnp.PyArray_DIM(ref_array, 0), r, i, k, first, n_closed, lo, hi, used
        cdef Py_ssize_t n_chunks = 0, n_ooo = 0, chunk_bytes = 0, samples = 0, noted = 0
        cdef Py_ssize_t max_chunks, open_bytes
        cdef bint newest_only
        cdef uint64_t newest_bits
        cdef MemSeries s
        cdef XORChunk open_chunk
        cdef bytes pack
        cdef const ClosedChunk* records
        cdef const uint8_t* chunk_data
        cdef bint kept_pack
        cdef int64_t start
        cdef list closed = snap.closed
        cdef list labels = snap.labels
        cdef PyObject** found
        cdef PyObject* hit
        cdef Py_ssize_t size, n_found = 0, f
        snap.mint = mint
        snap.maxt = maxt
        snap.chunk_offsets = <Py_ssize_t*>realloc(NULL, (n_refs + 1) * sizeof(Py_ssize_t))
        snap.ooo_offsets = <Py_ssize_t*>realloc(NULL, (n_refs + 1) * sizeof(Py_ssize_t))
        snap.capacity_offsets = <Py_ssize_t*>realloc(NULL, (n_refs + 1) * sizeof(Py_ssize_t))
        if snap.chunk_offsets == NULL or snap.ooo_offsets == NULL or snap.capacity_offsets == NULL:
            raise MemoryError()
        snap.chunk_offsets[0] = 0
        snap.ooo_offsets[0] = 0
        snap.capacity_offsets[0] = 0
        # A dashboard's query finds these objects cold (its caches were emptied since the last refresh):
        # each series is a table slot, the series, its labels, its chunk pack and its open chunk, spread
        # over the heap, and each cold read waits for a page walk and memory. The slots are asked for
        # first, then the series, then (`_prefetch_series`) what they point to, so that those reads overlap.
        # (borrowed references: the table holds the series while the head's lock is held)
        found = <PyObject**>malloc(max(n_refs, 1) * sizeof(PyObject*))
        if found == NULL:
            raise MemoryError()
        try:
            if series_by_ref.used:
                for r in range(n_refs):
                    prefetch(&series_by_ref.slots[series_by_ref.home(ref_view[r])])
                for r in range(n_refs):
                    hit = series_by_ref.find(ref_view[r])
                    if hit != NULL:
                        prefetch(hit)
                        found[n_found] = hit
                        n_found += 1
            _prefetch_series(found, n_found, &max_chunks, &open_bytes)
            if not latest_only:
                # (an instant selection notes few chunks: most series give just their newest sample)
                _grow(<void**>&snap.chunks, &snap.chunks_capacity, max_chunks, sizeof(ChunkRef))
                _grow(<void**>&snap.scratch, &snap.scratch_capacity, open_bytes, 1)
            for f in range(n_found):
                s = <MemSeries>found[f]
                labels.append(s.labels)
                i = n
                n += 1
                open_chunk = s.open
                n_closed = s.num_closed
                # The open chunk, when it has samples, ends with the series' newest (last_t): out-of-order
                # samples are all older.
                newest_only = (latest_only and open_chunk is not None and open_chunk.num > 0
                               and mint <= s.last_t <= maxt)
                # Closed chunks all end before the open one starts, so they matter only when it starts
                # after mint; scanning back from the newest, the first one ending before mint ends the scan.
                if n_closed and (open_chunk is None or open_chunk.num == 0 or s.open_mint > mint):
                    pack = s.closed
                    records = pack_records(pack)
                    chunk_data = pack_data(pack, n_closed)
                    first = n_closed
                    while first > 0 and records[first - 1].maxt >= mint:
                        first -= 1
                    kept_pack = False
                    for k in range(first, n_closed):
                        if records[k].mint > maxt:
                            break
                        start = records[k - 1].end if k else 0
                        size = records[k].end - start
                        noted += 1
                        chunk_bytes += size
                        if newest_only:
                            continue
                        if not kept_pack:
                            closed.append(pack)  # the snapshot points into it
                            kept_pack = True
                        _grow(<void**>&snap.chunks, &snap.chunks_capacity, n_chunks + 1, sizeof(ChunkRef))
                        snap.chunks[n_chunks].data = chunk_data + start
                        snap.chunks[n_chunks].offset = 0
                        snap.chunks[n_chunks].size = size
                        n_chunks += 1
                        if size >= 2:
                            samples += (<Py_ssize_t>chunk_data[start] << 8) | chunk_data[start + 1]
                if newest_only:
                    noted += 1
                    chunk_bytes += open_chunk._length()
                    # the one sample goes where out-of-order samples go: decode() copies it as it is
                    snap._reserve_ooo(n_ooo + 1)
                    newest_bits = s.last_v_bits
                    snap.ooo_t[n_ooo] = s.last_t
                    memcpy(&snap.ooo_v[n_ooo], &newest_bits, 8)
                    n_ooo += 1
                elif open_chunk is not None and open_chunk.num > 0 and s.last_t >= mint and s.open_mint <= maxt:
                    # The chunk's bytes as XORChunk.bytes() gives them: the stored words, then the bits still
                    # in the pending word (which covers every byte the length can reach).
                    used = <Py_ssize_t>(open_chunk.pending_start >> 3)
                    size = open_chunk._length()
                    _grow(<void**>&snap.scratch, &snap.scratch_capacity, snap.scratch_used + used + 8, 1)
                    memcpy(snap.scratch + snap.scratch_used, open_chunk.buf, used)
                    store_be64(snap.scratch + snap.scratch_used + used, open_chunk.pending)
                    _grow(<void**>&snap.chunks, &snap.chunks_capacity, n_chunks + 1, sizeof(ChunkRef))
                    snap.chunks[n_chunks].data = NULL
                    snap.chunks[n_chunks].offset = snap.scratch_used
                    snap.chunks[n_chunks].size = size
                    snap.scratch_used += used + 8
                    n_chunks += 1
                    noted += 1
                    chunk_bytes += size
                    samples += open_chunk.num
                if len(s.ooo_t) and not newest_only:
                    lo = _bisect_left(s.ooo_t, mint)
                    hi = _bisect_right(s.ooo_t, maxt)
                    if hi > lo:
                        snap._reserve_ooo(n_ooo + hi - lo)
                        for k in range(lo, hi):
                            snap.ooo_t[n_ooo] = s.ooo_t[k]
                            snap.ooo_v[n_ooo] = s.ooo_v[k]
                            n_ooo += 1
                snap.chunk_offsets[i + 1] = n_chunks
                snap.ooo_offsets[i + 1] = n_ooo
                snap.capacity_offsets[i + 1] = samples + n_ooo
        finally:
            free(found)
        snap.num_series = n
        snap.num_chunks = noted
        snap.chunk_bytes = chunk_bytes
        return snap

    cdef Py_ssize_t _decode_series(self, Py_ssize_t i, int64_t* out_t, double* out_v,
                                   Py_ssize_t* failed) noexcept nogil:
        """Series i's samples in [mint, maxt], decoded into out_t/out_v from its chunks with its out-of-order
        samples merged in; returns how many. Sets `failed` to the index of a corrupt chunk."""
        cdef HeadView view = self._view()
        return decode_head_series(&view, i, out_t, out_v, failed)

    cdef HeadView _view(self) noexcept nogil:
        cdef HeadView view
        view.chunks = self.chunks
        view.chunk_offsets = self.chunk_offsets
        view.scratch = self.scratch
        view.ooo_t = self.ooo_t
        view.ooo_v = self.ooo_v
        view.ooo_offsets = self.ooo_offsets
        view.capacity_offsets = self.capacity_offsets
        view.mint = self.mint
        view.maxt = self.maxt
        view.num_series = self.num_series
        return view

    cdef Py_ssize_t _decode_into(self, Py_ssize_t first, Py_ssize_t last, int64_t* out_t, double* out_v,
                                 int64_t* out_rows, int64_t* out_offsets, Py_ssize_t* rows_found) noexcept nogil:
        """The decoding loop of decode() over series [first, last), written from out_t/out_v on (rows are
        series indexes, offsets relative to out_t, out_offsets[0] = 0); returns the index of a corrupt
        chunk, or -1."""
        cdef Py_ssize_t i, filled = 0, count, n_rows = 0, failed = -1
        out_offsets[0] = 0
        for i in range(first, last):
            count = self._decode_series(i, out_t + filled, out_v + filled, &failed)
            if failed >= 0:
                break
            if count:
                filled += count
                out_rows[n_rows] = i
                n_rows += 1
                out_offsets[n_rows] = filled
        rows_found[0] = n_rows
        return failed

    cdef Py_ssize_t _decode_against_end(self, Py_ssize_t first, Py_ssize_t last, int64_t* counts) noexcept nogil:
        """Series [first, last) decoded and packed against the end of their room, capacity_offsets[last],
        where the next part starts: the last series first, each decoded at the start of its own room and then
        moved up against those after it while still in cache. counts[i - first] gets series i's count.
        Returns the index of a corrupt chunk, or -1."""
        cdef Py_ssize_t i = last, count, room, end = self.capacity_offsets[last], failed = -1
        while i > first:
            i -= 1
            room = self.capacity_offsets[i]
            count = self._decode_series(i, self.out_t + room, self.out_v + room, &failed)
            if failed >= 0:
                return failed
            # end >= capacity_offsets[i + 1] >= room + count: the move is up, over rooms already done
            end -= count
            if end != room:
                memmove(self.out_t + end, self.out_t + room, count * sizeof(int64_t))
                memmove(self.out_v + end, self.out_v + room, count * sizeof(double))
            counts[i - first] = count
        return -1

    cdef void _decode_part(self, Py_ssize_t p) noexcept nogil:
        cdef Py_ssize_t first = self.part_first[p]
        cdef Py_ssize_t base
        if p == 0:
            # the first part's counts go where its offsets would
            self.part_failed[p] = self._decode_against_end(first, self.part_first[1], self.part_offsets + first)
            return
        base = self.capacity_offsets[first]
        self.part_failed[p] = self._decode_into(first, self.part_first[p + 1], self.out_t + base, self.out_v + base,
                                                self.out_rows + first, self.part_offsets + first + p,
                                                &self.part_rows[p])

    def _run_part(self, Py_ssize_t p):
        """Decode part `p` of a decode() in parts, without the GIL."""
        with nogil:
            self._decode_part(p)

    cdef Py_ssize_t _plan_parts(self, int parts, Py_ssize_t first=0, Py_ssize_t last=-1) except -1:
        """Cut series [first, last) (all by default) into at most `parts` non-empty contiguous parts of about
        equal sample counts."""
        cdef Py_ssize_t p
        if last < 0:
            last = self.num_series
        bounds = cores.split(np.asarray(<Py_ssize_t[:last + 1]>self.capacity_offsets)[first:], parts)
        for p in range(len(bounds)):
            self.part_first[p] = first + bounds[p][0]
        self.part_first[len(bounds)] = last
        return len(bounds)

    cdef Py_ssize_t _decode_in_parts(self, Py_ssize_t n_parts, int64_t* out_offsets, Py_ssize_t* rows_found,
                                     Py_ssize_t* data_start) except -2:
        """Decode the planned parts at once (`cores.run_parts`); returns the index of a corrupt chunk, or -1.

        Each part decodes into its own room, as large as its chunks' sample counts, and the samples outside
        [mint, maxt] leave a gap at the end of the room. The first part packs its samples against the end of
        its room instead, so that they run on into the second's without a gap, and the result starts at
        `data_start`; only the parts after the second are moved down (more than two cores)."""
        cdef Py_ssize_t p, r, i, first, base, count, write = 0, row = 0, start
        cdef int64_t* part_offsets
        cdef int64_t* counts
        cores.run_parts(self._run_part, range(n_parts))
        for p in range(n_parts):
            if self.part_failed[p] >= 0:
                return self.part_failed[p]
        # offsets count from the first part's first sample, which sits as far below the second part's room
        # as the first part has samples
        first, counts = self.part_first[0], self.part_offsets + self.part_first[0]
        for i in range(first, self.part_first[1]):
            if counts[i - first]:
                write += counts[i - first]
                self.out_rows[row] = i
                row += 1
                out_offsets[row] = write
        start = self.capacity_offsets[self.part_first[1]] - write
        for p in range(1, n_parts):
            first = self.part_first[p]
            base = self.capacity_offsets[first]
            part_offsets = self.part_offsets + first + p
            count = part_offsets[self.part_rows[p]]
            # Parts are moved down in order, so a part is moved before anything is written over it.
            if base != start + write:
                memmove(self.out_t + start + write, self.out_t + base, count * sizeof(int64_t))
                memmove(self.out_v + start + write, self.out_v + base, count * sizeof(double))
            if row != first:
                memmove(self.out_rows + row, self.out_rows + first, self.part_rows[p] * sizeof(int64_t))
            for r in range(self.part_rows[p]):
                out_offsets[row + r + 1] = write + part_offsets[r + 1]
            write += count
            row += self.part_rows[p]
        rows_found[0] = row
        data_start[0] = start
        return -1

    cdef Py_ssize_t _longest_series(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        # The most samples one of series [first, last) can hold in the range (at least 1): the room a buffer
        # that decodes them one at a time needs.
        cdef Py_ssize_t i, longest = 1
        for i in range(first, last):
            longest = max(longest, self.capacity_offsets[i + 1] - self.capacity_offsets[i])
        return longest

    cdef Py_ssize_t _evaluate_series_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        """evaluate() over series [first, last): each series decoded into buffers of this call's own, its
        stale markers dropped, and the kernel run over it while its samples are still in cache. Returns the
        index of a corrupt chunk, -1, or -2 when the buffers could not be allocated."""
        cdef Py_ssize_t i, row, count, kept, failed = -1
        cdef Py_ssize_t n_steps = self.grid.n_steps, longest = self._longest_series(first, last)
        cdef int64_t* buf_t
        cdef double* buf_v
        cdef Series series
        cdef Scratch scratch
        buf_t = <int64_t*>malloc(longest * sizeof(int64_t))
        buf_v = <double*>malloc(longest * sizeof(double))
        scratch.values = <double*>malloc(2 * longest * sizeof(double))
        scratch.indexes = <Py_ssize_t*>malloc(longest * sizeof(Py_ssize_t))
        if buf_t == NULL or buf_v == NULL or scratch.values == NULL or scratch.indexes == NULL:
            failed = -2
        else:
            series.ts = buf_t
            series.vals = buf_v
            for i in range(first, last):
                row = self.eval_rows[i]
                if row < 0:
                    continue
                count = self._decode_series(i, buf_t, buf_v, &failed)
                if failed >= 0:
                    break
                kept = drop_stale_markers(buf_t, buf_v, count)
                self.eval_counts[2 * row] = count
                self.eval_counts[2 * row + 1] = kept
                series.n = kept
                evaluate_series(self.fn, &series, &self.grid, &scratch, self.eval_out + row * n_steps,
                                self.eval_present + row * n_steps)
        free(buf_t)
        free(buf_v)
        free(scratch.values)
        free(scratch.indexes)
        return failed

    def _run_evaluate_part(self, Py_ssize_t p):
        """Evaluate part `p` of an evaluate() in parts, without the GIL."""
        with nogil:
            self.part_failed[p] = self._evaluate_series_range(self.part_first[p], self.part_first[p + 1])

    def evaluate(self, str name, eval_ts, long long range_ms, tuple params=(), long long intercept_shift_ms=0,
                 int parts=1, between=None, Py_ssize_t slice_samples=0):
        """The range function `name` over every series, as `rangefn.evaluate_batch` over `decode()`'s batch
        with stale markers removed, without that batch: each series is decoded on its own and evaluated
        at once. (Arguments as evaluate_batch's.)

        Returns (labels, out, present, counts): one row of `out` (float64) and `present` (uint8) per series of
        the snapshot with chunks in the range, in order (one whose samples are all outside the range or stale
        markers has no point present), and `counts`, int64 of shape (rows, 2): each row's samples in the
        range, then those that are not stale markers. With
        `parts` > 1 and at least PARALLEL_MIN_SAMPLES samples, parts of the series run at the same time as in
        decode(). With `slice_samples` > 0 the series go in slices of about that many samples, and
        `between()` is called between two slices (a query's deadline check, which may raise). Raises
        ValueError on a corrupt chunk."""
        cdef tuple keep = prepare_grid(name, eval_ts, range_ms, params, intercept_shift_ms, &self.grid, &self.fn)
        cdef Py_ssize_t n_series = self.num_series, failed = -1, first = 0, last
        # A head holds series long gone (churn) that a selector still matches: they get no row, so that the
        # output is as large as the batch path's.
        with_chunks = np.diff(np.asarray(<Py_ssize_t[:n_series + 1]>self.capacity_offsets)) > 0
        cdef cnp.ndarray rows = np.cumsum(with_chunks, dtype=np.int64) - 1
        rows[~with_chunks] = -1
        cdef Py_ssize_t n_rows = int(np.count_nonzero(with_chunks))
        labels = self.labels
        if n_rows < n_series:
            labels = [labels[i] for i in np.flatnonzero(with_chunks).tolist()]
        cdef cnp.ndarray out = output_rows(None, n_rows, self.grid.n_steps, False)
        cdef cnp.ndarray present = output_rows(None, n_rows, self.grid.n_steps, True)
        cdef cnp.ndarray counts = np.zeros((n_rows, 2), dtype=np.int64)
        if n_rows == 0 or self.grid.n_steps == 0:
            return labels, out, present, counts
        self.eval_out = <double*>cnp.PyArray_DATA(out)
        self.eval_present = <uint8_t*>cnp.PyArray_DATA(present)
        self.eval_counts = <int64_t*>cnp.PyArray_DATA(counts)
        self.eval_rows = <int64_t*>cnp.PyArray_DATA(rows)
        try:
            while first < n_series and failed == -1:
                last = n_series
                if slice_samples > 0:
                    last = first + 1
                    while last < n_series and \
                            self.capacity_offsets[last + 1] - self.capacity_offsets[first] <= slice_samples:
                        last += 1
                failed = self._evaluate_slice(first, last, parts)
                first = last
                if between is not None and first < n_series and failed == -1:
                    between()
        finally:
            self.eval_out, self.eval_present, self.eval_counts, self.eval_rows = NULL, NULL, NULL, NULL
        if failed == -2:
            raise MemoryError()
        if failed >= 0:
            raise ValueError(f"chunk {failed}: corrupt or truncated XOR chunk")
        return labels, out, present, counts

    cdef Py_ssize_t _evaluate_slice(self, Py_ssize_t first, Py_ssize_t last, int parts) except -3:
        # evaluate() over series [first, last): in parts at once when they hold enough samples.
        cdef Py_ssize_t p, n_parts = 1, failed = -1
        cdef Py_ssize_t samples = self.capacity_offsets[last] - self.capacity_offsets[first]
        if parts > 1 and samples >= PARALLEL_MIN_SAMPLES:
            n_parts = self._plan_parts(min(parts, MAX_PARTS), first, last)
        if n_parts > 1:
            cores.run_parts(self._run_evaluate_part, range(n_parts))
            for p in range(n_parts):
                if self.part_failed[p] != -1:
                    return self.part_failed[p]
        elif samples + (last - first) * self.grid.n_steps >= GIL_RELEASE_MIN_WORK:
            with nogil:
                failed = self._evaluate_series_range(first, last)
        else:
            failed = self._evaluate_series_range(first, last)
        return failed

    cdef Py_ssize_t _fold_series(self, SelectFold fold, int64_t* counts) noexcept nogil:
        # fold()'s loop, counting each series' samples: returns the index of a corrupt chunk, -1, or -2 when
        # the buffers could not be allocated.
        cdef Py_ssize_t i, count, longest = self._longest_series(0, self.num_series), failed = -1
        cdef int64_t* buf_t
        cdef double* buf_v
        buf_t = <int64_t*>malloc(longest * sizeof(int64_t))
        buf_v = <double*>malloc(longest * sizeof(double))
        if buf_t == NULL or buf_v == NULL:
            failed = -2
        else:
            for i in range(self.num_series):
                count = self._decode_series(i, buf_t, buf_v, &failed)
                if failed >= 0:
                    break
                counts[i] = count
                if count:
                    fold.add_series(i, buf_t, buf_v, count)
        free(buf_t)
        free(buf_v)
        return failed

    def fold(self, str op, times, long long lookback_ms, tuple grouping, bint without, int parts=1):
        """The aggregation `op by (grouping)` (or `without`) of every series selected at `times` (non-decreasing)
        with `lookback_ms`, as `aggregate.select_fold` gives it over decode()'s batch grouped by
        `aggregate.group_series`, without that batch: each series is decoded into buffers of this call's own
        and folded while its samples are in cache. With `parts` > 1 and at least PARALLEL_MIN_SAMPLES samples
        the series are decoded in parts into a batch instead, and folded after (a fold goes series by series
        in order, which one core does).

        Returns (labels, num_samples, keys, order, result, seen, selected, n_seen): the label sets of the
        series with samples in the range and how many samples they hold, the groups' label sets, and
        select_fold's result. Raises ValueError on a corrupt chunk."""
        cdef cnp.npy_intp dims[1]
        cdef cnp.ndarray counts
        cdef Py_ssize_t failed
        cdef SelectFold folder
        if parts > 1 and self.capacity_offsets[self.num_series] >= PARALLEL_MIN_SAMPLES:
            labels, offsets, ts, vals = self.decode(parts)
            group_ids, keys = group_series(labels, grouping, without)
            return (labels, int(offsets[len(offsets) - 1]), keys,
                    *select_fold(op, ts, vals, offsets, times, lookback_ms, group_ids, len(keys)))
        group_ids, keys = group_series(self.labels, grouping, without)
        folder = SelectFold(op, times, lookback_ms, group_ids, len(keys))
        dims[0] = self.num_series
        counts = cnp.PyArray_ZEROS(1, dims, cnp.NPY_INT64, 0)
        if self.capacity_offsets[self.num_series] + self.num_series * folder.n_steps >= GIL_RELEASE_MIN_WORK:
            with nogil:
                failed = self._fold_series(folder, <int64_t*>cnp.PyArray_DATA(counts))
        else:
            failed = self._fold_series(folder, <int64_t*>cnp.PyArray_DATA(counts))
        if failed == -2:
            raise MemoryError()
        if failed >= 0:
            raise ValueError(f"chunk {failed}: corrupt or truncated XOR chunk")
        # (counted in C: numpy's reductions are a long path to run cold for a few dozen series)
        cdef const int64_t* count_of = <const int64_t*>cnp.PyArray_DATA(counts)
        cdef Py_ssize_t i, num_samples = 0
        cdef list read_labels = []
        for i in range(self.num_series):
            num_samples += count_of[i]
            if count_of[i]:
                read_labels.append(self.labels[i])
        if len(read_labels) == self.num_series:
            read_labels = self.labels
        return (read_labels, num_samples, keys, *folder.finish())

    def decode(self, int parts=1):
        """Decode every series: (labels list, offsets int64, timestamps int64, values float64).

        `labels` are those of the series that have samples in the range, in order; output series r has
        timestamps/values[offsets[r]:offsets[r+1]]. Raises ValueError on a corrupt chunk.

        With `parts` > 1 and at least PARALLEL_MIN_SAMPLES samples, the series are cut into up to `parts`
        contiguous parts of about equal sample counts, decoded at the same time: all but the first in
        `mimird.util.cores`' helper threads. The result is the same.
        """
        cdef cnp.npy_intp dims[1]
        cdef cnp.ndarray timestamps, values, rows, offsets, part_offsets
        cdef int64_t* out_t
        cdef double* out_v
        cdef int64_t* out_rows
        cdef int64_t* out_offsets
        cdef Py_ssize_t i, filled, n_rows = 0, failed, n_parts = 1, start = 0
        cdef Py_ssize_t capacity = self.capacity_offsets[self.num_series]
        dims[0] = capacity
        timestamps = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        values = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        dims[0] = self.num_series
        rows = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        dims[0] = self.num_series + 1
        offsets = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        out_t = <int64_t*>cnp.PyArray_DATA(timestamps)
        out_v = <double*>cnp.PyArray_DATA(values)
        out_rows = <int64_t*>cnp.PyArray_DATA(rows)
        out_offsets = <int64_t*>cnp.PyArray_DATA(offsets)
        out_offsets[0] = 0
        if parts > 1 and capacity >= PARALLEL_MIN_SAMPLES:
            n_parts = self._plan_parts(min(parts, MAX_PARTS))
        if n_parts > 1:
            dims[0] = self.num_series + n_parts
            part_offsets = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
            self.out_t, self.out_v, self.out_rows = out_t, out_v, out_rows
            self.part_offsets = <int64_t*>cnp.PyArray_DATA(part_offsets)
            try:
                failed = self._decode_in_parts(n_parts, out_offsets, &n_rows, &start)
            finally:
                self.out_t, self.out_v, self.out_rows, self.part_offsets = NULL, NULL, NULL, NULL
        elif capacity >= GIL_RELEASE_MIN_WORK:
            with nogil:
                failed = self._decode_into(0, self.num_series, out_t, out_v, out_rows, out_offsets, &n_rows)
        else:
            failed = self._decode_into(0, self.num_series, out_t, out_v, out_rows, out_offsets, &n_rows)
        if failed >= 0:
            raise ValueError(f"chunk {failed}: corrupt or truncated XOR chunk")
        filled = out_offsets[n_rows]
        if n_rows == self.num_series:
            labels = self.labels
        else:
            labels = [self.labels[out_rows[i]] for i in range(n_rows)]
        return labels, offsets[:n_rows + 1], timestamps[start:start + filled], values[start:start + filled]


cdef HeadView head_view(object snapshot) except *:
    return (<HeadSnapshot?>snapshot)._view()


cdef list head_labels(object snapshot):
    return (<HeadSnapshot?>snapshot).labels


cdef Py_ssize_t decode_head_series(const HeadView* view, Py_ssize_t i, int64_t* out_t, double* out_v,
                                   Py_ssize_t* failed) noexcept nogil:
    cdef Py_ssize_t k, filled = 0, count
    cdef const uint8_t* data
    cdef bint past_maxt = False
    for k in range(view.chunk_offsets[i], view.chunk_offsets[i + 1]):
        if past_maxt:
            break
        data = view.chunks[k].data
        if data == NULL:
            data = view.scratch + view.chunks[k].offset
        count = _decode_chunk(data, view.chunks[k].size, view.mint, view.maxt, out_t + filled, out_v + filled,
                              &past_maxt)
        if count < 0:
            failed[0] = k
            return 0
        filled += count
    count = view.ooo_offsets[i + 1] - view.ooo_offsets[i]
    if count:
        filled = _merge_ooo(out_t, out_v, filled, view.ooo_t + view.ooo_offsets[i], view.ooo_v + view.ooo_offsets[i],
                            count)
    return filled


cdef int64_t head_series_start(const HeadView* view, Py_ssize_t i) noexcept nogil:
    cdef int64_t start = INT64_MAX
    cdef Py_ssize_t k = view.chunk_offsets[i], pos
    cdef const uint8_t* data
    cdef uint64_t raw
    if k < view.chunk_offsets[i + 1]:
        data = view.chunks[k].data
        if data == NULL:
            data = view.scratch + view.chunks[k].offset
        # an XOR chunk: a 2-byte sample count, then the first timestamp as a signed varint
        if view.chunks[k].size > 2 and (data[0] or data[1]):
            pos = read_uvarint_at(data, 2, view.chunks[k].size, &raw)
            start = zigzag_decode(raw) if pos >= 0 else view.mint
    if view.ooo_offsets[i + 1] > view.ooo_offsets[i] and view.ooo_t[view.ooo_offsets[i]] < start:
        start = view.ooo_t[view.ooo_offsets[i]]
    if start < view.mint:
        start = view.mint
    return start
