# cython: language_level=3
"""The head's per-series state and the in-order append loop, in Cython.

A `MemSeries` holds one series' closed XOR chunks (packed in one immutable bytes object), its open
chunk and its out-of-order samples; `SeriesByRef` finds them by ref. `append_in_order` is the ingest
hot loop: it appends every sample that is simply the next one of an existing series and hands back,
untouched, whatever needs a decision (new series, duplicates, out-of-order or too-old samples), which
the Python head then takes with Mimir's rules and messages.
"""
import sys
from bisect import bisect_left, bisect_right

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from mimird._fast.xorchunk cimport XORChunk

cdef int SAMPLES_PER_CHUNK = 120
# As Prometheus, a chunk is cut before an append that could take it past 1 KiB (1024 - 19 bytes).
cdef Py_ssize_t CHUNK_BYTES_CUT = 1024 - 19
cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFF
cdef int64_t INT64_MIN = -0x7FFFFFFFFFFFFFFF - 1


cpdef uint64_t float_bits(double v) noexcept:
    """The IEEE-754 bits of v (NaN payloads kept), to compare sample values exactly."""
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    return bits


cdef bytes _build_pack(object chunks, object mints, object maxts):
    # A new pack holding `chunks` (bytes-like, oldest first) with their bounds.
    cdef Py_ssize_t n = len(chunks), i, data_size = 0, offset = 0
    cdef const uint8_t[::1] chunk
    if len(mints) != n or len(maxts) != n:
        raise ValueError("a series' chunks and chunk bounds differ in number")
    for item in chunks:
        data_size += len(item)
    if n == 0:
        return b""
    cdef bytes pack = PyBytes_FromStringAndSize(NULL, n * sizeof(ClosedChunk) + data_size)
    cdef ClosedChunk* records = <ClosedChunk*>PyBytes_AS_STRING(pack)
    cdef uint8_t* data = <uint8_t*>PyBytes_AS_STRING(pack) + n * sizeof(ClosedChunk)
    for i in range(n):
        chunk = chunks[i]
        if chunk.shape[0]:
            memcpy(data + offset, &chunk[0], chunk.shape[0])
        offset += chunk.shape[0]
        records[i].mint = mints[i]
        records[i].maxt = maxts[i]
        records[i].end = offset
    return pack


