# cython: language_level=3
"""PromQL range-vector functions (`rate(x[5m])`, `avg_over_time(x[1h])`, ...) over a whole step grid.

This module owns the float semantics of Prometheus 3.5's `promql/functions.go` for range functions:
one series, many evaluation times, one call. Per step the window is left-open, `(T - range, T]`;
the evaluator shifts the evaluation times for `offset` and `@` before calling. Histogram samples
are not handled here.

Assumptions about the input, which the caller guarantees:

- `ts` is strictly increasing within each series (milliseconds since the epoch);
- stale markers (the NaN with bits 0x7ff0000000000002) have already been removed. Every other NaN
  is an ordinary sample value and propagates as Prometheus propagates it;
- `eval_ts` is non-decreasing; both window edges then only move forward.

Cost per series: rate, increase, delta, irate, idelta, resets, changes, count, present, last and
ts_of_last are O(n_samples + n_steps); min, max and ts_of_min/max keep a monotonic deque, and
quantile_over_time a sorted window, across steps. Sums, means, variances, regressions and smoothing
must add in Prometheus's order to give its bits, so they walk each window afresh: O(window) per step.

Annotations (a q outside [0, 1], a metric name that does not look like a counter) are the
evaluator's business; these kernels only compute values.

Results come back as `(out, present)`; `present[i] == 0` means Prometheus returns no sample at
that step (for example fewer than two samples in a `rate` window), and `out[i]` is then NaN.
All the loops run without the GIL, and `evaluate_batch` releases it once for all of its series.
"""
import numpy as np

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, fabs, floor, isinf, isnan, sqrt
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memmove

from mimird._fast.arrays cimport vector
from mimird._fast.samples cimport GIL_RELEASE_MIN_WORK, advance_past, first_after, is_stale_marker
from mimird.util.memory import spare_buffers

cnp.import_array()

# name -> (kernel, number of scalar parameters besides the range vector)
cdef dict _FUNCTIONS = {
    "rate": (FN_RATE, 0),
    "increase": (FN_INCREASE, 0),
    "delta": (FN_DELTA, 0),
    "irate": (FN_IRATE, 0),
    "idelta": (FN_IDELTA, 0),
    "deriv": (FN_DERIV, 0),
    "predict_linear": (FN_PREDICT_LINEAR, 1),
    "resets": (FN_RESETS, 0),
    "changes": (FN_CHANGES, 0),
    "avg_over_time": (FN_AVG, 0),
    "sum_over_time": (FN_SUM, 0),
    "count_over_time": (FN_COUNT, 0),
    "min_over_time": (FN_MIN, 0),
    "max_over_time": (FN_MAX, 0),
    "last_over_time": (FN_LAST, 0),
    "present_over_time": (FN_PRESENT, 0),
    "stddev_over_time": (FN_STDDEV, 0),
    "stdvar_over_time": (FN_STDVAR, 0),
    "quantile_over_time": (FN_QUANTILE, 1),
    "mad_over_time": (FN_MAD, 0),
    "ts_of_min_over_time": (FN_TS_OF_MIN, 0),
    "ts_of_max_over_time": (FN_TS_OF_MAX, 0),
    "ts_of_last_over_time": (FN_TS_OF_LAST, 0),
    "double_exponential_smoothing": (FN_DOUBLE_EXPONENTIAL_SMOOTHING, 2),
}

#: Range functions this module evaluates, mapped to how many scalar parameters each takes.
#: `quantile_over_time`'s q comes first in PromQL but is passed here as the only parameter.
FUNCTION_PARAMETER_COUNTS = {name: spec[1] for name, spec in _FUNCTIONS.items()}


cdef struct Window:
    Py_ssize_t lo          # first sample with ts > T - range
    Py_ssize_t hi          # first sample with ts > T; the window is [lo, hi)


cdef inline void advance_window(const Series* s, int64_t t_end, int64_t range_ms, Window* w) noexcept nogil:
    cdef int64_t t_start = t_end - range_ms
    while w.lo < s.n and s.ts[w.lo] <= t_start:
        w.lo += 1
    while w.hi < s.n and s.ts[w.hi] <= t_end:
        w.hi += 1


cdef inline void slide_window(const Series* s, int64_t t_end, int64_t range_ms, Window* w) noexcept nogil:
    """advance_window for kernels that do O(1) work per step, each edge moved by `advance_past`: the
    mispredicted branch of advance_window's loops took a third of `rate`'s time. Kernels that go over the
    window's samples keep advance_window (they measured slower with this one)."""
    w.lo = advance_past(s.ts, w.lo, s.n, t_end - range_ms)
    w.hi = advance_past(s.ts, w.hi, s.n, t_end)


cdef inline double kahan_sum_inc(double inc, double total, double* compensation) noexcept nogil:
    """Neumaier-compensated `total + inc`, as Prometheus's kahanSumInc (the infinity reset included)."""
    cdef double t = total + inc
    # Written without branches (selects, which compile to blends): which operand is larger is
    # data-dependent and would otherwise mispredict on most samples. Same operations, same bits.
    cdef bint total_larger = fabs(total) >= fabs(inc)
    cdef double larger = total if total_larger else inc
    cdef double smaller = inc if total_larger else total
    cdef double corrected = compensation[0] + ((larger - t) + smaller)
    compensation[0] = 0 if isinf(t) else corrected
    return t


