# cython: language_level=3
"""The ingest fast path: samples of already known series go from the decoded request straight into
the head, without a Python object per sample or per series.

A `SeriesCache` belongs to one tenant's head. It maps a 64-bit hash of a series' label bytes (names
and values in order) to the head's `MemSeries`, and only holds series that passed the distributor's
label validation under the limits it records. It is not trusted by itself: a hit is confirmed by
comparing the request's label bytes with the series' own label strings, so a collision or a request
whose labels are not in canonical order (sorted, no empty values) is simply a miss. A label the
request strips (the HA replica label) is left out of both, as the distributor leaves it out.

`plan_fast_append` splits a decoded remote write 1.0 request (`remotewrite.WriteBatch`) into:

* fast series: found in the cache, every sample newer than the series' last one and than the head's
  appendable minimum, inside the tenant's sample time window, no exemplars or histograms, and either
  the series' first copy in the request or one continuing earlier copies that were all fast. Nothing
  in Python needs to see them: the distributor only counts their samples (for the rate limit) and
  `FastPlan.append` appends them into the head.
* slow series: everything else, handed back (request indexes, samples as compact arrays) for the
  Python path that applies Mimir's rules and messages.

Nothing is changed until `FastPlan.append`, so a request refused later (rate limit) stores nothing.
"""
from cpython.long cimport PyLong_AsUnsignedLongLong
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DATA, PyUnicode_GET_LENGTH
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy

cimport cython
cimport numpy as cnp

from mimird._fast.headseries cimport MemSeries

import numpy as np

cnp.import_array()

# Six int64 per label in WriteBatch.label_spans; the name's and the value's offset and length.
cdef enum:
    SPAN_FIELDS = 6
    SPAN_NAME_OFFSET = 2
    SPAN_NAME_LENGTH = 3
    SPAN_VALUE_OFFSET = 4
    SPAN_VALUE_LENGTH = 5
    CACHE_INITIAL_SLOTS = 1024
    PREFETCH_AHEAD = 4


cdef inline uint64_t _load_le64(const uint8_t* p) noexcept nogil:
    cdef uint64_t x
    memcpy(&x, p, 8)
    return x


cdef extern from *:
    """
    #define mimird_fa_prefetch(p) __builtin_prefetch((p), 0, 1)
    """
    void prefetch "mimird_fa_prefetch"(const void* p) noexcept nogil
    bint PyUnicode_IS_COMPACT_ASCII(object text) noexcept


cdef inline uint64_t _hash_bytes(uint64_t h, const uint8_t* p, Py_ssize_t n, const uint8_t* limit) noexcept nogil:
    """Fold n bytes (and their length, so that "ab","c" differs from "a","bc") into h. Bytes up to
    `limit` may be read past the end (and masked off): most label text is shorter than a word."""
    cdef uint64_t word
    h = (h ^ (<uint64_t>n * 0xC2B2AE3D27D4EB4FULL)) * 0x9E3779B97F4A7C15ULL
    while n >= 8:
        word = _load_le64(p)
        h = (h ^ word) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 31
        p += 8
        n -= 8
    if n > 0:
        if p + 8 <= limit:
            word = _load_le64(p) & ((1ULL << (8 * n)) - 1)  # little-endian: the first n bytes
        else:
            word = 0
            memcpy(&word, p, n)
        h = (h ^ word) * 0xC4CEB9FE1A85EC53ULL
        h ^= h >> 29
    return h


