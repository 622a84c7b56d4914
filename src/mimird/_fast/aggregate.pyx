# cython: language_level=3
"""PromQL aggregation folds (sum, avg, count, group, min, max, stddev, stdvar) over a whole step grid.

Input is a (series x steps) value matrix with a presence mask and each series' group index; each
group's samples are folded series by series in input order, exactly as Prometheus 3.5's
`aggregation()` folds them step by step (Kahan-Neumaier sums, the incremental mean once a sum
overflows, Welford variances, NaN handling of min/max), so results match its bits. The loops run
without the GIL.
"""
import numpy as np

cimport numpy as cnp
from libc.math cimport NAN, fabs, isinf, isnan, isfinite, sqrt

cnp.import_array()

cdef enum:
    OP_SUM = 0
    OP_AVG = 1
    OP_COUNT = 2
    OP_GROUP = 3
    OP_MIN = 4
    OP_MAX = 5
    OP_STDDEV = 6
    OP_STDVAR = 7

_OPS = {"sum": OP_SUM, "avg": OP_AVG, "count": OP_COUNT, "group": OP_GROUP, "min": OP_MIN, "max": OP_MAX,
        "stddev": OP_STDDEV, "stdvar": OP_STDVAR}


cdef inline double kahan_inc(double inc, double total, double* comp) noexcept nogil:
    cdef double t = total + inc
    if isinf(t):
        comp[0] = 0
    elif fabs(total) >= fabs(inc):
        comp[0] += (total - t) + inc
    else:
        comp[0] += (inc - t) + total
    return t


def fold(str op, values, present, group_ids, Py_ssize_t n_groups):
    """Aggregate `values[s, j]` (where `present[s, j]`) into `n_groups` groups per step.

    Returns `(result, seen)`: float64 and uint8 arrays of shape (n_groups, n_steps); `seen` is 0 where
    a group had no sample at a step.
    """
    cdef int code = _OPS[op]
    cdef const double[:, ::1] vals = np.ascontiguousarray(values, dtype=np.float64)
    cdef const cnp.uint8_t[:, ::1] mask = np.ascontiguousarray(present, dtype=np.uint8)
    cdef const cnp.intp_t[::1] groups = np.ascontiguousarray(group_ids, dtype=np.intp)
    cdef Py_ssize_t n_series = vals.shape[0], n_steps = vals.shape[1], s, j, g
    result_arr = np.zeros((n_groups, n_steps), dtype=np.float64)
    seen_arr = np.zeros((n_groups, n_steps), dtype=np.uint8)
    comp_arr = np.zeros((n_groups, n_steps), dtype=np.float64)
    mean_arr = np.zeros((n_groups, n_steps), dtype=np.float64)
    count_arr = np.zeros((n_groups, n_steps), dtype=np.float64)
    incremental_arr = np.zeros((n_groups, n_steps), dtype=np.uint8)
    cdef double[:, ::1] value = result_arr
    cdef cnp.uint8_t[:, ::1] seen = seen_arr
    cdef double[:, ::1] comp = comp_arr
    cdef double[:, ::1] mean = mean_arr
    cdef double[:, ::1] count = count_arr
    cdef cnp.uint8_t[:, ::1] incremental = incremental_arr
    cdef double f, new_v, c, q, delta
    if n_steps == 0:
        return result_arr, seen_arr
    with nogil:
        for s in range(n_series):
            g = groups[s]
            for j in range(n_steps):
                if not mask[s, j]:
                    continue
                f = vals[s, j]
                if not seen[g, j]:
                    seen[g, j] = 1
                    value[g, j] = f
                    mean[g, j] = f
                    count[g, j] = 1
                    if code == OP_STDDEV or code == OP_STDVAR:
                        value[g, j] = 0 if isfinite(f) else NAN
                    continue
                count[g, j] += 1
                if code == OP_SUM:
                    c = comp[g, j]
                    value[g, j] = kahan_inc(f, value[g, j], &c)
                    comp[g, j] = c
                elif code == OP_AVG:
                    if not incremental[g, j]:
                        c = comp[g, j]
                        new_v = kahan_inc(f, value[g, j], &c)
                        if not isinf(new_v):
                            value[g, j] = new_v
                            comp[g, j] = c
                            continue
                        incremental[g, j] = 1
                        mean[g, j] = value[g, j] / (count[g, j] - 1)
                        comp[g, j] = comp[g, j] / (count[g, j] - 1)
                    q = (count[g, j] - 1) / count[g, j]
                    c = q * comp[g, j]
                    mean[g, j] = kahan_inc(f / count[g, j], q * mean[g, j], &c)
                    comp[g, j] = c
                elif code == OP_MAX:
                    if value[g, j] < f or isnan(value[g, j]):
                        value[g, j] = f
                elif code == OP_MIN:
                    if value[g, j] > f or isnan(value[g, j]):
                        value[g, j] = f
                elif code == OP_STDDEV or code == OP_STDVAR:
                    delta = f - mean[g, j]
                    mean[g, j] += delta / count[g, j]
                    value[g, j] += delta * (f - mean[g, j])
        for g in range(n_groups):
            for j in range(n_steps):
                if not seen[g, j]:
                    continue
                if code == OP_SUM:
                    value[g, j] += comp[g, j]
                elif code == OP_AVG:
                    if incremental[g, j]:
                        value[g, j] = mean[g, j] + comp[g, j]
                    else:
                        value[g, j] = value[g, j] / count[g, j] + comp[g, j] / count[g, j]
                elif code == OP_COUNT:
                    value[g, j] = count[g, j]
                elif code == OP_GROUP:
                    value[g, j] = 1
                elif code == OP_STDVAR:
                    value[g, j] = value[g, j] / count[g, j]
                elif code == OP_STDDEV:
                    value[g, j] = sqrt(value[g, j] / count[g, j])
    return result_arr, seen_arr


