# Inline helpers over sample arrays, shared by the PromQL kernels (instant, rangefn, aggregate).
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

# Below this much work (samples plus output cells) a kernel keeps the GIL: handing it back afterwards can
# wait out another thread's switch interval, far longer than a small loop.
cdef enum:
    GIL_RELEASE_MIN_WORK = 1 << 16


cdef inline bint is_stale_marker(double value) noexcept nogil:
    """True for Prometheus's stale marker: the NaN with bits 0x7ff0000000000002 (other NaNs are values)."""
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits == <uint64_t>0x7FF0000000000002


cdef inline Py_ssize_t first_after(const int64_t* ts, Py_ssize_t lo, Py_ssize_t hi, int64_t t) noexcept nogil:
    """The first index in [lo, hi) whose timestamp is after t (hi if none), by bisection: ts increases."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if ts[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t advance_past(const int64_t* ts, Py_ssize_t pos, Py_ssize_t end, int64_t t) noexcept nogil:
    """The first index in [pos, end) whose timestamp is after t (end if none), by walking forward from pos.

    For walks that move a step's time at a time: where the steps and the scrapes share an interval, the
    walk moves 0, 1 or 2 samples depending on the scrape's jitter, which a loop's branch mispredicts about
    every other step. The first two moves are taken without branches, and from two loads that do not wait
    for each other: the next step's walk starts from this one's result, so one load's latency a step,
    not two, bounds a kernel that does little else. Away from the series' end (all steps but the last
    few) the two loads need no bounds, which the one branch that says so leaves out."""
    # (timestamps ascend: when the second sample is at or before t, so is the first)
    if pos + 1 < end:
        pos += (ts[pos] <= t) + (ts[pos + 1] <= t)
    elif pos < end:
        pos += ts[pos] <= t
    while pos < end and ts[pos] <= t:
        pos += 1
    return pos


cdef inline Py_ssize_t drop_stale_markers(int64_t* ts, double* vals, Py_ssize_t n) noexcept nogil:
    """Remove the stale markers from ts/vals[:n] in place, keeping the order; returns how many samples are
    left. (A range function sees a series without them, as Prometheus's do.)"""
    cdef Py_ssize_t j, kept = 0
    for j in range(n):
        if not is_stale_marker(vals[j]):
            ts[kept] = ts[j]
            vals[kept] = vals[j]
            kept += 1
    return kept
