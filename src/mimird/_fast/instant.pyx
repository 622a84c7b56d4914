# cython: language_level=3
"""Instant-vector selection for many series over a whole step grid (PromQL's lookback rule).

At each evaluation time t a series' value is its newest sample with a timestamp in
(t - lookback, t], unless that sample is a stale marker (the NaN with bits 0x7ff0000000000002).
One forward walk per series serves all steps, so the cost is O(samples + steps) per series. The
loop runs without the GIL.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memcpy

cnp.import_array()

# Below this much work (samples plus output cells) a kernel keeps the GIL: handing it back afterwards
# can wait for another thread's switch interval, which costs more than the loop itself.
cdef Py_ssize_t GIL_RELEASE_MIN_WORK = 1 << 16

cdef uint64_t STALE_BITS = 0x7FF0000000000002


cdef inline bint is_stale(double value) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits == STALE_BITS


cdef void _select_all(const int64_t[::1] ts_view, const double[::1] vals_view, const int64_t[::1] offsets_view,
                      const int64_t[::1] times_view, long long lookback_ms, double[:, ::1] values,
                      uint8_t[:, ::1] present, int64_t[:, ::1] stamps) noexcept nogil:
    cdef Py_ssize_t n_series = offsets_view.shape[0] - 1, n_steps = times_view.shape[0], k, j, p, end
    cdef int64_t t
    for k in range(n_series):
        p = offsets_view[k]
        end = offsets_view[k + 1]
        for j in range(n_steps):
            t = times_view[j]
            while p < end and ts_view[p] <= t:
                p += 1
            if p == offsets_view[k]:
                continue
            if ts_view[p - 1] <= t - lookback_ms or is_stale(vals_view[p - 1]):
                continue
            values[k, j] = vals_view[p - 1]
            stamps[k, j] = ts_view[p - 1]
            present[k, j] = 1


def select(ts, vals, offsets, times, long long lookback_ms):
    """Select series k (samples `ts/vals[offsets[k]:offsets[k+1]]`, ts increasing) at every time of
    `times` (non-decreasing).

    Returns `(values, present, sample_ts)`, arrays of shape (n_series, n_steps): the chosen sample's
    value and timestamp, and whether there is one (0 where nothing is in the lookback window or the
    newest sample is a stale marker).
    """
    cdef const int64_t[::1] ts_view = np.ascontiguousarray(ts, dtype=np.int64)
    cdef const double[::1] vals_view = np.ascontiguousarray(vals, dtype=np.float64)
    cdef const int64_t[::1] offsets_view = np.ascontiguousarray(offsets, dtype=np.int64)
    cdef const int64_t[::1] times_view = np.ascontiguousarray(times, dtype=np.int64)
    if ts_view.shape[0] != vals_view.shape[0]:
        raise ValueError("ts and vals differ in length")
    if np.any(np.diff(np.asarray(times_view)) < 0):
        raise ValueError("times must be non-decreasing")
    cdef Py_ssize_t n_series = offsets_view.shape[0] - 1, n_steps = times_view.shape[0]
    if n_series < 0 or (n_series > 0 and offsets_view[n_series] > ts_view.shape[0]):
        raise ValueError("offsets out of range")
    values_arr = np.full((max(n_series, 0), n_steps), np.nan, dtype=np.float64)
    present_arr = np.zeros((max(n_series, 0), n_steps), dtype=np.uint8)
    stamps_arr = np.zeros((max(n_series, 0), n_steps), dtype=np.int64)
    cdef double[:, ::1] values = values_arr
    cdef uint8_t[:, ::1] present = present_arr
    cdef int64_t[:, ::1] stamps = stamps_arr
    if n_series * n_steps + ts_view.shape[0] >= GIL_RELEASE_MIN_WORK:
        with nogil:
            _select_all(ts_view, vals_view, offsets_view, times_view, lookback_ms, values, present, stamps)
    else:
        _select_all(ts_view, vals_view, offsets_view, times_view, lookback_ms, values, present, stamps)
    return values_arr, present_arr, stamps_arr
