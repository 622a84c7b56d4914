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
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from cpython.object cimport PyObject

from mimird._fast.arrays cimport vector
from mimird._fast.prefetch cimport prefetch
from mimird._fast.samples cimport GIL_RELEASE_MIN_WORK, advance_past, is_stale_marker
from mimird.util import cores

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
#: The aggregation operators `fold`, `fold_instant` and `select_fold` compute.
FOLD_OPERATIONS = frozenset(_OPS)


cdef inline double kahan_inc(double inc, double total, double* comp) noexcept nogil:
    cdef double t = total + inc
    if isinf(t):
        comp[0] = 0
    elif fabs(total) >= fabs(inc):
        comp[0] += (total - t) + inc
    else:
        comp[0] += (inc - t) + total
    return t


cdef int _init_cells(Cells* cells, double* value, cnp.uint8_t* seen, Py_ssize_t n) except -1:
    # The result cells are the caller's (zeroed); the working accumulators are allocated here, zeroed.
    cells.value = value
    cells.seen = seen
    cells.n = n
    cells.comp = <double*>calloc(max(3 * n, 1), sizeof(double))
    cells.incremental = <cnp.uint8_t*>calloc(max(n, 1), 1)
    if cells.comp == NULL or cells.incremental == NULL:
        _free_cells(cells)
        raise MemoryError()
    cells.mean = cells.comp + n
    cells.count = cells.comp + 2 * n
    return 0


cdef void _free_cells(Cells* cells) noexcept nogil:
    free(cells.comp)
    free(cells.incremental)
    cells.comp = NULL
    cells.incremental = NULL


cdef inline void _fold_one(int code, Cells* cells, Py_ssize_t at, double f) noexcept nogil:
    # Fold sample f into cell `at`, in Prometheus's order of operations.
    cdef double* value = cells.value
    cdef double* comp = cells.comp
    cdef double* mean = cells.mean
    cdef double* count = cells.count
    cdef double new_v, c, q, delta
    if not cells.seen[at]:
        cells.seen[at] = 1
        value[at] = f
        mean[at] = f
        count[at] = 1
        if code == OP_STDDEV or code == OP_STDVAR:
            value[at] = 0 if isfinite(f) else NAN
        return
    count[at] += 1
    if code == OP_SUM:
        c = comp[at]
        value[at] = kahan_inc(f, value[at], &c)
        comp[at] = c
    elif code == OP_AVG:
        if not cells.incremental[at]:
            c = comp[at]
            new_v = kahan_inc(f, value[at], &c)
            if not isinf(new_v):
                value[at] = new_v
                comp[at] = c
                return
            cells.incremental[at] = 1
            mean[at] = value[at] / (count[at] - 1)
            comp[at] = comp[at] / (count[at] - 1)
        q = (count[at] - 1) / count[at]
        c = q * comp[at]
        mean[at] = kahan_inc(f / count[at], q * mean[at], &c)
        comp[at] = c
    elif code == OP_MAX:
        if value[at] < f or isnan(value[at]):
            value[at] = f
    elif code == OP_MIN:
        if value[at] > f or isnan(value[at]):
            value[at] = f
    elif code == OP_STDDEV or code == OP_STDVAR:
        delta = f - mean[at]
        mean[at] += delta / count[at]
        value[at] += delta * (f - mean[at])


cdef inline void _sum_one(double* value, double* comp, cnp.uint8_t* seen, Py_ssize_t at, double f) noexcept nogil:
    # _fold_one for sum, without the accumulators a sum does not read (mean, count): a third of the
    # instructions per sample, the same operations on the sum.
    cdef double total, t, larger, smaller
    cdef bint total_larger
    if not seen[at]:
        seen[at] = 1
        value[at] = f
        return
    # kahan_inc without branches (selects): which operand is larger changes from sample to sample.
    total = value[at]
    t = total + f
    total_larger = fabs(total) >= fabs(f)
    larger = total if total_larger else f
    smaller = f if total_larger else total
    comp[at] = 0 if isinf(t) else comp[at] + ((larger - t) + smaller)
    value[at] = t


cdef inline void _sum_row(const double* row, const cnp.uint8_t* mask, Py_ssize_t width, double* value,
                          double* comp, cnp.uint8_t* seen) noexcept nogil:
    # A series' row into its group's row of cells, for sum.
    cdef Py_ssize_t j
    for j in range(width):
        if mask[j]:
            _sum_one(value, comp, seen, j, row[j])


