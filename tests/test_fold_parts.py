"""The aggregation fold gives the same bits whether it folds all steps at once or ranges of steps on
several cores (each range into cells of its own)."""

from __future__ import annotations

import numpy as np
import pytest

from mimird._fast import aggregate


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
