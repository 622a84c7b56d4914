"""Evaluation of a PromQL syntax tree over a whole step grid at once (Prometheus 3.5 semantics).

Every node is evaluated for all evaluation times of the query in one call: selectors fetch their
series once for the whole range, instant selection (lookback, stale markers) runs in
:mod:`mimird._fast.instant`, range functions in :mod:`mimird._fast.rangefn`, aggregations fold in
:mod:`mimird._fast.aggregate`, and operators and functions work on (series x steps) matrices with
a presence mask (see :mod:`.frame`). Subqueries evaluate their inner expression once, on the
union of their step grids.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable

import numpy as np

from mimird._fast import instant, rangefn
from mimird._fast.aggregate import FOLD_OPERATIONS, distinct_label_values, group_series, select_fold
from mimird._fast.frames import count_present, present_batch, rows_present
from mimird.promql import ast, parallel
from mimird.promql.aggregations import aggregate
from mimird.promql.binops import scalar_binop, vector_binop, vector_scalar_binop
from mimird.promql.frame import Frame, Steps, drop_name, flags
from mimird.promql.funcs import FunctionContext, call_instant_function
from mimird.promql.gofmt import go_g
from mimird.promql.value import (
    ExecutionError,
    QueryCanceledError,
    QueryTimeoutError,
    TooManySamplesError,
)
from mimird.tsdb.labels import InvalidRegexError, Labels, Matcher, MatchType, go_quote
from mimird.tsdb.seriesbatch import SeriesBatch

STALE_BITS = np.uint64(0x7FF0000000000002)
NS_PER_MS = 1_000_000
DEFAULT_SUBQUERY_STEP_MS = 60_000

_COUNTER_SUFFIXES = ("_total", "_sum", "_count", "_bucket")
INFO_METRIC = "target_info"
# Upper bound of (series x steps) cells an instant selection works on at once.
_CHUNK_CELLS = 4_000_000
# Raw samples a range function evaluates at once.
_CHUNK_SAMPLES = 4_000_000
IDENTIFYING_LABELS = ("instance", "job")
# Aggregations folded sample by sample (mimird._fast.aggregate): of a plain selector, selected and folded at once.
_FOLDED_AGGREGATIONS = FOLD_OPERATIONS


def is_stale(vals: np.ndarray) -> np.ndarray:
    """Which values are Prometheus stale markers (a NaN with one exact bit pattern)."""
    return vals.view(np.uint64) == STALE_BITS


def to_storage_matchers(matchers) -> list[Matcher]:
    """The AST's matchers as the storage's RE2-semantics matchers."""
    try:
        return list(_storage_matchers(tuple(matchers)))
    except InvalidRegexError as error:
        raise ExecutionError(str(error)) from None


@functools.lru_cache(maxsize=4096)
def _storage_matchers(matchers: tuple[ast.Matcher, ...]) -> tuple[Matcher, ...]:
    # Parsed queries are cached and their trees immutable, so a repeated query's selectors convert once
    # (storage Matchers are never changed after construction). Invalid regexes raise and are not cached.
    return tuple(Matcher(MatchType(m.type.value), m.name, m.value) for m in matchers)


class RawMatrix:
    """A range vector as a query result: per series the raw samples of its window."""

    def __init__(self, labels: list[Labels], ts: list[np.ndarray], vals: list[np.ndarray]):
        self.labels = labels
        self.ts = ts
        self.vals = vals


def deadline_check(cancelled: Callable[[], bool] | threading.Event | None, deadline: float) -> Callable[[], None]:
    """A `check()` that raises QueryCanceledError once `cancelled` says so, and QueryTimeoutError past the
    `deadline` (time.monotonic), polled between pieces of a query's work."""
    # an Event is polled through its is_set, chosen once here rather than looked for on every call
    poll = cancelled.is_set if isinstance(cancelled, threading.Event) else cancelled

    def check() -> None:
        if poll is not None and poll():
            raise QueryCanceledError()
        if time.monotonic() > deadline:
            raise QueryTimeoutError()

    return check


