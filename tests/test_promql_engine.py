"""The PromQL Engine's public API: result types, errors with Prometheus's error types, limits,
cancellation, annotations, and evaluation from a worker thread."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mimird.promql.engine import Engine
from mimird.promql.value import (
    BadDataError,
    ExecutionError,
    Matrix,
    QueryCanceledError,
    QueryTimeoutError,
    Scalar,
    String,
    TooManySamplesError,
    Vector,
)
from mimird.tsdb.head import Head
from mimird.tsdb.labels import make_labels


@pytest.fixture(scope="module")
def head():
    head = Head(ooo_window_ms=1 << 60)
    series = [make_labels({"__name__": "up_total", "job": job}) for job in ("a", "b", "c")]
    ts = list(range(0, 600_001, 15_000))
    timestamps, values, offsets = [], [], [0]
    for k in range(len(series)):
        timestamps += ts
        values += [float(i * (k + 1)) for i in range(len(ts))]
        offsets.append(len(timestamps))
    head.append(series, offsets, timestamps, values)
    head.append([make_labels({"__name__": "gauge", "job": "a"})], [0, 2], [0, 60_000], [1.0, 2.0])
    return head


def test_instant_vector_scalar_string(head):
    engine = Engine()
    result = engine.instant(head, 'up_total{job="b"}', 600_000)
    assert isinstance(result.value, Vector)
    assert result.value[0].labels == make_labels({"__name__": "up_total", "job": "b"})
    assert result.value[0].v == 80.0 and result.value[0].t == 600_000
    assert engine.instant(head, "1 + 2", 0).value == Scalar(0, 3.0)
    assert engine.instant(head, '"hello"', 5).value == String(5, "hello")


def test_instant_range_selector_returns_matrix(head):
    result = Engine().instant(head, 'up_total{job="a"}[1m]', 600_000)
    assert isinstance(result.value, Matrix)
    assert result.value[0].ts.tolist() == [555_000, 570_000, 585_000, 600_000]


def test_range_query_sorted_matrix(head):
    result = Engine().range(head, "rate(up_total[1m])", 300_000, 600_000, 60_000)
    assert [s.labels for s in result.value] == sorted(s.labels for s in result.value)
    assert all(len(s.ts) == 6 for s in result.value)
    np.testing.assert_allclose(result.value[0].vals, 1 / 15)
    assert result.value[0].labels == make_labels({"job": "a"})


def test_annotations(head):
    result = Engine().instant(head, "rate(gauge[5m])", 60_000)
    assert result.infos == ['PromQL info: metric might not be a counter, name does not end in '
                            '_total/_sum/_count/_bucket: "gauge"']
    result = Engine().instant(head, "quantile(2, up_total)", 60_000)
    assert result.warnings == ["PromQL warning: quantile value should be between 0 and 1, got 2"]


def test_errors_carry_error_types(head):
    engine = Engine()
    with pytest.raises(BadDataError) as error:
        engine.instant(head, "sum(", 0)
    assert error.value.error_type == "bad_data"
    with pytest.raises(ExecutionError) as error:
        engine.instant(head, "up_total * on() up_total", 600_000)
    assert error.value.error_type == "execution"
    assert "found duplicate series for the match group {} on the right hand-side" in str(error.value)
    with pytest.raises(ExecutionError, match="many-to-one matching must be explicit"):
        engine.instant(head, "up_total + ignoring(job) gauge", 60_000)
    with pytest.raises(ExecutionError, match="vector cannot contain metrics with the same labelset"):
        engine.instant(head, 'rate({job="a"}[5m])', 60_000)
    with pytest.raises(BadDataError, match="invalid expression type"):
        engine.range(head, "up_total[1m]", 0, 60_000, 15_000)


def test_max_samples(head):
    with pytest.raises(TooManySamplesError) as error:
        Engine(max_samples=10).range(head, "up_total", 0, 600_000, 15_000)
    assert str(error.value) == "query processing would load too many samples into memory in query execution"


def test_timeout_and_cancel(head):
    with pytest.raises(QueryTimeoutError) as error:
        Engine(timeout_s=-1).instant(head, "up_total", 0)
    assert error.value.error_type == "timeout"
    with pytest.raises(QueryCanceledError) as error:
        Engine().range(head, "sum(up_total)", 0, 600_000, 15_000, cancelled=lambda: True)
    assert error.value.error_type == "canceled"


def test_negative_times_and_at_modifier(head):
    engine = Engine()
    result = engine.instant(head, 'up_total{job="a"} @ 600', -100_000)
    assert result.value[0].v == 40.0
    result = engine.range(head, 'up_total{job="a"} @ end()', 0, 600_000, 300_000)
    assert result.value[0].vals.tolist() == [40.0, 40.0, 40.0]


def test_runs_in_worker_thread(head):
    async def main():
        return await asyncio.to_thread(Engine().instant, head, "sum(up_total)", 600_000)

    assert asyncio.run(main()).value[0].v == 40 + 80 + 120


def test_instant_selection_in_chunks_matches_whole(head, monkeypatch):
    from mimird.promql import evaluator

    whole = Engine().range(head, "up_total", 0, 600_000, 45_000).value
    monkeypatch.setattr(evaluator, "_CHUNK_CELLS", 5)
    chunked = Engine().range(head, "up_total", 0, 600_000, 45_000).value
    assert [s.labels for s in whole] == [s.labels for s in chunked]
    for a, b in zip(whole, chunked, strict=True):
        assert a.ts.tolist() == b.ts.tolist() and a.vals.tolist() == b.vals.tolist()


def test_instant_select_kernel_against_reference():
    from mimird._fast import instant
    from mimird._fast.xorchunk import STALE_NAN

    rng = np.random.default_rng(7)
    lookback = 50
    series = []
    for _ in range(20):
        ts = np.unique(rng.integers(-200, 400, rng.integers(0, 30)))
        vals = rng.random(len(ts))
        vals[rng.random(len(ts)) < 0.2] = STALE_NAN
        series.append((ts.astype(np.int64), vals))
    offsets = np.cumsum([0] + [len(ts) for ts, _ in series])
    times = np.sort(rng.integers(-300, 500, 40)).astype(np.int64)
    values, present, stamps, _ = instant.select_rows(np.concatenate([ts for ts, _ in series]),
                                                     np.concatenate([v for _, v in series]), offsets, times,
                                                     lookback)
    for k, (ts, vals) in enumerate(series):
        for j, t in enumerate(times):
            idx = np.searchsorted(ts, t, side="right") - 1
            want = idx >= 0 and ts[idx] > t - lookback and vals[idx].tobytes() != np.float64(STALE_NAN).tobytes()
            assert bool(present[k, j]) == want
            if want:
                assert values[k, j] == vals[idx] and stamps[k, j] == ts[idx]
            else:
                assert np.isnan(values[k, j]) and stamps[k, j] == 0
    # the same arrays and the series with a value somewhere, also from non-contiguous, other-dtype
    # inputs (which it converts)
    all_ts = np.concatenate([ts for ts, _ in series])
    all_vals = np.concatenate([v for _, v in series])
    spread_ts = np.repeat(all_ts, 2)[::2]
    values2, present2, stamps2, rows = instant.select_rows(spread_ts, np.repeat(all_vals, 2)[::2],
                                                           offsets.astype(np.int32), times.tolist(), lookback)
    assert np.array_equal(present2, present) and np.array_equal(stamps2, stamps)
    assert np.array_equal(values2, values, equal_nan=True)
    assert rows.tolist() == np.flatnonzero(present.any(axis=1)).tolist()
    with pytest.raises(ValueError, match="non-decreasing"):
        instant.select_rows(all_ts, all_vals, offsets, times[::-1].copy(), lookback)
    with pytest.raises(ValueError, match="differ in length"):
        instant.select_rows(all_ts, all_vals[1:], offsets, times, lookback)


def test_range_functions_in_chunks_match_whole(head, monkeypatch):
    from mimird.promql import evaluator

    query = "rate(up_total[1m]) or absent_over_time(nothing[1m]) or sum_over_time(up_total[2m:30s])"
    whole = Engine().range(head, query, 0, 600_000, 45_000).value
    monkeypatch.setattr(evaluator, "_CHUNK_SAMPLES", 3)
    chunked = Engine().range(head, query, 0, 600_000, 45_000).value
    assert [s.labels for s in whole] == [s.labels for s in chunked]
    for a, b in zip(whole, chunked, strict=True):
        assert a.ts.tolist() == b.ts.tolist() and a.vals.tolist() == b.vals.tolist()


def test_max_samples_counts_operands_together(head):
    # 3 series x 41 steps = 123 points per operand: each fits alone, both together do not.
    engine = Engine(max_samples=200)
    engine.range(head, "up_total", 0, 600_000, 15_000)
    with pytest.raises(TooManySamplesError):
        engine.range(head, "up_total / up_total", 0, 600_000, 15_000)


RANGE_VS_INSTANT_QUERIES = [
    "m", "m offset 2m", "m @ 300", "rate(m[2m])", "sum by (g) (m)", "avg(m)", "max without (i) (m)",
    "topk(2, m)", "bottomk by (g) (scalar(count(m)) - 3, m)", "quantile by (g) (0.3, m)", "stddev(m)",
    "count_values('v', round(m))", "m > 50", "m > bool 50", "m + on(i) group_left(g) n", "m and n",
    "m or n", "m unless n", "max_over_time(m[3m:30s])", "sum_over_time(rate(m[2m])[4m:1m])",
    "label_replace(m, 'x', '$1', 'i', '(.)')", "clamp(m, 20, 60)", "absent(nope)", "scalar(n{i='1'})",
    "histogram_quantile(0.9, b)", "timestamp(m)", "time() - m", "limitk(1, m)", "-m", "sort(m)",
    "predict_linear(m[5m], 60)", "deriv(m[5m])", "changes(m[5m])", "last_over_time(m[1m])",
    "rate(m[2m] @ 600)", "sum(m @ 300) + time()", "predict_linear(m[5m] @ 600, 60)",
    "max_over_time(m[5m:1m] @ 500)", "timestamp(m @ 400)", "topk(1, m @ 700)",
]


@pytest.fixture(scope="module")
def random_head():
    rng = np.random.default_rng(11)
    head = Head(ooo_window_ms=1 << 60)
    series, offsets, timestamps, values = [], [0], [], []
    for i in range(6):
        for name in ("m", "n"):
            series.append(make_labels({"__name__": name, "i": str(i), "g": str(i % 2)}))
            ts = np.unique(rng.integers(0, 900, 25)) * 1000
            timestamps += ts.tolist()
            values += rng.integers(0, 100, len(ts)).astype(float).tolist()
            offsets.append(len(timestamps))
    for le in ("1", "10", "+Inf"):
        series.append(make_labels({"__name__": "b", "le": le}))
        timestamps += list(range(0, 900_000, 30_000))
        values += [float(k * (1 + int(le == "10") + 2 * int(le == "+Inf"))) for k in range(30)]
        offsets.append(len(timestamps))
    head.append(series, offsets, timestamps, values)
    return head


@pytest.mark.parametrize("query", RANGE_VS_INSTANT_QUERIES)
def test_range_query_agrees_with_instant_queries(random_head, query):
    engine = Engine()
    start, end, step = 120_000, 840_000, 45_000
    ranged = {s.labels: dict(zip(s.ts.tolist(), s.vals.tolist(), strict=True))
              for s in engine.range(random_head, query, start, end, step).value}
    for t in range(start, end + 1, step):
        result = engine.instant(random_head, query, t).value
        samples = [(s.labels, s.v) for s in result] if isinstance(result, Vector) else [((), result.v)]
        at_t = {labels: points[t] for labels, points in ranged.items() if t in points}
        assert {k for k, _ in samples} == set(at_t), (query, t)
        for labels, value in samples:
            assert value == at_t[labels] or (np.isnan(value) and np.isnan(at_t[labels])), (query, t, labels)