cdef void _fold_finish(int code, Cells* cells) noexcept nogil:
    # Turn the accumulators of every cell that saw a sample into the aggregation's value.
    cdef Py_ssize_t at
    cdef double* value = cells.value
    for at in range(cells.n):
        if not cells.seen[at]:
            continue
        if code == OP_SUM:
            value[at] += cells.comp[at]
        elif code == OP_AVG:
            if cells.incremental[at]:
                value[at] = cells.mean[at] + cells.comp[at]
            else:
                value[at] = value[at] / cells.count[at] + cells.comp[at] / cells.count[at]
        elif code == OP_COUNT:
            value[at] = cells.count[at]
        elif code == OP_GROUP:
            value[at] = 1
        elif code == OP_STDVAR:
            value[at] = value[at] / cells.count[at]
        elif code == OP_STDDEV:
            value[at] = sqrt(value[at] / cells.count[at])


cdef object _mask_bytes(present):
    # A presence mask as C-contiguous uint8: a bool array is read in place, anything else converted.
    if isinstance(present, np.ndarray) and present.dtype == np.bool_ and present.flags.c_contiguous:
        return present.view(np.uint8)
    return np.ascontiguousarray(present, dtype=np.uint8)


cdef int _check_group_ptr(const cnp.intp_t* groups, Py_ssize_t length, Py_ssize_t n_series,
                          Py_ssize_t n_groups) except -1:
    cdef Py_ssize_t s
    if length != n_series:
        raise ValueError("group_ids and the series differ in length")
    for s in range(n_series):
        if groups[s] < 0 or groups[s] >= n_groups:
            raise ValueError("group id out of range")
    return 0


cdef int _check_group_ids(const cnp.intp_t[::1] groups, Py_ssize_t n_series, Py_ssize_t n_groups) except -1:
    return _check_group_ptr(&groups[0] if groups.shape[0] else NULL, groups.shape[0], n_series, n_groups)


# A fold of at least this many (series, step) cells is split by steps over the cores.
PARALLEL_MIN_CELLS = 200_000


cdef class _StepFold:
    """One `fold`, cut into ranges of steps that fold at the same time: a (group, step) cell takes samples
    from one step only, so each range folds, in the same series order, into cells of its own (shared
    ones would put cache lines at the ranges' edges in both cores' caches at every series), then copies
    them into the result."""

    cdef int code
    cdef const double[:, ::1] vals
    cdef const cnp.uint8_t[:, ::1] mask
    cdef const cnp.intp_t[::1] groups
    cdef Py_ssize_t n_groups
    cdef double* result
    cdef cnp.uint8_t* seen

    cdef int fold_steps(self, Py_ssize_t first, Py_ssize_t end) except -1 nogil:
        # Locals, not attributes: the compiler cannot keep fields of self in registers across the writes
        # to the cells.
        cdef int code = self.code
        cdef const double[:, ::1] vals = self.vals
        cdef const cnp.uint8_t[:, ::1] mask = self.mask
        cdef const cnp.intp_t[::1] groups = self.groups
        cdef Py_ssize_t s, j, g, n_steps = vals.shape[1], n_series = vals.shape[0], width = end - first
        cdef Py_ssize_t n_cells = self.n_groups * width
        cdef Cells cells
        cdef double* value = <double*>calloc(max(n_cells, 1), sizeof(double))
        cdef cnp.uint8_t* seen = <cnp.uint8_t*>calloc(max(n_cells, 1), 1)
        cells.comp = NULL
        cells.incremental = NULL
        try:
            if value == NULL or seen == NULL:
                with gil:
                    raise MemoryError()
            with gil:
                _init_cells(&cells, value, seen, n_cells)
            for s in range(n_series):
                if code == OP_SUM:
                    _sum_row(&vals[s, first], &mask[s, first], width, value + groups[s] * width,
                             cells.comp + groups[s] * width, seen + groups[s] * width)
                    continue
                for j in range(first, end):
                    if mask[s, j]:
                        _fold_one(code, &cells, groups[s] * width + j - first, vals[s, j])
            _fold_finish(code, &cells)
            for g in range(self.n_groups):
                memcpy(self.result + g * n_steps + first, value + g * width, width * sizeof(double))
                memcpy(self.seen + g * n_steps + first, seen + g * width, width)
        finally:
            _free_cells(&cells)
            free(value)
            free(seen)
        return 0

    def run_part(self, tuple steps):
        """Fold the steps [first, end) without the GIL."""
        cdef Py_ssize_t first = steps[0], end = steps[1]
        with nogil:
            self.fold_steps(first, end)


