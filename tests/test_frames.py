"""`_fast.frames.present_rows` against the numpy formulation it replaces, over memory layouts."""

import numpy as np
import pytest

from mimird._fast.frames import (
    SCALAR_ARITHMETIC,
    count_present,
    present_batch,
    present_rows,
    rows_present,
    scalar_arithmetic,
)
from mimird._fast.rangefn import has_stale_markers


def by_numpy(values, present, steps, rows):
    return [(row, steps[present[row]], values[row, present[row]]) for row in rows if present[row].any()]


def layouts(values, present):
    yield values, present
    yield np.asfortranarray(values), np.asfortranarray(present)
    wide_v = np.zeros((values.shape[0], 2 * values.shape[1]))
    wide_v[:, ::2] = values
    wide_p = np.zeros((present.shape[0], 2 * present.shape[1]), dtype=bool)
    wide_p[:, ::2] = present
    yield wide_v[:, ::2], wide_p[:, ::2]  # strided columns


@pytest.mark.parametrize("seed", range(20))
def test_present_rows_match_boolean_indexing(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_steps = rng.integers(0, 7), rng.integers(0, 30)
    values = rng.normal(size=(n_rows, n_steps))
    values[rng.random((n_rows, n_steps)) < 0.1] = np.nan
    present = rng.random((n_rows, n_steps)) < rng.random()
    steps = np.arange(n_steps, dtype=np.int64) * 15_000 + 1_000
    rows = rng.permutation(n_rows).tolist()
    want = by_numpy(values, present, steps, rows)
    for v, p in layouts(values, present):
        got = present_rows(v, p, steps, rows)
        assert [row for row, _, _ in got] == [row for row, _, _ in want]
        for (_, ts, vals), (_, want_ts, want_vals) in zip(got, want, strict=True):
            assert ts.dtype == np.int64 and vals.dtype == np.float64
            assert ts.tolist() == want_ts.tolist()
            assert vals.tobytes() == want_vals.tobytes()


def test_other_types_are_converted():
    values = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    present = np.array([[0, 2, 0], [0, 0, 0]], dtype=np.int32)
    steps = np.array([10, 20, 30], dtype=np.int32)
    [(row, ts, vals)] = present_rows(values, present, steps, [0, 1])
    assert row == 0 and ts.dtype == np.int64 and ts.tolist() == [20] and vals.dtype == np.float64 and vals.tolist() == [2.0]
    rows, offsets, ts, vals = present_batch(values, present, steps)
    assert rows == [0] and offsets.tolist() == [0, 1] and ts.tolist() == [20] and vals.tolist() == [2.0]
    assert count_present(present) == 1 and rows_present(present) == (1, [0])


def test_present_rows_refuses_what_it_cannot_read():
    values, present, steps = np.zeros((2, 3)), np.ones((2, 3), dtype=bool), np.arange(3, dtype=np.int64)
    with pytest.raises(ValueError):
        present_rows(values, present, steps[:2], [0])
    with pytest.raises(ValueError):
        present_rows(values[0], present, steps, [0])
    with pytest.raises(IndexError):
        present_rows(values, present, steps, [2])


@pytest.mark.parametrize("seed", range(20))
def test_rows_present_and_present_batch_match_numpy(seed):
    rng = np.random.default_rng(100 + seed)
    n_rows, n_steps = rng.integers(0, 7), rng.integers(0, 30)
    values = rng.normal(size=(n_rows, n_steps))
    present = rng.random((n_rows, n_steps)) < rng.random()
    steps = np.arange(n_steps, dtype=np.int64) * 60_000 - 120_000
    want_rows = np.flatnonzero(present.any(axis=1)).tolist()
    for v, p in layouts(values, present):
        for mask in (p, p.view(np.uint8)):
            assert rows_present(mask) == (int(present.sum()), want_rows)
        rows, offsets, ts, vals = present_batch(v, p, steps)
        assert rows == want_rows
        assert offsets.tolist() == [0, *np.cumsum([present[r].sum() for r in want_rows]).tolist()]
        assert ts.tolist() == [t for r in want_rows for t in steps[present[r]].tolist()]
        assert vals.tobytes() == np.concatenate([values[r, present[r]] for r in want_rows] or [np.empty(0)]).tobytes()


def test_has_stale_markers():
    stale = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]
    assert not has_stale_markers(np.array([1.0, np.nan, np.inf]))
    assert not has_stale_markers(np.empty(0))
    assert has_stale_markers(np.array([1.0, stale]))


def test_rows_present_can_say_all_rows_with_none():
    present = np.array([[True, False], [False, True]])
    assert rows_present(present, all_as_none=True) == (2, None)
    assert rows_present(present) == (2, [0, 1])
    assert rows_present(np.array([[True], [False], [True]]), all_as_none=True) == (2, [0, 2])
    assert rows_present(np.zeros((0, 3), dtype=bool), all_as_none=True) == (0, None)


@pytest.mark.parametrize("seed", range(10))
def test_count_present_counts_set_cells(seed):
    rng = np.random.default_rng(200 + seed)
    present = rng.random((rng.integers(0, 6), rng.integers(0, 20))) < 0.4
    for _, p in layouts(np.zeros(present.shape), present):
        assert count_present(p) == count_present(p.view(np.uint8)) == int(present.sum())


@pytest.mark.parametrize("op", sorted(SCALAR_ARITHMETIC))
@pytest.mark.parametrize("swap", [False, True])
def test_scalar_arithmetic_is_numpy_arithmetic(op, swap):
    rng = np.random.default_rng(len(op) + swap)
    specials = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e308, 5e-324]
    values = rng.choice(specials + rng.normal(size=20).tolist(), size=(5, 13))
    scalars = rng.choice(specials + [2.5, -3.0], size=13)
    with np.errstate(all="ignore"):
        left, right = (scalars[None, :], values) if swap else (values, scalars[None, :])
        want = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[op](left, right)
    for v, _ in layouts(values, np.zeros(values.shape, dtype=bool)):
        got = scalar_arithmetic(op, v, scalars, swap)
        assert got.flags.c_contiguous and got.tobytes() == np.ascontiguousarray(want).tobytes()
