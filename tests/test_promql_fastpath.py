"""The instant-query fast path (`mimird.promql.fastpath`) answers exactly as the general evaluator: same
series in the same order, the same value bits, annotations, limits and errors, on data with stale
markers, NaNs, gaps and series that collide once their names are dropped."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import mimird.promql.engine as engine_module
import mimird.promql.evaluator as evaluator_module
from mimird._fast import headselect, rangefn
from mimird.promql import fastpath
from mimird.promql.engine import Engine, _prepared
from mimird.promql.value import QueryError
from mimird.tsdb.head import Head
from mimird.tsdb.labels import make_labels
from mimird.util import cores

STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
END = 3_600_000

RANGE_FUNCTIONS = sorted(name for name, params in rangefn.FUNCTION_PARAMETER_COUNTS.items() if params == 0)
AGGREGATIONS = ["sum", "avg", "count", "group", "min", "max", "stddev", "stdvar"]


@pytest.fixture(scope="module")
def head():
    rng = np.random.default_rng(7)
    head = Head(ooo_window_ms=1 << 60)
    series, offsets, timestamps, values = [], [0], [], []
    for metric in ("req_total", "load", "other_total"):
        for k in range(12):
            series.append(make_labels({"__name__": metric, "job": f"j{k % 3}", "instance": f"i{k % 4}"}))
            t = int(rng.integers(0, 15_000))
            value = float(rng.integers(0, 100))
            while t <= END:
                roll = rng.random()
                if roll < 0.05:
                    sample = STALE
                elif roll < 0.08:
                    sample = math.nan
                elif metric.endswith("_total"):
                    value = 0.0 if roll < 0.12 else value + float(rng.integers(0, 50))  # counter with resets
                    sample = value
                else:
                    sample = float(rng.normal(10, 5)) if roll < 0.99 else 1e308
                timestamps.append(t)
                values.append(sample)
                # gaps longer than the lookback now and then
                t += int(rng.integers(10_000, 20_000)) if rng.random() > 0.01 else 400_000
            offsets.append(len(timestamps))
    head.append(series, offsets, timestamps, values)
    return head


def queries() -> list[str]:
    selectors = ['req_total', 'load{job="j1"}', '{__name__=~"req_total|other_total", instance="i2"}',
                 'load offset 2m', 'missing']
    out = list(selectors)
    for name in RANGE_FUNCTIONS:
        for selector in ('req_total', 'load{job=~"j[12]"}', '{__name__=~".+_total", job="j0"}'):
            out.append(f"{name}({selector}[5m])")
        out.append(f"{name}(load[1m] offset -1m)")
    for op in AGGREGATIONS:
        out += [f"{op}(load)", f"{op} by (job) (req_total)", f"{op} without (instance) (rate(req_total[5m]))",
                f"{op} by (job, instance) (max_over_time(load[10m]))", f"({op}(changes(load[2m])))"]
    return out


def general(engine: Engine, head, query: str, t: int, monkeypatch):
    """The evaluator's answer, the fast path turned off."""
    with monkeypatch.context() as patch:
        patch.setattr(engine_module, "_instant_plan", lambda text: None)
        return outcome(engine, head, query, t)


def outcome(engine: Engine, head, query: str, t: int):
    """The samples (value bits included), warnings and infos of an instant query, or its error."""
    try:
        result = engine.instant(head, query, t)
    except QueryError as error:
        return type(error).__name__, str(error)
    samples = [(s.labels, s.t, struct.pack("<d", s.v)) for s in result.value]
    return samples, result.warnings, result.infos


@pytest.mark.parametrize("query", queries())
def test_fast_path_answers_as_the_evaluator(head, query, monkeypatch):
    assert fastpath.plan(_prepared(query)) is not None
    engine = Engine()
    for t in (0, 7_000, 301_000, 1_800_000, 2_400_017, END, END + 200_000, END + 400_000):
        assert outcome(engine, head, query, t) == general(engine, head, query, t, monkeypatch)


@pytest.mark.parametrize("query", ['{__name__=~"req_total|other_total"}', "rate(req_total[10m])",
                                   "sum(rate(req_total[10m]))", "max_over_time(load[30m])"])
@pytest.mark.parametrize("max_samples", [1, 11, 40, 200, 10_000])
def test_sample_limit_as_the_evaluator(head, query, max_samples, monkeypatch):
    engine = Engine(max_samples=max_samples)
    assert outcome(engine, head, query, END) == general(engine, head, query, END, monkeypatch)


