"""topk, bottomk and limitk's one-pass kernel keeps the same series, in the same places, as sorting every
sample by (group, step, NaN last, value, input order) does."""

from __future__ import annotations

import numpy as np
import pytest

from mimird._fast.aggregate import select_k
from mimird.promql.aggregations import _segments
from mimird.promql.frame import Frame


def sorted_choice(op, values, present, groups, ks):
    frame = Frame([() for _ in range(values.shape[0])], values, present, np.zeros(values.shape[0], dtype=bool))
    primary = None if op == "limitk" else (-values if op == "topk" else values)
    rows, steps, _, _, rank, _, _ = _segments(frame, groups, primary, nan_first=False)
    chosen = rank < ks[steps]
    selected = np.zeros(values.shape, dtype=bool)
    order = np.zeros(values.shape)
    selected[rows[chosen], steps[chosen]] = True
    order[rows[chosen], steps[chosen]] = rank[chosen]
    return selected, order


@pytest.mark.parametrize("op", ["topk", "bottomk", "limitk"])
@pytest.mark.parametrize("seed", range(6))
def test_kernel_matches_sorting(op, seed):
    rng = np.random.default_rng(seed)
    n_series, n_steps, n_groups = rng.integers(1, 60), rng.integers(1, 30), rng.integers(1, 5)
    # few distinct values, so ties are common; NaN, infinities and both zeros among them
    pool = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 1.0, 2.0, -3.5])
    values = rng.choice(pool, size=(n_series, n_steps))
    present = rng.random((n_series, n_steps)) < 0.8
    groups = rng.integers(0, n_groups, n_series)
    ks = rng.integers(-1, n_series + 3, n_steps)
    ks = np.minimum(ks, n_series)
    chosen, rank = select_k(op, values, present, groups, int(n_groups), ks)
    expected_chosen, expected_rank = sorted_choice(op, values, present, groups, ks)
    assert np.array_equal(chosen.view(bool), expected_chosen)
    assert np.array_equal(rank[expected_chosen], expected_rank[expected_chosen])