def fold(str op, values, present, group_ids, Py_ssize_t n_groups):
    """Aggregate `values[s, j]` (where `present[s, j]`) into `n_groups` groups per step.

    Returns `(result, seen)`: float64 and uint8 arrays of shape (n_groups, n_steps); `seen` is 0 where
    a group had no sample at a step. At least PARALLEL_MIN_CELLS cells are folded in ranges of steps at
    the same time (`mimird.util.cores`), with the same result.
    """
    cdef _StepFold job = _StepFold()
    job.code = _OPS[op]
    job.vals = np.ascontiguousarray(values, dtype=np.float64)
    job.mask = _mask_bytes(present)
    job.groups = np.ascontiguousarray(group_ids, dtype=np.intp)
    job.n_groups = n_groups
    cdef Py_ssize_t n_series = job.vals.shape[0], n_steps = job.vals.shape[1], per_part
    if job.mask.shape[0] != n_series or job.mask.shape[1] != n_steps:
        raise ValueError("values and present differ in shape")
    _check_group_ids(job.groups, n_series, n_groups)
    result_arr = np.empty((n_groups, n_steps), dtype=np.float64)
    seen_arr = np.empty((n_groups, n_steps), dtype=np.uint8)
    if n_steps == 0 or n_series == 0:
        result_arr.fill(0)
        seen_arr.fill(0)
        return result_arr, seen_arr
    job.result = <double*>cnp.PyArray_DATA(result_arr)
    job.seen = <cnp.uint8_t*>cnp.PyArray_DATA(seen_arr)
    if n_series * n_steps >= PARALLEL_MIN_CELLS and cores.PARTS > 1 and n_steps > 1:
        per_part = (n_steps + cores.PARTS - 1) // cores.PARTS
        cores.run_parts(job.run_part, [(first, min(first + per_part, n_steps))
                                       for first in range(0, n_steps, per_part)])
    else:
        with nogil:
            job.fold_steps(0, n_steps)
    return result_arr, seen_arr


def fold_instant(str op, list values, group_ids, Py_ssize_t n_groups):
    """`fold` for a single step: `values[s]` (every one present) into `n_groups` groups.

    Returns `(groups, results)`, lists of the groups that had a sample (all of them, as every series has
    one) in order and their values: an instant query's aggregation is built from them without numpy.
    """
    cdef int code = _OPS[op]
    cdef const cnp.intp_t[::1] groups = group_ids  # group_series's array, taken as it is
    cdef Py_ssize_t n_series = len(values), s, g
    _check_group_ids(groups, n_series, n_groups)
    cdef list out_groups = [], out_values = []
    if n_series == 0:
        return out_groups, out_values
    cdef double* value = <double*>calloc(n_groups, sizeof(double))
    cdef cnp.uint8_t* seen = <cnp.uint8_t*>calloc(n_groups, 1)
    cdef Cells cells
    cells.comp = NULL
    cells.incremental = NULL
    try:
        if value == NULL or seen == NULL:
            raise MemoryError()
        _init_cells(&cells, value, seen, n_groups)
        for s in range(n_series):
            _fold_one(code, &cells, groups[s], values[s])
        _fold_finish(code, &cells)
        for g in range(n_groups):
            if seen[g]:
                out_groups.append(g)
                out_values.append(value[g])
    finally:
        _free_cells(&cells)
        free(value)
        free(seen)
    return out_groups, out_values


