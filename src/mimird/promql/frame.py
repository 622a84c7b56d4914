"""The evaluator's working values: every expression is computed for all steps of a query at once.

An instant vector over S series and N steps is a ``Frame``: label sets, a float64 (S, N) matrix of
values and a boolean (S, N) presence mask (a series has no sample at a step where the mask is
False), plus per series the "drop the metric name at the end" flag of Prometheus 3's delayed name
removal. A scalar is ``Steps`` (one float per step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimird.promql.value import ExecutionError
from mimird.tsdb.labels import Labels

# __name__ and the metadata labels that go with it when a function or operator drops the name.
NAME_LABELS = frozenset(("__name__", "__type__", "__unit__"))


def flags(n: int, value: bool) -> np.ndarray:
    """n bools all set to `value` (a frame's name-dropping flags): np.full and np.ones are Python wrappers of
    these two calls, which count when the caches are cold."""
    out = np.empty(n, dtype=bool)
    out.fill(value)
    return out


def drop_name(labels: Labels) -> Labels:
    """The label set without ``__name__``/``__type__``/``__unit__``."""
    return tuple(pair for pair in labels if pair[0] not in NAME_LABELS)


def row_group_sum(ids: np.ndarray, rows: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``rows`` (series x steps) into ``n_groups`` rows by group id, as integers.

    The same as ``np.add.at(out, ids, rows)`` but by sorting and ``reduceat``, which is much faster.
    """
    out = np.zeros((n_groups, rows.shape[1]), dtype=np.int64)
    if len(ids) == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    out[sorted_ids[starts]] = np.add.reduceat(rows[order].astype(np.int64), starts, axis=0)
    return out


@dataclass
class Steps:
    """A scalar per evaluation step."""

    values: np.ndarray


@dataclass
class Frame:
    """An instant vector evaluated at every step of the grid."""

    labels: list[Labels]
    values: np.ndarray
    present: np.ndarray
    drop: np.ndarray

    @classmethod
    def empty(cls, n_steps: int) -> Frame:
        return cls([], np.empty((0, n_steps)), np.zeros((0, n_steps), dtype=bool), np.zeros(0, dtype=bool))

    @property
    def n_series(self) -> int:
        return len(self.labels)

    def take(self, rows) -> Frame:
        """The frame restricted to the given row indexes (in that order)."""
        rows = np.asarray(rows, dtype=np.intp)
        return Frame([self.labels[i] for i in rows], self.values[rows], self.present[rows], self.drop[rows])

    def compact(self) -> Frame:
        """Drop series that have no sample at any step."""
        keep = np.flatnonzero(self.present.any(axis=1))
        if len(keep) == len(self.labels):
            return self
        return self.take(keep)

    def merged(self) -> Frame:
        """Rows with equal label sets combined into one; an overlap at one step is Prometheus's
        duplicate-labelset error."""
        index: dict[Labels, int] = {}
        duplicates = False
        for labels in self.labels:
            if labels in index:
                duplicates = True
                break
            index[labels] = len(index)
        if not duplicates:
            return self
        groups: dict[Labels, list[int]] = {}
        for row, labels in enumerate(self.labels):
            groups.setdefault(labels, []).append(row)
        out_labels, out_rows = [], []
        values = np.full((len(groups), self.values.shape[1]), np.nan)
        present = np.zeros((len(groups), self.values.shape[1]), dtype=bool)
        drop = np.zeros(len(groups), dtype=bool)
        for g, (labels, rows) in enumerate(groups.items()):
            out_labels.append(labels)
            out_rows.append(rows)
            if len(rows) > 1 and (self.present[rows].sum(axis=0) > 1).any():
                raise ExecutionError("vector cannot contain metrics with the same labelset")
            for row in rows:
                mask = self.present[row]
                values[g, mask] = self.values[row, mask]
                present[g] |= mask
            drop[g] = self.drop[rows[0]]
        return Frame(out_labels, values, present, drop)
