"""Large kernel outputs come from spare buffers that are reused only once nothing points into them."""

from __future__ import annotations

import numpy as np

from mimird._fast import rangefn
from mimird.util.memory import SpareBuffers, spare_buffers


def test_a_buffer_is_reused_only_when_free():
    pool = SpareBuffers(min_bytes=1000, max_bytes=100_000)
    first = pool.empty((100, 20), np.float64)
    first[:] = 1.0
    rows = first[3:5]
    del first
    second = pool.empty((100, 20), np.float64)  # a view of the first is alive: a buffer of its own
    assert not np.shares_memory(rows, second)
    assert pool.held_bytes() == 32_000
    del rows
    third = pool.empty((50, 10), np.float64)  # the first buffer is free again, and large enough
    assert not np.shares_memory(third, second)
    assert pool.held_bytes() == 32_000
    assert third.shape == (50, 10) and third.dtype == np.float64 and third.flags.c_contiguous


def test_small_and_oversized_arrays_are_not_kept():
    pool = SpareBuffers(min_bytes=1000, max_bytes=10_000)
    assert pool.empty((10, 10), np.float64).base is None  # below min_bytes: np.empty's own
    assert pool.empty((100, 100), np.float64).base is None  # beyond max_bytes
    assert pool.held_bytes() == 0


def test_free_buffers_too_small_make_room_for_a_larger_one():
    pool = SpareBuffers(min_bytes=1000, max_bytes=17_000)
    small = pool.empty((200,), np.float64)
    del small
    large = pool.empty((2000,), np.float64)
    assert pool.held_bytes() == 16_000
    del large
    assert pool.empty((1000,), np.float64).base is not None  # taken from the kept one


def test_range_function_outputs_over_the_threshold_are_spare_buffers(monkeypatch):
    monkeypatch.setattr(spare_buffers, "min_bytes", 1024)
    ts = np.arange(0, 600_000, 15_000, dtype=np.int64)
    n_series = 50
    all_ts = np.tile(ts, n_series)
    vals = np.tile(np.arange(len(ts), dtype=np.float64), n_series)
    offsets = np.arange(0, len(all_ts) + 1, len(ts), dtype=np.int64)
    steps = np.arange(300_000, 600_000, 15_000, dtype=np.int64)
    out, present = rangefn.evaluate_batch("rate", all_ts, vals, offsets, steps, 300_000)
    assert out.base is not None and present.all()
    again, _ = rangefn.evaluate_batch("rate", all_ts, vals, offsets, steps, 300_000)
    assert not np.shares_memory(out, again)  # the first output is still alive
    assert np.array_equal(out, again)
