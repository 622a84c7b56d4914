"""PromQL aggregation operators over (series x steps) frames, as Prometheus 3.5 computes them.

Series are grouped once; :func:`mimird._fast.aggregate.fold` then folds each group's values series
by series in input order for all steps (so sums add in Prometheus's order, with its Kahan-Neumaier
compensation, and give its bits). topk/bottomk/limitk/limit_ratio keep input series;
count_values builds new ones from the values.
"""

from __future__ import annotations

import math

import numpy as np

from mimird._fast.aggregate import SELECT_K_MAX_CANDIDATES, fold, group_series
from mimird._fast.aggregate import select_k as select_k_kernel
from mimird.promql import ast
from mimird.promql.frame import Frame
from mimird.promql.funcs import valid_label_name
from mimird.promql.gofmt import format_value, go_g, go_v
from mimird.promql.quoting import go_quote
from mimird.promql.value import ExecutionError
from mimird.tsdb.labels import Labels, labels_hash


def aggregate(node: ast.AggregateExpr, frame: Frame, param, ev) -> Frame:
    """Evaluate one aggregation node on its input frame."""
    op = node.op
    if op == "count_values":
        return count_values(node, frame, param)
    group_ids, keys = group_series(frame.labels, tuple(node.grouping), node.without)
    if op in ("topk", "bottomk", "limitk", "limit_ratio"):
        return select_k(node, frame, param, group_ids, len(keys), ev)
    if op == "quantile":
        _quantile_warnings(param, ev)
    n_groups = len(keys)
    if op == "quantile":
        value, seen = _quantile(frame, group_ids, n_groups, param, ev)
    else:
        ev.check()
        value, seen = fold(op, frame.values, frame.present, group_ids, n_groups)
        seen = seen.astype(bool)
    # Group g takes the name-dropping flag of input row g (rows past the input have none).
    drop = np.zeros(n_groups, dtype=bool)
    shared = min(n_groups, frame.n_series)
    drop[:shared] = frame.drop[:shared]
    return Frame(keys, value, seen, drop).compact()


def _quantile_warnings(param: np.ndarray, ev) -> None:
    if np.isnan(param).any():
        ev.warn(f"quantile value should be between 0 and 1, got {go_g(math.nan)}")
    finite = param[~np.isnan(param)]
    if len(finite) and finite.max() > 1:
        ev.warn(f"quantile value should be between 0 and 1, got {go_g(float(finite.max()))}")
    if len(finite) and finite.min() < 0:
        ev.warn(f"quantile value should be between 0 and 1, got {go_g(float(finite.min()))}")


def quantile(q: float, values: np.ndarray) -> float:
    """Prometheus's quantile() over the values of one group (NaNs sort first)."""
    if len(values) == 0 or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    nans = values[np.isnan(values)]
    ordered = np.concatenate([nans, np.sort(values[~np.isnan(values)])])
    n = len(ordered)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def _segments(frame: Frame, group_ids: np.ndarray, primary: np.ndarray | None, nan_first: bool = True):
    """Every present (series, step) sample sorted by group, step, NaN first (or last), then
    ``primary`` ascending, then input order. Returns rows, steps, values and groups in that order,
    each sample's rank within its (group, step) segment, its segment's size, and where the
    segments start."""
    rows, steps = np.nonzero(frame.present)
    values = frame.values[rows, steps]
    nan = np.isnan(values)
    groups = group_ids[rows]
    segment_key = groups.astype(np.int64) * frame.present.shape[1] + steps
    # np.nonzero lists samples series by series and the sorts are stable, so ties keep input order.
    order = np.argsort(segment_key, kind="stable")
    if primary is not None and len(order) > 1:
        sorted_key = segment_key[order]
        if (sorted_key[1:] == sorted_key[:-1]).any():
            # Some segment holds several samples: order them by value too.
            order = np.lexsort((np.where(nan, 0.0, primary[rows, steps]), ~nan if nan_first else nan,
                                segment_key))
    rows, steps, values, groups = rows[order], steps[order], values[order], groups[order]
    new_segment = np.r_[True, (groups[1:] != groups[:-1]) | (steps[1:] != steps[:-1])]
    starts = np.flatnonzero(new_segment)
    sizes = np.diff(np.r_[starts, len(rows)])
    segment = np.cumsum(new_segment) - 1
    rank = np.arange(len(rows)) - starts[segment]
    return rows, steps, values, groups, rank, sizes[segment], starts


def _quantile(frame: Frame, group_ids, n_groups, param, ev):
    """quantile(q, v) for all groups and steps at once (Prometheus's quantile(), NaNs sort first)."""
    n_steps = frame.present.shape[1]
    value = np.full((n_groups, n_steps), np.nan)
    seen = np.zeros((n_groups, n_steps), dtype=bool)
    if not frame.present.any():
        return value, seen
    ev.check()
    rows, steps, values, groups, _, _, starts = _segments(frame, group_ids, frame.values)
    seg_steps, seg_groups, seg_sizes = steps[starts], groups[starts], np.diff(np.r_[starts, len(rows)])
    q = param[seg_steps]
    with np.errstate(invalid="ignore"):
        position = q * (seg_sizes - 1)
        # Out-of-range q give ±Inf below; keep their (unused) indexes inside the segment.
        lower = np.clip(np.floor(np.nan_to_num(position, nan=0.0, posinf=0.0, neginf=0.0)), 0, seg_sizes - 1)
        upper = np.minimum(seg_sizes - 1, lower + 1)
        weight = position - np.floor(position)
        low_values = values[starts + lower.astype(np.int64)]
        high_values = values[starts + upper.astype(np.int64)]
        result = low_values * (1 - weight) + high_values * weight
    result = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, result))
    result = np.where(np.isnan(q), np.nan, result)
    value[seg_groups, seg_steps] = result
    seen[seg_groups, seg_steps] = True
    return value, seen


