"""A short pure-Python statement of Prometheus 3.5's range-function semantics, for float samples.

Each function follows `promql/functions.go` (v3.5.0) line by line on the list of (t_ms, value)
samples in one window; `evaluate` cuts the windows `(T - range, T]` by bisection, one step at a time.
It favours plain over fast: the Cython kernels in `mimird._fast.rangefn` are checked against it.
Returning None means Prometheus returns no sample for that step.
"""

import math
from bisect import bisect_right

NAN = math.nan
INF = math.inf


def ieee_div(a: float, b: float) -> float:
    """a / b with IEEE 754 results for a zero divisor, as Go computes it."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


def kahan_sum_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def go_duration_seconds(ms: int) -> float:
    ns = ms * 1_000_000
    return float(ns // 1_000_000_000) + float(ns % 1_000_000_000) / 1e9


def extrapolated_rate(window, t_end, range_ms, is_counter, is_rate):
    if len(window) < 2:
        return None
    range_start = t_end - range_ms
    first_t, first_v = window[0]
    last_t, last_v = window[-1]
    result = last_v - first_v
    if is_counter:
        prev = first_v
        for _, cur in window[1:]:
            if cur < prev:
                result += prev
            prev = cur
    duration_to_start = float(first_t - range_start) / 1000
    duration_to_end = float(t_end - last_t) / 1000
    sampled_interval = float(last_t - first_t) / 1000
    average_between = sampled_interval / float(len(window) - 1)
    threshold = average_between * 1.1
    extrapolate_to = sampled_interval
    if duration_to_start >= threshold:
        duration_to_start = average_between / 2
    if is_counter and result > 0 and first_v >= 0:
        duration_to_zero = sampled_interval * ieee_div(first_v, result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    extrapolate_to += duration_to_start
    if duration_to_end >= threshold:
        duration_to_end = average_between / 2
    extrapolate_to += duration_to_end
    factor = extrapolate_to / sampled_interval
    if is_rate:
        factor /= go_duration_seconds(range_ms)
    return result * factor


def instant_value(window, is_rate):
    if len(window) < 2:
        return None
    (t0, v0), (t1, v1) = window[-2], window[-1]
    interval = t1 - t0
    if interval == 0:
        return None
    result = v1
    if not is_rate or not (v1 < v0):
        result = v1 - v0
    if is_rate:
        result /= float(interval) / 1000
    return result


def linear_regression(window, intercept_time):
    n = sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = window[0][1]
    const_y = True
    for i, (t, y) in enumerate(window):
        if const_y and i > 0 and y != init_y:
            const_y = False
        n += 1.0
        x = float(t - intercept_time) / 1e3
        sum_x, c_x = kahan_sum_inc(x, sum_x, c_x)
        sum_y, c_y = kahan_sum_inc(y, sum_y, c_y)
        sum_xy, c_xy = kahan_sum_inc(x * y, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_sum_inc(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return NAN, NAN
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = ieee_div(cov_xy, var_x)
    return slope, sum_y / n - slope * sum_x / n


def deriv(window):
    if len(window) < 2:
        return None
    return linear_regression(window, window[0][0])[0]


def predict_linear(window, intercept_time, duration):
    if len(window) < 2:
        return None
    slope, intercept = linear_regression(window, intercept_time)
    return slope * duration + intercept


def resets(window):
    values = [v for _, v in window]
    return float(sum(1 for prev, cur in zip(values, values[1:], strict=False) if cur < prev))


def changes(window):
    values = [v for _, v in window]
    return float(sum(
        1 for prev, cur in zip(values, values[1:], strict=False)
        if cur != prev and not (math.isnan(cur) and math.isnan(prev))
    ))


def avg_over_time(window):
    values = [v for _, v in window]
    total, count = values[0], 1.0
    mean = c = 0.0
    incremental = False
    for i, f in enumerate(values[1:]):
        count = float(i + 2)
        if not incremental:
            new_total, new_c = kahan_sum_inc(f, total, c)
            if not math.isinf(new_total):
                total, c = new_total, new_c
                continue
            incremental = True
            mean = total / (count - 1)
            c /= count - 1
        q = (count - 1) / count
        mean, c = kahan_sum_inc(f / count, q * mean, q * c)
    if incremental:
        return mean + c
    return total / count + c / count


def sum_over_time(window):
    total = c = 0.0
    for _, f in window:
        total, c = kahan_sum_inc(f, total, c)
    if math.isinf(total):
        return total
    return total + c


def variance_over_time(window):
    count = mean = c_mean = aux = c_aux = 0.0
    for _, f in window:
        count += 1
        delta = f - (mean + c_mean)
        mean, c_mean = kahan_sum_inc(delta / count, mean, c_mean)
        aux, c_aux = kahan_sum_inc(delta * (f - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def compare_over_time(window, better, want_ts):
    best_v, best_t = window[0][1], window[0][0]
    for t, v in window:
        if better(v, best_v):
            best_v, best_t = v, t
    return float(best_t) / 1000 if want_ts else best_v


def quantile(q, values):
    """Prometheus's quantile(): NaN sorts first, linear interpolation between neighbours."""
    if not values or math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = [v for v in values if math.isnan(v)] + sorted(v for v in values if not math.isnan(v))
    n = float(len(ordered))
    rank = q * (n - 1)
    lower = max(0.0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[int(lower)] * (1 - weight) + ordered[int(upper)] * weight


def mad_over_time(window):
    values = [v for _, v in window]
    median = quantile(0.5, values)
    return quantile(0.5, [abs(v - median) for v in values])


def double_exponential_smoothing(window, sf, tf):
    if len(window) < 2:
        return None
    values = [v for _, v in window]
    s0, s1 = 0.0, values[0]
    b = values[1] - values[0]
    for i in range(1, len(values)):
        x = sf * values[i]
        if i - 1 != 0:
            b = tf * (s1 - s0) + (1 - tf) * b
        y = (1 - sf) * (s1 + b)
        s0, s1 = s1, x + y
    return s1


def _over_time(fn):
    """Adapt a function of a non-empty window; an empty window gives no sample."""
    return lambda window, *_: fn(window) if window else None


FUNCTIONS = {
    "rate": lambda w, t, r, *_: extrapolated_rate(w, t, r, True, True),
    "increase": lambda w, t, r, *_: extrapolated_rate(w, t, r, True, False),
    "delta": lambda w, t, r, *_: extrapolated_rate(w, t, r, False, False),
    "irate": lambda w, *_: instant_value(w, True),
    "idelta": lambda w, *_: instant_value(w, False),
    "deriv": lambda w, *_: deriv(w),
    "predict_linear": lambda w, t, r, params, shift: predict_linear(w, t + shift, params[0]),
    "resets": _over_time(resets),
    "changes": _over_time(changes),
    "avg_over_time": _over_time(avg_over_time),
    "sum_over_time": _over_time(sum_over_time),
    "count_over_time": _over_time(lambda w: float(len(w))),
    "min_over_time": _over_time(lambda w: compare_over_time(w, lambda c, m: c < m or math.isnan(m), False)),
    "max_over_time": _over_time(lambda w: compare_over_time(w, lambda c, m: c > m or math.isnan(m), False)),
    "last_over_time": _over_time(lambda w: w[-1][1]),
    "present_over_time": _over_time(lambda w: 1.0),
    "stddev_over_time": _over_time(lambda w: math.sqrt(v) if (v := variance_over_time(w)) >= 0 else NAN),
    "stdvar_over_time": _over_time(variance_over_time),
    "quantile_over_time": lambda w, t, r, params, shift: quantile(params[0], [v for _, v in w]) if w else None,
    "mad_over_time": _over_time(mad_over_time),
    "ts_of_min_over_time": _over_time(
        lambda w: compare_over_time(w, lambda c, m: c <= m or math.isnan(m), True)),
    "ts_of_max_over_time": _over_time(
        lambda w: compare_over_time(w, lambda c, m: c >= m or math.isnan(m), True)),
    "ts_of_last_over_time": _over_time(lambda w: float(w[-1][0]) / 1000),
    "double_exponential_smoothing": lambda w, t, r, params, shift: double_exponential_smoothing(w, *params),
}


def evaluate(name, ts, vals, eval_ts, range_ms, params=(), intercept_shift_ms=0):
    """One series over a step grid: a list with a float or None (no sample) per step.

    `params` holds one tuple of scalar parameters per step, or a single tuple for all steps.
    """
    fn = FUNCTIONS[name]
    times = [int(t) for t in ts]
    samples = list(zip(times, (float(v) for v in vals), strict=True))
    results = []
    for i, t_end in enumerate(int(t) for t in eval_ts):
        step_params = params[i] if params and isinstance(params[0], tuple) else params
        window = samples[bisect_right(times, t_end - range_ms):bisect_right(times, t_end)]
        results.append(fn(window, t_end, range_ms, step_params, intercept_shift_ms))
    return results