cdef class SelectFold:
    """Selection of series at a grid of times folded straight into their groups, a series at a time:
    `select_fold`'s work, for callers that hold one series' samples at a time (the head, which folds each
    series as it decodes it). Series are added in order; `finish()` gives the result once."""

    def __cinit__(self, str op, times, long long lookback_ms, group_ids, Py_ssize_t n_groups):
        self.code = _OPS[op]
        self.times_array = vector(times, cnp.NPY_INT64, "times")
        self.groups_array = vector(group_ids, cnp.NPY_INTP, "group_ids")
        self.times = <const int64_t*>cnp.PyArray_DATA(self.times_array)
        self.n_steps = cnp.PyArray_DIM(self.times_array, 0)
        self.lookback_ms = lookback_ms
        self.groups = <const cnp.intp_t*>cnp.PyArray_DATA(self.groups_array)
        self.n_series = cnp.PyArray_DIM(self.groups_array, 0)
        self.n_groups = n_groups
        self.cells.comp = NULL
        self.cells.incremental = NULL
        cdef Py_ssize_t j, n_cells = n_groups * self.n_steps
        _check_group_ptr(self.groups, self.n_series, self.n_series, n_groups)
        for j in range(1, self.n_steps):
            if self.times[j] < self.times[j - 1]:
                raise ValueError("times must be non-decreasing")
        self.value = <double*>calloc(max(n_cells, 1), sizeof(double))
        self.seen = <cnp.uint8_t*>calloc(max(n_cells, 1), 1)
        self.series_present = <cnp.uint8_t*>calloc(max(self.n_series, 1), 1)
        if self.value == NULL or self.seen == NULL or self.series_present == NULL:
            raise MemoryError()
        _init_cells(&self.cells, self.value, self.seen, n_cells)

    def __dealloc__(self):
        _free_cells(&self.cells)
        free(self.value)
        free(self.seen)
        free(self.series_present)

    cdef void add_series(self, Py_ssize_t k, const int64_t* ts, const double* vals, Py_ssize_t n) noexcept nogil:
        """Fold series k (0 <= k < n_series, added in order) with samples ts/vals[:n] (times ascending):
        at each time its newest sample in (t - lookback, t], unless that is a stale marker. One forward
        walk serves every step, as instant.select_rows walks."""
        self.note_selected(k, self.fold_steps(k, ts, vals, n, 0, self.n_steps))

    cdef Py_ssize_t fold_steps(self, Py_ssize_t k, const int64_t* ts, const double* vals, Py_ssize_t n,
                               Py_ssize_t first, Py_ssize_t end) noexcept nogil:
        """`add_series`'s fold at the steps [first, end) only, returning how many samples it selected and
        leaving the counts to `note_selected`. Folds of disjoint step ranges write disjoint cells, so
        threads may run them at once (each adding a series' ranges in series order)."""
        # Locals, not attributes: the compiler cannot keep fields of self in registers across the writes to
        # the cells.
        cdef int code = self.code
        cdef const int64_t* times = self.times
        cdef int64_t lookback_ms = self.lookback_ms, t
        cdef Py_ssize_t j, p = 0, selected = 0, at = self.groups[k] * self.n_steps
        for j in range(first, end):
            t = times[j]
            p = advance_past(ts, p, n, t)
            if p == 0 or ts[p - 1] <= t - lookback_ms or is_stale_marker(vals[p - 1]):
                continue
            if code == OP_SUM:
                _sum_one(self.cells.value, self.cells.comp, self.cells.seen, at + j, vals[p - 1])
            else:
                _fold_one(code, &self.cells, at + j, vals[p - 1])
            selected += 1
        return selected

    cdef void note_selected(self, Py_ssize_t k, Py_ssize_t selected) noexcept nogil:
        """Count `selected` samples folded from series k (by `fold_steps`; one thread at a time)."""
        if selected:
            self.series_present[k] = 1
            self.selected += selected

    def finish(self):
        """`select_fold`'s result for the series added: (order, result, seen, selected, n_seen)."""
        cdef Py_ssize_t k, j, g, row, n_steps = self.n_steps, n_seen = 0
        cdef cnp.npy_intp dims[2]
        cdef list order = []
        cdef cnp.ndarray result_arr, seen_arr
        cdef double* out_value
        cdef cnp.uint8_t* out_seen
        cdef Py_ssize_t* rank
        if self.finished:
            raise RuntimeError("select fold already finished")
        self.finished = True
        _fold_finish(self.code, &self.cells)
        rank = <Py_ssize_t*>calloc(max(self.n_groups, 1), sizeof(Py_ssize_t))
        if rank == NULL:
            raise MemoryError()
        try:
            for k in range(self.n_series):
                g = self.groups[k]
                if self.series_present[k] and rank[g] == 0:
                    order.append(g)
                    rank[g] = len(order)  # 1-based, 0 meaning not placed yet
        finally:
            free(rank)
        dims[0] = len(order)
        dims[1] = n_steps
        result_arr = cnp.PyArray_ZEROS(2, dims, cnp.NPY_FLOAT64, 0)
        seen_arr = cnp.PyArray_ZEROS(2, dims, cnp.NPY_BOOL, 0)
        out_value = <double*>cnp.PyArray_DATA(result_arr)
        out_seen = <cnp.uint8_t*>cnp.PyArray_DATA(seen_arr)
        for row in range(dims[0]):
            g = order[row]
            memcpy(out_value + row * n_steps, self.value + g * n_steps, n_steps * sizeof(double))
            memcpy(out_seen + row * n_steps, self.seen + g * n_steps, n_steps)
            for j in range(n_steps):
                n_seen += self.seen[g * n_steps + j]
        return order, result_arr, seen_arr, self.selected, n_seen