cdef inline uint64_t _finish_hash(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    # 0 marks an empty slot
    return h if h != 0 else 1


cdef uint64_t _text_hash(uint64_t h, object text) except? 0:
    cdef Py_ssize_t length
    cdef const char* utf8
    if PyUnicode_IS_COMPACT_ASCII(text):
        length = PyUnicode_GET_LENGTH(text)
        return _hash_bytes(h, <const uint8_t*>PyUnicode_DATA(text), length,
                           <const uint8_t*>PyUnicode_DATA(text) + length)
    utf8 = PyUnicode_AsUTF8AndSize(text, &length)
    return _hash_bytes(h, <const uint8_t*>utf8, length, <const uint8_t*>utf8 + length)


cdef uint64_t _labels_hash(tuple labels) except 0:
    """The hash of a series' label tuple, equal to the hash of the same labels' bytes on the wire."""
    cdef uint64_t h = 0x243F6A8885A308D3ULL
    cdef Py_ssize_t i
    cdef PyObject* pair
    for i in range(PyTuple_GET_SIZE(labels)):
        pair = PyTuple_GET_ITEM(labels, i)
        h = _text_hash(h, <object>PyTuple_GET_ITEM(<object>pair, 0))
        h = _text_hash(h, <object>PyTuple_GET_ITEM(<object>pair, 1))
    return _finish_hash(h)


cdef inline bint _is_dropped(const uint8_t* data, const int64_t* span, const uint8_t* drop,
                             Py_ssize_t drop_length) noexcept nogil:
    return (drop != NULL and span[SPAN_NAME_LENGTH] == drop_length
            and memcmp(data + span[SPAN_NAME_OFFSET], drop, <size_t>drop_length) == 0)


cdef inline uint64_t _wire_hash(const uint8_t* data, const uint8_t* end, const int64_t* spans,
                                Py_ssize_t count, const uint8_t* drop, Py_ssize_t drop_length) noexcept nogil:
    """The hash of a request series' labels (see _labels_hash), leaving out those named `drop`."""
    cdef uint64_t h = 0x243F6A8885A308D3ULL
    cdef Py_ssize_t i
    cdef const int64_t* span
    for i in range(count):
        span = spans + i * SPAN_FIELDS
        if _is_dropped(data, span, drop, drop_length):
            continue
        h = _hash_bytes(h, data + span[SPAN_NAME_OFFSET], span[SPAN_NAME_LENGTH], end)
        h = _hash_bytes(h, data + span[SPAN_VALUE_OFFSET], span[SPAN_VALUE_LENGTH], end)
    return _finish_hash(h)


cdef extern from *:
    """
    #include <Python.h>
    #include <stdint.h>
    #include <string.h>

    /* Whether str `text` is these UTF-8 bytes. ASCII strings (nearly all label text) are compared
       in place; others through their UTF-8 copy, which CPython makes once per string object. */
    static inline int mimird_fa_same_text(PyObject* text, const uint8_t* data, int64_t length) {
        Py_ssize_t size;
        const char* utf8;
        if (PyUnicode_IS_COMPACT_ASCII(text)) {
            return PyUnicode_GET_LENGTH(text) == length && memcmp(PyUnicode_DATA(text), data, (size_t)length) == 0;
        }
        utf8 = PyUnicode_AsUTF8AndSize(text, &size);
        if (utf8 == NULL) {
            PyErr_Clear();
            return 0;
        }
        return size == length && memcmp(utf8, data, (size_t)length) == 0;
    }

    /* Whether the wire labels (six int64 per label, see SPAN_*), without those named `drop` (the
       label this request strips, HA's replica label), are exactly the tuple of (name, value) pairs
       `labels`, in order. Then they are the request's canonical labels for this series. Borrowed
       references only: no reference counting. */
    static int mimird_fa_labels_match(PyObject* labels, const uint8_t* data, const int64_t* spans,
                                      Py_ssize_t count, const uint8_t* drop, Py_ssize_t drop_length) {
        Py_ssize_t i, matched = 0, size = PyTuple_GET_SIZE(labels);
        PyObject* pair;
        const int64_t* span;
        for (i = 0; i < count; i++) {
            span = spans + i * 6;  /* SPAN_FIELDS; name at [2], [3], value at [4], [5] */
            if (drop != NULL && span[3] == drop_length && memcmp(data + span[2], drop, (size_t)drop_length) == 0) {
                continue;
            }
            if (matched == size) {
                return 0;
            }
            pair = PyTuple_GET_ITEM(labels, matched);
            if (!mimird_fa_same_text(PyTuple_GET_ITEM(pair, 0), data + span[2], span[3])
                    || !mimird_fa_same_text(PyTuple_GET_ITEM(pair, 1), data + span[4], span[5])) {
                return 0;
            }
            matched++;
        }
        return matched == size;
    }
    """
    bint labels_match "mimird_fa_labels_match"(PyObject* labels, const uint8_t* data, const int64_t* spans,
                                               Py_ssize_t count, const uint8_t* drop,
                                               Py_ssize_t drop_length) noexcept


cdef struct CacheSlot:
    uint64_t hash          # 0: empty
    PyObject* series       # owned reference to a MemSeries


@cython.final
cdef class SeriesCache:
    """One tenant head's validated series, found by the hash of their label bytes (see the module)."""
    cdef CacheSlot* slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t used
    # What the entries were validated under (the distributor's label-limit fingerprint); set by the
    # distributor, which clears the cache when it changes.
    cdef public object validated_under

    def __cinit__(self):
        self.slots = NULL
        self.mask = -1
        self.used = 0
        self.validated_under = None

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        cdef Py_ssize_t i
        if self.slots != NULL:
            for i in range(self.mask + 1):
                if self.slots[i].series != NULL:
                    Py_DECREF(<object>self.slots[i].series)
            free(self.slots)
        self.slots = NULL
        self.mask = -1
        self.used = 0

    def __len__(self):
        return self.used

    @property
    def memory_bytes(self):
        """Bytes the slot table takes (the series themselves belong to the head)."""
        return (self.mask + 1) * sizeof(CacheSlot)

    def clear(self):
        """Forget every series (the limits they were validated under changed)."""
        self._release()

    cdef CacheSlot* _slot_for(self, uint64_t h, PyObject* series) noexcept:
        """The slot holding `series` under `h`, or the first empty slot of its probe run."""
        cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>self.mask)
        cdef CacheSlot* slot
        while True:
            slot = &self.slots[i]
            if slot.hash == 0 or (slot.hash == h and slot.series == series):
                return slot
            i = (i + 1) & self.mask

    cdef int _grow(self) except -1:
        cdef CacheSlot* old = self.slots
        cdef Py_ssize_t old_size = self.mask + 1
        cdef Py_ssize_t size = old_size * 2 if old_size > 0 else CACHE_INITIAL_SLOTS
        cdef Py_ssize_t i
        cdef CacheSlot* target
        cdef CacheSlot* fresh = <CacheSlot*>calloc(size, sizeof(CacheSlot))
        if fresh == NULL:
            raise MemoryError()
        self.slots = fresh
        self.mask = size - 1
        for i in range(old_size):
            if old[i].hash != 0:
                target = self._slot_for(old[i].hash, old[i].series)
                target[0] = old[i]
        free(old)
        return 0

    def add(self, MemSeries series not None):
        """Remember a series the distributor validated; False if it was there already."""
        return self._add(series)

    cdef bint _add(self, MemSeries series) except -1:
        cdef uint64_t h = _labels_hash(series.labels)
        cdef CacheSlot* slot
        # Up to 4/5 full: hits (nearly all lookups) stay short probes, and the table costs ~20 to 40
        # bytes per series.
        if (self.used + 1) * 5 > (self.mask + 1) * 4:
            self._grow()
        slot = self._slot_for(h, <PyObject*>series)
        if slot.hash != 0:
            return False
        Py_INCREF(series)
        slot.hash = h
        slot.series = <PyObject*>series
        self.used += 1
        return True

    def discard(self, MemSeries series not None):
        """Forget a series (it left the head); False if it was not there."""
        cdef uint64_t h
        cdef CacheSlot* slot
        cdef Py_ssize_t hole, j, home
        if self.used == 0:
            return False
        h = _labels_hash(series.labels)
        slot = self._slot_for(h, <PyObject*>series)
        if slot.hash == 0:
            return False
        slot.hash = 0
        slot.series = NULL
        self.used -= 1
        Py_DECREF(series)
        # Backward-shift deletion: move later entries of the probe run into the hole when their home
        # slot allows it, so that every entry stays reachable from its home without tombstones.
        hole = slot - self.slots
        j = hole
        while True:
            j = (j + 1) & self.mask
            if self.slots[j].hash == 0:
                return True
            home = <Py_ssize_t>(self.slots[j].hash & <uint64_t>self.mask)
            # movable unless its home lies cyclically in (hole, j]
            if (home <= hole or home > j) if hole <= j else (home <= hole and home > j):
                self.slots[hole] = self.slots[j]
                self.slots[j].hash = 0
                self.slots[j].series = NULL
                hole = j

    cdef inline CacheSlot* _home(self, uint64_t h) noexcept:
        return &self.slots[<Py_ssize_t>(h & <uint64_t>self.mask)]

    def add_known(self, dict by_labels not None, series_labels):
        """`add` the series of `by_labels` (labels -> MemSeries) named in `series_labels` (unknown ones
        are skipped)."""
        cdef object found
        for labels in series_labels:
            found = by_labels.get(labels)
            if found is not None:
                self._add(<MemSeries?>found)

    cdef MemSeries _find(self, uint64_t h, const uint8_t* data, const int64_t* spans, Py_ssize_t count,
                         const uint8_t* drop_name, Py_ssize_t drop_length):
        """The series whose wire labels hash to h (see _wire_hash) and match exactly, or None."""
        cdef Py_ssize_t i
        cdef CacheSlot* slot
        if self.used == 0:
            return None
        i = <Py_ssize_t>(h & <uint64_t>self.mask)
        while True:
            slot = &self.slots[i]
            if slot.hash == 0:
                return None
            if slot.hash == h and labels_match(<PyObject*>(<MemSeries>slot.series).labels, data, spans, count,
                                               drop_name, drop_length):
                return <MemSeries>slot.series
            i = (i + 1) & self.mask

    def lookup(self, batch, Py_ssize_t index, drop_name=None):
        """The cached series whose labels are series `index` of a WriteBatch exactly (leaving out labels
        named `drop_name`), or None."""
        cdef const uint8_t[::1] raw = batch.raw
        cdef const int64_t[::1] spans = batch.label_spans
        cdef const int64_t[::1] starts = batch.label_starts
        cdef bytes drop = drop_name.encode() if drop_name is not None else None
        cdef uint8_t empty = 0
        cdef const uint8_t* data = &raw[0] if raw.shape[0] else &empty
        cdef const int64_t* labels = &spans[0] + starts[index] * SPAN_FIELDS if spans.shape[0] else NULL
        cdef Py_ssize_t count = starts[index + 1] - starts[index]
        cdef const uint8_t* drop_bytes = <const uint8_t*><const char*>drop if drop is not None else NULL
        cdef Py_ssize_t drop_length = len(drop) if drop is not None else 0
        return self._find(_wire_hash(data, data + raw.shape[0], labels, count, drop_bytes, drop_length), data,
                          labels, count, drop_bytes, drop_length)


