"""The PromQL engine: runs instant and range queries against a ``Queryable``.

A ``Queryable`` has ``select(matchers, mint_ms, maxt_ms)`` returning ``(labels, ts, vals)`` per
series, sorted by labels (``mimird.tsdb.head.Head`` and the ingester fit). Settings follow
Prometheus 3.5 with Mimir's defaults: 5m lookback, ``-querier.max-samples`` 50M, a timeout.
Evaluation is plain synchronous code, safe to run in a worker thread.

Samples are floats: native histograms are neither stored nor evaluated, so the histogram_*
functions other than histogram_quantile/histogram_fraction (which read classic ``le`` buckets)
return empty results. Annotations are returned with their full Prometheus texts
(``PromQL warning: ...`` / ``PromQL info: ...``), without position suffixes.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import numpy as np

from mimird._fast.frames import present_rows
from mimird.promql import ast, fastpath
from mimird.promql.durations import DurationError, resolve_duration_exprs
from mimird.promql.evaluator import Evaluator, RawMatrix, deadline_check, finish
from mimird.promql.frame import Frame, Steps
from mimird.promql.parser import ParseError, parse
from mimird.promql.querystats import QueryStatistics
from mimird.promql.value import (
    BadDataError,
    ExecutionError,
    Matrix,
    QueryResult,
    Sample,
    Scalar,
    Series,
    String,
    Vector,
)

# A query is cancelled when this callable returns True or this event is set.
Cancellation = Callable[[], bool] | threading.Event | None


@functools.lru_cache(maxsize=1024)
def _prepared(query: str) -> ast.Node:
    """The query parsed and its duration expressions resolved; trees are immutable, so repeated
    queries share one."""
    return resolve_duration_exprs(parse(query))


@functools.lru_cache(maxsize=1024)
def _instant_plan(query: str) -> fastpath.InstantPlan | None:
    """The fast path's plan for a query already known to parse (keyed by its text: hashing a tree
    walks all of it)."""
    return fastpath.plan(_prepared(query))


class Engine:
    """Evaluates PromQL; one instance serves any number of queries (it holds settings only)."""

    def __init__(self, lookback_delta_ms: int = 300_000, max_samples: int = 50_000_000,
                 timeout_s: float = 120.0) -> None:
        self.lookback_delta_ms = lookback_delta_ms
        self.max_samples = max_samples
        self.timeout_s = timeout_s

    def _prepare(self, query) -> ast.Node:
        try:
            if isinstance(query, str):
                return _prepared(query)
            return resolve_duration_exprs(query)
        except ParseError as error:
            raise BadDataError(str(error)) from None
        except DurationError as error:
            raise BadDataError(str(error)) from None

    def _evaluator(self, queryable, start_ms, end_ms, cancelled) -> Evaluator:
        return Evaluator(queryable, start_ms, end_ms, self.lookback_delta_ms, self.max_samples,
                         time.monotonic() + self.timeout_s, cancelled)

    def instant(self, queryable, query: str | ast.Node, time_ms: int,
                cancelled: Cancellation = None, stats: QueryStatistics | None = None) -> QueryResult:
        """Evaluate ``query`` at one time (ms); the value is a Scalar, String, Vector or (for a range
        selector or subquery) a Matrix. Raises QueryError subclasses; ``cancelled`` is polled
        between pieces of work. ``stats``, when given, receives the sample counts and timings."""
        started = time.perf_counter()
        expr = self._prepare(query)
        if stats is None:
            plan = _instant_plan(query) if isinstance(query, str) else fastpath.plan(expr)
            if plan is not None:
                return fastpath.evaluate(plan, queryable, time_ms, self.lookback_delta_ms, self.max_samples,
                                         deadline_check(cancelled, time.monotonic() + self.timeout_s))
        ev = self._evaluator(queryable, time_ms, time_ms, cancelled)
        prepared = time.perf_counter()
        if stats is not None:
            stats.init_steps(time_ms, time_ms, 1)
            ev.samples = stats
        # (np.arange, not np.array of a list: a dashboard query runs it cold, and the list path costs more)
        steps = np.arange(time_ms, time_ms + 1, dtype=np.int64)
        value = ev.eval(expr, steps)
        evaluated = time.perf_counter()
        if isinstance(value, Steps):
            result = Scalar(time_ms, float(value.values[0]))
        elif isinstance(value, str):
            result = String(time_ms, value)
        elif isinstance(value, RawMatrix):
            result = Matrix(Series(lbls, ts, vals) for lbls, ts, vals in zip(value.labels, value.ts, value.vals,
                                                                             strict=True))
        else:
            frame = finish(value)
            # one conversion of the step's column to Python values, rather than a numpy scalar per series
            present = frame.present[:, 0].tolist()
            values = frame.values[:, 0].tolist()
            result = Vector([Sample(lbls, time_ms, v) for lbls, here, v in zip(frame.labels, present, values,
                                                                               strict=True) if here])
        if stats is not None:
            _record_timings(stats, started, prepared, evaluated, evaluated)
        return QueryResult(result, list(ev.warnings), list(ev.infos))

    def range(self, queryable, query: str | ast.Node, start_ms: int, end_ms: int, step_ms: int,
              cancelled: Cancellation = None, stats: QueryStatistics | None = None) -> QueryResult:
        """Evaluate ``query`` at start, start+step, ... <= end; returns a Matrix sorted by labels."""
        started = time.perf_counter()
        if step_ms <= 0:
            raise BadDataError("zero or negative query resolution step widths are not accepted. "
                               "Try a positive integer")
        if end_ms < start_ms:
            raise BadDataError("end timestamp must not be before start time")
        expr = self._prepare(query)
        if expr.type not in (ast.ValueType.SCALAR, ast.ValueType.VECTOR):
            raise BadDataError(f"invalid expression type \"{expr.type.documented}\" for range query, "
                               "must be Scalar or instant Vector")
        ev = self._evaluator(queryable, start_ms, end_ms, cancelled)
        prepared = time.perf_counter()
        if stats is not None:
            stats.init_steps(start_ms, end_ms, step_ms)
            ev.samples = stats
        steps = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        value = ev.eval(expr, steps)
        evaluated = time.perf_counter()
        if isinstance(value, Steps):
            value = Frame([()], value.values[None, :], np.ones((1, len(steps)), dtype=bool),
                          np.zeros(1, dtype=bool))
        if not isinstance(value, Frame):
            raise ExecutionError("range query must return a scalar or an instant vector")
        frame = finish(value.merged())
        labels = frame.labels
        order = sorted(range(len(labels)), key=labels.__getitem__)
        matrix = Matrix([Series(labels[row], ts, vals)
                         for row, ts, vals in present_rows(frame.values, frame.present, steps, order)])
        if stats is not None:
            _record_timings(stats, started, prepared, evaluated, time.perf_counter())
        return QueryResult(matrix, list(ev.warnings), list(ev.infos))


def _record_timings(stats: QueryStatistics, started: float, prepared: float, evaluated: float,
                    sorted_at: float) -> None:
    # Prometheus's timers: preparation (parsing here, as series are fetched lazily during evaluation),
    # inner evaluation, result sorting; eval total spans the last two, exec total everything. There is no
    # engine-level queue (the frontend queue's wait is reported in Server-Timing).
    stats.timings.update(queryPreparationTime=prepared - started, innerEvalTime=evaluated - prepared,
                         resultSortTime=sorted_at - evaluated, evalTotalTime=sorted_at - prepared,
                         execQueueTime=0.0, execTotalTime=sorted_at - started)
