"""PromQL functions that take instant vectors and scalars (Prometheus 3.5, float samples), computed
for every step of a query at once. Range-vector functions live in :mod:`mimird._fast.rangefn`."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mimird._fast import buckets
from mimird.promql import ast
from mimird.promql.frame import Frame, Steps
from mimird.promql.gofmt import go_g
from mimird.promql.quoting import is_valid_utf8
from mimird.promql.value import ExecutionError
from mimird.tsdb.labels import GoRegex, InvalidRegexError, Labels, go_quote


def valid_label_name(name: str) -> bool:
    """Prometheus 3's label-name rule (UTF-8 validation): any non-empty valid UTF-8 string."""
    return name != "" and is_valid_utf8(name)


@dataclass
class FunctionContext:
    """What a function call may need besides its argument values."""

    steps: np.ndarray
    node: ast.Call
    warn: Callable[[str], None]
    info: Callable[[str], None]


def _simple(fn) -> Callable:
    def apply(values, ctx):
        frame = values[0]
        with np.errstate(all="ignore"):
            result = fn(frame.values)
        return Frame(frame.labels, result, frame.present, np.ones(frame.n_series, dtype=bool))
    return apply


def _sgn(v):
    return np.where(v < 0, -1.0, np.where(v > 0, 1.0, v))


_SIMPLE = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "sqrt": np.sqrt, "ln": np.log,
    "log2": np.log2, "log10": np.log10, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "rad": lambda v: v * math.pi / 180,
    "deg": lambda v: v * 180 / math.pi, "sgn": _sgn,
}


def _round(values, ctx):
    frame = values[0]
    to_nearest = values[1].values if len(values) > 1 else np.ones(len(ctx.steps))
    with np.errstate(all="ignore"):
        inverse = 1.0 / to_nearest
        result = np.floor(frame.values * inverse + 0.5) / inverse
    return Frame(frame.labels, result, frame.present, np.ones(frame.n_series, dtype=bool))


def _clamp(frame: Frame, low: np.ndarray, high: np.ndarray) -> Frame:
    with np.errstate(invalid="ignore"):
        result = np.maximum(low, np.minimum(high, frame.values))
        valid = ~(high < low)
    return Frame(frame.labels, result, frame.present & valid[None, :],
                 np.ones(frame.n_series, dtype=bool)).compact()


def _vector(values, ctx):
    scalar = values[0].values
    return Frame([()], scalar[None, :].copy(), np.ones((1, len(scalar)), dtype=bool), np.zeros(1, dtype=bool))


def _scalar(values, ctx):
    frame = values[0]
    count = frame.present.sum(axis=0)
    result = np.full(len(ctx.steps), np.nan)
    single = count == 1
    if single.any():
        rows = np.argmax(frame.present, axis=0)
        result[single] = frame.values[rows[single], np.flatnonzero(single)]
    return Steps(result)


def _sort(descending: bool):
    def apply(values, ctx):
        frame = values[0]
        if frame.present.shape[1] != 1:
            return frame
        rows = np.flatnonzero(frame.present[:, 0])
        vals = frame.values[rows, 0]
        nan = np.isnan(vals)
        key = np.where(nan, 0, -vals if descending else vals)
        order = np.lexsort((key, nan))
        return frame.take(rows[order])
    return apply


_NATURAL_CHUNK = re.compile(r"[0-9]+|[^0-9]+")


def _atoi_ok(chunk: str) -> bool:
    # strconv.Atoi accepts the digit run only if it fits an int64.
    return chunk[0] in "0123456789" and int(chunk) < 2**63


def natural_less(a: str, b: str) -> bool:
    """facette/natsort's Compare, as sort_by_label uses it: digit runs compare as integers."""
    chunks_a = _NATURAL_CHUNK.findall(a)
    chunks_b = _NATURAL_CHUNK.findall(b)
    for i, x in enumerate(chunks_a):
        if i >= len(chunks_b):
            return False
        y = chunks_b[i]
        if _atoi_ok(x) and _atoi_ok(y):
            if int(x) != int(y):
                return int(x) < int(y)
        elif x != y:
            return x < y
        if i == len(chunks_a) - 1:
            return True
        if i == len(chunks_b) - 1:
            return False
    return False