def test_collisions_after_name_removal_fail_as_the_evaluator(head, monkeypatch):
    engine = Engine()
    for query in ('rate({__name__=~".+_total"}[5m])', 'last_over_time({__name__=~".+_total"}[5m])',
                  'sum by (job) (rate({__name__=~".+_total"}[5m]))'):
        fast = outcome(engine, head, query, END)
        assert fast == general(engine, head, query, END, monkeypatch)
    assert fast[0], "the aggregation of colliding series is fine"
    assert outcome(engine, head, 'rate({__name__=~".+_total"}[5m])', END)[0] == \
        "ExecutionError"


def test_rate_of_a_gauge_has_the_evaluator_info(head, monkeypatch):
    engine = Engine()
    fast = outcome(engine, head, "rate(load[5m])", END)
    assert fast == general(engine, head, "rate(load[5m])", END, monkeypatch)
    assert fast[2] == ['PromQL info: metric might not be a counter, name does not end in '
                       '_total/_sum/_count/_bucket: "load"']


@pytest.mark.parametrize("query", ["load @ 100", "rate(load[5m] @ end())", "absent_over_time(load[5m])",
                                   "quantile_over_time(0.5, load[5m])", "topk(2, load)",
                                   "sum by (__name__) (load)", "load + 1", "rate(load[5m:1m])",
                                   "sum(sum(load))", "timestamp(load)"])
def test_other_shapes_go_to_the_evaluator(query):
    assert fastpath.plan(_prepared(query)) is None


def unfused(engine: Engine, head, query: str, monkeypatch, *times):
    """The answer with aggregations of selectors evaluated as selection, then aggregation."""
    with monkeypatch.context() as patch:
        patch.setattr(evaluator_module, "_FOLDED_AGGREGATIONS", frozenset())
        patch.setattr(engine_module, "_instant_plan", lambda text: None)
        return range_outcome(engine, head, query, *times) if len(times) == 3 else outcome(engine, head, query, *times)


def range_outcome(engine: Engine, head, query: str, start: int, end: int, step: int):
    try:
        result = engine.range(head, query, start, end, step)
    except QueryError as error:
        return type(error).__name__, str(error)
    return ([(s.labels, s.ts.tolist(), s.vals.tobytes()) for s in result.value], result.warnings, result.infos)


AGGREGATED_SELECTORS = [f"{op}{grouping}({selector})" for op in AGGREGATIONS
                        for grouping in ("", " by (job) ", " without (instance) ", " by (instance, job) ")
                        for selector in ("load", 'req_total{job=~"j[01]"}', "load offset 3m", "load @ 1800",
                                         '{__name__=~".+"}', "missing")]


@pytest.mark.parametrize("query", AGGREGATED_SELECTORS + ["sum(load) + count(req_total)", "max_over_time(sum(load)[20m:1m])",
                                                          "sum by (job) (load) @ end()"])
def test_aggregations_of_selectors_fold_as_selection_then_aggregation(head, query, monkeypatch):
    engine = Engine()
    for start, end, step in ((0, END + 400_000, 60_000), (1_000_000, 1_300_000, 17_000), (2_000_000, 2_000_000, 1)):
        fused = range_outcome(engine, head, query, start, end, step)
        assert fused == unfused(engine, head, query, monkeypatch, start, end, step)
    for t in (0, 400_000, END):
        with monkeypatch.context() as patch:
            patch.setattr(engine_module, "_instant_plan", lambda text: None)
            fused = outcome(engine, head, query, t)
        assert fused == unfused(engine, head, query, monkeypatch, t)


@pytest.mark.parametrize("max_samples", [1, 30, 500, 3000])
def test_aggregations_of_selectors_limit_as_before(head, max_samples, monkeypatch):
    engine = Engine(max_samples=max_samples)
    for query in ("sum(load)", "count by (job) (req_total)"):
        assert range_outcome(engine, head, query, 0, END, 60_000) == \
            unfused(engine, head, query, monkeypatch, 0, END, 60_000)


def folded_in_batch(engine: Engine, head, query: str, monkeypatch, *times):
    """The answer with aggregations of selectors folded over the selected batch, not where the series are
    stored."""
    with monkeypatch.context() as patch:
        patch.setattr(Head, "select_fold", None)
        patch.setattr(engine_module, "_instant_plan", lambda text: None)
        return range_outcome(engine, head, query, *times) if len(times) == 3 else outcome(engine, head, query, *times)


@pytest.mark.parametrize("in_parts", [False, True])
@pytest.mark.parametrize("query", AGGREGATED_SELECTORS + ["max_over_time(sum(load)[20m:1m])",
                                                          "sum by (job) (load @ end())"])