class Evaluator:
    """Evaluates one query; holds its data source, limits and collected annotations."""

    def __init__(self, queryable, start_ms: int, end_ms: int, lookback_ms: int, max_samples: int,
                 deadline: float, cancelled: Callable[[], bool] | threading.Event | None = None):
        self.queryable = queryable
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.lookback_ms = lookback_ms
        self.max_samples = max_samples
        # raises once the query is cancelled or past its deadline; polled between pieces of work
        self.check = deadline_check(cancelled, deadline)
        self.warnings: dict[str, None] = {}
        self.infos: dict[str, None] = {}
        # QueryStatistics when the request asked for `stats`; every counting site checks for None first
        self.samples = None

    # --- housekeeping ----------------------------------------------------------------------------

    def count_samples(self, n: int) -> None:
        if self.samples is not None:
            self.samples.update_peak(n)
        if n > self.max_samples:
            raise TooManySamplesError()

    def warn(self, text: str) -> None:
        self.warnings[f"PromQL warning: {text}"] = None

    def info(self, text: str) -> None:
        self.infos[f"PromQL info: {text}"] = None

    def at_time(self, timestamp_ms: int | None, start_or_end: str | None) -> int | None:
        if start_or_end == "start":
            return self.start_ms
        if start_or_end == "end":
            return self.end_ms
        return timestamp_ms

    def shifted_times(self, node, steps: np.ndarray) -> np.ndarray:
        """The times a selector or subquery reads at, per step: ``@`` and ``offset`` applied."""
        at = self.at_time(node.timestamp_ms, node.start_or_end)
        base = steps if at is None else np.full(len(steps), at, dtype=np.int64)
        # (no subtraction without an offset: the arrays are only read, and a dashboard's query runs numpy's
        # arithmetic cold, at tens of microseconds)
        return base - node.offset_ns // NS_PER_MS if node.offset_ns else base

    def select(self, selector: ast.VectorSelector, mint: int, maxt: int):
        self.check()
        return list(self.queryable.select(to_storage_matchers(selector.matchers), mint, maxt))

    # --- dispatch --------------------------------------------------------------------------------

    def eval(self, node, steps: np.ndarray):
        """Evaluate ``node`` at every time of ``steps``: a Frame, Steps, str or RawMatrix."""
        self.check()
        if len(steps) == 0 and node.type in (ast.ValueType.VECTOR, ast.ValueType.SCALAR):
            return Frame.empty(0) if node.type is ast.ValueType.VECTOR else Steps(np.empty(0))
        if len(steps) > 1 and node.type in (ast.ValueType.VECTOR, ast.ValueType.SCALAR) \
                and not isinstance(node, (ast.NumberLiteral, ast.ParenExpr)) and step_invariant(node):
            # Every step would see the same data (everything is pinned with @): evaluate once and
            # repeat, as Prometheus does for step-invariant expressions.
            if self.samples is None:
                return _repeat(self.eval(node, steps[:1]), len(steps))
            outer = self.samples
            self.samples = outer.child()
            try:
                value = self.eval(node, steps[:1])
            finally:
                child, self.samples = self.samples, outer
            outer.update_peak(child.peak_samples)
            outer.add_every_step(child.total_samples)
            return _repeat(value, len(steps))
        if isinstance(node, ast.ParenExpr):
            return self.eval(node.expr, steps)
        if isinstance(node, ast.NumberLiteral):
            values = np.empty(len(steps))  # np.full is a Python wrapper of these two calls
            values.fill(node.value)
            return Steps(values)
        if isinstance(node, ast.StringLiteral):
            return node.value
        if isinstance(node, ast.VectorSelector):
            return self.eval_vector_selector(node, steps)
        if isinstance(node, ast.MatrixSelector):
            return self.eval_matrix_selector(node, steps)
        if isinstance(node, ast.SubqueryExpr):
            return self.eval_subquery_raw(node, steps)
        if isinstance(node, ast.UnaryExpr):
            value = self.eval(node.expr, steps)
            if node.op != "-":
                return value
            if isinstance(value, Steps):
                return Steps(-value.values)
            return Frame(value.labels, -value.values, value.present, np.ones(value.n_series, dtype=bool))
        if isinstance(node, ast.BinaryExpr):
            return self.eval_binary(node, steps)
        if isinstance(node, ast.AggregateExpr):
            return self.eval_aggregate(node, steps)
        if isinstance(node, ast.Call):
            return self.eval_call(node, steps)
        raise ExecutionError(f"unhandled expression of type: {type(node).__name__}")

    # --- selectors -------------------------------------------------------------------------------

    def eval_vector_selector(self, node: ast.VectorSelector, steps: np.ndarray,
                             with_timestamps: bool = False):
        times = self.shifted_times(node, steps)
        return self.select_instant(to_storage_matchers(node.matchers), times, with_timestamps)

    def select_instant(self, matchers: list[Matcher], times: np.ndarray, with_timestamps: bool = False):
        """Instant selection at every time: the newest sample in (t - lookback, t], unless stale.

        With ``with_timestamps`` also returns the (series, steps) matrix of the chosen samples' times.
        """
        n = len(times)
        if n == 0:
            frame = Frame.empty(0)
            return (frame, np.empty((0, 0), dtype=np.int64)) if with_timestamps else frame
        batch = self.select_lookback(matchers, times)
        if not len(batch):
            empty = Frame.empty(n)
            return (empty, np.empty((0, n), dtype=np.int64)) if with_timestamps else empty
        labels, ts_all, vals_all, offsets = batch.labels, batch.ts, batch.vals, batch.offsets
        keep_rows, kept_vals, kept_ok, kept_ts = [], [], [], []
        total = 0
        # Series are taken in chunks so that the (series x steps) output stays bounded by what the
        # sample limit allows, and the deadline is checked in between.
        chunk = max(1, _CHUNK_CELLS // n)
        for first in range(0, len(labels), chunk):
            self.check()
            last = min(first + chunk, len(labels))
            values, ok, stamps, rows = instant.select_rows(ts_all, vals_all, offsets[first:last + 1], times,
                                                           self.lookback_ms)
            ok = ok.view(bool)
            total += int(np.count_nonzero(ok))
            if self.samples is not None:
                self.samples.add_steps(ok.sum(axis=0))
            self.count_samples(total)
            if len(rows) < last - first:
                values, ok, stamps = values[rows], ok[rows], stamps[rows]
            keep_rows.append(rows + first)
            kept_vals.append(values)
            kept_ok.append(ok)
            kept_ts.append(stamps)
        if len(kept_vals) == 1:
            rows, values, ok, stamps = keep_rows[0], kept_vals[0], kept_ok[0], kept_ts[0]
        else:
            rows = np.concatenate(keep_rows)
            values, ok, stamps = np.vstack(kept_vals), np.vstack(kept_ok), np.vstack(kept_ts)
        if len(rows) < len(labels):
            labels = [labels[i] for i in rows.tolist()]
        frame = Frame(labels, values, ok, np.zeros(len(rows), dtype=bool))
        return (frame, stamps) if with_timestamps else frame

    def select_lookback(self, matchers: list[Matcher], times: np.ndarray) -> SeriesBatch:
        """What instant selection at `times` (non-decreasing) reads: every sample a lookback window can see
        (at a single time, the newest one is enough)."""
        self.check()
        first, last = int(times[0]), int(times[-1])
        return self.queryable.select_batch(matchers, first - self.lookback_ms + 1, last, latest_only=first == last)

    def fetch_range(self, node: ast.MatrixSelector, steps: np.ndarray):
        """Series of a range selector with stale markers removed, as a SeriesBatch (series left
        without samples dropped), plus the shifted evaluation times and the range in ms."""
        selector = node.vector_selector
        times = self.shifted_times(selector, steps)
        range_ms = node.range_ns // NS_PER_MS
        if not len(steps):
            return SeriesBatch.empty(), times, range_ms
        self.check()
        matchers = to_storage_matchers(selector.matchers)
        batch = self.queryable.select_batch(matchers, int(times[0]) - range_ms + 1, int(times[-1]))
        return without_stale(batch), times, range_ms

    def eval_matrix_selector(self, node: ast.MatrixSelector, steps: np.ndarray) -> RawMatrix:
        series, times, range_ms = self.fetch_range(node, steps)
        t = int(times[-1]) if len(times) else 0
        out = RawMatrix([], [], [])
        total = 0
        for lbls, ts, vals in series:
            lo = np.searchsorted(ts, t - range_ms, side="right")
            hi = np.searchsorted(ts, t, side="right")
            if hi > lo:
                out.labels.append(lbls)
                out.ts.append(ts[lo:hi])
                out.vals.append(vals[lo:hi])
                total += hi - lo
                self.count_samples(total)
        if self.samples is not None:
            self.samples.add_at_last_step(total)
        return out

    def subquery_grid(self, node: ast.SubqueryExpr, steps: np.ndarray):
        times = self.shifted_times(node, steps)
        range_ms = node.range_ns // NS_PER_MS
        step_ms = node.step_ns // NS_PER_MS or DEFAULT_SUBQUERY_STEP_MS
        first = (int(times[0]) - range_ms) // step_ms * step_ms + step_ms  # times are non-decreasing
        inner = np.arange(first, int(times[-1]) + 1, step_ms, dtype=np.int64)
        return times, range_ms, inner

    def subquery_frame(self, node: ast.SubqueryExpr, steps: np.ndarray, count_inner: bool = False):
        """The subquery's inner expression evaluated on its own grid: (frame, grid, times, range).

        The inner samples go into the statistics' totals (at the last step) only with `count_inner`; a
        function over the subquery counts its windows instead, as Prometheus does."""
        times, range_ms, inner = self.subquery_grid(node, steps)
        if self.samples is None:
            value = self.eval(node.expr, inner)
        else:
            outer = self.samples
            self.samples = outer.child()
            try:
                value = self.eval(node.expr, inner)
            finally:
                child, self.samples = self.samples, outer
            outer.update_peak(child.peak_samples)
            if count_inner:
                outer.add_at_last_step(child.total_samples)
        if isinstance(value, Steps):
            value = Frame([()], value.values[None, :], np.ones((1, len(inner)), dtype=bool),
                          np.zeros(1, dtype=bool))
        return value.merged(), inner, times, range_ms

    def eval_subquery(self, node: ast.SubqueryExpr, steps: np.ndarray):
        """The subquery's series as a SeriesBatch, the shifted times and the range."""
        value, inner, times, range_ms = self.subquery_frame(node, steps)
        rows, offsets, ts, vals = present_batch(value.values, value.present, inner)
        labels = value.labels if len(rows) == len(value.labels) else [value.labels[row] for row in rows]
        return SeriesBatch(labels, ts, vals, offsets), times, range_ms

    def eval_subquery_raw(self, node: ast.SubqueryExpr, steps: np.ndarray) -> RawMatrix:
        """A subquery as the query's result: its points in the window, with delayed name removal
        applied (only a top-level subquery is returned as a range vector)."""
        value, inner, times, range_ms = self.subquery_frame(node, steps, count_inner=True)
        t = int(times[-1])
        window = (inner > t - range_ms) & (inner <= t)
        out = RawMatrix([], [], [])
        for row, lbls in enumerate(value.labels):
            keep = value.present[row] & window
            if keep.any():
                out.labels.append(drop_name(lbls) if value.drop[row] else lbls)
                out.ts.append(inner[keep])
                out.vals.append(value.values[row, keep])
        if len(set(out.labels)) != len(out.labels):
            raise ExecutionError("vector cannot contain metrics with the same labelset")
        return out

    # --- range functions -------------------------------------------------------------------------

    def range_function(self, node: ast.Call, steps: np.ndarray) -> Frame:
        """A function of a range vector (rate, *_over_time, ...) at every step, in Cython.

        A selector's series are evaluated where they are stored when the queryable can
        (`range_in_storage`: the head runs the kernel on each series as it decodes it). Otherwise they
        are read as a batch and evaluated in chunks, so that what is held at once is the output so far
        plus one chunk of raw samples (Prometheus's own peak, roughly)."""
        name = node.func.name
        matrix_index = next(i for i, arg in enumerate(node.args)
                            if _unwrap(arg).type is ast.ValueType.MATRIX)
        matrix_arg = _unwrap(node.args[matrix_index])
        params = []
        for i, arg in enumerate(node.args):
            if i != matrix_index:
                params.append(self.eval(arg, steps).values)
        if isinstance(matrix_arg, ast.SubqueryExpr):
            series, times, range_ms = self.eval_subquery(matrix_arg, steps)
        if name == "quantile_over_time":
            for value in np.unique(params[0]):
                if math.isnan(value) or value < 0 or value > 1:
                    self.warn(f"quantile value should be between 0 and 1, got {go_g(value)}")
        if name == "double_exponential_smoothing":
            self.check_smoothing(params)
        kernel = "count_over_time" if name == "absent_over_time" else name
        if not isinstance(matrix_arg, ast.SubqueryExpr):
            # Storage is read only once the arguments are known to be valid, as Prometheus does.
            in_storage = self.range_in_storage(kernel, matrix_arg, steps, tuple(params))
            if in_storage is not None:
                return self._range_result(node, *in_storage)
            series, times, range_ms = self.fetch_range(matrix_arg, steps)
        n = len(steps)
        # Every chunk writes its rows of one output (stacking per-chunk outputs copied all of it again).
        values = np.empty((len(series), n))
        present = np.zeros((len(series), n), dtype=np.uint8)
        held = 0
        row = 0
        kept = []  # per chunk, its rows with a value at some step (a range when all of them)
        for chunk in _chunks(series, _CHUNK_SAMPLES):
            self.check()
            self.count_samples(held + chunk.num_samples)
            rows = slice(row, row + len(chunk))
            row += len(chunk)
            self._range_kernel(kernel, chunk, steps, times, range_ms, tuple(params), values[rows], present[rows])
            if self.samples is not None:
                # every step counts the samples in its window (Prometheus's TotalSamplesPerStep)
                counts, counted = self._range_kernel("count_over_time", chunk, steps, times, range_ms, ())
                self.samples.add_steps(np.where(counted, counts, 0).sum(axis=0).astype(np.int64))
            cells, rows_kept = _rows_with_points(present, rows.start, rows.stop)
            kept.append(rows_kept)
            held += cells
            self.count_samples(held)
        return self._range_result(node, list(series.labels), values, present, kept)

    def range_in_storage(self, kernel: str, node: ast.MatrixSelector, steps: np.ndarray, params: tuple):
        """`kernel` over the selector's series evaluated where they are stored, when the queryable can
        (`evaluate_range`: the ingester decodes each series, from its head or merged from its blocks and
        head, and runs the kernel on it at once, without the batch of all their samples), else None. Returns
        `_range_result`'s arguments after the same checks, in the same order, as the batch's chunks in
        `range_function` make."""
        evaluate = getattr(self.queryable, "evaluate_range", None)
        if evaluate is None or self.samples is not None or not len(steps):
            return None
        selector = node.vector_selector
        times = self.shifted_times(selector, steps)
        shifts = steps - times
        if kernel == "predict_linear" and (shifts != shifts[0]).any():
            return None
        range_ms = node.range_ns // NS_PER_MS
        self.check()
        evaluated = evaluate(to_storage_matchers(selector.matchers), int(times[0]) - range_ms + 1, int(times[-1]),
                             kernel, times, range_ms, params, int(shifts[0]), self.check, _CHUNK_SAMPLES)
        if evaluated is None:
            return None
        labels, values, present, counts = evaluated
        # Series whose samples were all stale markers have no point, as series the batch leaves out.
        offsets = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum(counts[:, 1], out=offsets[1:])
        held = 0
        kept = []
        for first, last in _chunk_bounds(offsets, _CHUNK_SAMPLES):
            self.check()
            self.count_samples(held + int(offsets[last] - offsets[first]))
            cells, rows_kept = _rows_with_points(present, first, last)
            kept.append(rows_kept)
            held += cells
            self.count_samples(held)
        return labels, values, present, kept

    def _range_result(self, node: ast.Call, labels: list, values: np.ndarray, present: np.ndarray,
                      kept: list) -> Frame:
        """A range function's frame from its (series x steps) values and presence: the rows in `kept` (per
        chunk of series, the rows with a point), absent_over_time's answer, the counter annotation."""
        name = node.func.name
        n = values.shape[1]
        present = present.view(bool)
        out_labels = list(labels)
        if not all(isinstance(part, range) for part in kept):
            kept = [r for part in kept for r in part]
            out_labels = [out_labels[i] for i in kept]
            values, present = values[kept], present[kept]
        if name == "absent_over_time":
            absent = ~present.any(axis=0)
            if not absent.any():
                return Frame.empty(n)
            return Frame([absent_labels(node.args[0])], np.ones((1, n)), absent[None, :], np.ones(1, dtype=bool))
        if name in ("rate", "increase") and out_labels:
            for metric in distinct_label_values(out_labels, "__name__"):
                if metric and not metric.endswith(_COUNTER_SUFFIXES):
                    self.info("metric might not be a counter, name does not end in "
                              f"_total/_sum/_count/_bucket: {go_quote(metric)}")
        return Frame(out_labels, values, present, flags(len(out_labels), name != "last_over_time"))

    def _range_kernel(self, name, chunk: SeriesBatch, steps, times, range_ms, params, values=None, present=None):
        """The kernel's (values, present as bool) for the chunk's series, written into `values` and `present`
        (float64 and uint8, one row per series) when given."""
        ts_all, vals_all, offsets = chunk.ts, chunk.vals, chunk.offsets
        shifts = steps - times
        n = len(steps)
        if name == "predict_linear" and n > 1 and (shifts != shifts[0]).any():
            # Under @ the window stays put while the regression is anchored at each step's time.
            if values is None:
                values = np.empty((len(chunk), n))
                present = np.zeros((len(chunk), n), dtype=np.uint8)
            for j in range(n):
                values[:, j:j + 1], present[:, j:j + 1] = rangefn.evaluate_batch(
                    name, ts_all, vals_all, offsets, times[j:j + 1], range_ms,
                    tuple(p[j:j + 1] for p in params), int(shifts[j]))
        else:
            values, present = parallel.evaluate_batch(name, ts_all, vals_all, offsets, times, range_ms,
                                                      params, int(shifts[0]) if n else 0, out=values,
                                                      present=present)
        return values, present.view(bool)

    def check_smoothing(self, params) -> None:
        sf, tf = params
        for value in np.unique(sf):
            if not 0 < value < 1:
                raise ExecutionError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {value:f}")
        for value in np.unique(tf):
            if not 0 < value < 1:
                raise ExecutionError(f"invalid trend factor. Expected: 0 < tf < 1, got: {value:f}")

    # --- calls -----------------------------------------------------------------------------------

    def eval_call(self, node: ast.Call, steps: np.ndarray):
        name = node.func.name
        args = node.args
        if any(_unwrap(arg).type is ast.ValueType.MATRIX for arg in args):
            return self.range_function(node, steps)
        if name == "timestamp":
            inner = _unwrap(args[0])
            if isinstance(inner, ast.VectorSelector):
                frame, stamps = self.eval_vector_selector(inner, steps, with_timestamps=True)
                return Frame(frame.labels, stamps / 1000.0, frame.present, np.ones(frame.n_series, dtype=bool))
        if name == "info":
            return self.eval_info(node, steps)
        if name == "absent":
            value = self.eval(args[0], steps)
            n = len(steps)
            absent = ~value.present.any(axis=0) if value.n_series else np.ones(n, dtype=bool)
            if not absent.any():
                return Frame.empty(n)
            return Frame([absent_labels(args[0])], np.ones((1, n)), absent[None, :], np.zeros(1, dtype=bool))
        values = [self.eval(arg, steps) for arg in args]
        context = FunctionContext(steps=steps, node=node, warn=self.warn, info=self.info)
        return call_instant_function(name, values, context)

    def eval_info(self, node: ast.Call, steps: np.ndarray) -> Frame:
        """info(v, {data label selector}): add labels of matching info series (target_info by
        default), joined on the identifying labels ``instance`` and ``job``, as Prometheus 3.5."""
        base = self.eval(node.args[0], steps)
        n = len(steps)
        data_matchers: dict[str, list[Matcher]] = {}
        if len(node.args) > 1:
            for m in to_storage_matchers(_unwrap(node.args[1]).matchers):
                data_matchers.setdefault(m.name, []).append(m)
            name_matchers = list(data_matchers.get("__name__", []))
        else:
            name_matchers = [Matcher(MatchType.EQUAL, "__name__", INFO_METRIC)]
        ignored = np.array([any(m.matches(_metric_name(lbls)) for m in name_matchers) for lbls in base.labels],
                           dtype=bool)
        id_values: dict[str, set[str]] = {}
        for row, lbls in enumerate(base.labels):
            if ignored[row]:
                continue
            values = dict(lbls)
            for name in IDENTIFYING_LABELS:
                if values.get(name):
                    id_values.setdefault(name, set()).add(values[name])
        info = Frame.empty(n)
        info_ts = np.empty((0, n), dtype=np.int64)
        if id_values:
            matchers = [Matcher(MatchType.REGEX, name, "|".join(quote_meta(v) for v in sorted(vals)))
                        for name, vals in id_values.items()]
            has_name = "__name__" in data_matchers
            for name in list(data_matchers):
                matchers.extend(data_matchers[name])
                if name == "__name__":
                    del data_matchers[name]
            if not has_name:
                matchers.insert(0, Matcher(MatchType.EQUAL, "__name__", INFO_METRIC))
            info, info_ts = self.select_instant(matchers, steps, with_timestamps=True)
        info_names = sorted({_metric_name(lbls) for lbls in info.labels})

        def signature(name: str, lbls: Labels) -> tuple:
            values = dict(lbls)
            return (name, *((k, values[k]) for k in IDENTIFYING_LABELS if values.get(k)))

        info_sigs = [signature(_metric_name(lbls), lbls) for lbls in info.labels]
        base_sigs = [{name: signature(name, lbls) for name in info_names} for lbls in base.labels]
        empty_ok = all(m.matches("") for ms in data_matchers.values() for m in ms)
        out: dict[Labels, tuple[np.ndarray, np.ndarray]] = {}
        for j in range(n):
            chosen: dict[tuple, int] = {}
            for row in np.flatnonzero(info.present[:, j]) if info.n_series else []:
                sig = info_sigs[row]
                if sig in chosen:
                    existing = info_ts[chosen[sig], j]
                    if existing == info_ts[row, j]:
                        raise ExecutionError(f"found duplicate series for info metric {sig[0]}")
                    if existing > info_ts[row, j]:
                        continue
                chosen[sig] = row
            for row in np.flatnonzero(base.present[:, j]):
                lbls = base.labels[row]
                if not ignored[row]:
                    base_values = dict(lbls)
                    added: dict[str, str] = {}
                    for name in info_names:
                        info_row = chosen.get(base_sigs[row][name])
                        if info_row is None:
                            continue
                        for label, value in info.labels[info_row]:
                            if label == "__name__" or (data_matchers and label not in data_matchers):
                                continue
                            if added.get(label, value) != value:
                                raise ExecutionError(f"conflicting label: {label}")
                            if label not in base_values:
                                added[label] = value
                    if not added and not empty_ok:
                        continue
                    lbls = tuple(sorted({**base_values, **added}.items()))
                values, present = out.setdefault(lbls, (np.full(n, np.nan), np.zeros(n, dtype=bool)))
                if present[j]:
                    raise ExecutionError("vector cannot contain metrics with the same labelset")
                values[j] = base.values[row, j]
                present[j] = True
        if not out:
            return Frame.empty(n)
        return Frame(list(out), np.vstack([v for v, _ in out.values()]),
                     np.vstack([p for _, p in out.values()]), np.zeros(len(out), dtype=bool))

    # --- operators -------------------------------------------------------------------------------

    def eval_binary(self, node: ast.BinaryExpr, steps: np.ndarray):
        lhs = self.eval(node.lhs, steps)
        rhs = self.eval(node.rhs, steps)
        if isinstance(lhs, Steps) and isinstance(rhs, Steps):
            return Steps(scalar_binop(node.op, lhs.values, rhs.values))
        if isinstance(lhs, Frame) and isinstance(rhs, Frame):
            result = vector_binop(node, lhs, rhs)
        elif isinstance(lhs, Frame):
            result = vector_scalar_binop(node.op, lhs, rhs.values, False, node.return_bool)
        else:
            result = vector_scalar_binop(node.op, rhs, lhs.values, True, node.return_bool)
        # Both operands and the result are in memory together, as in Prometheus's rangeEval.
        operands = sum(count_present(v.present) for v in (lhs, rhs) if isinstance(v, Frame))
        self.count_samples(operands + count_present(result.present))
        return result

    def eval_aggregate(self, node: ast.AggregateExpr, steps: np.ndarray) -> Frame:
        inner = _unwrap(node.expr)
        if (node.op in _FOLDED_AGGREGATIONS and isinstance(inner, ast.VectorSelector) and self.samples is None
                and len(steps)):
            return self.aggregate_selector(node, inner, steps)
        param = None
        if node.param is not None:
            param = self.eval(node.param, steps)
            if isinstance(param, Steps):
                param = param.values
        frame = self.eval(node.expr, steps)
        result = aggregate(node, frame, param, self)
        self.count_samples(int(frame.present.sum()) + int(result.present.sum()))
        return result

    def aggregate_selector(self, node: ast.AggregateExpr, selector: ast.VectorSelector, steps: np.ndarray) -> Frame:
        """`sum by (...) (selector)` and its kin, selected and folded in one kernel (`select_fold`), without the
        selector's (series x steps) frame; the same result, sample counts and errors as selecting, then
        aggregating."""
        times = self.shifted_times(selector, steps)
        matchers = to_storage_matchers(selector.matchers)
        folded = self.select_fold_in_storage(node, matchers, times)
        if folded is not None:
            _, _, keys, order, value, seen, selected, n_seen = folded
            if not order:
                return Frame.empty(len(steps))
        else:
            batch = self.select_lookback(matchers, times)
            if not len(batch):
                return Frame.empty(len(steps))
            group_ids, keys = group_series(batch.labels, tuple(node.grouping), node.without)
            self.check()
            order, value, seen, selected, n_seen = select_fold(node.op, batch.ts, batch.vals, batch.offsets, times,
                                                               self.lookback_ms, group_ids, len(keys))
        self.count_samples(selected)
        result = Frame([keys[g] for g in order], value, seen, np.zeros(len(order), dtype=bool))
        self.count_samples(selected + n_seen)
        return result

    def select_fold_in_storage(self, node: ast.AggregateExpr, matchers: list[Matcher], times: np.ndarray):
        """`aggregate_selector`'s read and fold done where the samples are stored, when the queryable can
        (`select_fold`: the head folds each series as it decodes it, without the batch of all their samples):
        `Head.select_fold`'s tuple, else None."""
        fold = getattr(self.queryable, "select_fold", None)
        if fold is None:
            return None
        self.check()
        first, last = int(times[0]), int(times[-1])
        return fold(matchers, first - self.lookback_ms + 1, last, first == last, node.op, times, self.lookback_ms,
                    tuple(node.grouping), node.without)


_REGEX_META = frozenset("\\.+*?()|[]{}^$")


def quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta: escape the characters that are special in RE2."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in text)


# Functions whose value depends on the evaluation time itself, even with every input pinned by @.
_AT_UNSAFE_FUNCTIONS = frozenset(("days_in_month", "day_of_month", "day_of_week", "day_of_year", "hour",
                                  "minute", "month", "year", "predict_linear", "time", "timestamp"))


def step_invariant(node) -> bool:
    """Whether ``node`` gives the same result at every evaluation time (Prometheus's rule)."""
    if isinstance(node, (ast.NumberLiteral, ast.StringLiteral)):
        return True
    if isinstance(node, ast.VectorSelector | ast.SubqueryExpr):
        return node.timestamp_ms is not None or node.start_or_end is not None
    if isinstance(node, ast.MatrixSelector):
        return step_invariant(node.vector_selector)
    if isinstance(node, ast.Call):
        return node.func.name not in _AT_UNSAFE_FUNCTIONS and all(step_invariant(a) for a in node.args)
    if isinstance(node, (ast.ParenExpr, ast.UnaryExpr, ast.BinaryExpr, ast.AggregateExpr)):
        return all(step_invariant(child) for child in ast.children(node))
    return False


def _repeat(value, n: int):
    if isinstance(value, Steps):
        return Steps(np.repeat(value.values, n))
    return Frame(value.labels, np.repeat(value.values, n, axis=1), np.repeat(value.present, n, axis=1),
                 value.drop)


def _chunks(batch: SeriesBatch, max_samples: int):
    """Slices of the batch holding about ``max_samples`` samples each: series are taken until the
    slice holds at least that many."""
    for first, last in _chunk_bounds(batch.offsets, max_samples):
        yield batch if last - first == len(batch) else batch.slice(first, last)


def _rows_with_points(present: np.ndarray, first: int, last: int) -> tuple[int, range | list[int]]:
    """(cells set, rows with a point) of rows [first, last) of a presence mask; the rows as a range when
    every one has a point."""
    cells, with_points = rows_present(present[first:last], all_as_none=True)
    return cells, range(first, last) if with_points is None else [first + r for r in with_points]


def _chunk_bounds(offsets: np.ndarray, max_samples: int):
    """(first, last) series ranges of `_chunks` for series whose samples start at `offsets`."""
    n = len(offsets) - 1
    if n and int(offsets[-1] - offsets[0]) <= max_samples:
        yield 0, n
        return
    first = 0
    while first < n:
        last = int(np.searchsorted(offsets, offsets[first] + max_samples, side="left"))
        last = min(max(last, first + 1), n)
        yield first, last
        first = last


def without_stale(batch: SeriesBatch) -> SeriesBatch:
    """The batch with stale markers removed, and the series left without samples dropped."""
    lo, hi = int(batch.offsets[0]), int(batch.offsets[-1])
    ts, vals = batch.ts[lo:hi], batch.vals[lo:hi]
    if not rangefn.has_stale_markers(vals):
        return batch
    keep = ~is_stale(vals)
    kept_before = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    offsets = kept_before[batch.offsets - lo]
    lengths = np.diff(offsets)
    if lengths.all():
        return SeriesBatch(batch.labels, ts[keep], vals[keep], offsets)
    rows = np.flatnonzero(lengths)
    return SeriesBatch([batch.labels[i] for i in rows.tolist()], ts[keep], vals[keep],
                       np.concatenate([[0], np.cumsum(lengths[rows])]).astype(np.int64))


def _unwrap(node):
    while isinstance(node, ast.ParenExpr):
        node = node.expr
    return node


def _metric_name(labels: Labels) -> str:
    for name, value in labels:
        if name == "__name__":
            return value
    return ""


def absent_labels(node) -> Labels:
    """Labels for absent()/absent_over_time(): the selector's unique equality matchers."""
    node = _unwrap(node)
    if isinstance(node, ast.MatrixSelector):
        node = node.vector_selector
    if not isinstance(node, ast.VectorSelector):
        return ()
    result: dict[str, str | None] = {}
    for matcher in node.matchers:
        if matcher.name == "__name__":
            continue
        if matcher.type is ast.MatchType.EQUAL and matcher.name not in result:
            result[matcher.name] = matcher.value
        else:
            result[matcher.name] = None
    return tuple(sorted((k, v) for k, v in result.items() if v))


def _drop_name_fast(labels: Labels) -> Labels:
    """drop_name, by slicing off a leading ``__name__`` when no other name label follows it."""
    # Names are sorted, so "__type__" and "__unit__" could only come right after "__name__".
    if labels and labels[0][0] == "__name__" and (len(labels) == 1 or labels[1][0] > "__unit__"):
        return labels[1:]
    return drop_name(labels)


def finish(frame: Frame) -> Frame:
    """Delayed name removal at the end of a query, then the duplicate-labelset check."""
    drops = frame.drop.tolist()
    if True in drops:
        labels = [_drop_name_fast(lbls) if drop else lbls for lbls, drop in zip(frame.labels, drops, strict=True)]
        drop = np.zeros(len(labels), dtype=bool)
    else:  # nothing left to drop (an aggregation's result, say): the frame's flags are already all False
        labels, drop = frame.labels, frame.drop
    if len(set(labels)) != len(labels):
        raise ExecutionError("vector cannot contain metrics with the same labelset")
    return Frame(labels, frame.values, frame.present, drop)
