"""Instant queries of the commonest small shapes, answered without frames.

Dashboards ask again and again for things like `up{job="x"}`, `max_over_time(node_load1[10m])` or
`count by (cluster) (up)` at one time. The general evaluator handles any expression over a whole
step grid, and for a query over a few dozen series its frames and masks cost more than the data:
some twenty numpy calls, each of which runs a lot of code. That is felt most when the machine's
caches have gone cold between two dashboard refreshes. This module evaluates, at a single time:

- a vector selector;
- a range function without scalar parameters over a range selector (`rate(x[5m])`,
  `max_over_time(x[10m])`, ...);
- `sum`, `avg`, `count`, `group`, `min`, `max`, `stddev`, `stdvar` by or without labels over one of
  the above.

Each is one storage read and a Cython kernel that gives Python lists (a range function over a big
batch is split over the cores, as the evaluator splits it). Selectors with `@` or an
absent_over_time are left to the evaluator, as are queries that ask for statistics. The answers,
annotations, limits and errors are the evaluator's, to the bit: the same kernels compute the
values (`rangefn` evaluates every range function, `aggregate` every fold). The PromQL corpus runs
through this path for every instant query of these shapes, and `tests/test_promql_fastpath.py`
compares both paths on randomized data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mimird._fast import instant, rangefn
from mimird._fast.aggregate import distinct_label_values, fold_instant, group_series
from mimird.promql import ast, parallel
from mimird.promql.evaluator import (
    _COUNTER_SUFFIXES,
    _FOLDED_AGGREGATIONS,
    NS_PER_MS,
    _drop_name_fast,
    _unwrap,
    to_storage_matchers,
)
from mimird.promql.value import ExecutionError, QueryResult, Sample, TooManySamplesError, Vector
from mimird.tsdb.labels import go_quote

# Range functions whose only argument is the range vector; absent_over_time builds its own series.
_RANGE_FUNCTIONS = frozenset(name for name, params in rangefn.FUNCTION_PARAMETER_COUNTS.items() if params == 0)


@dataclass(frozen=True)
class InstantPlan:
    """What a query of one of the shapes above reads and computes."""

    matchers: tuple[ast.Matcher, ...]
    offset_ms: int
    function: str | None  # a range function of the selector, or None for the selector itself
    range_ms: int
    aggregation: str | None  # an aggregation of that, or None
    grouping: tuple[str, ...]
    without: bool


def _plain_selector(node) -> ast.VectorSelector | None:
    node = _unwrap(node)
    if isinstance(node, ast.VectorSelector) and node.timestamp_ms is None and node.start_or_end is None:
        return node
    return None


def _inner_plan(node) -> tuple[ast.VectorSelector, str | None, int] | None:
    node = _unwrap(node)
    selector = _plain_selector(node)
    if selector is not None:
        return selector, None, 0
    if isinstance(node, ast.Call) and node.func.name in _RANGE_FUNCTIONS and len(node.args) == 1:
        matrix = _unwrap(node.args[0])
        if isinstance(matrix, ast.MatrixSelector):
            selector = _plain_selector(matrix.vector_selector)
            if selector is not None:
                return selector, node.func.name, matrix.range_ns // NS_PER_MS
    return None


def plan(expr: ast.Node) -> InstantPlan | None:
    """The plan for a prepared expression of one of the shapes this module answers, else None."""
    expr = _unwrap(expr)
    aggregation, grouping, without = None, (), False
    if isinstance(expr, ast.AggregateExpr):
        # `by (__name__)` keeps names in the groups, whose delayed removal follows rules of its own
        if expr.op not in _FOLDED_AGGREGATIONS or expr.param is not None or (not expr.without and "__name__" in expr.grouping):
            return None
        aggregation, grouping, without = expr.op, tuple(expr.grouping), expr.without
        expr = expr.expr
    inner = _inner_plan(expr)
    if inner is None:
        return None
    selector, function, range_ms = inner
    return InstantPlan(selector.matchers, selector.offset_ns // NS_PER_MS, function, range_ms, aggregation,
                       grouping, without)


def evaluate(plan: InstantPlan, queryable, time_ms: int, lookback_ms: int, max_samples: int,
             check: Callable[[], None]) -> QueryResult:
    """Answer an instant query planned by `plan` at `time_ms`, as the evaluator would."""
    check()
    matchers = to_storage_matchers(plan.matchers)
    t = time_ms - plan.offset_ms
    infos: list[str] = []
    if plan.function is None:
        batch = queryable.select_batch(matchers, t - lookback_ms + 1, t, latest_only=True)
        rows, values = instant.select_at(batch.ts, batch.vals, batch.offsets, t, lookback_ms)
        if len(rows) > max_samples:
            raise TooManySamplesError()
    else:
        batch = queryable.select_batch(matchers, t - plan.range_ms + 1, t)
        rows, values, held = parallel.evaluate_instant(plan.function, batch.ts, batch.vals, batch.offsets, t,
                                                       plan.range_ms)
        if held > max_samples:
            raise TooManySamplesError()
    labels = batch.labels
    out_labels = [labels[row] for row in rows]
    if plan.function in ("rate", "increase"):
        for metric in distinct_label_values(out_labels, "__name__"):
            if metric and not metric.endswith(_COUNTER_SUFFIXES):
                infos.append("PromQL info: metric might not be a counter, name does not end in "
                             f"_total/_sum/_count/_bucket: {go_quote(metric)}")
    if plan.function not in (None, "last_over_time") and plan.aggregation is None:
        out_labels = [_drop_name_fast(lbls) for lbls in out_labels]
    if plan.aggregation is not None:
        check()
        group_ids, keys = group_series(out_labels, plan.grouping, plan.without)
        groups, values = fold_instant(plan.aggregation, values, group_ids, len(keys))
        out_labels = [keys[group] for group in groups]
    elif len(set(out_labels)) != len(out_labels):
        raise ExecutionError("vector cannot contain metrics with the same labelset")
    return QueryResult(Vector([Sample(lbls, time_ms, v) for lbls, v in zip(out_labels, values, strict=True)]),
                       [], infos)