def test_aggregations_of_selectors_fold_in_storage_as_over_the_batch(head, query, in_parts, monkeypatch):
    engine = Engine()
    select_fold = Head.select_fold
    if in_parts:
        # large reads are decoded in parts into a batch, then folded
        monkeypatch.setattr(cores, "PARTS", 2)
        monkeypatch.setattr(headselect, "PARALLEL_MIN_SAMPLES", 1)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[5])  # the aggregation
        return select_fold(*args, **kwargs)

    for times in ((0, END + 400_000, 60_000), (1_000_000, 1_300_000, 17_000), (2_000_000, 2_000_000, 1), (0,),
                  (400_000,), (END,)):
        with monkeypatch.context() as patch:
            patch.setattr(Head, "select_fold", counted)
            patch.setattr(engine_module, "_instant_plan", lambda text: None)
            in_storage = (range_outcome(engine, head, query, *times) if len(times) == 3
                          else outcome(engine, head, query, *times))
        assert in_storage == folded_in_batch(engine, head, query, monkeypatch, *times)
    assert calls, "the head folded the series"


@pytest.mark.parametrize("max_samples", [1, 30, 500, 3000])
def test_aggregations_of_selectors_in_storage_limit_as_over_the_batch(head, max_samples, monkeypatch):
    engine = Engine(max_samples=max_samples)
    for query in ("sum(load)", "count by (job) (req_total)", "avg_over_time(sum(load)[30m:1m])"):
        assert range_outcome(engine, head, query, 0, END, 60_000) == \
            folded_in_batch(engine, head, query, monkeypatch, 0, END, 60_000)


def read_in_batch(engine: Engine, head, query: str, monkeypatch, start: int, end: int, step: int):
    """The range answer with range functions run over the selected batch, not where the series are stored."""
    with monkeypatch.context() as patch:
        patch.setattr(Head, "evaluate_range", None)
        return range_outcome(engine, head, query, start, end, step)


IN_STORAGE = ([f"{name}({selector})" for name in RANGE_FUNCTIONS
               for selector in ("req_total[5m]", 'load{job=~"j[12]"}[10m] offset 2m', "load[3m] @ 1800",
                                '{__name__=~".+_total"}[1m]', "missing[5m]")]
              + ["quantile_over_time(0.3, load[10m])", "quantile_over_time(1.5, load[10m])",
                 "predict_linear(load[10m], 600)", "predict_linear(load[10m] @ 1800, 600)",
                 "double_exponential_smoothing(load[10m], 0.5, 0.2)", "absent_over_time(missing[5m])",
                 "absent_over_time(load[5m])", "sum by (job) (rate(req_total[5m]))", 'rate(load[5m])',
                 "max_over_time(sum by (job) (rate(req_total[5m]))[30m:1m])"])


@pytest.mark.parametrize("query", IN_STORAGE)
def test_range_functions_in_storage_answer_as_over_the_batch(head, query, monkeypatch):
    engine = Engine()
    evaluate_range = Head.evaluate_range
    for start, end, step in ((0, END + 400_000, 60_000), (1_000_000, 1_300_000, 17_000), (2_000_000, 2_000_000, 1)):
        calls = []

        def counted(*args, calls=calls, **kwargs):
            calls.append(args[4])  # the kernel's name
            return evaluate_range(*args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(Head, "evaluate_range", counted)
            in_storage = range_outcome(engine, head, query, start, end, step)
        assert in_storage == read_in_batch(engine, head, query, monkeypatch, start, end, step)
        # the head ran the kernel, but for predict_linear under @ over several steps (its regression is
        # anchored at each step, which one call of the kernel cannot do)
        assert bool(calls) != (query == "predict_linear(load[10m] @ 1800, 600)" and start != end)


@pytest.mark.parametrize("max_samples", [1, 40, 500, 3000, 20_000])
@pytest.mark.parametrize("chunk_samples", [60, 4_000_000])
def test_range_functions_in_storage_limit_as_over_the_batch(head, max_samples, chunk_samples, monkeypatch):
    monkeypatch.setattr(evaluator_module, "_CHUNK_SAMPLES", chunk_samples)
    engine = Engine(max_samples=max_samples)
    for query in ("rate(req_total[10m])", "sum(max_over_time(load[30m]))", 'count_over_time({job="j1"}[5m])'):
        assert range_outcome(engine, head, query, 0, END, 60_000) == \
            read_in_batch(engine, head, query, monkeypatch, 0, END, 60_000)