def _sort_by_label(descending: bool):
    import functools

    def apply(values, ctx):
        frame = values[0]
        names = values[1:]
        if frame.present.shape[1] != 1:
            return frame
        rows = list(np.flatnonzero(frame.present[:, 0]))

        def cmp(i, j):
            a, b = dict(frame.labels[i]), dict(frame.labels[j])
            for name in names:
                x, y = a.get(name, ""), b.get(name, "")
                if x == y:
                    continue
                less = natural_less(x, y)
                result = -1 if less else 1
                return -result if descending else result
            la, lb = frame.labels[i], frame.labels[j]
            result = (la > lb) - (la < lb)
            return -result if descending else result

        rows.sort(key=functools.cmp_to_key(cmp))
        return frame.take(rows)
    return apply


def go_expand(template: str, match: re.Match) -> str:
    """Go's regexp.Expand: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; unknown groups expand to ""."""
    out = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch != "$" or i + 1 >= len(template):
            out.append(ch)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = template.find("}", i + 2)
            name = template[i + 2:end] if end >= 0 else ""
            if end < 0 or not name or not re.fullmatch(r"\w+", name):
                out.append("$")
                i += 1
                continue
            i = end + 1
        else:
            m = re.match(r"\w+", template[i + 1:])
            if not m:
                out.append("$")
                i += 1
                continue
            name = m.group(0)
            i += 1 + len(name)
        if name.isdigit():
            index = int(name)
            if index <= (match.re.groups or 0):
                out.append(match.group(index) or "")
        elif name in match.re.groupindex:
            out.append(match.group(name) or "")
    return "".join(out)


def _set_label(labels: Labels, name: str, value: str) -> Labels:
    result = {k: v for k, v in labels if k != name}
    if value:
        result[name] = value
    return tuple(sorted(result.items()))


def _relabelled(frame: Frame, labels: list[Labels], dst: str) -> Frame:
    if len(set(labels)) != len(labels):
        raise ExecutionError("vector cannot contain metrics with the same labelset")
    drop = frame.drop.copy()
    if dst == "__name__":
        drop[:] = False
    return Frame(labels, frame.values, frame.present, drop)


def label_replace(frame: Frame, dst: str, replacement: str, src: str, pattern: str) -> Frame:
    """label_replace(v, dst, replacement, src, regex)."""
    try:
        regex = GoRegex(pattern)
    except (InvalidRegexError, re.error):
        raise ExecutionError(f"invalid regular expression in label_replace(): {pattern}") from None
    if not valid_label_name(dst):
        raise ExecutionError(f"invalid destination label name in label_replace(): {dst}")
    labels = []
    changed = np.zeros(frame.n_series, dtype=bool)
    for row, lbls in enumerate(frame.labels):
        match = regex.fullmatch(dict(lbls).get(src, ""))
        if match is None:
            labels.append(lbls)
            continue
        labels.append(_set_label(lbls, dst, go_expand(replacement, match)))
        changed[row] = True
    result = _relabelled(frame, labels, "")
    if dst == "__name__":
        result.drop[changed] = False
    return result


def label_join(frame: Frame, dst: str, separator: str, sources: list[str]) -> Frame:
    """label_join(v, dst, separator, src...)."""
    for src in sources:
        if not valid_label_name(src):
            raise ExecutionError(f"invalid source label name in label_join(): {src}")
    if not valid_label_name(dst):
        raise ExecutionError(f"invalid destination label name in label_join(): {dst}")
    labels = []
    for lbls in frame.labels:
        values = dict(lbls)
        labels.append(_set_label(lbls, dst, separator.join(values.get(src, "") for src in sources)))
    return _relabelled(frame, labels, dst)


