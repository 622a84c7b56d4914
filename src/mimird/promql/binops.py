"""PromQL binary operators over whole step grids: scalar/scalar, vector/scalar and vector/vector
(with on/ignoring, group_left/group_right, bool and the set operators), with Prometheus's errors."""

from __future__ import annotations

import numpy as np

from mimird._fast.frames import SCALAR_ARITHMETIC, scalar_arithmetic
from mimird.promql import ast
from mimird.promql.frame import NAME_LABELS, Frame, flags, row_group_sum
from mimird.promql.value import ExecutionError
from mimird.tsdb.labels import Labels, format_labels

ARITHMETIC = frozenset(("+", "-", "*", "/", "%", "^", "atan2"))


def arithmetic(op: str, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Elementwise arithmetic with Go's float semantics (IEEE results, no exceptions)."""
    with np.errstate(all="ignore"):
        if op == "+":
            return lhs + rhs
        if op == "-":
            return lhs - rhs
        if op == "*":
            return lhs * rhs
        if op == "/":
            return lhs / rhs
        if op == "%":
            return np.fmod(lhs, rhs)
        if op == "^":
            return np.power(lhs, rhs)
        if op == "atan2":
            return np.arctan2(lhs, rhs)
    raise ExecutionError(f"operator {op!r} not allowed for operations between Vectors")


def compare(op: str, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Elementwise comparison (NaN compares unequal to everything, as in Go)."""
    with np.errstate(invalid="ignore"):
        if op == "==":
            return lhs == rhs
        if op == "!=":
            return lhs != rhs
        if op == "<":
            return lhs < rhs
        if op == ">":
            return lhs > rhs
        if op == "<=":
            return lhs <= rhs
        if op == ">=":
            return lhs >= rhs
    raise ExecutionError(f"operator {op!r} not allowed for operations between Vectors")


def scalar_binop(op: str, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """scalar op scalar; comparisons give 1 or 0."""
    if op in ARITHMETIC:
        return arithmetic(op, lhs, rhs)
    return compare(op, lhs, rhs).astype(np.float64)


def vector_scalar_binop(op: str, frame: Frame, scalar: np.ndarray, swap: bool, return_bool: bool) -> Frame:
    """vector op scalar (or scalar op vector when ``swap``)."""
    if op in SCALAR_ARITHMETIC and frame.values.dtype == np.float64 and scalar.dtype == np.float64:
        return Frame(frame.labels, scalar_arithmetic(op, frame.values, scalar, swap), frame.present,
                     flags(frame.n_series, True))
    left, right = frame.values, scalar[None, :]
    if swap:
        left, right = right, left
    if op in ARITHMETIC:
        values = arithmetic(op, left, right)
        values = np.broadcast_to(values, frame.values.shape).copy()
        return Frame(frame.labels, values, frame.present, flags(frame.n_series, True))
    keep = compare(op, left, right)
    if return_bool:
        return Frame(frame.labels, keep.astype(np.float64), frame.present, flags(frame.n_series, True))
    return Frame(frame.labels, frame.values, frame.present & keep, frame.drop.copy()).compact()


def signature(labels: Labels, on: bool, names: frozenset[str]):
    """The labels that decide which series of two vectors match."""
    if on:
        return tuple(pair for pair in labels if pair[0] in names)
    return tuple(pair for pair in labels if pair[0] not in names and pair[0] != "__name__")


def _signatures(frame: Frame, matching: ast.VectorMatching):
    names = frozenset(matching.matching_labels)
    index: dict[tuple, int] = {}
    ids = np.empty(frame.n_series, dtype=np.intp)
    for row, labels in enumerate(frame.labels):
        ids[row] = index.setdefault(signature(labels, matching.on, names), len(index))
    return ids, index


def _present_by_signature(frame: Frame, ids: np.ndarray, n_sigs: int) -> np.ndarray:
    return row_group_sum(ids, frame.present, n_sigs) > 0


def set_operation(op: str, lhs: Frame, rhs: Frame, matching: ast.VectorMatching) -> Frame:
    """and / or / unless, per step."""
    names = frozenset(matching.matching_labels)
    sigs: dict[tuple, int] = {}
    lids = np.array([sigs.setdefault(signature(x, matching.on, names), len(sigs)) for x in lhs.labels],
                    dtype=np.intp)
    rids = np.array([sigs.setdefault(signature(x, matching.on, names), len(sigs)) for x in rhs.labels],
                    dtype=np.intp)
    n_steps = lhs.present.shape[1]
    if op == "or":
        lhs_any = _present_by_signature(lhs, lids, len(sigs)) if len(lids) else np.zeros((len(sigs), n_steps), bool)
        rhs_present = rhs.present & ~lhs_any[rids] if len(rids) else rhs.present
        frame = Frame(lhs.labels + rhs.labels, np.vstack([lhs.values, rhs.values]),
                      np.vstack([lhs.present, rhs_present]), np.concatenate([lhs.drop, rhs.drop]))
        return frame.compact().merged()
    rhs_any = _present_by_signature(rhs, rids, len(sigs)) if len(rids) else np.zeros((len(sigs), n_steps), bool)
    matched = rhs_any[lids] if len(lids) else lhs.present
    present = lhs.present & matched if op == "and" else lhs.present & ~matched
    return Frame(lhs.labels, lhs.values, present, lhs.drop).compact()


def _matched_labels(labels: Labels, on: bool, names: frozenset[str]) -> Labels:
    if on:
        return tuple(pair for pair in labels if pair[0] in names)
    return tuple(pair for pair in labels if pair[0] not in names and pair[0] != "__name__")


def _result_labels(many: Labels, one: Labels, op: str, matching: ast.VectorMatching) -> Labels:
    result = dict(many)
    if op in ARITHMETIC:
        for name in NAME_LABELS:
            result.pop(name, None)
    if matching.card is ast.Card.ONE_TO_ONE:
        names = set(matching.matching_labels)
        if matching.on:
            result = {k: v for k, v in result.items() if k in names}
        else:
            result = {k: v for k, v in result.items() if k not in names}
    one_map = dict(one)
    for name in matching.include:
        value = one_map.get(name, "")
        if value:
            result[name] = value
        else:
            result.pop(name, None)
    return tuple(sorted(result.items()))


def vector_binop(node: ast.BinaryExpr, lhs: Frame, rhs: Frame) -> Frame:
    """vector op vector with vector matching, per step."""
    op = node.op
    matching = node.vector_matching or ast.VectorMatching(card=ast.Card.ONE_TO_ONE)
    if op in ast.SET_OPERATORS:
        return set_operation(op, lhs, rhs, matching)
    n_steps = lhs.present.shape[1]
    if lhs.n_series == 0 or rhs.n_series == 0:
        return Frame.empty(n_steps)
    many, one = (rhs, lhs) if matching.card is ast.Card.ONE_TO_MANY else (lhs, rhs)
    names = frozenset(matching.matching_labels)
    one_ids, one_index = _signatures(one, matching)
    n_sigs = len(one_index)
    # Per signature and step, the row of the "one" side that is present there (-1: none).
    counts = row_group_sum(one_ids, one.present, n_sigs)
    if (counts > 1).any():
        _duplicate_error(one, one_ids, counts, matching, names)
    one_row = np.full((n_sigs, n_steps), -1, dtype=np.intp)
    for row in range(one.n_series):
        one_row[one_ids[row], one.present[row]] = row
    many_sig = np.array([one_index.get(signature(x, matching.on, names), -1) for x in many.labels],
                        dtype=np.intp)
    has_sig = many_sig >= 0
    rows = np.where(has_sig[:, None], one_row[np.where(has_sig, many_sig, 0)], -1)
    matched = many.present & (rows >= 0)
    safe_rows = np.where(rows >= 0, rows, 0)
    one_values = one.values[safe_rows, np.arange(n_steps)[None, :]]
    left, right = many.values, one_values
    if matching.card is ast.Card.ONE_TO_MANY:
        left, right = right, left
    if op in ARITHMETIC:
        values = arithmetic(op, left, right)
        kept = matched
    else:
        keep = compare(op, left, right)
        if node.return_bool:
            values = keep.astype(np.float64)
            kept = matched
        else:
            values = left.copy()
            kept = matched & keep
    if matching.card is ast.Card.ONE_TO_ONE:
        per_sig = row_group_sum(np.where(has_sig, many_sig, n_sigs), kept, n_sigs + 1)
        if (per_sig[:n_sigs] > 1).any():
            raise ExecutionError(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
    if matching.include:
        out_labels, out_values, out_present, out_sigs = [], [], [], []
        for row in np.flatnonzero(kept.any(axis=1)):
            mask = kept[row]
            # The labels copied from the "one" side may differ from step to step.
            for partner in np.unique(rows[row, mask]):
                out_labels.append(_result_labels(many.labels[row], one.labels[partner], op, matching))
                out_values.append(values[row])
                out_present.append(mask & (rows[row] == partner))
                out_sigs.append(int(many_sig[row]))
        if not out_labels:
            return Frame.empty(n_steps)
        out_values, out_present = np.vstack(out_values), np.vstack(out_present)
    else:
        out_rows = np.flatnonzero(kept.any(axis=1))
        if len(out_rows) == 0:
            return Frame.empty(n_steps)
        out_labels = [_result_labels(many.labels[row], (), op, matching) for row in out_rows]
        out_values, out_present, out_sigs = values[out_rows], kept[out_rows], many_sig[out_rows].tolist()
    if matching.card is not ast.Card.ONE_TO_ONE:
        keys: dict[tuple, int] = {}
        key_ids = np.array([keys.setdefault((sig, labels), len(keys)) for sig, labels in zip(out_sigs, out_labels,
                                                                                            strict=True)])
        per_key = row_group_sum(key_ids, out_present, len(keys))
        if (per_key > 1).any():
            raise ExecutionError("multiple matches for labels: grouping labels must ensure unique matches")
    drop = np.full(len(out_labels), bool(node.return_bool))
    return Frame(out_labels, out_values, out_present, drop).merged()


def _duplicate_error(one: Frame, ids: np.ndarray, counts: np.ndarray, matching, names) -> None:
    sig, step = np.argwhere(counts > 1)[0]
    rows = [row for row in range(one.n_series) if ids[row] == sig and one.present[row, step]]
    first, second = rows[0], rows[1]
    side = "left" if matching.card is ast.Card.ONE_TO_MANY else "right"
    matched = _matched_labels(one.labels[second], matching.on, names)
    raise ExecutionError(
        f"found duplicate series for the match group {format_labels(matched)} on the {side} hand-side of "
        f"the operation: [{format_labels(one.labels[second])}, {format_labels(one.labels[first])}]"
        ";many-to-many matching not allowed: matching labels must be unique on one side")
