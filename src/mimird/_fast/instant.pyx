# cython: language_level=3
"""Instant-vector selection for many series over a whole step grid (PromQL's lookback rule).

At each evaluation time t a series' value is its newest sample with a timestamp in
(t - lookback, t], unless that sample is a stale marker (the NaN with bits 0x7ff0000000000002).
One forward walk per series serves all steps, so the cost is O(samples + steps) per series. The
loop runs without the GIL.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t
from libc.math cimport NAN

from mimird._fast.arrays cimport vector
from mimird._fast.samples cimport GIL_RELEASE_MIN_WORK, advance_past, first_after, is_stale_marker

cnp.import_array()


cdef Py_ssize_t _select_all(const int64_t[::1] ts_view, const double[::1] vals_view,
                            const int64_t[::1] offsets_view, const int64_t[::1] times_view, long long lookback_ms,
                            double[:, ::1] values, uint8_t[:, ::1] present, int64_t[:, ::1] stamps,
                            int64_t[::1] rows) noexcept nogil:
    # Every output cell is written (the arrays come uninitialised); returns how many series have a value
    # at some step, their indices in rows[:count].
    cdef Py_ssize_t n_series = offsets_view.shape[0] - 1, n_steps = times_view.shape[0], k, j, p, end
    cdef Py_ssize_t n_rows = 0
    cdef int64_t t
    cdef bint any_present
    cdef double nan = NAN
    cdef const int64_t* ts = &ts_view[0] if ts_view.shape[0] else NULL
    for k in range(n_series):
        p = offsets_view[k]
        end = offsets_view[k + 1]
        any_present = False
        for j in range(n_steps):
            t = times_view[j]
            p = advance_past(ts, p, end, t)
            if p == offsets_view[k] or ts_view[p - 1] <= t - lookback_ms or is_stale_marker(vals_view[p - 1]):
                values[k, j] = nan
                stamps[k, j] = 0
                present[k, j] = 0
                continue
            values[k, j] = vals_view[p - 1]
            stamps[k, j] = ts_view[p - 1]
            present[k, j] = 1
            any_present = True
        if any_present:
            rows[n_rows] = k
            n_rows += 1
    return n_rows


def select_rows(ts, vals, offsets, times, long long lookback_ms):
    """Select series k (samples `ts/vals[offsets[k]:offsets[k+1]]`, ts increasing) at every time of
    `times` (non-decreasing).

    Returns `(values, present, sample_ts, rows)`: arrays of shape (n_series, n_steps) with the chosen
    sample's value and timestamp and whether there is one (0 where nothing is in the lookback window or the
    newest sample is a stale marker; the value is then NaN and the timestamp 0), and `rows` (int64), the
    indices of the series with a value at some step, in order.
    """
    cdef const int64_t[::1] ts_view = vector(ts, cnp.NPY_INT64, "ts")
    cdef const double[::1] vals_view = vector(vals, cnp.NPY_FLOAT64, "vals")
    cdef const int64_t[::1] offsets_view = vector(offsets, cnp.NPY_INT64, "offsets")
    cdef const int64_t[::1] times_view = vector(times, cnp.NPY_INT64, "times")
    cdef Py_ssize_t j, n_rows
    if ts_view.shape[0] != vals_view.shape[0]:
        raise ValueError("ts and vals differ in length")
    for j in range(1, times_view.shape[0]):
        if times_view[j] < times_view[j - 1]:
            raise ValueError("times must be non-decreasing")
    cdef Py_ssize_t n_series = offsets_view.shape[0] - 1, n_steps = times_view.shape[0]
    if n_series < 0 or (n_series > 0 and offsets_view[n_series] > ts_view.shape[0]):
        raise ValueError("offsets out of range")
    n_series = max(n_series, 0)
    values_arr = np.empty((n_series, n_steps), dtype=np.float64)
    present_arr = np.empty((n_series, n_steps), dtype=np.uint8)
    stamps_arr = np.empty((n_series, n_steps), dtype=np.int64)
    rows_arr = np.empty(n_series, dtype=np.int64)
    cdef double[:, ::1] values = values_arr
    cdef uint8_t[:, ::1] present = present_arr
    cdef int64_t[:, ::1] stamps = stamps_arr
    cdef int64_t[::1] rows = rows_arr
    if n_series * n_steps + ts_view.shape[0] >= GIL_RELEASE_MIN_WORK:
        with nogil:
            n_rows = _select_all(ts_view, vals_view, offsets_view, times_view, lookback_ms, values, present,
                                 stamps, rows)
    else:
        n_rows = _select_all(ts_view, vals_view, offsets_view, times_view, lookback_ms, values, present, stamps,
                             rows)
    return values_arr, present_arr, stamps_arr, rows_arr[:n_rows]


def select_at(ts, vals, offsets, long long t, long long lookback_ms):
    """Select series k (samples `ts/vals[offsets[k]:offsets[k+1]]`, ts increasing) at the single time `t`:
    its newest sample in (t - lookback, t] unless that is a stale marker.

    Returns `(rows, values)`: the indices of the series with a value, in order, and the values, as Python
    lists (an instant query's result is built from them without a numpy call).
    """
    cdef cnp.ndarray ts_arr = vector(ts, cnp.NPY_INT64, "ts")
    cdef cnp.ndarray vals_arr = vector(vals, cnp.NPY_FLOAT64, "vals")
    cdef cnp.ndarray offsets_arr = vector(offsets, cnp.NPY_INT64, "offsets")
    cdef Py_ssize_t n_samples = cnp.PyArray_DIM(ts_arr, 0), n_offsets = cnp.PyArray_DIM(offsets_arr, 0)
    if n_samples != cnp.PyArray_DIM(vals_arr, 0):
        raise ValueError("ts and vals differ in length")
    cdef const int64_t* ts_base = <const int64_t*>cnp.PyArray_DATA(ts_arr)
    cdef const double* vals_base = <const double*>cnp.PyArray_DATA(vals_arr)
    cdef const int64_t* bounds = <const int64_t*>cnp.PyArray_DATA(offsets_arr)
    cdef Py_ssize_t k, lo, first
    cdef list rows = [], values = []
    for k in range(1, n_offsets):
        if bounds[k] < bounds[k - 1] or bounds[k - 1] < 0 or bounds[k] > n_samples:
            raise ValueError("offsets must be non-decreasing within [0, len(ts)]")
    for k in range(n_offsets - 1):
        # the sample before the first one after t is the newest at or before t
        first = bounds[k]
        lo = first_after(ts_base, first, bounds[k + 1], t)
        if lo == first or ts_base[lo - 1] <= t - lookback_ms or is_stale_marker(vals_base[lo - 1]):
            continue
        rows.append(k)
        values.append(vals_base[lo - 1])
    return rows, values
