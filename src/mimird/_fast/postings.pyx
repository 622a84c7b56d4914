# cython: language_level=3
"""Postings kernels: set algebra over sorted, duplicate-free uint64 arrays of series refs.

A postings list is what the inverted index keeps per (label name, label value): the refs of the series that
carry that pair, in increasing order. Selecting series for a PromQL selector is intersections, unions and
differences of such lists (Prometheus's index.Intersect, index.Merge and index.Without); these run here in
nogil loops over typed memoryviews, never touching a Python object per element.

Results may be one of the inputs, unchanged; treat every returned array as read-only.

This module also owns the 64-bit xxHash (XXH64) that keys series by their label set, because Prometheus
hashes labels with it (labels.Labels.Hash) and we want the same numbers.
"""
from cpython.list cimport PyList_GET_ITEM
from cpython.unicode cimport PyUnicode_Check, PyUnicode_Compare
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import numpy as np

cimport numpy as cnp

cnp.import_array()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL


# A gallop (binary search) beats a linear merge once one side is this many times longer than the other.
cdef enum:
    GALLOP_RATIO = 32


cdef inline Py_ssize_t lower_bound(const uint64_t* values, Py_ssize_t lo, Py_ssize_t hi,
                                   uint64_t target) noexcept nogil:
    """First index in [lo, hi) whose value is >= target (hi if none)."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if values[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t gallop(const uint64_t* values, Py_ssize_t lo, Py_ssize_t n,
                              uint64_t target) noexcept nogil:
    """First index >= lo whose value is >= target, probing 1, 2, 4, ... ahead before a binary search.

    Cheap when the answer is close to lo, which it is when walking a long list in step with a short one.
    """
    cdef Py_ssize_t step = 1
    cdef Py_ssize_t hi = lo
    while hi < n and values[hi] < target:
        lo = hi + 1
        hi += step
        step <<= 1
    if hi > n:
        hi = n
    return lower_bound(values, lo, hi, target)


cdef Py_ssize_t intersect_into(const uint64_t* a, Py_ssize_t na, const uint64_t* b, Py_ssize_t nb,
                               uint64_t* out) noexcept nogil:
    """Write the intersection of a and b (both sorted) to out; return its length. `out` may alias `a`."""
    cdef Py_ssize_t i = 0, j = 0, n = 0
    cdef const uint64_t* tmp
    if na > nb:
        # Walk the shorter list; the aliasing of `out` with `a` stays safe because n <= i always.
        tmp = a; a = b; b = tmp
        i = na; na = nb; nb = i
        i = 0
    if nb > GALLOP_RATIO * na:
        while i < na and j < nb:
            j = gallop(b, j, nb, a[i])
            if j < nb and b[j] == a[i]:
                out[n] = a[i]
                n += 1
                j += 1
            i += 1
        return n
    while i < na and j < nb:
        if a[i] < b[j]:
            i += 1
        elif a[i] > b[j]:
            j += 1
        else:
            out[n] = a[i]
            n += 1
            i += 1
            j += 1
    return n


cdef Py_ssize_t subtract_into(const uint64_t* a, Py_ssize_t na, const uint64_t* b, Py_ssize_t nb,
                              uint64_t* out) noexcept nogil:
    """Write the elements of a that are not in b to out; return the count."""
    cdef Py_ssize_t i = 0, j = 0, n = 0
    cdef bint gallop_b = nb > GALLOP_RATIO * na
    while i < na:
        if j < nb and b[j] < a[i]:
            j = gallop(b, j, nb, a[i]) if gallop_b else j + 1
            continue
        if j < nb and b[j] == a[i]:
            j += 1
        else:
            out[n] = a[i]
            n += 1
        i += 1
    return n


cdef Py_ssize_t merge_two_into(const uint64_t* a, Py_ssize_t na, const uint64_t* b, Py_ssize_t nb,
                               uint64_t* out) noexcept nogil:
    """Write the union of a and b, without duplicates, to out; return its length."""
    cdef Py_ssize_t i = 0, j = 0, n = 0
    while i < na and j < nb:
        if a[i] < b[j]:
            out[n] = a[i]
            i += 1
        elif a[i] > b[j]:
            out[n] = b[j]
            j += 1
        else:
            out[n] = a[i]
            i += 1
            j += 1
        n += 1
    while i < na:
        out[n] = a[i]
        n += 1
        i += 1
    while j < nb:
        out[n] = b[j]
        n += 1
        j += 1
    return n


cdef inline void sift_down(uint64_t* heap_values, Py_ssize_t* heap_lists, Py_ssize_t size,
                           Py_ssize_t pos) noexcept nogil:
    """Restore the min-heap property below `pos` (heap ordered by value)."""
    cdef Py_ssize_t child
    cdef uint64_t value = heap_values[pos]
    cdef Py_ssize_t list_index = heap_lists[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and heap_values[child + 1] < heap_values[child]:
            child += 1
        if heap_values[child] >= value:
            break
        heap_values[pos] = heap_values[child]
        heap_lists[pos] = heap_lists[child]
        pos = child
    heap_values[pos] = value
    heap_lists[pos] = list_index


cdef Py_ssize_t merge_k_into(const uint64_t** lists, Py_ssize_t* lengths, Py_ssize_t k,
                             uint64_t* out, uint64_t* heap_values, Py_ssize_t* heap_lists,
                             Py_ssize_t* cursors) noexcept nogil:
    """K-way merge of sorted lists through a min-heap of their heads; duplicates are written once."""
    cdef Py_ssize_t size = 0, i, n = 0, list_index
    cdef uint64_t value
    for i in range(k):
        cursors[i] = 0
        if lengths[i] > 0:
            heap_values[size] = lists[i][0]
            heap_lists[size] = i
            size += 1
    i = size // 2
    while i > 0:
        i -= 1
        sift_down(heap_values, heap_lists, size, i)
    while size > 0:
        value = heap_values[0]
        list_index = heap_lists[0]
        if n == 0 or out[n - 1] != value:
            out[n] = value
            n += 1
        cursors[list_index] += 1
        if cursors[list_index] < lengths[list_index]:
            heap_values[0] = lists[list_index][cursors[list_index]]
        else:
            size -= 1
            heap_values[0] = heap_values[size]
            heap_lists[0] = heap_lists[size]
        if size > 0:
            sift_down(heap_values, heap_lists, size, 0)
    return n


cdef object new_postings(Py_ssize_t n):
    return np.empty(n, dtype=np.uint64)


cdef object trimmed(object out, Py_ssize_t n):
    """out[:n], copied when that frees most of the buffer (results can outlive the query that made them)."""
    if n == out.shape[0]:
        return out
    if n < out.shape[0] // 2:
        return out[:n].copy()
    return out[:n]


cdef inline const uint64_t* data_of(const uint64_t[::1] values) noexcept nogil:
    # A pointer to element 0 is undefined for an empty view; empty lists are never dereferenced anyway.
    if values.shape[0] == 0:
        return NULL
    return &values[0]


def intersect(const uint64_t[::1] a not None, const uint64_t[::1] b not None):
    """Refs present in both sorted postings lists `a` and `b`."""
    cdef Py_ssize_t na = a.shape[0], nb = b.shape[0], n
    out = new_postings(min(na, nb))
    cdef uint64_t[::1] out_view = out
    if out_view.shape[0] == 0:
        return out
    with nogil:
        n = intersect_into(&a[0], na, &b[0], nb, &out_view[0])
    return trimmed(out, n)


def intersect_many(postings_lists):
    """Refs present in every list of `postings_lists` (a non-empty sequence of sorted uint64 arrays).

    Starts from the shortest list, so the working set only shrinks, and stops early once it is empty.
    """
    cdef list ordered = sorted(postings_lists, key=len)
    cdef const uint64_t[::1] first, other
    cdef uint64_t[::1] work
    cdef Py_ssize_t n, i
    if not ordered:
        raise ValueError("intersect_many needs at least one postings list")
    if len(ordered) == 1:
        return ordered[0]
    first = ordered[0]
    n = first.shape[0]
    result = new_postings(n)
    if n == 0:
        return result
    work = result
    # The first step reads the shortest input and writes the result; later steps shrink it in place.
    other = ordered[1]
    if other.shape[0] == 0:
        return trimmed(result, 0)
    with nogil:
        n = intersect_into(&first[0], n, &other[0], other.shape[0], &work[0])
    for i in range(2, len(ordered)):
        if n == 0:
            break
        other = ordered[i]
        if other.shape[0] == 0:
            n = 0
            break
        with nogil:
            n = intersect_into(&work[0], n, &other[0], other.shape[0], &work[0])
    return trimmed(result, n)


def union_many(postings_lists):
    """Refs present in any list of `postings_lists` (sorted uint64 arrays), sorted and without duplicates."""
    cdef list arrays = [p for p in postings_lists if len(p) > 0]
    cdef Py_ssize_t k = len(arrays), total = 0, i, n
    cdef const uint64_t[::1] first, second, view
    cdef uint64_t[::1] out_view
    if k == 0:
        return new_postings(0)
    if k == 1:
        return arrays[0]
    for p in arrays:
        total += len(p)
    out = new_postings(total)
    out_view = out
    if k == 2:
        first = arrays[0]
        second = arrays[1]
        with nogil:
            n = merge_two_into(&first[0], first.shape[0], &second[0], second.shape[0], &out_view[0])
        return trimmed(out, n)

    cdef const uint64_t** lists = <const uint64_t**>malloc(k * sizeof(uint64_t*))
    cdef Py_ssize_t* lengths = <Py_ssize_t*>malloc(k * sizeof(Py_ssize_t))
    cdef Py_ssize_t* cursors = <Py_ssize_t*>malloc(k * sizeof(Py_ssize_t))
    cdef Py_ssize_t* heap_lists = <Py_ssize_t*>malloc(k * sizeof(Py_ssize_t))
    cdef uint64_t* heap_values = <uint64_t*>malloc(k * sizeof(uint64_t))
    # The memoryviews keep the buffers alive and typed while the raw pointers are in use.
    views = []
    try:
        if not (lists and lengths and cursors and heap_lists and heap_values):
            raise MemoryError()
        for i in range(k):
            view = arrays[i]
            views.append(view)
            lists[i] = &view[0]
            lengths[i] = view.shape[0]
        with nogil:
            n = merge_k_into(lists, lengths, k, &out_view[0], heap_values, heap_lists, cursors)
    finally:
        free(lists)
        free(lengths)
        free(cursors)
        free(heap_lists)
        free(heap_values)
    return trimmed(out, n)


def subtract(const uint64_t[::1] a not None, const uint64_t[::1] b not None):
    """Refs of sorted list `a` that are not in sorted list `b`."""
    cdef Py_ssize_t na = a.shape[0], nb = b.shape[0], n
    if na == 0 or nb == 0:
        return np.asarray(a)
    out = new_postings(na)
    cdef uint64_t[::1] out_view = out
    with nogil:
        n = subtract_into(&a[0], na, &b[0], nb, &out_view[0])
    return trimmed(out, n)


def is_sorted_unique(const uint64_t[::1] values not None):
    """True when `values` is strictly increasing, the invariant of every postings list."""
    cdef Py_ssize_t i
    cdef bint ok = True
    with nogil:
        for i in range(1, values.shape[0]):
            if values[i - 1] >= values[i]:
                ok = False
                break
    return ok


cdef class PostingsBuilder:
    """A postings list that grows by appending refs in increasing order, as the head creates series.

    The buffer doubles when full, so appends are amortised O(1). `view()` is a read-only snapshot: later
    appends only write past its end, and `remove` builds a new buffer, so a query holding a view is never
    disturbed by ingestion.
    """

    def __cinit__(self, Py_ssize_t capacity=2):
        self._buffer = new_postings(max(capacity, 1))
        self._size = 0

    def append(self, uint64_t ref):
        """Add `ref`, which must be greater than every ref already in the list."""
        cdef uint64_t[::1] buffer = self._buffer
        if self._size > 0 and buffer[self._size - 1] >= ref:
            raise ValueError(f"postings ref {ref} is not greater than the last ref {buffer[self._size - 1]}")
        if self._size == buffer.shape[0]:
            self._grow(self._size + 1)
            buffer = self._buffer
        buffer[self._size] = ref
        self._size += 1

    def extend(self, const uint64_t[::1] refs not None):
        """Append the sorted, duplicate-free `refs`, all greater than the current last ref."""
        cdef Py_ssize_t n = refs.shape[0]
        cdef uint64_t[::1] buffer
        if n == 0:
            return
        if not is_sorted_unique(refs):
            raise ValueError("postings refs must be strictly increasing")
        buffer = self._buffer
        if self._size > 0 and buffer[self._size - 1] >= refs[0]:
            raise ValueError(f"postings ref {refs[0]} is not greater than the last ref {buffer[self._size - 1]}")
        if self._size + n > buffer.shape[0]:
            self._grow(self._size + n)
            buffer = self._buffer
        memcpy(&buffer[self._size], &refs[0], n * sizeof(uint64_t))
        self._size += n

    def remove(self, const uint64_t[::1] refs not None):
        """Drop the sorted `refs` from the list (into a fresh, tightly sized buffer); return how many went."""
        cdef Py_ssize_t before = self._size
        if before == 0 or refs.shape[0] == 0:
            return 0
        kept = subtract(self.view(), refs)
        if kept.shape[0] == before:
            return 0
        self._buffer = np.array(kept, dtype=np.uint64, copy=True)
        if self._buffer.shape[0] == 0:
            self._buffer = new_postings(1)
        self._size = kept.shape[0]
        return before - self._size

    def view(self):
        """The refs so far, as a read-only uint64 array that later appends leave unchanged."""
        snapshot = self._buffer[:self._size]
        snapshot.flags.writeable = False
        return snapshot

    @property
    def last(self):
        """The greatest ref in the list, or None when it is empty."""
        if self._size == 0:
            return None
        return int(self._buffer[self._size - 1])

    @property
    def nbytes(self):
        """Bytes held by the buffer, including unused capacity."""
        return self._buffer.nbytes

    def __len__(self):
        return self._size

    def __repr__(self):
        return f"PostingsBuilder(len={self._size}, capacity={self._buffer.shape[0]})"

    cdef _grow(self, Py_ssize_t needed):
        cdef Py_ssize_t capacity = self._buffer.shape[0] * 2
        while capacity < needed:
            capacity *= 2
        grown = new_postings(capacity)
        grown[:self._size] = self._buffer[:self._size]
        self._buffer = grown


cdef int _compare_label_sets(const int64_t* offsets, const uint32_t* pairs, int64_t a, int64_t b,
                             list symbols) except? -2:
    """-1, 0 or 1 as the label set in slot a sorts before, equal to or after that in slot b."""
    cdef Py_ssize_t pa = 2 * offsets[a], ea = 2 * offsets[a + 1]
    cdef Py_ssize_t pb = 2 * offsets[b], eb = 2 * offsets[b + 1]
    cdef uint32_t ia, ib
    cdef int c
    while pa < ea and pb < eb:
        ia = pairs[pa]
        ib = pairs[pb]
        if ia != ib:
            c = PyUnicode_Compare(<object>PyList_GET_ITEM(symbols, ia), <object>PyList_GET_ITEM(symbols, ib))
            if c != 0:
                return c
        pa += 1
        pb += 1
    if pa < ea:
        return 1
    if pb < eb:
        return -1
    return 0

cdef int _sort_slots_by_labels(const int64_t* offsets, const uint32_t* pairs, int64_t* items, int64_t* scratch,
                               Py_ssize_t n, list symbols) except -1:
    """Sort `items` (slots of a SeriesLabelStore) in place by label set, bottom-up, using `scratch` (n items) alongside."""
    cdef Py_ssize_t i, j, k, width, lo, mid, hi
    cdef int64_t item
    cdef int64_t* src = items
    cdef int64_t* dst = scratch
    cdef int64_t* swap
    # Runs of up to 8 by insertion sort, then merges of doubling width.
    for lo in range(0, n, 8):
        hi = min(lo + 8, n)
        for i in range(lo + 1, hi):
            item = items[i]
            j = i
            while j > lo and _compare_label_sets(offsets, pairs, items[j - 1], item, symbols) > 0:
                items[j] = items[j - 1]
                j -= 1
            items[j] = item
    width = 8
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if _compare_label_sets(offsets, pairs, src[j], src[i], symbols) < 0:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
        swap = src
        src = dst
        dst = swap
        width *= 2
    if src != items:
        memcpy(items, src, n * sizeof(int64_t))
    return 0


cdef class SeriesLabelStore:
    """The label sets of series, as (name id, value id) symbol pairs in flat numpy buffers, by slot.

    Slot i holds series ref `refs()[i]` (refs increase with the slot) and the pairs
    `pairs()[2 * offsets()[i] : 2 * offsets()[i + 1]]`. Strings live once in the caller's symbol table (a
    list indexed by id), so a series costs 8 bytes per label plus 16, not a Python tuple of tuples.
    The arrays `refs()`, `offsets()` and `pairs()` return are read-only views; appends never change what
    a view already shows, and `replace` swaps in new buffers.
    """

    def __cinit__(self, Py_ssize_t capacity=1024):
        self._count = 0
        self._pairs_used = 0
        self._set_buffers(np.empty(max(capacity, 1), dtype=np.uint64),
                          np.zeros(max(capacity, 1) + 1, dtype=np.int64),
                          np.empty(8 * max(capacity, 1), dtype=np.uint32))

    cdef _set_buffers(self, refs, offsets, pairs):
        cdef uint64_t[::1] refs_view = refs
        cdef int64_t[::1] offsets_view = offsets
        cdef uint32_t[::1] pairs_view = pairs
        self._refs = refs
        self._offsets = offsets
        self._pairs = pairs
        self._refs_data = &refs_view[0]
        self._offsets_data = &offsets_view[0]
        self._pairs_data = &pairs_view[0]
        self._capacity = refs_view.shape[0]
        self._pairs_capacity = pairs_view.shape[0]

    def append(self, uint64_t ref, list pair_ids not None):
        """Store a series: `ref` (greater than every stored ref) and its flat [name id, value id, ...] list."""
        cdef Py_ssize_t n = len(pair_ids), i
        if n % 2:
            raise ValueError("pair_ids must hold (name id, value id) pairs")
        if self._count > 0 and self._refs_data[self._count - 1] >= ref:
            raise ValueError(f"series ref {ref} is not greater than the last ref")
        if self._count == self._capacity or self._pairs_used + n > self._pairs_capacity:
            self._grow(n)
        for i in range(n):
            self._pairs_data[self._pairs_used + i] = <uint32_t>pair_ids[i]
        self._pairs_used += n
        self._refs_data[self._count] = ref
        self._count += 1
        self._offsets_data[self._count] = self._pairs_used // 2

    cdef _grow(self, Py_ssize_t extra_pairs):
        cdef Py_ssize_t capacity = self._capacity * 2 if self._count == self._capacity else self._capacity
        cdef Py_ssize_t pairs_capacity = self._pairs_capacity
        while pairs_capacity < self._pairs_used + extra_pairs:
            pairs_capacity *= 2
        refs = np.empty(capacity, dtype=np.uint64)
        offsets = np.zeros(capacity + 1, dtype=np.int64)
        pairs = np.empty(pairs_capacity, dtype=np.uint32)
        refs[:self._count] = self._refs[:self._count]
        offsets[:self._count + 1] = self._offsets[:self._count + 1]
        pairs[:self._pairs_used] = self._pairs[:self._pairs_used]
        self._set_buffers(refs, offsets, pairs)

    def find(self, uint64_t ref):
        """The slot of series `ref`, or -1 when the store does not hold it."""
        cdef Py_ssize_t slot
        if self._count == 0:
            return -1
        slot = lower_bound(self._refs_data, 0, self._count, ref)
        if slot < self._count and self._refs_data[slot] == ref:
            return slot
        return -1

    def labels(self, Py_ssize_t slot, list symbols not None):
        """The label set in `slot` as ((name, value), ...), its ids looked up in `symbols`."""
        if slot < 0 or slot >= self._count:
            raise IndexError(slot)
        cdef Py_ssize_t start = 2 * self._offsets_data[slot], end = 2 * self._offsets_data[slot + 1], i
        cdef Py_ssize_t n_symbols = len(symbols)
        cdef uint32_t name_id, value_id
        cdef tuple labels = PyTuple_New((end - start) // 2)
        cdef object pair
        for i in range((end - start) // 2):
            name_id = self._pairs_data[start + 2 * i]
            value_id = self._pairs_data[start + 2 * i + 1]
            if name_id >= n_symbols or value_id >= n_symbols:
                raise IndexError(f"symbol id out of range in slot {slot}")
            pair = (symbols[name_id], symbols[value_id])
            Py_INCREF(pair)
            PyTuple_SET_ITEM(labels, i, pair)
        return labels

    def sort_keys(self, slots, list symbols not None):
        """Integer keys that sort the label sets in `slots` as Labels tuples sort: a list of int64
        arrays, most significant first (sort by the first, ties by the next, ...).

        Each label set is read as a row of string ranks: the name and value of each pair as the rank
        of its string among all strings these label sets use (by Python's string order), then -1 up
        to the longest row, so that a prefix sorts first. The row's columns are packed, most
        significant first, into as few int64 keys as their value ranges allow (a column where every
        row agrees is left out), so that one argsort usually does.
        """
        cdef const int64_t[::1] slot_view = np.ascontiguousarray(slots, dtype=np.int64)
        cdef Py_ssize_t n = slot_view.shape[0], n_symbols = len(symbols), i, p, c, start, end, width = 0
        cdef int64_t slot, lo, hi, span, size
        cdef uint32_t symbol
        in_use_arr = np.zeros(n_symbols, dtype=np.uint8)
        cdef uint8_t[::1] in_use = in_use_arr
        for i in range(n):
            slot = slot_view[i]
            if slot < 0 or slot >= self._count:
                raise IndexError(slot)
            start = 2 * self._offsets_data[slot]
            end = 2 * self._offsets_data[slot + 1]
            width = max(width, end - start)
            for p in range(start, end):
                symbol = self._pairs_data[p]
                if symbol >= n_symbols:
                    raise IndexError(f"symbol id out of range in slot {slot}")
                in_use[symbol] = 1
        used = np.flatnonzero(in_use_arr)
        texts = [symbols[k] for k in used.tolist()]
        rank_arr = np.empty(n_symbols, dtype=np.int64)
        rank_arr[used[sorted(range(len(texts)), key=texts.__getitem__)]] = np.arange(len(used), dtype=np.int64)
        cdef const int64_t[::1] rank = rank_arr
        rows_arr = np.full((n, width), -1, dtype=np.int64)
        cdef int64_t[:, ::1] rows = rows_arr
        for i in range(n):
            slot = slot_view[i]
            start = 2 * self._offsets_data[slot]
            end = 2 * self._offsets_data[slot + 1]
            for p in range(start, end):
                rows[i, p - start] = rank[self._pairs_data[p]]
        cdef list keys = []
        cdef int64_t[::1] word
        word_arr = np.zeros(n, dtype=np.int64)
        word = word_arr
        span = 1
        for c in range(width):
            lo = rows[0, c] if n else 0
            hi = lo
            for i in range(n):
                lo = min(lo, rows[i, c])
                hi = max(hi, rows[i, c])
            if lo == hi:
                continue
            size = hi - lo + 1
            if span > (<int64_t>1 << 62) // size:
                keys.append(word_arr)
                word_arr = np.zeros(n, dtype=np.int64)
                word = word_arr
                span = 1
            for i in range(n):
                word[i] = word[i] * size + (rows[i, c] - lo)
            span *= size
        keys.append(word_arr)
        return keys

    def sorted_refs(self, refs, list symbols not None):
        """Those of the sorted `refs` the store holds, ordered by their label sets (as sorted() orders
        Labels tuples), as a uint64 array.

        A merge sort that compares label sets pair by pair: equal symbol ids are equal strings, and only
        differing ids compare their strings. For a few hundred series this beats building rank keys
        (sort_keys), which costs a pass over every symbol in use and a Python sort of their texts.
        """
        cdef const uint64_t[::1] ref_view = np.ascontiguousarray(refs, dtype=np.uint64)
        cdef Py_ssize_t n = ref_view.shape[0], found = 0, i, p, slot
        cdef Py_ssize_t n_symbols = len(symbols)
        out_arr = np.empty(n, dtype=np.uint64)
        cdef uint64_t[::1] out = out_arr
        if n == 0:
            return out_arr
        cdef int64_t* slots = <int64_t*>malloc(2 * n * sizeof(int64_t))
        if slots == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                if self._count == 0:
                    break
                slot = lower_bound(self._refs_data, 0, self._count, ref_view[i])
                if slot < self._count and self._refs_data[slot] == ref_view[i]:
                    slots[found] = slot
                    found += 1
            for i in range(found):
                slot = slots[i]
                if 2 * self._offsets_data[slot + 1] > self._pairs_used:
                    raise IndexError(slot)
                for p in range(2 * self._offsets_data[slot], 2 * self._offsets_data[slot + 1]):
                    if self._pairs_data[p] >= n_symbols:
                        raise IndexError(f"symbol id out of range in slot {slot}")
            _sort_slots_by_labels(self._offsets_data, self._pairs_data, slots, slots + n, found, symbols)
            for i in range(found):
                out[i] = self._refs_data[slots[i]]
        finally:
            free(slots)
        return out_arr[:found]

    def refs(self):
        """Series refs by slot (increasing)."""
        return _read_only(self._refs[:self._count])

    def offsets(self):
        """Pair offsets by slot, one more than there are slots: slot i's pairs are offsets[i]:offsets[i+1]."""
        return _read_only(self._offsets[:self._count + 1])

    def pairs(self):
        """All (name id, value id) pairs, flattened."""
        return _read_only(self._pairs[:self._pairs_used])

    def replace(self, refs, offsets, pairs):
        """Swap in new contents (after removals or a symbol renumbering), given as arrays like ours."""
        refs = np.ascontiguousarray(refs, dtype=np.uint64)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        pairs = np.ascontiguousarray(pairs, dtype=np.uint32)
        if offsets.shape[0] != refs.shape[0] + 1 or offsets[0] != 0 or 2 * offsets[offsets.shape[0] - 1] != pairs.shape[0]:
            raise ValueError("offsets do not match refs and pairs")
        if not is_sorted_unique(refs):
            raise ValueError("series refs must be strictly increasing")
        count = refs.shape[0]
        capacity = max(1024, count + count // 4)
        pairs_capacity = max(8192, pairs.shape[0] + pairs.shape[0] // 4)
        new_refs = np.empty(capacity, dtype=np.uint64)
        new_offsets = np.zeros(capacity + 1, dtype=np.int64)
        new_pairs = np.empty(pairs_capacity, dtype=np.uint32)
        new_refs[:count] = refs
        new_offsets[:count + 1] = offsets
        new_pairs[:pairs.shape[0]] = pairs
        self._set_buffers(new_refs, new_offsets, new_pairs)
        self._count = count
        self._pairs_used = pairs.shape[0]

    @property
    def nbytes(self):
        """Bytes held by the buffers, including unused capacity."""
        return self._refs.nbytes + self._offsets.nbytes + self._pairs.nbytes

    def __len__(self):
        return self._count


cdef class RefsByHash:
    """Series refs by label-set hash: an open-addressing multimap from uint64 hash to uint64 ref.

    Several series may share a hash (a collision), so `get` returns every ref stored under it and the caller
    compares label sets. Linear probing over two numpy arrays, 16 bytes a slot at most 3/4 full, instead of
    a dict of Python ints (about 100 bytes a series). Ref 0 marks an empty slot, so refs must be >= 1.
    """

    def __cinit__(self, Py_ssize_t capacity=1024):
        cdef Py_ssize_t size = 16
        while size < capacity:
            size *= 2
        self._count = 0
        self._allocate(size)

    cdef _allocate(self, Py_ssize_t size):
        self._hashes = np.zeros(size, dtype=np.uint64)
        self._refs = np.zeros(size, dtype=np.uint64)
        cdef uint64_t[::1] hashes_view = self._hashes
        cdef uint64_t[::1] refs_view = self._refs
        self._hashes_data = &hashes_view[0]
        self._refs_data = &refs_view[0]
        self._mask = size - 1

    cdef void _insert(self, uint64_t label_hash, uint64_t ref) noexcept nogil:
        cdef Py_ssize_t slot = <Py_ssize_t>(label_hash & <uint64_t>self._mask)
        while self._refs_data[slot] != 0:
            slot = (slot + 1) & self._mask
        self._hashes_data[slot] = label_hash
        self._refs_data[slot] = ref

    def add(self, uint64_t label_hash, uint64_t ref):
        """Store `ref` under `label_hash`."""
        cdef Py_ssize_t i
        if ref == 0:
            raise ValueError("series ref 0 is reserved")
        if 4 * (self._count + 1) > 3 * (self._mask + 1):
            old_hashes = self._hashes
            old_refs = self._refs
            self._allocate(2 * (self._mask + 1))
            self._rehash(old_hashes, old_refs)
        self._insert(label_hash, ref)
        self._count += 1

    cdef _rehash(self, const uint64_t[::1] hashes, const uint64_t[::1] refs):
        cdef Py_ssize_t i
        with nogil:
            for i in range(refs.shape[0]):
                if refs[i] != 0:
                    self._insert(hashes[i], refs[i])

    def get(self, uint64_t label_hash):
        """Every ref stored under `label_hash` (usually none or one), as a list."""
        cdef Py_ssize_t slot = <Py_ssize_t>(label_hash & <uint64_t>self._mask)
        cdef list found = []
        while self._refs_data[slot] != 0:
            if self._hashes_data[slot] == label_hash:
                found.append(self._refs_data[slot])
            slot = (slot + 1) & self._mask
        return found

    def remove(self, uint64_t label_hash, uint64_t ref):
        """Drop `ref` from under `label_hash`; return whether it was there."""
        cdef Py_ssize_t slot = <Py_ssize_t>(label_hash & <uint64_t>self._mask)
        cdef Py_ssize_t next_slot, home
        while self._refs_data[slot] != 0:
            if self._hashes_data[slot] == label_hash and self._refs_data[slot] == ref:
                break
            slot = (slot + 1) & self._mask
        else:
            return False
        # Backward-shift deletion: pull later entries of the probe run into the hole when their home slot
        # allows it, so that lookups can keep stopping at the first empty slot (no tombstones).
        next_slot = slot
        while True:
            next_slot = (next_slot + 1) & self._mask
            if self._refs_data[next_slot] == 0:
                break
            home = <Py_ssize_t>(self._hashes_data[next_slot] & <uint64_t>self._mask)
            if slot <= next_slot:
                if slot < home <= next_slot:
                    continue
            elif slot < home or home <= next_slot:
                continue
            self._hashes_data[slot] = self._hashes_data[next_slot]
            self._refs_data[slot] = self._refs_data[next_slot]
            slot = next_slot
        self._refs_data[slot] = 0
        self._count -= 1
        return True

    @property
    def nbytes(self):
        """Bytes held by the table."""
        return self._hashes.nbytes + self._refs.nbytes

    def __len__(self):
        return self._count


cdef object _read_only(array):
    array.flags.writeable = False
    return array


# --- XXH64, after the reference specification (xxhash.h, "XXH64 algorithm description"). ---

cdef uint64_t PRIME64_1 = 0x9E3779B185EBCA87ULL
cdef uint64_t PRIME64_2 = 0xC2B2AE3D27D4EB4FULL
cdef uint64_t PRIME64_3 = 0x165667B19E3779F9ULL
cdef uint64_t PRIME64_4 = 0x85EBCA77C2B2AE63ULL
cdef uint64_t PRIME64_5 = 0x27D4EB2F165667C5ULL


cdef inline uint64_t rotl64(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t read64(const uint8_t* p) noexcept nogil:
    # The spec reads little-endian words; memcpy keeps unaligned reads defined (x86 and arm64 are LE).
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint64_t read32(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0]) | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16) | (<uint64_t>p[3] << 24)


cdef inline uint64_t xxh64_round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc = acc + lane * PRIME64_2
    acc = rotl64(acc, 31)
    return acc * PRIME64_1


cdef inline uint64_t xxh64_merge_round(uint64_t acc, uint64_t value) noexcept nogil:
    acc = acc ^ xxh64_round(0, value)
    return acc * PRIME64_1 + PRIME64_4


cdef uint64_t xxh64(const uint8_t* p, Py_ssize_t length, uint64_t seed) noexcept nogil:
    """XXH64 of `length` bytes at `p`."""
    cdef const uint8_t* end = p + length
    cdef uint64_t v1, v2, v3, v4, h
    if length >= 32:
        v1 = seed + PRIME64_1 + PRIME64_2
        v2 = seed + PRIME64_2
        v3 = seed
        v4 = seed - PRIME64_1
        while p + 32 <= end:
            v1 = xxh64_round(v1, read64(p))
            v2 = xxh64_round(v2, read64(p + 8))
            v3 = xxh64_round(v3, read64(p + 16))
            v4 = xxh64_round(v4, read64(p + 24))
            p += 32
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18)
        h = xxh64_merge_round(h, v1)
        h = xxh64_merge_round(h, v2)
        h = xxh64_merge_round(h, v3)
        h = xxh64_merge_round(h, v4)
    else:
        h = seed + PRIME64_5
    h += <uint64_t>length
    while p + 8 <= end:
        h ^= xxh64_round(0, read64(p))
        h = rotl64(h, 27) * PRIME64_1 + PRIME64_4
        p += 8
    if p + 4 <= end:
        h ^= read32(p) * PRIME64_1
        h = rotl64(h, 23) * PRIME64_2 + PRIME64_3
        p += 4
    while p < end:
        h ^= p[0] * PRIME64_5
        h = rotl64(h, 11) * PRIME64_1
        p += 1
    h ^= h >> 33
    h *= PRIME64_2
    h ^= h >> 29
    h *= PRIME64_3
    h ^= h >> 32
    return h


def xxhash64(const uint8_t[::1] data not None, uint64_t seed=0):
    """XXH64 of the bytes `data` with `seed`."""
    cdef uint8_t empty = 0
    if data.shape[0] == 0:
        return xxh64(&empty, 0, seed)
    return xxh64(&data[0], data.shape[0], seed)


def labels_hash(tuple labels not None):
    """Prometheus's labels.Labels.Hash: XXH64 of `name 0xff value 0xff` for each pair, in order.

    `labels` is a tuple of (name, value) str pairs; the strings are hashed as UTF-8 without copying them
    into Python bytes objects.
    """
    cdef Py_ssize_t total = 0, size, pos = 0
    cdef const char* text
    cdef uint8_t stack_buffer[1024]
    cdef uint8_t* buffer = stack_buffer
    cdef uint64_t h
    for pair in labels:
        name, value = pair
        if not PyUnicode_Check(name) or not PyUnicode_Check(value):
            raise TypeError("label names and values must be str")
        PyUnicode_AsUTF8AndSize(name, &size)
        total += size + 1
        PyUnicode_AsUTF8AndSize(value, &size)
        total += size + 1
    if total > 1024:
        buffer = <uint8_t*>malloc(total)
        if buffer == NULL:
            raise MemoryError()
    try:
        for name, value in labels:
            text = PyUnicode_AsUTF8AndSize(name, &size)
            memcpy(buffer + pos, text, size)
            pos += size
            buffer[pos] = 0xFF
            pos += 1
            text = PyUnicode_AsUTF8AndSize(value, &size)
            memcpy(buffer + pos, text, size)
            pos += size
            buffer[pos] = 0xFF
            pos += 1
        h = xxh64(buffer, total, 0)
    finally:
        if buffer != stack_buffer:
            free(buffer)
    return h