cdef void _fold_batch(SelectFold fold, const int64_t* ts, const double* vals, const int64_t* offsets,
                      Py_ssize_t n_series) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n_series):
        fold.add_series(k, ts + offsets[k], vals + offsets[k], offsets[k + 1] - offsets[k])


def select_fold(str op, ts, vals, offsets, times, long long lookback_ms, group_ids, Py_ssize_t n_groups):
    """Select every series at every time as `instant.select_rows` does (its newest sample in
    (t - lookback, t], unless that is a stale marker) and fold the selected samples straight into their
    groups as `fold` does: the aggregation of a vector selector without its (series x steps) matrix.

    Series k's samples are `ts/vals[offsets[k]:offsets[k+1]]`, `group_ids[k]` its group; `times` is
    non-decreasing. Returns `(order, result, seen, selected, n_seen)`: the groups that had a sample, in
    order of their first series with one (as grouping the selected series would number them); their
    values, float64 of shape (len(order), n_steps), 0 where unseen; a bool array of the same shape saying
    which cells saw a sample; the number of samples selected over all series and steps; and the number of
    cells seen. Everything a range query's aggregation needs comes out of this one call.
    """
    cdef cnp.ndarray ts_array = vector(ts, cnp.NPY_INT64, "ts")
    cdef cnp.ndarray vals_array = vector(vals, cnp.NPY_FLOAT64, "vals")
    cdef cnp.ndarray offsets_array = vector(offsets, cnp.NPY_INT64, "offsets")
    cdef const int64_t* ts_ptr = <const int64_t*>cnp.PyArray_DATA(ts_array)
    cdef const double* vals_ptr = <const double*>cnp.PyArray_DATA(vals_array)
    cdef const int64_t* offsets_ptr = <const int64_t*>cnp.PyArray_DATA(offsets_array)
    cdef Py_ssize_t n_samples = cnp.PyArray_DIM(ts_array, 0)
    cdef Py_ssize_t n_series = cnp.PyArray_DIM(offsets_array, 0) - 1, k
    if cnp.PyArray_DIM(vals_array, 0) != n_samples:
        raise ValueError("ts and vals differ in length")
    if n_series < 0:
        raise ValueError("offsets needs at least one entry")
    for k in range(n_series):
        if offsets_ptr[k] < 0 or offsets_ptr[k + 1] < offsets_ptr[k] or offsets_ptr[k + 1] > n_samples:
            raise ValueError("offsets must be non-decreasing within [0, len(ts)]")
    cdef SelectFold fold = SelectFold(op, times, lookback_ms, group_ids, n_groups)
    if fold.n_series != n_series:
        raise ValueError("group_ids and the series differ in length")
    if n_series and fold.n_steps:
        if n_series * fold.n_steps + n_samples >= GIL_RELEASE_MIN_WORK:
            with nogil:
                _fold_batch(fold, ts_ptr, vals_ptr, offsets_ptr, n_series)
        else:
            _fold_batch(fold, ts_ptr, vals_ptr, offsets_ptr, n_series)
    return fold.finish()


cdef enum:
    RANK_TOP = 0
    RANK_BOTTOM = 1
    RANK_FIRST = 2

_RANKINGS = {"topk": RANK_TOP, "bottomk": RANK_BOTTOM, "limitk": RANK_FIRST}
#: The most series a group may keep per step for `select_k` (groups x k cells of candidates per step).
SELECT_K_MAX_CANDIDATES = 1 << 22


cdef inline bint _ranks_before(int ranking, double candidate, double kept) noexcept nogil:
    # Whether a later series with value `candidate` goes before a kept one (ties keep input order; NaN
    # comes after every number, for topk and bottomk alike).
    if isnan(candidate):
        return False
    if isnan(kept):
        return True
    if ranking == RANK_TOP:
        return candidate > kept
    return candidate < kept