cdef struct Claim:
    PyObject* series      # NULL: empty
    bint fast             # some occurrence is fast
    bint open             # every occurrence so far is fast: the next one may be too
    int64_t last_t        # then: the series' last timestamp once they are appended


cdef inline Py_ssize_t _pointer_slot(PyObject* p, Py_ssize_t mask) noexcept nogil:
    cdef uint64_t h = (<uint64_t><size_t>p >> 4) * 0x9E3779B97F4A7C15ULL
    return <Py_ssize_t>((h >> 20) & <uint64_t>mask)


@cython.final
cdef class FastPlan:
    """The fast and the slow part of one request (see the module); `append` stores the fast part."""
    cdef Py_ssize_t n_fast
    cdef PyObject** series            # owned references, one per fast series
    cdef int64_t* sample_start        # per fast series, its samples in the request's arrays
    cdef int64_t* sample_end
    cdef int64_t* request_index
    cdef uint64_t* hashes             # per request series, its label hash (0: not looked up)
    cdef Claim* claims                # every cache hit of the request (fast or not), by pointer
    cdef Py_ssize_t claims_mask
    cdef cnp.ndarray timestamps
    cdef cnp.ndarray values
    cdef bint appended
    cdef readonly Py_ssize_t fast_samples
    cdef readonly int64_t min_t
    cdef readonly int64_t max_t
    cdef readonly int64_t min_valid
    cdef readonly list slow_indices
    cdef readonly cnp.ndarray slow_offsets
    cdef readonly cnp.ndarray slow_timestamps
    cdef readonly cnp.ndarray slow_values
    # The head's series generation when planned: a head that dropped series since is not appended to.
    cdef public object generation

    def __cinit__(self):
        self.n_fast = 0
        self.series = NULL
        self.sample_start = self.sample_end = self.request_index = NULL
        self.hashes = NULL
        self.claims = NULL
        self.claims_mask = 0
        self.appended = False
        self.fast_samples = 0
        self.min_t = INT64_MAX
        self.max_t = INT64_MIN

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.series != NULL:
            for i in range(self.n_fast):
                Py_DECREF(<object>self.series[i])
        free(self.series)
        free(self.sample_start)
        free(self.sample_end)
        free(self.request_index)
        free(self.hashes)
        free(self.claims)

    @property
    def fast_series_count(self):
        return self.n_fast

    cdef Claim* _claim_slot(self, PyObject* series) noexcept:
        cdef Py_ssize_t i = _pointer_slot(series, self.claims_mask)
        while self.claims[i].series != NULL and self.claims[i].series != series:
            i = (i + 1) & self.claims_mask
        return &self.claims[i]

    def claims_fast(self, MemSeries series not None):
        """Whether `series` is one of the fast series (to catch a series sent twice in a request)."""
        cdef Claim* claim
        if self.claims == NULL:
            return False
        claim = self._claim_slot(<PyObject*>series)
        return claim.series != NULL and claim.fast

    def fast_series(self):
        """(request index, MemSeries, timestamps list, values list) of each fast series, in request order,
        for appending them the slow way instead; the plan is used up (`append` refuses)."""
        cdef Py_ssize_t j
        if self.appended:
            raise RuntimeError("this plan was used already")
        self.appended = True
        out = []
        for j in range(self.n_fast):
            lo, hi = self.sample_start[j], self.sample_end[j]
            out.append((self.request_index[j], <object>self.series[j], self.timestamps[lo:hi].tolist(),
                        self.values[lo:hi].tolist()))
        return out

    def append(self, int64_t block_range):
        """Append the fast series' samples to their MemSeries (the caller holds the head's lock).

        Returns (refs uint64, timestamps int64, values float64) of the appended samples, for the WAL.
        """
        cdef cnp.npy_intp n = self.fast_samples
        cdef cnp.ndarray refs_array = cnp.PyArray_SimpleNew(1, &n, cnp.NPY_UINT64)
        cdef cnp.ndarray ts_array = cnp.PyArray_SimpleNew(1, &n, cnp.NPY_INT64)
        cdef cnp.ndarray vals_array = cnp.PyArray_SimpleNew(1, &n, cnp.NPY_FLOAT64)
        cdef uint64_t* out_refs = <uint64_t*>cnp.PyArray_DATA(refs_array)
        cdef int64_t* out_ts = <int64_t*>cnp.PyArray_DATA(ts_array)
        cdef double* out_vals = <double*>cnp.PyArray_DATA(vals_array)
        cdef const int64_t* ts = <const int64_t*>cnp.PyArray_DATA(self.timestamps)
        cdef const double* vals = <const double*>cnp.PyArray_DATA(self.values)
        cdef Py_ssize_t j, k, out = 0
        cdef MemSeries series
        cdef uint64_t ref
        if self.appended:
            raise RuntimeError("this plan was used already")
        self.appended = True
        for j in range(self.n_fast):
            series = <MemSeries>self.series[j]
            ref = PyLong_AsUnsignedLongLong(series.ref)
            for k in range(self.sample_start[j], self.sample_end[j]):
                series._append(ts[k], vals[k], block_range)
                out_refs[out] = ref
                out_ts[out] = ts[k]
                out_vals[out] = vals[k]
                out += 1
        return refs_array, ts_array, vals_array


