"""histogram_quantile over classic buckets, all steps at once (`bucket_quantile_steps`), against the
per-step `bucket_quantile` on random histograms: absent buckets, non-monotonic and NaN counts, zero
observations, negative bounds and out-of-range quantiles."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mimird.promql.funcs import bucket_quantile, bucket_quantile_steps

COUNT_CHOICES = [0.0, 1.0, 2.0, 3.0, 5.0, 5.0 + 1e-13, 5.0 - 1e-11, 8.0, math.nan, math.inf, -1.0, 1e-310, 0.0]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_vectorized_matches_per_step(seed):
    rng = random.Random(seed)
    for _ in range(1000):
        k = rng.randrange(1, 9)
        pool = [-1.0, -0.5, 0.0, 0.1, 0.25, 1.0, 2.5, 10.0, 1e300, math.inf, -math.inf]
        bounds = rng.sample(pool, k) if rng.random() < 0.9 else rng.sample(pool[:-2], k)
        n = 12
        counts = np.array([[rng.choice(COUNT_CHOICES) if rng.random() < 0.3 else rng.random() * 10
                            for _ in range(n)] for _ in range(k)])
        counts.sort(axis=0) if rng.random() < 0.5 else None
        present = np.array([[rng.random() < 0.8 for _ in range(n)] for _ in range(k)])
        q = np.array([rng.choice([0.0, 0.25, 0.5, 0.9, 0.99, 1.0, -0.5, 1.5, math.nan]) for _ in range(n)])
        values, forced = bucket_quantile_steps(q, bounds, counts.copy(), present)
        for j in range(n):
            here = [i for i in range(k) if present[i, j]]
            if not here:
                continue
            try:
                want, want_forced = bucket_quantile(float(q[j]), [bounds[i] for i in here],
                                                    [float(counts[i, j]) for i in here])
            except ZeroDivisionError:
                # 0/0 in Python; Go (and numpy) give NaN there
                want, want_forced = math.nan, bool(forced[j])
            got = float(values[j])
            assert (math.isnan(got) and math.isnan(want)) or got == want, (bounds, counts[:, j], q[j], got, want)
            assert bool(forced[j]) == want_forced
