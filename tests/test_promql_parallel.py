"""Range kernels split over threads give exactly what one call gives."""

import numpy as np
import pytest

from mimird._fast import rangefn
from mimird.promql import parallel


def random_batch(rng, n_series, max_samples):
    lengths = rng.integers(0, max_samples, n_series)
    offsets = np.zeros(n_series + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ts = np.concatenate([np.sort(rng.choice(7_200_000, n, replace=False)) for n in lengths]).astype(np.int64)
    vals = rng.normal(100, 30, len(ts))
    vals[rng.random(len(ts)) < 0.02] = 0  # counter resets
    return ts, vals, offsets


@pytest.mark.parametrize("name, params", [("rate", ()), ("max_over_time", ()), ("quantile_over_time", (0.9,)),
                                          ("deriv", ()), ("count_over_time", ())])
@pytest.mark.parametrize("parts", [2, 3, 4])
def test_split_batches_equal_one_call(monkeypatch, name, params, parts):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_SAMPLES", 0)
    rng = np.random.default_rng(parts)
    ts, vals, offsets = random_batch(rng, 57, 400)
    eval_ts = np.arange(600_000, 7_200_001, 15_000, dtype=np.int64)
    expected = rangefn.evaluate_batch(name, ts, vals, offsets, eval_ts, 300_000, params)
    got = parallel.evaluate_batch(name, ts, vals, offsets, eval_ts, 300_000, params, parts=parts)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("name", ["rate", "max_over_time", "stddev_over_time", "ts_of_last_over_time"])
@pytest.mark.parametrize("parts", [2, 3, 4])
def test_split_instant_evaluations_equal_one_call(monkeypatch, name, parts):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_SAMPLES", 0)
    rng = np.random.default_rng(parts)
    ts, vals, offsets = random_batch(rng, 57, 400)
    vals[rng.random(len(vals)) < 0.05] = np.frombuffer(np.uint64(0x7FF0000000000002).tobytes())[0]  # stale
    for t, lo, hi in ((3_600_000, 0, 57), (7_200_000, 4, 50), (100_000, 10, 12)):
        part = offsets[lo:hi + 1]
        expected = rangefn.evaluate_instant(name, ts, vals, part, t, 300_000)
        got = parallel.evaluate_instant(name, ts, vals, part, t, 300_000, parts=parts)
        assert got[0] == expected[0] and got[2] == expected[2]
        np.testing.assert_array_equal(np.array(got[1]), np.array(expected[1]))


def test_offsets_not_starting_at_zero_and_tiny_batches(monkeypatch):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_SAMPLES", 0)
    rng = np.random.default_rng(5)
    ts, vals, offsets = random_batch(rng, 20, 100)
    eval_ts = np.arange(0, 7_200_001, 60_000, dtype=np.int64)
    for lo, hi in ((3, 17), (0, 1), (5, 7), (19, 20)):
        part = offsets[lo:hi + 1]
        expected = rangefn.evaluate_batch("increase", ts, vals, part, eval_ts, 600_000)
        got = parallel.evaluate_batch("increase", ts, vals, part, eval_ts, 600_000, parts=4)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_given_outputs_are_checked():
    ts = np.arange(10, dtype=np.int64) * 1000
    offsets = np.array([0, 5, 10], dtype=np.int64)
    steps = np.array([5000, 9000], dtype=np.int64)
    out, present = np.empty((2, 2)), np.zeros((2, 2), dtype=np.uint8)
    got = rangefn.evaluate_batch("sum_over_time", ts, np.ones(10), offsets, steps, 3000, (), 0, out, present)
    assert got[0] is out and got[1] is present and present.tolist() == [[1, 0], [1, 1]]
    for bad_out, bad_present in ((np.empty((2, 3)), present), (out, np.zeros((2, 2), dtype=bool)),
                                 (np.empty((2, 2), dtype=np.float32), present), (np.empty((2, 4))[:, ::2], present)):
        with pytest.raises(ValueError, match="out and present"):
            rangefn.evaluate_batch("sum_over_time", ts, np.ones(10), offsets, steps, 3000, (), 0, bad_out, bad_present)


def test_helper_pool_is_created_once_under_concurrent_first_use(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from mimird.util import cores

    monkeypatch.setattr(cores, "_pool", None)
    with ThreadPoolExecutor(8) as askers:
        pools = list(askers.map(lambda _: cores.helper_pool(), range(32)))
    assert all(pool is pools[0] for pool in pools)


def test_split_cuts_equal_shares_and_run_parts_raises_after_all_parts():
    import threading

    from mimird.util import cores

    prefix = np.array([0, 10, 20, 30, 40, 100, 110], dtype=np.int64)
    assert cores.split(prefix, 2) == [(0, 5), (5, 6)]
    assert cores.split(prefix, 1) == [(0, 6)] and cores.split(prefix[:1], 3) == []
    assert cores.split(prefix[:2], 4) == [(0, 1)]
    done = []
    gate = threading.Event()

    def run(part):
        if part == 0:
            raise ValueError("part 0")
        gate.wait(5)
        done.append(part)

    threading.Timer(0.05, gate.set).start()
    with pytest.raises(ValueError, match="part 0"):
        cores.run_parts(run, [0, 1])
    assert done == [1]