def select_k(str op, values, present, group_ids, Py_ssize_t n_groups, ks):
    """topk, bottomk and limitk at every step: which series each group keeps and their rank in it.

    At step j each group keeps its first `ks[j]` series in Prometheus's order: by value descending
    (topk) or ascending (bottomk), NaN last, ties in input order; limitk keeps input order. Returns
    `(selected, rank)`: uint8 and float64 arrays shaped like `values`; `rank` is a kept series' place in
    its group (0 first). Needs n_groups * max(ks) <= SELECT_K_MAX_CANDIDATES.
    """
    cdef int ranking = _RANKINGS[op]
    cdef const double[:, ::1] vals = np.ascontiguousarray(values, dtype=np.float64)
    cdef const cnp.uint8_t[:, ::1] mask = _mask_bytes(present)
    cdef const cnp.intp_t[::1] groups = np.ascontiguousarray(group_ids, dtype=np.intp)
    cdef const int64_t[::1] k_at = np.ascontiguousarray(ks, dtype=np.int64)
    cdef Py_ssize_t n_series = vals.shape[0], n_steps = vals.shape[1], s, j, g, pos, k, kmax = 0
    if mask.shape[0] != n_series or mask.shape[1] != n_steps or k_at.shape[0] != n_steps:
        raise ValueError("values, present and ks differ in shape")
    _check_group_ids(groups, n_series, n_groups)
    for j in range(n_steps):
        kmax = max(kmax, min(k_at[j], n_series))
    if n_groups * kmax > SELECT_K_MAX_CANDIDATES:
        raise ValueError("too many candidates per step")
    selected_arr = np.zeros((n_series, n_steps), dtype=np.uint8)
    rank_arr = np.zeros((n_series, n_steps), dtype=np.float64)
    if kmax <= 0 or n_series == 0:
        return selected_arr, rank_arr
    cdef cnp.uint8_t[:, ::1] selected = selected_arr
    cdef double[:, ::1] rank = rank_arr
    # kept[g * kmax + i]: the series in group g's place i at the current step; count[g]: how many
    cdef Py_ssize_t* kept = <Py_ssize_t*>malloc(n_groups * kmax * sizeof(Py_ssize_t))
    cdef Py_ssize_t* count = <Py_ssize_t*>malloc(max(n_groups, 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* places
    cdef double value
    try:
        if kept == NULL or count == NULL:
            raise MemoryError()
        with nogil:
            for j in range(n_steps):
                k = min(k_at[j], n_series)
                if k <= 0:
                    continue
                for g in range(n_groups):
                    count[g] = 0
                for s in range(n_series):
                    if not mask[s, j]:
                        continue
                    g = groups[s]
                    places = kept + g * kmax
                    if ranking == RANK_FIRST:
                        if count[g] < k:
                            places[count[g]] = s
                            count[g] += 1
                        continue
                    value = vals[s, j]
                    if count[g] == k:
                        if not _ranks_before(ranking, value, vals[places[k - 1], j]):
                            continue
                        count[g] -= 1  # the last place's series drops out
                    pos = count[g]
                    while pos > 0 and _ranks_before(ranking, value, vals[places[pos - 1], j]):
                        places[pos] = places[pos - 1]
                        pos -= 1
                    places[pos] = s
                    count[g] += 1
                for g in range(n_groups):
                    places = kept + g * kmax
                    for pos in range(count[g]):
                        selected[places[pos], j] = 1
                        rank[places[pos], j] = pos
    finally:
        free(kept)
        free(count)
    return selected_arr, rank_arr


cdef void _prefetch_label_sets(list series_labels) noexcept:
    # Grouping reads every label set, its (name, value) pairs and their strings, cold on a dashboard's
    # query: ask for each level ahead (`mimird._fast.prefetch`), a wave per level. Label sets are tuples
    # of 2-tuples of str, as the head and the blocks build them; anything else is only skipped here.
    cdef Py_ssize_t row, i, n = len(series_labels)
    cdef object series, pair
    for row in range(n):
        prefetch(<PyObject*>series_labels[row])
    for row in range(n):
        series = series_labels[row]
        if type(series) is tuple:
            for i in range(len(<tuple>series)):
                prefetch(<PyObject*>(<tuple>series)[i])
    for row in range(n):
        series = series_labels[row]
        if type(series) is tuple:
            for i in range(len(<tuple>series)):
                pair = (<tuple>series)[i]
                if type(pair) is tuple and len(<tuple>pair) == 2:
                    prefetch(<PyObject*>(<tuple>pair)[0])
                    prefetch(<PyObject*>(<tuple>pair)[1])


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
    _prefetch_label_sets(series_labels)
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