def _date(component: str):
    def extract(seconds: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            secs = np.where(np.isfinite(seconds), seconds, 0).astype(np.int64)
        days = np.floor_divide(secs, 86400)
        day_seconds = secs - days * 86400
        date = days.astype("datetime64[D]")
        years = date.astype("datetime64[Y]")
        months = date.astype("datetime64[M]")
        if component == "minute":
            return (day_seconds // 60 % 60).astype(float)
        if component == "hour":
            return (day_seconds // 3600).astype(float)
        if component == "day_of_week":
            return ((days + 4) % 7).astype(float)
        if component == "day_of_month":
            return ((date - months).astype(np.int64) + 1).astype(float)
        if component == "day_of_year":
            return ((date - years).astype(np.int64) + 1).astype(float)
        if component == "month":
            return (months.astype(np.int64) % 12 + 1).astype(float)
        if component == "year":
            return (years.astype(np.int64) + 1970).astype(float)
        if component == "days_in_month":
            return ((months + np.timedelta64(1, "M")).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(float)
        raise ExecutionError(f"unknown date function {component}")

    def apply(values, ctx):
        if not values:
            return Frame([()], extract(np.floor_divide(ctx.steps, 1000).astype(float))[None, :],
                         np.ones((1, len(ctx.steps)), dtype=bool), np.zeros(1, dtype=bool))
        frame = values[0]
        return Frame(frame.labels, extract(frame.values), frame.present, np.ones(frame.n_series, dtype=bool))
    return apply


def _timestamp(values, ctx):
    frame = values[0]
    times = np.broadcast_to(ctx.steps / 1000.0, frame.values.shape).copy()
    return Frame(frame.labels, times, frame.present, np.ones(frame.n_series, dtype=bool))


# --- classic histograms -------------------------------------------------------------------------


def _bucket_groups(frame: Frame, ctx: FunctionContext):
    """Rows of a classic histogram grouped by their labels without ``le``, with parsed bounds."""
    groups: dict[Labels, list[tuple[int, float]]] = {}
    for row, lbls in enumerate(frame.labels):
        values = dict(lbls)
        raw = values.get("le", "")
        try:
            bound = _parse_go_float(raw)
        except ValueError:
            if frame.present[row].any():
                ctx.warn(f'bucket label "le" is missing or has a malformed value of {go_quote(raw)} '
                         f'for metric name {go_quote(values.get("__name__", ""))}')
            continue
        key = tuple(pair for pair in lbls if pair[0] != "le")
        groups.setdefault(key, []).append((row, bound))
    return groups


def _parse_go_float(text: str) -> float:
    lowered = text.lower()
    if lowered in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if lowered in ("-inf", "-infinity"):
        return -math.inf
    if lowered == "nan":
        return math.nan
    if not re.fullmatch(r"[+-]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][+-]?\d+)?|[+-]?0[xX][0-9a-fA-F.]+[pP][+-]?\d+",
                        text):
        raise ValueError(text)
    if "0x" in lowered:
        return float.fromhex(text)
    return float(text.replace("_", ""))


def _coalesce(bounds: list[float], counts: list[float]):
    out_b, out_c = [bounds[0]], [counts[0]]
    for b, c in zip(bounds[1:], counts[1:], strict=True):
        if b == out_b[-1]:
            out_c[-1] += c
        else:
            out_b.append(b)
            out_c.append(c)
    return out_b, out_c


def bucket_quantile(q: float, bounds: list[float], counts: list[float]) -> tuple[float, bool]:
    """Prometheus's BucketQuantile: (value, forced monotonicity)."""
    if math.isnan(q):
        return math.nan, False
    if q < 0:
        return -math.inf, False
    if q > 1:
        return math.inf, False
    order = sorted(range(len(bounds)), key=lambda i: bounds[i])
    bounds = [bounds[i] for i in order]
    counts = [counts[i] for i in order]
    if not math.isinf(bounds[-1]) or bounds[-1] < 0:
        return math.nan, False
    bounds, counts = _coalesce(bounds, counts)
    forced = False
    prev = counts[0]
    for i in range(1, len(counts)):
        cur = counts[i]
        if cur == prev:
            continue
        if buckets.almost_equal(prev, cur, 1e-12):
            counts[i] = prev
            continue
        if cur < prev:
            counts[i] = prev
            forced = True
            continue
        prev = cur
    if len(bounds) < 2:
        return math.nan, forced
    observations = counts[-1]
    if observations == 0:
        return math.nan, forced
    rank = q * observations
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2], forced
    if b == 0 and bounds[0] <= 0:
        return bounds[0], forced
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count), forced


def bucket_fraction(lower: float, upper: float, bounds: list[float], counts: list[float]) -> float:
    """Prometheus's BucketFraction."""
    order = sorted(range(len(bounds)), key=lambda i: bounds[i])
    bounds = [bounds[i] for i in order]
    counts = [counts[i] for i in order]
    if not (math.isinf(bounds[-1]) and bounds[-1] > 0):
        return math.nan
    bounds, counts = _coalesce(bounds, counts)
    count = counts[-1]
    if count == 0 or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0
    rank = lower_rank = upper_rank = 0.0
    lower_set = upper_set = False
    for i, upper_bound in enumerate(bounds):
        lower_bound = bounds[i - 1] if i > 0 else -math.inf
        bucket_count = counts[i]

        def interpolate(v, lb=lower_bound, ub=upper_bound, c=bucket_count, r=rank):
            return r + (c - r) * (v - lb) / (ub - lb)

        if not lower_set and lower_bound >= lower:
            lower_rank, lower_set = rank, True
        if not upper_set and lower_bound >= upper:
            upper_rank, upper_set = rank, True
        if lower_set and upper_set:
            break
        if not lower_set and lower_bound < lower < upper_bound:
            lower_rank, lower_set = interpolate(lower), True
        if not upper_set and lower_bound < upper < upper_bound:
            upper_rank, upper_set = interpolate(upper), True
        if lower_set and upper_set:
            break
        rank = bucket_count
    if not lower_set or lower_rank > count:
        lower_rank = count
    if not upper_set or upper_rank > count:
        upper_rank = count
    return (upper_rank - lower_rank) / count


def bucket_quantile_steps(q: np.ndarray, bounds: list[float], counts: np.ndarray, present: np.ndarray):
    """`bucket_quantile` at every step at once (`mimird._fast.buckets`): the buckets of one histogram
    (distinct, non-NaN bounds) with their (buckets x steps) counts, of which only the `present` ones take
    part at each step.

    Returns (values, forced) per step; steps without any bucket are NaN."""
    order = np.argsort(np.asarray(bounds, dtype=np.float64), kind="stable")
    return buckets.quantile_steps(np.ascontiguousarray(q, dtype=np.float64),
                                  np.asarray(bounds, dtype=np.float64)[order],
                                  np.ascontiguousarray(counts[order], dtype=np.float64),
                                  np.ascontiguousarray(present[order]).view(np.uint8))


def _histogram_over_buckets(values, ctx, compute, compute_steps=None):
    frame = values[-1]
    n = len(ctx.steps)
    groups = _bucket_groups(frame, ctx)
    labels, out_values, out_present = [], [], []
    for key, members in groups.items():
        rows = [row for row, _ in members]
        bounds = [bound for _, bound in members]
        if compute_steps is not None and len(set(bounds)) == len(bounds) and not any(map(math.isnan, bounds)):
            present = frame.present[rows].any(axis=0)
            if present.any():
                result = compute_steps(bounds, frame.values[rows], frame.present[rows], dict(key).get("__name__", ""))
                labels.append(key)
                out_values.append(np.where(present, result, np.nan))
                out_present.append(present)
            continue
        result = np.full(n, np.nan)
        present = np.zeros(n, dtype=bool)
        for j in range(n):
            here = [i for i, row in enumerate(rows) if frame.present[row, j]]
            if not here:
                continue
            value = compute(j, [bounds[i] for i in here], [float(frame.values[rows[i], j]) for i in here],
                            dict(key).get("__name__", ""))
            result[j] = value
            present[j] = True
        if present.any():
            labels.append(key)
            out_values.append(result)
            out_present.append(present)
    if not labels:
        return Frame.empty(n)
    return Frame(labels, np.vstack(out_values), np.vstack(out_present), np.ones(len(labels), dtype=bool))


def _histogram_quantile(values, ctx):
    q = values[0].values
    for value in np.unique(q):
        if math.isnan(value) or value < 0 or value > 1:
            ctx.warn(f"quantile value should be between 0 and 1, got {go_g(float(value))}")

    def monotonicity_info(name):
        ctx.info("input to histogram_quantile needed to be fixed for monotonicity (see "
                 "https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) "
                 f"for metric name {go_quote(name)}")

    def compute(j, bounds, counts, name):
        value, forced = bucket_quantile(float(q[j]), bounds, counts)
        if forced:
            monotonicity_info(name)
        return value

    def compute_steps(bounds, counts, present, name):
        value, forced = bucket_quantile_steps(q, bounds, counts, present)
        if (forced & present.any(axis=0)).any():
            monotonicity_info(name)
        return value

    return _histogram_over_buckets(values, ctx, compute, compute_steps)


def _histogram_fraction(values, ctx):
    lower, upper = values[0].values, values[1].values

    def compute(j, bounds, counts, name):
        return bucket_fraction(float(lower[j]), float(upper[j]), bounds, counts)

    return _histogram_over_buckets(values, ctx, compute)


def _native_only(values, ctx):
    return Frame.empty(len(ctx.steps))


def _string_args(ctx: FunctionContext) -> list[str]:
    out = []
    for arg in ctx.node.args:
        while isinstance(arg, ast.ParenExpr):
            arg = arg.expr
        if isinstance(arg, ast.StringLiteral):
            out.append(arg.value)
    return out


def call_instant_function(name: str, values: list, ctx: FunctionContext):
    """Apply a non-range function to its evaluated arguments."""
    if name in _SIMPLE:
        return _simple(_SIMPLE[name])(values, ctx)
    if name == "round":
        return _round(values, ctx)
    if name == "clamp":
        return _clamp(values[0], values[1].values, values[2].values)
    if name == "clamp_min":
        return _clamp(values[0], values[1].values, np.full(len(ctx.steps), np.inf))
    if name == "clamp_max":
        return _clamp(values[0], np.full(len(ctx.steps), -np.inf), values[1].values)
    if name == "time":
        return Steps(ctx.steps / 1000.0)
    if name == "pi":
        return Steps(np.full(len(ctx.steps), math.pi))
    if name == "vector":
        return _vector(values, ctx)
    if name == "scalar":
        return _scalar(values, ctx)
    if name == "sort":
        return _sort(False)(values, ctx)
    if name == "sort_desc":
        return _sort(True)(values, ctx)
    if name in ("sort_by_label", "sort_by_label_desc"):
        return _sort_by_label(name.endswith("_desc"))([values[0], *values[1:]], ctx)
    if name == "label_replace":
        return label_replace(values[0], *values[1:5])
    if name == "label_join":
        return label_join(values[0], values[1], values[2], list(values[3:]))
    if name in ("minute", "hour", "day_of_week", "day_of_month", "day_of_year", "month", "year",
                "days_in_month"):
        return _date(name)(values, ctx)
    if name == "timestamp":
        return _timestamp(values, ctx)
    if name == "histogram_quantile":
        return _histogram_quantile(values, ctx)
    if name == "histogram_fraction":
        return _histogram_fraction(values, ctx)
    if name in ("histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"):
        return _native_only(values, ctx)
    raise ExecutionError(f"unknown function {name!r}")
