"""The aggregation fold gives the same bits whether it folds all steps at once or ranges of steps on
several cores (each range into cells of its own)."""

from __future__ import annotations

import numpy as np
import pytest

from mimird._fast import aggregate
from rangefn_reference import kahan_sum_inc


@pytest.mark.parametrize("op", sorted(aggregate.FOLD_OPERATIONS))
@pytest.mark.parametrize("shape", [(3000, 241), (1000, 7), (40, 5001)])
def test_fold_in_step_ranges_equals_one_range(op, shape, monkeypatch):
    rng = np.random.default_rng(7)
    values = rng.normal(size=shape) * 1e10
    values[rng.random(shape) < 0.01] = np.nan
    values[:3, 1] = [np.inf, 1e308, 1e308]  # overflowing sums take avg's incremental mean
    present = rng.random(shape) < 0.9
    groups = rng.integers(0, 9, shape[0])
    monkeypatch.setattr(aggregate, "PARALLEL_MIN_CELLS", 1)
    split_value, split_seen = aggregate.fold(op, values, present, groups, 11)
    monkeypatch.setattr(aggregate, "PARALLEL_MIN_CELLS", 1 << 62)
    whole_value, whole_seen = aggregate.fold(op, values, present.astype(np.uint8), groups, 11)
    assert np.array_equal(split_value.view(np.uint64), whole_value.view(np.uint64))
    assert np.array_equal(split_seen, whole_seen)
    assert not whole_seen[9:].any()  # groups without series stay unseen


def test_fold_without_series_or_steps():
    value, seen = aggregate.fold("sum", np.zeros((0, 5)), np.zeros((0, 5), dtype=bool), np.zeros(0, dtype=int), 2)
    assert value.shape == seen.shape == (2, 5) and not seen.any() and not value.any()


def test_sum_folds_each_cell_as_prometheus_kahan_sum():
    # sum's row fold (its own loop, without the other operators' accumulators) against Prometheus's
    # aggregation: the first sample of a cell taken as it is, the next ones added with kahanSumInc, the
    # compensation added at the end.
    rng = np.random.default_rng(11)
    shape = (60, 9)
    values = rng.normal(size=shape) * 10.0 ** rng.integers(-5, 17, shape)
    values[rng.random(shape) < 0.05] = np.nan
    values[5, 2], values[9, 2], values[13, 3] = np.inf, -np.inf, np.inf
    values[:, 4] = [1e308, 1e308, -1e308] * 20  # overflow, then back
    present = rng.random(shape) < 0.8
    groups = rng.integers(0, 4, shape[0])
    value, seen = aggregate.fold("sum", values, present, groups, 4)
    for g in range(4):
        for j in range(shape[1]):
            rows = [s for s in range(shape[0]) if groups[s] == g and present[s, j]]
            assert bool(seen[g, j]) == bool(rows)
            if not rows:
                continue
            total, compensation = float(values[rows[0], j]), 0.0
            for s in rows[1:]:
                total, compensation = kahan_sum_inc(float(values[s, j]), total, compensation)
            expected = total + compensation
            assert np.array_equal(np.float64(expected).view(np.uint64), value[g, j].view(np.uint64)) or (
                np.isnan(expected) and np.isnan(value[g, j]))