cdef class MemSeries:
    """One series in the head: closed chunks (one pack), the open chunk, and out-of-order samples."""

    def __init__(self, ref, tuple labels):
        self.ref = ref
        self.labels = labels
        self.closed = b""
        self.num_closed = 0
        self.open = None
        self.open_mint = INT64_MAX
        self.last_t = INT64_MIN
        self.last_v_bits = 0
        self.ooo_t = ()
        self.ooo_v = ()
        self.cut_at = INT64_MAX

    cdef bytes _closed_bytes(self, Py_ssize_t i):
        # closed chunk i's bytes, copied out of the pack
        cdef const ClosedChunk* records = pack_records(self.closed)
        cdef int64_t start = records[i - 1].end if i else 0
        return PyBytes_FromStringAndSize(<const char*>pack_data(self.closed, self.num_closed) + start,
                                         records[i].end - start)

    @property
    def chunks(self):
        """The closed chunks' bytes, oldest first (copies out of the pack)."""
        return [self._closed_bytes(i) for i in range(self.num_closed)]

    @property
    def chunk_mints(self):
        """The closed chunks' first timestamps, oldest first."""
        cdef const ClosedChunk* records = pack_records(self.closed)
        return [records[i].mint for i in range(self.num_closed)]

    @property
    def chunk_maxts(self):
        """The closed chunks' last timestamps, oldest first."""
        cdef const ClosedChunk* records = pack_records(self.closed)
        return [records[i].maxt for i in range(self.num_closed)]

    def set_closed_chunks(self, chunks, mints, maxts):
        """Replace the closed chunks with `chunks` (bytes-like, oldest first) and their bounds."""
        self.closed = _build_pack(chunks, mints, maxts)
        self.num_closed = len(chunks)

    def drop_closed_before(self, int64_t mint):
        """Drop the closed chunks that end before `mint`; returns how many were dropped."""
        cdef const ClosedChunk* records = pack_records(self.closed)
        cdef Py_ssize_t first = 0, n = self.num_closed, i
        cdef int64_t cut
        cdef bytes pack
        cdef ClosedChunk* kept
        # Chunks are cut in time order, so the ones to drop are the oldest: the new pack is the old one's
        # last records, their ends moved down by the bytes dropped, then the old pack's bytes from there on.
        while first < n and records[first].maxt < mint:
            first += 1
        if first == 0:
            return 0
        cut = records[first - 1].end
        pack = PyBytes_FromStringAndSize(NULL, (n - first) * sizeof(ClosedChunk) + records[n - 1].end - cut)
        kept = <ClosedChunk*>PyBytes_AS_STRING(pack)
        for i in range(n - first):
            kept[i] = records[first + i]
            kept[i].end -= cut
        memcpy(<uint8_t*>(kept + n - first), pack_data(self.closed, n) + cut, records[n - 1].end - cut)
        self.closed = pack if n > first else b""
        self.num_closed = n - first
        return first

    @property
    def min_time(self):
        cdef int64_t lo = INT64_MAX
        if self.num_closed:
            lo = min(lo, pack_records(self.closed)[0].mint)
        if self.open is not None:
            lo = min(lo, self.open_mint)
        if self.ooo_t:
            lo = min(lo, <int64_t>self.ooo_t[0])
        return lo

    cpdef close_open_chunk(self):
        cdef bytes chunk, pack
        cdef Py_ssize_t n = self.num_closed, old_data, size
        cdef ClosedChunk* records
        if self.open is not None and self.open.num > 0:
            chunk = self.open.bytes()
            size = len(chunk)
            old_data = len(self.closed) - n * sizeof(ClosedChunk)
            # The new pack: the old records and this chunk's, then the old chunks' bytes and this one's.
            pack = PyBytes_FromStringAndSize(NULL, (n + 1) * sizeof(ClosedChunk) + old_data + size)
            records = <ClosedChunk*>PyBytes_AS_STRING(pack)
            if n:
                memcpy(records, pack_records(self.closed), n * sizeof(ClosedChunk))
                memcpy(records + n + 1, pack_data(self.closed, n), old_data)
            memcpy(<uint8_t*>(records + n + 1) + old_data, PyBytes_AS_STRING(chunk), size)
            records[n].mint = self.open_mint
            records[n].maxt = self.last_t
            records[n].end = old_data + size
            self.closed = pack
            self.num_closed = n + 1
        self.open = None
        self.open_mint = INT64_MAX

    cdef int _append(self, int64_t t, double v, int64_t block_range) except -1:
        cdef XORChunk chunk = self.open
        if (chunk is None or chunk.num >= SAMPLES_PER_CHUNK or t >= self.cut_at
                or chunk._length() > CHUNK_BYTES_CUT):
            self.close_open_chunk()
            chunk = self.open = XORChunk()
            self.open_mint = t
            self.cut_at = (t // block_range + 1) * block_range if t >= 0 else (
                -((-t - 1) // block_range)) * block_range
        chunk._append(t, float_bits(v))
        self.last_t = t
        self.last_v_bits = float_bits(v)
        return 0

    def append(self, int64_t t, double v, int64_t block_range):
        """Append an in-order sample (t > last_t), cutting chunks at 120 samples, 1 KiB and block ends."""
        self._append(t, v, block_range)

    def insert_ooo(self, int64_t t, double v):
        """Keep an out-of-order sample; False if one with the same timestamp exists already."""
        index = bisect_left(self.ooo_t, t)
        if index < len(self.ooo_t) and self.ooo_t[index] == t:
            return False
        if type(self.ooo_t) is not list:
            self.ooo_t, self.ooo_v = [], []
        self.ooo_t.insert(index, t)
        self.ooo_v.insert(index, v)
        return True

    def snapshot(self, int64_t mint, int64_t maxt):
        """The chunks overlapping [mint, maxt] (the open one copied) and the OOO samples in range."""
        cdef const ClosedChunk* records = pack_records(self.closed)
        cdef list chunks = [self._closed_bytes(i) for i in range(self.num_closed)
                            if records[i].maxt >= mint and records[i].mint <= maxt]
        if self.open is not None and self.open.num > 0 and self.last_t >= mint and self.open_mint <= maxt:
            chunks.append(self.open.bytes())
        lo = bisect_left(self.ooo_t, mint)
        hi = bisect_right(self.ooo_t, maxt)
        return chunks, self.ooo_t[lo:hi], self.ooo_v[lo:hi]


cdef enum:
    REF_TABLE_INITIAL_SLOTS = 64


cdef class SeriesByRef:
    """The head's series by ref, a mapping (ref -> MemSeries) in an open-addressing table.

    A query looks up each series it selected, cold. A dict lookup of an int is three dependent cache
    misses (its index slot, its entry, the stored key object) and builds an int object first; here a
    ref's slot is computed from the ref and holds the series pointer, so `HeadSnapshot.take` asks for
    all the slots at once and then reads them. Iteration order is the table's, not insertion order.
    """

    def __cinit__(self):
        self.slots = NULL
        self.mask = -1
        self.shift = 64
        self.used = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.slots != NULL:
            for i in range(self.mask + 1):
                if self.slots[i].series != NULL:
                    Py_DECREF(<object>self.slots[i].series)
            free(self.slots)

    cdef Py_ssize_t home(self, uint64_t ref) noexcept nogil:
        # Fibonacci hashing: the top bits of ref times 2^64/phi spread consecutive refs over the table.
        return <Py_ssize_t>((ref * <uint64_t>0x9E3779B97F4A7C15) >> self.shift)

    cdef PyObject* find(self, uint64_t ref) noexcept nogil:
        """The series with `ref` (a borrowed reference), or NULL."""
        cdef Py_ssize_t i
        if self.used == 0:
            return NULL
        i = self.home(ref)
        while self.slots[i].series != NULL:
            if self.slots[i].ref == ref:
                return self.slots[i].series
            i = (i + 1) & self.mask
        return NULL

    cdef RefSlot* _slot_for(self, uint64_t ref) noexcept:
        # the slot holding ref, or the empty slot ending its probe run
        cdef Py_ssize_t i = self.home(ref)
        while self.slots[i].series != NULL and self.slots[i].ref != ref:
            i = (i + 1) & self.mask
        return &self.slots[i]

    cdef int _grow(self) except -1:
        cdef RefSlot* old = self.slots
        cdef Py_ssize_t old_size = self.mask + 1, i
        cdef Py_ssize_t size = old_size * 2 if old_size > 0 else REF_TABLE_INITIAL_SLOTS
        cdef RefSlot* fresh = <RefSlot*>calloc(size, sizeof(RefSlot))
        if fresh == NULL:
            raise MemoryError()
        self.slots = fresh
        self.mask = size - 1
        self.shift = 64
        while (<Py_ssize_t>1 << (64 - self.shift)) < size:
            self.shift -= 1
        for i in range(old_size):
            if old[i].series != NULL:
                self._slot_for(old[i].ref)[0] = old[i]
        free(old)
        return 0

    def __len__(self):
        return self.used

    def __contains__(self, ref):
        return self.find(ref) != NULL

    def __getitem__(self, ref):
        cdef PyObject* found = self.find(ref)
        if found == NULL:
            raise KeyError(ref)
        return <object>found

    def get(self, ref, default=None):
        """The series with `ref`, or `default`."""
        cdef PyObject* found = self.find(ref)
        return default if found == NULL else <object>found

    def __setitem__(self, ref, MemSeries series not None):
        cdef RefSlot* slot
        # At most half full: a miss (a ref just removed) ends its probe within a slot or two.
        if (self.used + 1) * 2 > self.mask + 1:
            self._grow()
        slot = self._slot_for(ref)
        Py_INCREF(series)
        if slot.series != NULL:
            Py_DECREF(<object>slot.series)
        else:
            self.used += 1
        slot.ref = ref
        slot.series = <PyObject*>series

    def __delitem__(self, ref):
        self.pop(ref)

    def pop(self, ref, *default):
        """Remove the series with `ref` and return it (or `default`, or raise KeyError)."""
        cdef RefSlot* slot
        cdef Py_ssize_t hole, j, slot_home
        if self.used == 0 or self._slot_for(ref).series == NULL:
            if default:
                return default[0]
            raise KeyError(ref)
        slot = self._slot_for(ref)
        found = <object>slot.series
        Py_DECREF(found)  # the table's reference; `found` holds its own
        slot.series = NULL
        self.used -= 1
        # Backward-shift deletion: later entries of the probe run move into the hole when their home
        # allows, so that every entry stays reachable from its home without tombstones.
        hole = slot - self.slots
        j = hole
        while True:
            j = (j + 1) & self.mask
            if self.slots[j].series == NULL:
                return found
            slot_home = self.home(self.slots[j].ref)
            # movable unless its home lies cyclically in (hole, j]
            if (slot_home <= hole or slot_home > j) if hole <= j else (slot_home <= hole and slot_home > j):
                self.slots[hole] = self.slots[j]
                self.slots[j].series = NULL
                hole = j

    def items(self):
        """(ref, series) pairs, a list in table order."""
        cdef Py_ssize_t i
        return [(self.slots[i].ref, <object>self.slots[i].series) for i in range(self.mask + 1)
                if self.slots[i].series != NULL]

    def keys(self):
        """The refs, a list in table order."""
        cdef Py_ssize_t i
        return [self.slots[i].ref for i in range(self.mask + 1) if self.slots[i].series != NULL]

    def values(self):
        """The series, a list in table order."""
        cdef Py_ssize_t i
        return [<object>self.slots[i].series for i in range(self.mask + 1) if self.slots[i].series != NULL]

    def __iter__(self):
        return iter(self.keys())

    @property
    def memory_bytes(self):
        """Bytes the slot table takes (the series themselves are counted apart)."""
        return (self.mask + 1) * sizeof(RefSlot)


def append_in_order(dict by_labels, list series_labels, list offsets, list timestamps, list values,
                    int64_t min_valid, int64_t block_range, list out_refs, list out_ts, list out_vs):
    """Append the samples that are plainly the next of an existing series.

    Series i's samples are timestamps/values[offsets[i]:offsets[i+1]]. Accepted samples are recorded
    in out_refs/out_ts/out_vs. Returns (deferred, min_t, max_t): `deferred` lists (series index, first
    sample index) for the new series and the rest of any series whose next sample needs a decision;
    min_t/max_t span the accepted samples.
    """
    cdef Py_ssize_t i, k, start, end, n = len(series_labels)
    cdef int64_t t, min_t = INT64_MAX, max_t = INT64_MIN
    cdef double v
    cdef MemSeries series
    cdef list deferred = []
    cdef object found
    for i in range(n):
        start = offsets[i]
        end = offsets[i + 1]
        if start == end:
            continue
        found = by_labels.get(series_labels[i])
        if found is None:
            deferred.append((i, start))
            continue
        series = <MemSeries>found
        for k in range(start, end):
            t = timestamps[k]
            if t <= series.last_t or t < min_valid:
                deferred.append((i, k))
                break
            v = values[k]
            series._append(t, v, block_range)
            out_refs.append(series.ref)
            out_ts.append(t)
            out_vs.append(v)
            if t < min_t:
                min_t = t
            if t > max_t:
                max_t = t
    return deferred, min_t, max_t


def shared_labels(dict pairs, tuple labels):
    """`labels` rebuilt from the head's shared (name, value) pairs, adding (interned) new ones to `pairs`.

    A request's strings are its own objects; without this "__name__" or ("job", "node") would be
    stored once per series.
    """
    cdef Py_ssize_t i, n = len(labels)
    cdef list shared = [None] * n
    cdef object pair, kept
    for i in range(n):
        pair = labels[i]
        kept = pairs.get(pair)
        if kept is None:
            kept = (sys.intern(pair[0]), sys.intern(pair[1]))
            pairs[kept] = kept
        shared[i] = kept
    return tuple(shared)