def select_k(node: ast.AggregateExpr, frame: Frame, param: np.ndarray, group_ids, n_groups, ev) -> Frame:
    """topk, bottomk, limitk and limit_ratio: which input series survive at each step."""
    op = node.op
    n_steps = frame.present.shape[1]
    selected = np.zeros_like(frame.present)
    order_key = np.zeros(frame.present.shape)  # position within its group, for instant-query ordering
    if op == "limit_ratio":
        if np.isnan(param).any():
            raise ExecutionError("Ratio value NaN is NaN")
        if param.max() == 0 and param.min() == 0:
            return Frame.empty(n_steps)
        if param.max() > 1:
            ev.warn(f"ratio value should be between -1 and 1, got {go_g(float(param.max()))}, capping to 1")
        if param.min() < -1:
            ev.warn(f"ratio value should be between -1 and 1, got {go_g(float(param.min()))}, capping to -1")
        offsets = np.array([labels_hash(lbls) / float(2**64 - 1) for lbls in frame.labels])
        ratio = np.clip(param, -1.0, 1.0)[None, :]
        keep = np.where(ratio >= 0, offsets[:, None] < ratio, offsets[:, None] >= 1.0 + ratio)
        selected = frame.present & keep & (param != 0)[None, :]
        return Frame(frame.labels, frame.values, selected, frame.drop).compact()
    for value in np.unique(param):
        if math.isnan(value) or abs(value) >= 2.0**63:
            raise ExecutionError(f"Scalar value {go_v(value)} overflows int64")
    if param.max() < 1:
        return Frame.empty(n_steps)
    ks = np.minimum(param.astype(np.int64), frame.n_series)
    if frame.present.any():
        ev.check()
        # topk sorts by value descending, bottomk ascending, NaN below every number (as the heap
        # Prometheus keeps ranks it); limitk keeps input order.
        if n_groups * int(ks.max()) <= SELECT_K_MAX_CANDIDATES:
            # one pass per step keeping each group's best k, instead of sorting every sample
            chosen, order_key = select_k_kernel(op, frame.values, frame.present, group_ids, n_groups, ks)
            selected = chosen.view(bool)
        else:
            primary = None if op == "limitk" else (-frame.values if op == "topk" else frame.values)
            rows, steps, _, _, rank, _, _ = _segments(frame, group_ids, primary, nan_first=False)
            chosen = rank < ks[steps]
            selected[rows[chosen], steps[chosen]] = True
            order_key[rows[chosen], steps[chosen]] = rank[chosen]
    result = Frame(frame.labels, frame.values, selected, frame.drop)
    if n_steps == 1:
        rows = np.flatnonzero(selected[:, 0])
        rows = sorted(rows, key=lambda r: (group_ids[r], order_key[r, 0]))
        return result.take(rows)
    return result.compact()


def count_values(node: ast.AggregateExpr, frame: Frame, param: str) -> Frame:
    """count_values("label", v): how many series have each value, per group."""
    label = param
    if not valid_label_name(label):
        raise ExecutionError(f"invalid label name {go_quote(label)}")
    n_steps = frame.present.shape[1]
    rows, steps = np.nonzero(frame.present)
    if len(rows) == 0:
        return Frame.empty(n_steps)
    names = set(node.grouping) | ({"__name__"} if node.without else set())
    base_ids: dict[Labels, int] = {}
    row_base = np.array([
        base_ids.setdefault(tuple(pair for pair in labels if (pair[0] in names) != node.without), len(base_ids))
        for labels in frame.labels], dtype=np.int64)
    # Values are told apart by their bits (so -0 and 0 format differently, as in Go).
    bits = frame.values[rows, steps].view(np.uint64)
    unique_bits, value_ids = np.unique(bits, return_inverse=True)
    texts = [format_value(float(v)) for v in unique_bits.view(np.float64)]
    codes = row_base[rows] * len(unique_bits) + value_ids
    unique_codes, group_of = np.unique(codes, return_inverse=True)
    counts = np.bincount(group_of * n_steps + steps, minlength=len(unique_codes) * n_steps).astype(np.float64)
    counts = counts.reshape(len(unique_codes), n_steps)
    base_labels = list(base_ids)
    index: dict[Labels, int] = {}
    out_values, out_labels = [], []
    for g, code in enumerate(unique_codes.tolist()):
        out = dict(base_labels[code // len(unique_bits)])
        out[label] = texts[code % len(unique_bits)]
        key = tuple(sorted(out.items()))
        if key in index:
            out_values[index[key]] += counts[g]
        else:
            index[key] = len(out_labels)
            out_labels.append(key)
            out_values.append(counts[g].copy())
    values = np.vstack(out_values)
    return Frame(out_labels, values, values > 0, np.zeros(len(out_labels), dtype=bool))