# Two of `rate`'s seven divisions only feed comparisons that nearly always come out the same way, and
# these tests settle those cases by products instead (the kernel is bound by its instructions). Each side
# of a test is within a few roundings (a relative 2**-53 each) of the exact value; the margins (2**-40) are
# far wider, so a test that passes proves the comparison Prometheus makes, and one that fails leaves it to
# the division, as before. The operands stay in the normal range, away from underflow.
cdef double _BELOW = 1 - 2.0 ** -40
cdef double _ABOVE = 1 + 2.0 ** -40
cdef double _SMALLEST_OPERAND = 1e-290


cdef inline bint surely_below_threshold(double gap, double sampled, Py_ssize_t intervals) noexcept nogil:
    # True only if gap < (sampled / intervals) * 1.1 as rounded: extrapolated_rate's threshold test for both
    # gaps (gap, the larger, >= 0; sampled > 0 in whole milliseconds).
    return gap * <double>intervals < (sampled * 1.1) * _BELOW


cdef inline bint surely_not_below(double sampled, double first_value, double result, double to_start) noexcept nogil:
    # True only if sampled * (first_value / result), as rounded, is not below to_start (result > 0,
    # first_value >= 0): the counter's zero point lies farther back than the window's start gap.
    if first_value < _SMALLEST_OPERAND or result < _SMALLEST_OPERAND or result > 1e290 or first_value > 1e290:
        return False
    return (to_start * result) * _ABOVE < sampled * first_value