def group_series(labels, tuple grouping, bint without):
    """The group of each series for `by (grouping)` (or `without (grouping)`, which also drops __name__).

    Returns `(group_ids, keys)`: an intp array with each series' group index, and the groups' label
    sets in order of first appearance. A group's label set keeps the series' (name, value) pairs
    whose name is (or, with `without`, is not) in the grouping.
    """
    cdef list series_labels = labels if type(labels) is list else list(labels)
    cdef Py_ssize_t n = len(series_labels), row, i, width
    cdef cnp.ndarray ids_arr = np.empty(n, dtype=np.intp)
    cdef cnp.intp_t[::1] ids = ids_arr
    cdef dict keys = {}
    cdef set names = set(grouping)
    cdef tuple series, pair, key
    cdef list kept = []
    cdef object found
    if without:
        names.add("__name__")
    elif not grouping:
        ids_arr[:] = 0
        return ids_arr, [()] if n else []
    for row in range(n):
        series = <tuple>series_labels[row]
        kept.clear()
        width = len(series)
        for i in range(width):
            pair = <tuple>series[i]
            if (pair[0] in names) != without:
                kept.append(pair)
        key = tuple(kept)
        found = keys.get(key)
        if found is None:
            found = len(keys)
            keys[key] = found
        ids[row] = found
    return ids_arr, list(keys)


def distinct_label_values(labels, str name):
    """The distinct values of label `name` over the label sets, in order of first appearance ("" for
    a set without it)."""
    cdef list series_labels = labels if type(labels) is list else list(labels)
    cdef dict seen = {}
    cdef object previous = None, value
    cdef tuple series, pair
    cdef Py_ssize_t row, i
    for row in range(len(series_labels)):
        series = <tuple>series_labels[row]
        value = ""
        for i in range(len(series)):
            pair = <tuple>series[i]
            if pair[0] == name:
                value = pair[1]
                break
        # Series of one metric share the value object, so most rows stop at this identity check.
        if value is previous:
            continue
        previous = value
        if value not in seen:
            seen[value] = None
    return list(seen)
