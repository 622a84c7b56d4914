# cython: language_level=3
"""histogram_quantile over classic buckets at every step of a query, in one pass per step.

`mimird.promql.funcs.bucket_quantile_steps` orders one histogram's buckets by upper bound and hands them
here as (buckets x steps) counts with a presence mask. At each step the present buckets go through
Prometheus's bucketQuantile: the monotonicity fix (a count below the previous one, or within 1e-12 of
it, is raised to it; the former marks the result as forced), then the bucket holding the rank and the
linear interpolation inside it. The per-step Python `bucket_quantile` in `funcs` is the readable form
of the same rules, and the tests hold this kernel to it.
"""
from libc.math cimport INFINITY, NAN, fabs, isinf, isnan
from libc.stdint cimport int64_t, uint8_t

import numpy as np

# Go's math.SmallestNonzeroFloat64 is subnormal; Prometheus's almost-equal test uses the smallest normal.
cdef double MIN_NORMAL = 2.2250738585072014e-308
cdef double MAX_FLOAT = 1.7976931348623157e308
cdef double MONOTONICITY_EPSILON = 1e-12


cpdef bint almost_equal(double a, double b, double epsilon) noexcept nogil:
    """Prometheus's almost.Equal: equal, or within `epsilon` relative (absolute near zero); the per-step
    `bucket_quantile` in `funcs` uses it too."""
    cdef double absolute_sum, diff, scale
    if a == b:
        return True
    absolute_sum = fabs(a) + fabs(b)
    diff = fabs(a - b)
    if a == 0 or b == 0 or absolute_sum < MIN_NORMAL:
        return diff < epsilon * MIN_NORMAL
    scale = absolute_sum
    if scale > MAX_FLOAT:  # a NaN sum stays NaN, and then nothing is near it
        scale = MAX_FLOAT
    return diff / scale < epsilon


def quantile_steps(const double[::1] q, const double[::1] bounds, double[:, ::1] counts,
                   const uint8_t[:, ::1] present):
    """bucketQuantile of one histogram at every step.

    `bounds` are the buckets' distinct, non-NaN upper bounds in ascending order and `counts` their
    (buckets x steps) cumulative counts in that order, of which only the `present` ones take part at a
    step; `q` is the quantile per step. `counts` is fixed for monotonicity in place.

    Returns (values, forced): float64 and bool arrays with one entry per step; a step without any
    present bucket is NaN."""
    cdef Py_ssize_t n_buckets = counts.shape[0], n = counts.shape[1], i, j, last, b, before, n_present
    cdef Py_ssize_t previous, last_seen
    if bounds.shape[0] != n_buckets or present.shape[0] != n_buckets or present.shape[1] != n or q.shape[0] != n:
        raise ValueError("q, bounds, counts and present disagree in shape")
    values_arr = np.empty(n, dtype=np.float64)
    forced_arr = np.zeros(n, dtype=np.uint8)
    # per bucket, the present bucket before it at the current step (-1: none)
    previous_arr = np.empty(max(n_buckets, 1), dtype=np.intp)
    cdef double[::1] values = values_arr
    cdef uint8_t[::1] forced = forced_arr
    cdef Py_ssize_t[::1] previous_present = previous_arr
    cdef double prev, cur, rank, observations, start, end, count, value, top, quantile
    cdef bint started, found, is_forced, valid
    with nogil:
        for j in range(n):
            started = False
            is_forced = False
            prev = NAN
            last_seen = -1
            n_present = 0
            for i in range(n_buckets):
                previous_present[i] = last_seen
                if not present[i, j]:
                    continue
                n_present += 1
                last_seen = i
                cur = counts[i, j]
                if not started:
                    started = True
                    prev = cur
                elif cur == prev:
                    pass
                elif almost_equal(prev, cur, MONOTONICITY_EPSILON):
                    counts[i, j] = prev
                elif cur < prev:
                    counts[i, j] = prev
                    is_forced = True
                else:
                    prev = cur
            if not started:
                values[j] = NAN
                continue
            last = last_seen
            top = bounds[last]
            valid = isinf(top) and top > 0
            observations = counts[last, j]
            quantile = q[j]
            rank = quantile * observations
            # the first present bucket below the last one whose count reaches the rank
            b = last
            found = False
            for i in range(n_buckets):
                if present[i, j] and i != last and counts[i, j] >= rank:
                    b = i
                    found = True
                    break
            if found:
                before = previous_present[b]
                end = bounds[b]
                start = 0.0
                count = counts[b, j]
                if before >= 0:
                    start = bounds[before]
                    count = count - counts[before, j]
                    rank = rank - counts[before, j]
                value = start + (end - start) * (rank / count)
                if before < 0 and end <= 0:
                    value = end
            else:
                # the rank lies in the +Inf bucket: the highest finite bound (the present bucket before it)
                previous = previous_present[last]
                value = bounds[previous if previous >= 0 else n_buckets - 1]
            if n_present < 2 or observations == 0 or not valid:
                value = NAN
            if quantile > 1:
                value = INFINITY
            elif quantile < 0:
                value = -INFINITY
            elif isnan(quantile):
                value = NAN
            values[j] = value
            forced[j] = is_forced and valid and 0 <= quantile <= 1
    return values_arr, forced_arr.view(bool)