cdef inline double go_duration_seconds(int64_t ms) noexcept nogil:
    # time.Duration.Seconds() splits whole seconds from the rest; dividing ms by 1000 directly can
    # round differently in the last bit.
    return <double>(ms // 1000) + <double>((ms % 1000) * 1000000) / 1e9


cdef inline double ms_to_seconds(int64_t ms) noexcept nogil:
    return <double>ms / 1000


cdef inline void mark_absent(double* out, uint8_t* present, Py_ssize_t i) noexcept nogil:
    out[i] = NAN
    present[i] = 0


cdef inline void set_result(double* out, uint8_t* present, Py_ssize_t i, double value) noexcept nogil:
    out[i] = value
    present[i] = 1


# --- rate, increase, delta ---------------------------------------------------------------------

cdef void extrapolated_rate(const Series* s, const StepGrid* g, Scratch* scratch, double* out,
                            uint8_t* present, bint is_counter, bint is_rate) noexcept nogil:
    cdef Window w = Window(0, 0)
    cdef Py_ssize_t i, j, first, last, n_resets = 0, reset_pos = 0, r
    cdef Py_ssize_t* resets = scratch.indexes
    cdef int64_t t_end
    cdef double result, to_start, to_end, sampled, avg_between, threshold, extrapolate_to, to_zero, factor
    cdef double range_seconds = go_duration_seconds(g.range_ms)
    if is_counter:
        # A reset at j adds vals[j-1]; it counts for a window holding both j-1 and j. Listing them
        # once keeps each step O(resets in window) while adding in Prometheus's order.
        for j in range(1, s.n):
            if s.vals[j] < s.vals[j - 1]:
                resets[n_resets] = j
                n_resets += 1
    for i in range(g.n_steps):
        t_end = g.eval_ts[i]
        slide_window(s, t_end, g.range_ms, &w)
        if w.hi - w.lo < 2:
            mark_absent(out, present, i)
            continue
        first = w.lo
        last = w.hi - 1
        result = s.vals[last] - s.vals[first]
        if is_counter:
            while reset_pos < n_resets and resets[reset_pos] <= first:
                reset_pos += 1
            r = reset_pos
            while r < n_resets and resets[r] <= last:
                result += s.vals[resets[r] - 1]
                r += 1
        to_start = <double>(s.ts[first] - (t_end - g.range_ms)) / 1000
        to_end = <double>(t_end - s.ts[last]) / 1000
        sampled = <double>(s.ts[last] - s.ts[first]) / 1000
        extrapolate_to = sampled
        # Both gaps are mostly well below the threshold (1.1 average intervals): a test by products, with
        # a margin far wider than their rounding, proves it without the division (see below).
        if not surely_below_threshold(to_start if to_start > to_end else to_end, sampled, last - first):
            avg_between = sampled / <double>(last - first)
            threshold = avg_between * 1.1
            if to_start >= threshold:
                to_start = avg_between / 2
            if to_end >= threshold:
                to_end = avg_between / 2
        if is_counter and result > 0 and s.vals[first] >= 0 and \
                not surely_not_below(sampled, s.vals[first], result, to_start):
            # A counter cannot have been below zero: stop the extrapolation where it would reach 0.
            to_zero = sampled * (s.vals[first] / result)
            if to_zero < to_start:
                to_start = to_zero
        extrapolate_to += to_start
        extrapolate_to += to_end
        factor = extrapolate_to / sampled
        if is_rate:
            factor /= range_seconds
        set_result(out, present, i, result * factor)


# --- irate, idelta -------------------------------------------------------------------------------

cdef void instant_value(const Series* s, const StepGrid* g, double* out, uint8_t* present,
                        bint is_rate) noexcept nogil:
    cdef Window w = Window(0, 0)
    cdef Py_ssize_t i, a, b
    cdef int64_t interval
    cdef double result
    for i in range(g.n_steps):
        slide_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 2:
            mark_absent(out, present, i)
            continue
        a = w.hi - 2
        b = w.hi - 1
        interval = s.ts[b] - s.ts[a]
        if interval == 0:
            mark_absent(out, present, i)
            continue
        if not is_rate or not (s.vals[b] < s.vals[a]):
            result = s.vals[b] - s.vals[a]
        else:
            # irate across a counter reset: the counter restarted from zero.
            result = s.vals[b]
        if is_rate:
            result /= <double>interval / 1000
        set_result(out, present, i, result)


# --- deriv, predict_linear ----------------------------------------------------------------------

cdef void linear_regression(const Series* s, Py_ssize_t lo, Py_ssize_t hi, int64_t intercept_time,
                            double* slope, double* intercept) noexcept nogil:
    cdef double n = 0, sum_x = 0, c_x = 0, sum_y = 0, c_y = 0, sum_xy = 0, c_xy = 0
    cdef double sum_x2 = 0, c_x2 = 0, x, y, cov_xy, var_x
    cdef double init_y = s.vals[lo]
    cdef bint const_y = True
    cdef Py_ssize_t j
    for j in range(lo, hi):
        y = s.vals[j]
        if const_y and j > lo and y != init_y:
            const_y = False
        n += 1.0
        x = <double>(s.ts[j] - intercept_time) / 1e3
        sum_x = kahan_sum_inc(x, sum_x, &c_x)
        sum_y = kahan_sum_inc(y, sum_y, &c_y)
        sum_xy = kahan_sum_inc(x * y, sum_xy, &c_xy)
        sum_x2 = kahan_sum_inc(x * x, sum_x2, &c_x2)
    if const_y:
        if isinf(init_y):
            slope[0] = NAN
            intercept[0] = NAN
        else:
            slope[0] = 0
            intercept[0] = init_y
        return
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope[0] = cov_xy / var_x
    intercept[0] = sum_y / n - slope[0] * sum_x / n


cdef void deriv_or_predict(const Series* s, const StepGrid* g, double* out, uint8_t* present,
                           bint predict) noexcept nogil:
    cdef Window w = Window(0, 0)
    cdef Py_ssize_t i
    cdef double slope, intercept
    for i in range(g.n_steps):
        advance_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 2:
            mark_absent(out, present, i)
            continue
        if predict:
            # Prometheus anchors the prediction at the unshifted evaluation time.
            linear_regression(s, w.lo, w.hi, g.eval_ts[i] + g.intercept_shift_ms, &slope, &intercept)
            set_result(out, present, i, slope * g.param0[i] + intercept)
        else:
            # Any time near the samples will do for the slope; the first one keeps x small.
            linear_regression(s, w.lo, w.hi, s.ts[w.lo], &slope, &intercept)
            set_result(out, present, i, slope)


# --- resets, changes -----------------------------------------------------------------------------

cdef void count_transitions(const Series* s, const StepGrid* g, Scratch* scratch, double* out,
                            uint8_t* present, bint count_changes) noexcept nogil:
    # An event at j is a transition between samples j-1 and j; a window [lo, hi) sees those with
    # lo < j < hi. Two cursors over the event list count them without rescanning the window.
    cdef Py_ssize_t* events = scratch.indexes
    cdef Py_ssize_t n_events = 0, j, i, upto_lo = 0, below_hi = 0
    cdef double prev, cur
    cdef Window w = Window(0, 0)
    for j in range(1, s.n):
        prev = s.vals[j - 1]
        cur = s.vals[j]
        if count_changes:
            if cur != prev and not (isnan(cur) and isnan(prev)):
                events[n_events] = j
                n_events += 1
        elif cur < prev:
            events[n_events] = j
            n_events += 1
    for i in range(g.n_steps):
        advance_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 1:
            mark_absent(out, present, i)
            continue
        while upto_lo < n_events and events[upto_lo] <= w.lo:
            upto_lo += 1
        while below_hi < n_events and events[below_hi] < w.hi:
            below_hi += 1
        set_result(out, present, i, <double>(below_hi - upto_lo))


# --- sums and moments ---------------------------------------------------------------------------

cdef double window_sum(const Series* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef double total = 0, c = 0
    cdef Py_ssize_t j
    for j in range(lo, hi):
        total = kahan_sum_inc(s.vals[j], total, &c)
    if isinf(total):
        return total
    return total + c


cdef double window_avg(const Series* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # Direct mean with compensated summation while the running sum stays finite; once it would
    # overflow, switch to an incremental mean (Prometheus 3.5, issue #16714).
    cdef double total = s.vals[lo], count = 1, mean = 0, c = 0, new_total, new_c, q, f
    cdef bint incremental = False
    cdef Py_ssize_t j
    for j in range(lo + 1, hi):
        f = s.vals[j]
        count = <double>(j - lo + 1)
        if not incremental:
            new_c = c
            new_total = kahan_sum_inc(f, total, &new_c)
            if not isinf(new_total):
                total = new_total
                c = new_c
                continue
            incremental = True
            mean = total / (count - 1)
            c /= (count - 1)
        q = (count - 1) / count
        c = q * c
        mean = kahan_sum_inc(f / count, q * mean, &c)
    if incremental:
        return mean + c
    return total / count + c / count


cdef double window_variance(const Series* s, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef double count = 0, mean = 0, c_mean = 0, aux = 0, c_aux = 0, delta, f
    cdef Py_ssize_t j
    for j in range(lo, hi):
        f = s.vals[j]
        count += 1
        delta = f - (mean + c_mean)
        mean = kahan_sum_inc(delta / count, mean, &c_mean)
        aux = kahan_sum_inc(delta * (f - (mean + c_mean)), aux, &c_aux)
    return (aux + c_aux) / count


cdef void moment_over_time(const Series* s, const StepGrid* g, double* out, uint8_t* present,
                           int fn) noexcept nogil:
    cdef Window w = Window(0, 0)
    cdef Py_ssize_t i
    for i in range(g.n_steps):
        advance_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 1:
            mark_absent(out, present, i)
        elif fn == FN_SUM:
            set_result(out, present, i, window_sum(s, w.lo, w.hi))
        elif fn == FN_AVG:
            set_result(out, present, i, window_avg(s, w.lo, w.hi))
        elif fn == FN_STDVAR:
            set_result(out, present, i, window_variance(s, w.lo, w.hi))
        else:
            set_result(out, present, i, sqrt(window_variance(s, w.lo, w.hi)))


# --- count, present, last, ts_of_last -----------------------------------------------------------

cdef void simple_over_time(const Series* s, const StepGrid* g, double* out, uint8_t* present,
                           int fn) noexcept nogil:
    cdef Window w = Window(0, 0)
    cdef Py_ssize_t i
    for i in range(g.n_steps):
        slide_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 1:
            mark_absent(out, present, i)
        elif fn == FN_COUNT:
            set_result(out, present, i, <double>(w.hi - w.lo))
        elif fn == FN_PRESENT:
            set_result(out, present, i, 1.0)
        elif fn == FN_LAST:
            set_result(out, present, i, s.vals[w.hi - 1])
        else:
            set_result(out, present, i, ms_to_seconds(s.ts[w.hi - 1]))


# --- min, max and the timestamps of them --------------------------------------------------------

cdef inline bint displaces(double newer, double older, bint is_max, bint keep_latest) noexcept nogil:
    if is_max:
        return newer >= older if keep_latest else newer > older
    return newer <= older if keep_latest else newer < older


cdef void extreme_over_time(const Series* s, const StepGrid* g, Scratch* scratch, double* out,
                            uint8_t* present, bint is_max, bint want_ts) noexcept nogil:
    # Monotonic deque of the window's non-NaN samples. Prometheus keeps the first of equal extremes
    # for the value and the last one for ts_of_*; NaN counts only when the window holds nothing
    # else, and then its last sample stands for the result.
    cdef Py_ssize_t* deque = scratch.indexes
    cdef Py_ssize_t head = 0, tail = 0, pushed = 0, i, best
    cdef double x
    cdef Window w = Window(0, 0)
    for i in range(g.n_steps):
        advance_window(s, g.eval_ts[i], g.range_ms, &w)
        while pushed < w.hi:
            x = s.vals[pushed]
            if not isnan(x):
                while tail > head and displaces(x, s.vals[deque[tail - 1]], is_max, want_ts):
                    tail -= 1
                deque[tail] = pushed
                tail += 1
            pushed += 1
        while head < tail and deque[head] < w.lo:
            head += 1
        if w.hi - w.lo < 1:
            mark_absent(out, present, i)
            continue
        best = deque[head] if head < tail else w.hi - 1
        if want_ts:
            set_result(out, present, i, ms_to_seconds(s.ts[best]))
        else:
            set_result(out, present, i, s.vals[best])


# --- quantile, mad -------------------------------------------------------------------------------

cdef int compare_doubles(const void* a, const void* b) noexcept nogil:
    cdef double x = (<const double*>a)[0], y = (<const double*>b)[0]
    return (x > y) - (x < y)


cdef void sort_doubles(double* values, Py_ssize_t n) noexcept nogil:
    """Ascending sort of NaN-free values; insertion sort below qsort's call overhead."""
    cdef Py_ssize_t i, j
    cdef double x
    if n > 24:
        qsort(values, n, sizeof(double), compare_doubles)
        return
    for i in range(1, n):
        x = values[i]
        j = i
        while j > 0 and values[j - 1] > x:
            values[j] = values[j - 1]
            j -= 1
        values[j] = x


cdef struct SortedWindow:
    # Prometheus orders NaN before every number, so a window sorts as n_nan NaNs followed by
    # `values[:n_values]` ascending.
    double* values
    Py_ssize_t n_values
    Py_ssize_t n_nan
    Py_ssize_t lo          # the samples [lo, hi) it holds
    Py_ssize_t hi


cdef void sorted_rebuild(SortedWindow* sw, const double* vals, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t j
    sw.n_values = 0
    sw.n_nan = 0
    for j in range(lo, hi):
        if isnan(vals[j]):
            sw.n_nan += 1
        else:
            sw.values[sw.n_values] = vals[j]
            sw.n_values += 1
    sort_doubles(sw.values, sw.n_values)


cdef void sorted_remove(SortedWindow* sw, double x) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = sw.n_values, mid
    if isnan(x):
        sw.n_nan -= 1
        return
    while lo < hi:  # first position holding a value >= x, which is x itself
        mid = (lo + hi) >> 1
        if sw.values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    memmove(sw.values + lo, sw.values + lo + 1, (sw.n_values - lo - 1) * sizeof(double))
    sw.n_values -= 1


cdef void sorted_insert(SortedWindow* sw, double x) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = sw.n_values, mid
    if isnan(x):
        sw.n_nan += 1
        return
    while lo < hi:  # first position holding a value > x
        mid = (lo + hi) >> 1
        if sw.values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    memmove(sw.values + lo + 1, sw.values + lo, (sw.n_values - lo) * sizeof(double))
    sw.values[lo] = x
    sw.n_values += 1


cdef void sorted_slide(SortedWindow* sw, const double* vals, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Move the sorted window to samples [lo, hi); both edges only move forward."""
    cdef Py_ssize_t leaving_end = min(lo, sw.hi), entering_start = max(sw.hi, lo), j
    cdef Py_ssize_t changes = max(leaving_end - sw.lo, 0) + max(hi - entering_start, 0)
    # Each insert or removal shifts part of the array; past a few of them a fresh sort is cheaper.
    if changes > 16 + (hi - lo) // 64:
        sorted_rebuild(sw, vals, lo, hi)
    else:
        for j in range(sw.lo, leaving_end):
            sorted_remove(sw, vals[j])
        for j in range(entering_start, hi):
            sorted_insert(sw, vals[j])
    sw.lo = lo
    sw.hi = hi


cdef double sorted_quantile(double q, const double* values, Py_ssize_t n_values,
                            Py_ssize_t n_nan) noexcept nogil:
    """Prometheus's quantile() over n_nan NaNs followed by the ascending `values`."""
    cdef Py_ssize_t n = n_values + n_nan, lower_index, upper_index
    cdef double rank, lower, upper, weight, lower_value, upper_value
    if n == 0 or isnan(q):
        return NAN
    if q < 0:
        return -INFINITY
    if q > 1:
        return INFINITY
    rank = q * <double>(n - 1)
    lower = floor(rank)
    if lower < 0:
        lower = 0
    upper = lower + 1
    if upper > <double>(n - 1):
        upper = <double>(n - 1)
    weight = rank - floor(rank)
    lower_index = <Py_ssize_t>lower
    upper_index = <Py_ssize_t>upper
    lower_value = NAN if lower_index < n_nan else values[lower_index - n_nan]
    upper_value = NAN if upper_index < n_nan else values[upper_index - n_nan]
    return lower_value * (1 - weight) + upper_value * weight


cdef void quantile_or_mad(const Series* s, const StepGrid* g, Scratch* scratch, double* out,
                          uint8_t* present, bint mad) noexcept nogil:
    # The window is kept sorted from step to step; mad also sorts the deviations from the median,
    # which change with every step, in the second half of the scratch space.
    cdef Window w = Window(0, 0)
    cdef SortedWindow sw = SortedWindow(scratch.values, 0, 0, 0, 0)
    cdef double* deviations = scratch.values + s.n
    cdef Py_ssize_t i, j, n_dev, n_dev_nan
    cdef double median, d
    for i in range(g.n_steps):
        advance_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 1:
            mark_absent(out, present, i)
            continue
        sorted_slide(&sw, s.vals, w.lo, w.hi)
        if not mad:
            set_result(out, present, i, sorted_quantile(g.param0[i], sw.values, sw.n_values, sw.n_nan))
            continue
        median = sorted_quantile(0.5, sw.values, sw.n_values, sw.n_nan)
        n_dev = 0
        n_dev_nan = 0
        for j in range(w.lo, w.hi):
            d = fabs(s.vals[j] - median)
            if isnan(d):
                n_dev_nan += 1
            else:
                deviations[n_dev] = d
                n_dev += 1
        sort_doubles(deviations, n_dev)
        set_result(out, present, i, sorted_quantile(0.5, deviations, n_dev, n_dev_nan))


# --- double_exponential_smoothing ---------------------------------------------------------------

cdef void double_exponential_smoothing(const Series* s, const StepGrid* g, double* out,
                                       uint8_t* present) noexcept nogil:
    cdef Window w = Window(0, 0)
    cdef Py_ssize_t i, j
    cdef double sf, tf, s0, s1, trend
    for i in range(g.n_steps):
        advance_window(s, g.eval_ts[i], g.range_ms, &w)
        if w.hi - w.lo < 2:
            mark_absent(out, present, i)
            continue
        sf = g.param0[i]
        tf = g.param1[i]
        s0 = 0
        s1 = s.vals[w.lo]
        trend = s.vals[w.lo + 1] - s.vals[w.lo]
        for j in range(1, w.hi - w.lo):
            # The first step keeps the initial trend (calcTrendValue with i == 0).
            if j > 1:
                trend = tf * (s1 - s0) + (1 - tf) * trend
            s0, s1 = s1, sf * s.vals[w.lo + j] + (1 - sf) * (s1 + trend)
        set_result(out, present, i, s1)


# --- dispatch ------------------------------------------------------------------------------------

cdef void evaluate_series(int fn, const Series* s, const StepGrid* g, Scratch* scratch, double* out,
                          uint8_t* present) noexcept nogil:
    if fn == FN_RATE:
        extrapolated_rate(s, g, scratch, out, present, True, True)
    elif fn == FN_INCREASE:
        extrapolated_rate(s, g, scratch, out, present, True, False)
    elif fn == FN_DELTA:
        extrapolated_rate(s, g, scratch, out, present, False, False)
    elif fn == FN_IRATE:
        instant_value(s, g, out, present, True)
    elif fn == FN_IDELTA:
        instant_value(s, g, out, present, False)
    elif fn == FN_DERIV:
        deriv_or_predict(s, g, out, present, False)
    elif fn == FN_PREDICT_LINEAR:
        deriv_or_predict(s, g, out, present, True)
    elif fn == FN_RESETS:
        count_transitions(s, g, scratch, out, present, False)
    elif fn == FN_CHANGES:
        count_transitions(s, g, scratch, out, present, True)
    elif fn == FN_SUM or fn == FN_AVG or fn == FN_STDDEV or fn == FN_STDVAR:
        moment_over_time(s, g, out, present, fn)
    elif fn == FN_COUNT or fn == FN_PRESENT or fn == FN_LAST or fn == FN_TS_OF_LAST:
        simple_over_time(s, g, out, present, fn)
    elif fn == FN_MIN:
        extreme_over_time(s, g, scratch, out, present, False, False)
    elif fn == FN_MAX:
        extreme_over_time(s, g, scratch, out, present, True, False)
    elif fn == FN_TS_OF_MIN:
        extreme_over_time(s, g, scratch, out, present, False, True)
    elif fn == FN_TS_OF_MAX:
        extreme_over_time(s, g, scratch, out, present, True, True)
    elif fn == FN_QUANTILE:
        quantile_or_mad(s, g, scratch, out, present, False)
    elif fn == FN_MAD:
        quantile_or_mad(s, g, scratch, out, present, True)
    elif fn == FN_DOUBLE_EXPONENTIAL_SMOOTHING:
        double_exponential_smoothing(s, g, out, present)


def check_double_exponential_smoothing_params(double smoothing_factor, double trend_factor):
    """Raise ValueError, with Prometheus's message, unless 0 < sf < 1 and 0 < tf < 1.

    Prometheus checks this only when it evaluates the function for a series, so the evaluator
    should call it for each step at which some series has samples in its window. NaN passes, as
    it does in Prometheus.
    """
    if smoothing_factor <= 0 or smoothing_factor >= 1:
        raise ValueError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {smoothing_factor:f}")
    if trend_factor <= 0 or trend_factor >= 1:
        raise ValueError(f"invalid trend factor. Expected: 0 < tf < 1, got: {trend_factor:f}")


cdef cnp.ndarray _per_step_params(str name, int expected, tuple params, Py_ssize_t n_steps):
    if len(params) != expected:
        raise ValueError(f"{name} takes {expected} scalar parameter(s), got {len(params)}")
    grid = np.zeros((2, n_steps), dtype=np.float64)
    for k, param in enumerate(params):
        values = np.asarray(param, dtype=np.float64)
        if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != n_steps):
            raise ValueError(f"parameter {k} of {name} must be a scalar or one value per step")
        grid[k, :] = values
    return grid


cdef Py_ssize_t _longest_run(const int64_t* bounds, Py_ssize_t n) noexcept nogil:
    # The largest difference between neighbours of `bounds`, or -1 if it ever decreases.
    cdef Py_ssize_t i, longest = 0
    cdef int64_t step
    for i in range(1, n):
        step = bounds[i] - bounds[i - 1]
        if step < 0:
            return -1
        if step > longest:
            longest = step
    return longest


cdef Py_ssize_t _checked_longest_run(Py_ssize_t n_samples, Py_ssize_t n_values, const int64_t* offsets,
                                     Py_ssize_t n_offsets, long long range_ms) except -1:
    # Check a batch as evaluate_batch's docstring requires; returns its longest series' sample count.
    if n_samples != n_values:
        raise ValueError("ts and vals differ in length")
    if n_offsets < 1:
        raise ValueError("series_offsets needs at least one entry")
    if range_ms < 0:
        raise ValueError("range_ms must not be negative")
    cdef Py_ssize_t longest = _longest_run(offsets, n_offsets)
    if offsets[0] < 0 or offsets[n_offsets - 1] > n_samples or longest < 0:
        raise ValueError("series_offsets must be non-decreasing within [0, len(ts)]")
    return longest


cdef cnp.ndarray _output(object given, Py_ssize_t n_series, Py_ssize_t n_steps, int type_num, bint zeroed):
    cdef cnp.npy_intp dims[2]
    cdef cnp.ndarray array
    if given is None:
        dims[0] = n_series
        dims[1] = n_steps
        if zeroed:
            return cnp.PyArray_ZEROS(2, dims, type_num, 0)
        if type_num == cnp.NPY_FLOAT64 and n_series * n_steps * 8 >= spare_buffers.min_bytes:
            # (a range query's values over thousands of series: not faulted in anew on every query)
            return spare_buffers.empty((n_series, n_steps), np.float64)
        return cnp.PyArray_EMPTY(2, dims, type_num, 0)
    array = given
    if (cnp.PyArray_NDIM(array) != 2 or cnp.PyArray_DIM(array, 0) != n_series or cnp.PyArray_DIM(array, 1) != n_steps
            or cnp.PyArray_TYPE(array) != type_num or not cnp.PyArray_IS_C_CONTIGUOUS(array)
            or not cnp.PyArray_ISWRITEABLE(array)):
        raise ValueError("out and present must be writable C-contiguous float64 and uint8 arrays of shape "
                         "(n_series, n_steps)")
    return array


cdef tuple prepare_grid(str name, object eval_ts, long long range_ms, tuple params, long long intercept_shift_ms,
                        StepGrid* grid, int* fn):
    # evaluate_batch's arguments past the samples, checked, with the kernel's code in fn[0]. The grid points
    # into the returned arrays, which the caller keeps for as long as it uses the grid.
    spec = _FUNCTIONS.get(name)
    if spec is None:
        raise ValueError(f"unknown range function: {name!r}")
    if range_ms < 0:
        raise ValueError("range_ms must not be negative")
    cdef cnp.ndarray steps_arr = vector(eval_ts, cnp.NPY_INT64, "eval_ts")
    cdef Py_ssize_t n_steps = cnp.PyArray_DIM(steps_arr, 0)
    cdef const int64_t* steps = <const int64_t*>cnp.PyArray_DATA(steps_arr)
    if _longest_run(steps, n_steps) < 0:
        raise ValueError("eval_ts must be non-decreasing")
    cdef cnp.ndarray param_arr = _per_step_params(name, spec[1], params, n_steps)
    fn[0] = spec[0]
    grid.eval_ts = steps
    grid.n_steps = n_steps
    grid.range_ms = range_ms
    grid.param0 = <const double*>cnp.PyArray_DATA(param_arr)
    grid.param1 = grid.param0 + n_steps
    grid.intercept_shift_ms = intercept_shift_ms
    return steps_arr, param_arr


cdef cnp.ndarray output_rows(object given, Py_ssize_t n_series, Py_ssize_t n_steps, bint is_present):
    # The (n_series, n_steps) float64 values or zeroed uint8 presence of a batch: `given`, checked, or new.
    return _output(given, n_series, n_steps, cnp.NPY_UINT8 if is_present else cnp.NPY_FLOAT64, is_present)


def evaluate_batch(str name, ts, vals, series_offsets, eval_ts, long long range_ms, tuple params=(),
                   long long intercept_shift_ms=0, out=None, present=None):
    """Evaluate the range function `name` for many series over one step grid.

    Series k's samples are `ts[series_offsets[k]:series_offsets[k+1]]` (ms, strictly increasing,
    stale markers removed) and the matching slice of `vals`. `eval_ts` holds the evaluation times
    in ms, non-decreasing, already shifted for offset/@; the window at T is `(T - range_ms, T]`.

    `params` holds the function's scalar arguments (see FUNCTION_PARAMETER_COUNTS), each a float
    or an array with one value per step: predict_linear's duration in seconds, quantile_over_time's
    q, double_exponential_smoothing's (sf, tf). `intercept_shift_ms` is for predict_linear only:
    Prometheus anchors its regression at the unshifted evaluation time, `eval_ts + shift`, so pass
    the amount by which the times were moved back.

    Returns `(out, present)`, float64 and uint8 arrays of shape (n_series, n_steps), written into the
    given `out` and `present` when both are passed (C-contiguous, that shape; threads evaluating parts
    of one batch fill row blocks of one pair of arrays). The GIL is released for the whole batch.
    """
    cdef cnp.ndarray ts_arr = vector(ts, cnp.NPY_INT64, "ts")
    cdef cnp.ndarray vals_arr = vector(vals, cnp.NPY_FLOAT64, "vals")
    cdef cnp.ndarray offsets_arr = vector(series_offsets, cnp.NPY_INT64, "series_offsets")
    cdef Py_ssize_t n_samples = cnp.PyArray_DIM(ts_arr, 0)
    cdef Py_ssize_t n_offsets = cnp.PyArray_DIM(offsets_arr, 0)
    cdef const int64_t* ts_base = <const int64_t*>cnp.PyArray_DATA(ts_arr)
    cdef const double* vals_base = <const double*>cnp.PyArray_DATA(vals_arr)
    cdef const int64_t* offsets = <const int64_t*>cnp.PyArray_DATA(offsets_arr)
    cdef Py_ssize_t longest = _checked_longest_run(n_samples, cnp.PyArray_DIM(vals_arr, 0), offsets, n_offsets,
                                                   range_ms)
    cdef StepGrid grid
    cdef int fn
    cdef tuple grid_arrays = prepare_grid(name, eval_ts, range_ms, params, intercept_shift_ms, &grid, &fn)
    cdef Py_ssize_t n_steps = grid.n_steps
    cdef Py_ssize_t n_series = n_offsets - 1
    cdef cnp.ndarray out_arr = output_rows(out if present is not None else None, n_series, n_steps, False)
    cdef cnp.ndarray present_arr = output_rows(present if out is not None else None, n_series, n_steps, True)
    if n_series == 0 or n_steps == 0:
        return out_arr, present_arr

    cdef Series series
    cdef Scratch scratch
    cdef Py_ssize_t k, start
    cdef double* out_rows = <double*>cnp.PyArray_DATA(out_arr)
    cdef uint8_t* present_rows = <uint8_t*>cnp.PyArray_DATA(present_arr)
    scratch.values = <double*>malloc(max(2 * longest, 1) * sizeof(double))
    scratch.indexes = <Py_ssize_t*>malloc(max(longest, 1) * sizeof(Py_ssize_t))
    try:
        if scratch.values == NULL or scratch.indexes == NULL:
            raise MemoryError()
        with nogil:
            for k in range(n_series):
                start = offsets[k]
                # an empty ts array may have no buffer; no series has samples then
                series.ts = ts_base + start if n_samples > 0 else NULL
                series.vals = vals_base + start if n_samples > 0 else NULL
                series.n = offsets[k + 1] - start
                evaluate_series(fn, &series, &grid, &scratch, out_rows + k * n_steps, present_rows + k * n_steps)
    finally:
        free(scratch.values)
        free(scratch.indexes)
    return out_arr, present_arr


def evaluate(str name, ts, vals, eval_ts, long long range_ms, tuple params=(),
             long long intercept_shift_ms=0):
    """Evaluate the range function `name` for one series; see evaluate_batch for the arguments.

    Returns `(out, present)`, float64 and uint8 arrays with one entry per step.
    """
    ts_arr = np.ascontiguousarray(ts, dtype=np.int64)
    offsets = np.array([0, ts_arr.shape[0]], dtype=np.int64)
    out, present = evaluate_batch(name, ts_arr, vals, offsets, eval_ts, range_ms, params,
                                  intercept_shift_ms)
    return out[0], present[0]


cdef Py_ssize_t _evaluate_at(int fn, const int64_t* ts, const double* vals, const int64_t* offsets,
                             Py_ssize_t n_series, int64_t t, int64_t range_ms, int64_t* window_ts,
                             double* window_vals, Scratch* scratch, double* out, uint8_t* present) noexcept nogil:
    # Each series' window (t - range, t] is copied without its stale markers, then evaluated for one step;
    # returns how many samples the windows held after stale markers were dropped.
    cdef StepGrid grid
    cdef Series window
    cdef double no_params[2]
    cdef Py_ssize_t k, i, lo, hi, n, held = 0
    no_params[0] = 0.0
    no_params[1] = 0.0
    grid.eval_ts = &t
    grid.n_steps = 1
    grid.range_ms = range_ms
    grid.param0 = no_params
    grid.param1 = no_params + 1
    grid.intercept_shift_ms = 0
    window.ts = window_ts
    window.vals = window_vals
    for k in range(n_series):
        lo = first_after(ts, offsets[k], offsets[k + 1], t - range_ms)
        hi = first_after(ts, lo, offsets[k + 1], t)
        n = 0
        for i in range(lo, hi):
            if not is_stale_marker(vals[i]):
                window_ts[n] = ts[i]
                window_vals[n] = vals[i]
                n += 1
        held += n
        window.n = n
        present[k] = 0
        out[k] = NAN
        if n:
            evaluate_series(fn, &window, &grid, scratch, out + k, present + k)
    return held


def evaluate_instant(str name, ts, vals, series_offsets, long long t, long long range_ms):
    """Evaluate the range function `name`, one without scalar parameters, for many series at the single
    time `t` (already shifted for offset), window `(t - range_ms, t]`.

    The arguments are as for `evaluate_batch`, except that stale markers may still be in `vals`: they are
    skipped here. Returns `(rows, values, samples)`: the indices of the series with a result at `t`, in
    order, their values (Python lists, for building a query result without numpy), and how many samples
    the windows held without stale markers (what the engine counts against the sample limit).
    """
    spec = _FUNCTIONS.get(name)
    if spec is None or spec[1] != 0:
        raise ValueError(f"not a range function without parameters: {name!r}")
    cdef int fn = spec[0]
    cdef cnp.ndarray ts_arr = vector(ts, cnp.NPY_INT64, "ts")
    cdef cnp.ndarray vals_arr = vector(vals, cnp.NPY_FLOAT64, "vals")
    cdef cnp.ndarray offsets_arr = vector(series_offsets, cnp.NPY_INT64, "series_offsets")
    cdef Py_ssize_t n_samples = cnp.PyArray_DIM(ts_arr, 0)
    cdef Py_ssize_t n_offsets = cnp.PyArray_DIM(offsets_arr, 0)
    cdef const int64_t* offsets = <const int64_t*>cnp.PyArray_DATA(offsets_arr)
    cdef Py_ssize_t longest = _checked_longest_run(n_samples, cnp.PyArray_DIM(vals_arr, 0), offsets, n_offsets,
                                                   range_ms)
    cdef Py_ssize_t n_series = n_offsets - 1, k, held
    cdef list rows = [], values = []
    if n_series == 0 or n_samples == 0:
        return rows, values, 0
    cdef const int64_t* ts_base = <const int64_t*>cnp.PyArray_DATA(ts_arr)
    cdef const double* vals_base = <const double*>cnp.PyArray_DATA(vals_arr)
    cdef Scratch scratch
    cdef int64_t* window_ts = <int64_t*>malloc(max(longest, 1) * sizeof(int64_t))
    cdef double* window_vals = <double*>malloc(max(longest, 1) * sizeof(double))
    cdef double* out = <double*>malloc(n_series * sizeof(double))
    cdef uint8_t* present = <uint8_t*>malloc(n_series)
    scratch.values = <double*>malloc(max(2 * longest, 1) * sizeof(double))
    scratch.indexes = <Py_ssize_t*>malloc(max(longest, 1) * sizeof(Py_ssize_t))
    try:
        if (window_ts == NULL or window_vals == NULL or out == NULL or present == NULL or scratch.values == NULL
                or scratch.indexes == NULL):
            raise MemoryError()
        if offsets[n_offsets - 1] - offsets[0] >= GIL_RELEASE_MIN_WORK:
            with nogil:
                held = _evaluate_at(fn, ts_base, vals_base, offsets, n_series, t, range_ms, window_ts,
                                    window_vals, &scratch, out, present)
        else:
            held = _evaluate_at(fn, ts_base, vals_base, offsets, n_series, t, range_ms, window_ts, window_vals,
                                &scratch, out, present)
        for k in range(n_series):
            if present[k]:
                rows.append(k)
                values.append(out[k])
    finally:
        free(window_ts)
        free(window_vals)
        free(out)
        free(present)
        free(scratch.values)
        free(scratch.indexes)
    return rows, values, held


def has_stale_markers(vals) -> bool:
    """Whether any of the float64 values is a stale marker (the range functions' inputs must not hold
    one): one pass, where the numpy test makes a view, a comparison, a negation and a reduction."""
    cdef const double[::1] view = vals
    cdef Py_ssize_t i
    for i in range(view.shape[0]):
        if is_stale_marker(view[i]):
            return True
    return False