def plan_fast_append(SeriesCache cache not None, batch, int64_t min_ms, int64_t max_ms, int64_t min_valid,
                     drop_name=None):
    """Split a remote write 1.0 WriteBatch into fast and slow series (see the module).

    Sample timestamps must lie in [min_ms, max_ms] (the distributor's window) and be at least
    `min_valid` (the head's appendable minimum). `drop_name` is the label this request strips (HA
    replica), or None; it is left out when comparing labels, as the distributor leaves it out.
    """
    cdef const uint8_t[::1] raw = batch.raw
    cdef const int64_t[::1] spans = batch.label_spans
    cdef const int64_t[::1] starts = batch.label_starts
    cdef const int64_t[::1] offsets = batch.sample_offsets
    cdef const uint8_t[::1] extras = batch.series_extras
    cdef cnp.ndarray ts_array = batch.timestamps
    cdef cnp.ndarray vals_array = batch.values
    cdef const int64_t* ts = <const int64_t*>cnp.PyArray_DATA(ts_array)
    cdef const double* vals = <const double*>cnp.PyArray_DATA(vals_array)
    cdef Py_ssize_t n_series = offsets.shape[0] - 1
    cdef Py_ssize_t n_samples = ts_array.shape[0]
    cdef Py_ssize_t i, k, lo, hi, size, n_slow = 0, slow_samples = 0
    cdef bytes drop = drop_name.encode() if drop_name is not None else None
    cdef const uint8_t* drop_bytes = <const uint8_t*><const char*>drop if drop is not None else NULL
    cdef Py_ssize_t drop_length = len(drop) if drop is not None else 0
    cdef uint8_t empty = 0
    cdef const uint8_t* data = &raw[0] if raw.shape[0] else &empty
    cdef const int64_t* span_data = &spans[0] if spans.shape[0] else NULL
    cdef FastPlan plan = FastPlan.__new__(FastPlan)
    cdef MemSeries series
    cdef Claim* claim
    cdef int64_t t, previous, lo_t = 0, hi_t
    cdef bint ok
    cdef cnp.npy_intp dims
    cdef int64_t* slow_offsets
    cdef int64_t* slow_ts
    cdef double* slow_vals
    cdef list slow_indices = []
    cdef uint64_t* hashes
    cdef CacheSlot* ahead

    plan.timestamps = ts_array
    plan.values = vals_array
    plan.min_valid = min_valid
    size = 1
    while size < 2 * n_series + 2:
        size *= 2
    plan.claims = <Claim*>calloc(size, sizeof(Claim))
    plan.claims_mask = size - 1
    plan.series = <PyObject**>calloc(n_series + 1, sizeof(PyObject*))
    plan.sample_start = <int64_t*>calloc(n_series + 1, sizeof(int64_t))
    plan.sample_end = <int64_t*>calloc(n_series + 1, sizeof(int64_t))
    plan.request_index = <int64_t*>calloc(n_series + 1, sizeof(int64_t))
    plan.hashes = hashes = <uint64_t*>calloc(n_series + 1, sizeof(uint64_t))
    if (plan.claims == NULL or plan.series == NULL or plan.sample_start == NULL or plan.sample_end == NULL
            or plan.request_index == NULL or hashes == NULL):
        raise MemoryError()
    dims = n_series + 1
    plan.slow_offsets = cnp.PyArray_SimpleNew(1, &dims, cnp.NPY_INT64)
    dims = n_samples
    plan.slow_timestamps = cnp.PyArray_SimpleNew(1, &dims, cnp.NPY_INT64)
    plan.slow_values = cnp.PyArray_SimpleNew(1, &dims, cnp.NPY_FLOAT64)
    slow_offsets = <int64_t*>cnp.PyArray_DATA(plan.slow_offsets)
    slow_ts = <int64_t*>cnp.PyArray_DATA(plan.slow_timestamps)
    slow_vals = <double*>cnp.PyArray_DATA(plan.slow_values)
    slow_offsets[0] = 0

    # The lookups are random reads in a table and objects much larger than the CPU caches: hash every
    # series first and prefetch its slot, then prefetch each slot's series a few series ahead.
    if cache.used:
        for i in range(n_series):
            if offsets[i + 1] > offsets[i] and not extras[i]:
                hashes[i] = _wire_hash(data, data + raw.shape[0], span_data + starts[i] * SPAN_FIELDS,
                                       starts[i + 1] - starts[i], drop_bytes, drop_length)
                prefetch(cache._home(hashes[i]))
    for i in range(n_series):
        lo = offsets[i]
        hi = offsets[i + 1]
        ok = False
        series = None
        if i + PREFETCH_AHEAD < n_series and hashes[i + PREFETCH_AHEAD]:
            ahead = cache._home(hashes[i + PREFETCH_AHEAD])
            if ahead.series != NULL:
                prefetch(ahead.series)
        if hashes[i]:
            series = cache._find(hashes[i], data, span_data + starts[i] * SPAN_FIELDS, starts[i + 1] - starts[i],
                                 drop_bytes, drop_length)
        if series is not None:
            claim = plan._claim_slot(<PyObject*>series)
            if claim.series == NULL or claim.open:
                # A series sent again in the request continues from its earlier copy, as in order.
                previous = claim.last_t if claim.series != NULL else series.last_t
                claim.series = <PyObject*>series
                claim.open = False
                lo_t = ts[lo]
                # timestamps must rise, so only the first can fall below the lower bounds
                ok = lo_t >= min_ms and lo_t >= min_valid
                for k in range(lo, hi):
                    t = ts[k]
                    if t <= previous or t > max_ms:
                        ok = False
                        break
                    previous = t
                if ok:
                    claim.fast = claim.open = True
                    hi_t = ts[hi - 1]
                    claim.last_t = hi_t
                    Py_INCREF(series)
                    plan.series[plan.n_fast] = <PyObject*>series
                    plan.sample_start[plan.n_fast] = lo
                    plan.sample_end[plan.n_fast] = hi
                    plan.request_index[plan.n_fast] = i
                    plan.n_fast += 1
                    plan.fast_samples += hi - lo
                    if lo_t < plan.min_t:
                        plan.min_t = lo_t
                    if hi_t > plan.max_t:
                        plan.max_t = hi_t
        if not ok:
            slow_indices.append(i)
            memcpy(slow_ts + slow_samples, ts + lo, (hi - lo) * sizeof(int64_t))
            memcpy(slow_vals + slow_samples, vals + lo, (hi - lo) * sizeof(double))
            slow_samples += hi - lo
            n_slow += 1
            slow_offsets[n_slow] = slow_samples
    plan.slow_indices = slow_indices
    plan.slow_offsets = plan.slow_offsets[:n_slow + 1]
    plan.slow_timestamps = plan.slow_timestamps[:slow_samples]
    plan.slow_values = plan.slow_values[:slow_samples]
    return plan
