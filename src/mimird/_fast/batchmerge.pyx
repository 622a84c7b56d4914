# cython: language_level=3
"""Merging several label-sorted series batches (head, local blocks, bucket blocks) into one.

The inputs come in priority order. A series in several inputs gets the union of their samples by
timestamp, one sample per timestamp: the one of the earliest input (the semantics of the per-series
merges it replaces, a stable sort by timestamp that keeps the first of equal timestamps). The label
order of the output is found with one sort of all inputs' label sets (each input is already sorted,
so the sort merges runs); the samples are merged without the GIL, copied whole where the parts of a
series do not overlap in time.
"""
from cpython.object cimport PyObject_RichCompareBool, Py_EQ
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFF

# Below this many samples the merge keeps the GIL (handing it back can cost more than the loop).
cdef Py_ssize_t GIL_RELEASE_MIN_SAMPLES = 1 << 16


def merge_batches(list labels_lists not None, list ts_arrays not None, list vals_arrays not None,
                  list offsets_arrays not None):
    """Merge batches given as parallel lists (labels, ts int64, vals float64, offsets int64 per input).

    Each input's labels are sorted and unique and its series' timestamps increasing. Returns
    (labels, offsets, ts, vals) of the union, in label order (see the module docstring).
    """
    cdef Py_ssize_t num_inputs = len(labels_lists), b, i, total = 0, num_samples = 0, k, g
    if not (len(ts_arrays) == len(vals_arrays) == len(offsets_arrays) == num_inputs):
        raise ValueError("the input lists differ in length")
    cdef list all_labels = []
    cdef list item_input = []
    cdef const int64_t[::1] offsets_view
    cdef const int64_t[::1] ts_view
    cdef const double[::1] vals_view
    for b in range(num_inputs):
        labels = labels_lists[b]
        offsets_view = offsets_arrays[b]
        ts_view = ts_arrays[b]
        vals_view = vals_arrays[b]
        if offsets_view.shape[0] != len(labels) + 1:
            raise ValueError(f"input {b}: {len(labels)} label sets but {offsets_view.shape[0]} offsets")
        if len(labels) and (offsets_view[0] < 0 or offsets_view[len(labels)] > ts_view.shape[0]
                            or ts_view.shape[0] != vals_view.shape[0]):
            raise ValueError(f"input {b}: offsets point outside the sample arrays")
        for i in range(len(labels)):
            if offsets_view[i + 1] < offsets_view[i]:
                raise ValueError(f"input {b}: offsets decrease")
        all_labels.extend(labels)
        item_input.extend([b] * len(labels))
        num_samples += offsets_view[len(labels)] - offsets_view[0] if len(labels) else 0
    total = len(all_labels)
    # A stable sort: equal label sets stay in input order, which is their priority.
    cdef list order = sorted(range(total), key=all_labels.__getitem__)

    cdef Part* parts = <Part*>malloc((total + 1) * sizeof(Part))
    cdef Py_ssize_t* group_starts = <Py_ssize_t*>malloc((total + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* first_index = <Py_ssize_t*>malloc((num_inputs + 1) * sizeof(Py_ssize_t))
    cdef Part* scratch = <Part*>malloc((total + 1) * sizeof(Part))
    if parts == NULL or group_starts == NULL or first_index == NULL or scratch == NULL:
        free(parts)
        free(group_starts)
        free(first_index)
        free(scratch)
        raise MemoryError()
    cdef list out_labels = []
    cdef Py_ssize_t num_groups = 0, item, series_index
    cdef object previous = None, current
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray out_ts, out_vals, out_offsets
    cdef Py_ssize_t filled = 0
    cdef int64_t* out_t
    cdef double* out_v
    cdef int64_t* out_o
    try:
        first_index[0] = 0
        for b in range(num_inputs):
            first_index[b + 1] = first_index[b] + len(labels_lists[b])
        for k in range(total):
            item = order[k]
            b = item_input[item]
            series_index = item - first_index[b]
            offsets_view = offsets_arrays[b]
            ts_view = ts_arrays[b]
            vals_view = vals_arrays[b]
            parts[k].ts = &ts_view[0] if ts_view.shape[0] else NULL
            parts[k].vals = &vals_view[0] if vals_view.shape[0] else NULL
            parts[k].pos = offsets_view[series_index]
            parts[k].end = offsets_view[series_index + 1]
            current = all_labels[item]
            if k == 0 or not PyObject_RichCompareBool(current, previous, Py_EQ):
                group_starts[num_groups] = k
                num_groups += 1
                out_labels.append(current)
            previous = current
        group_starts[num_groups] = total
        dims[0] = num_samples
        out_ts = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        out_vals = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        dims[0] = num_groups + 1
        out_offsets = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        out_t = <int64_t*>cnp.PyArray_DATA(out_ts)
        out_v = <double*>cnp.PyArray_DATA(out_vals)
        out_o = <int64_t*>cnp.PyArray_DATA(out_offsets)
        if num_samples >= GIL_RELEASE_MIN_SAMPLES:
            with nogil:
                filled = _merge_groups(parts, group_starts, num_groups, out_t, out_v, out_o, scratch)
        else:
            filled = _merge_groups(parts, group_starts, num_groups, out_t, out_v, out_o, scratch)
    finally:
        free(parts)
        free(group_starts)
        free(first_index)
        free(scratch)
    if filled < num_samples // 2:
        # Mostly duplicates (the same block read twice): do not keep the unused half alive.
        return out_labels, out_offsets, out_ts[:filled].copy(), out_vals[:filled].copy()
    return out_labels, out_offsets, out_ts[:filled], out_vals[:filled]


cdef Py_ssize_t _merge_groups(Part* parts, Py_ssize_t* group_starts, Py_ssize_t num_groups, int64_t* out_t,
                              double* out_v, int64_t* out_offsets, Part* scratch) noexcept nogil:
    # `scratch` holds as many parts as `parts`.
    cdef Py_ssize_t g, filled = 0, first, last
    out_offsets[0] = 0
    for g in range(num_groups):
        first = group_starts[g]
        last = group_starts[g + 1]
        if last - first == 1:
            filled = _concatenate(parts + first, 1, out_t, out_v, filled)
        elif _sorted_if_disjoint(parts + first, last - first, scratch):
            filled = _concatenate(scratch, last - first, out_t, out_v, filled)
        else:
            filled = merge_parts(parts + first, last - first, out_t, out_v, filled)
        out_offsets[g + 1] = filled
    return filled


cdef bint _sorted_if_disjoint(const Part* parts, Py_ssize_t n, Part* sorted_parts) noexcept nogil:
    # True when the parts do not overlap in time; `sorted_parts` then holds them by first timestamp
    # (the order to copy them in). `parts` keeps its priority order for the merge otherwise.
    cdef Py_ssize_t i, j
    cdef Part moving
    for i in range(n):
        if parts[i].pos >= parts[i].end:
            return False
        moving = parts[i]
        j = i
        while j > 0 and sorted_parts[j - 1].ts[sorted_parts[j - 1].pos] > moving.ts[moving.pos]:
            sorted_parts[j] = sorted_parts[j - 1]
            j -= 1
        sorted_parts[j] = moving
    for i in range(1, n):
        if sorted_parts[i - 1].ts[sorted_parts[i - 1].end - 1] >= sorted_parts[i].ts[sorted_parts[i].pos]:
            return False
    return True


cdef bint _same_timestamps(const Part* parts, Py_ssize_t n) noexcept nogil:
    # True when every part holds the same timestamps, strictly increasing (so nothing to de-duplicate
    # within the first part either).
    cdef Py_ssize_t i, count = parts[0].end - parts[0].pos
    for i in range(1, n):
        if parts[i].end - parts[i].pos != count:
            return False
    if count == 0:
        return True
    for i in range(1, count):
        if parts[0].ts[parts[0].pos + i] <= parts[0].ts[parts[0].pos + i - 1]:
            return False
    for i in range(1, n):
        if memcmp(parts[0].ts + parts[0].pos, parts[i].ts + parts[i].pos, count * sizeof(int64_t)) != 0:
            return False
    return True


cdef Py_ssize_t _concatenate(Part* parts, Py_ssize_t n, int64_t* out_t, double* out_v,
                             Py_ssize_t filled) noexcept nogil:
    cdef Py_ssize_t i, count
    for i in range(n):
        count = parts[i].end - parts[i].pos
        if count > 0:
            memcpy(out_t + filled, parts[i].ts + parts[i].pos, count * sizeof(int64_t))
            memcpy(out_v + filled, parts[i].vals + parts[i].pos, count * sizeof(double))
            filled += count
    return filled


cdef Py_ssize_t merge_parts(Part* parts, Py_ssize_t n, int64_t* out_t, double* out_v,
                            Py_ssize_t filled) noexcept nogil:
    # Parts are in priority order: of equal timestamps the earliest part's sample is kept (the strict
    # comparison below), and later samples at an emitted timestamp are skipped in every part.
    cdef Py_ssize_t i, best, pos, count
    cdef int64_t best_t, limit, t, last_t
    if _same_timestamps(parts, n):
        # The same data read twice (a block from the ingester and from the bucket): the first part.
        count = parts[0].end - parts[0].pos
        memcpy(out_t + filled, parts[0].ts + parts[0].pos, count * sizeof(int64_t))
        memcpy(out_v + filled, parts[0].vals + parts[0].pos, count * sizeof(double))
        return filled + count
    while True:
        best = -1
        best_t = 0
        for i in range(n):
            if parts[i].pos < parts[i].end:
                t = parts[i].ts[parts[i].pos]
                if best < 0 or t < best_t:
                    best = i
                    best_t = t
        if best < 0:
            return filled
        limit = INT64_MAX
        for i in range(n):
            if i != best and parts[i].pos < parts[i].end and parts[i].ts[parts[i].pos] < limit:
                limit = parts[i].ts[parts[i].pos]
        # the run of the best part below every other part's next sample
        pos = parts[best].pos
        out_t[filled] = best_t
        out_v[filled] = parts[best].vals[pos]
        filled += 1
        last_t = best_t
        pos += 1
        while pos < parts[best].end and parts[best].ts[pos] < limit:
            t = parts[best].ts[pos]
            if t > last_t:
                out_t[filled] = t
                out_v[filled] = parts[best].vals[pos]
                filled += 1
                last_t = t
            pos += 1
        parts[best].pos = pos
        # samples at the emitted timestamp in any part lose to the one emitted
        for i in range(n):
            while parts[i].pos < parts[i].end and parts[i].ts[parts[i].pos] <= last_t:
                parts[i].pos += 1
