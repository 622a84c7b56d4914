"""Render a PromQL syntax tree back to text.

:func:`to_string` reproduces Prometheus's ``String()`` methods (promql/parser/printer.go): matchers
sorted, durations normalised (``90m`` prints as ``1h30m``), ``@`` timestamps with three decimals,
numbers in Go's shortest non-exponent form. :func:`pretty` ports Prometheus's prettier
(``Prettify``, used by ``/api/v1/format_query``): expressions whose one-line form exceeds 100
bytes are split over indented lines.

One deliberate difference: label names in ``on(...)``, ``ignoring(...)`` and ``group_*(...)`` are
quoted when they are not legacy names, as aggregation ``by``/``without`` lists already are in
Prometheus, so that every printed query parses back to the same tree.
"""

from __future__ import annotations

import math
from decimal import Decimal

from mimird.promql.ast import (
    METRIC_NAME_LABEL,
    AggregateExpr,
    BinaryExpr,
    Call,
    Card,
    DurationExpr,
    Matcher,
    MatchType,
    MatrixSelector,
    Node,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorSelector,
)
from mimird.promql.durations import format_duration
from mimird.promql.functions import AGGREGATOR_PARAM_TYPES
from mimird.promql.quoting import go_quote

MAX_CHARACTERS_PER_LINE = 100
_INDENT = "  "


def format_float(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest round-tripping digits, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")


def _is_legacy_name(name: str) -> bool:
    # model.IsValidLegacyMetricName: [a-zA-Z_:][a-zA-Z0-9_:]*
    if not name:
        return False
    for index, ch in enumerate(name):
        if not (ch == "_" or ch == ":" or "a" <= ch <= "z" or "A" <= ch <= "Z" or (index > 0 and "0" <= ch <= "9")):
            return False
    return True


def _join_labels(names: tuple[str, ...]) -> str:
    return ", ".join(name if _is_legacy_name(name) else go_quote(name) for name in names)


def _matcher_needs_quoted_name(name: str) -> bool:
    if not name:
        return True
    for index, ch in enumerate(name):
        if not (ch == "_" or "a" <= ch <= "z" or "A" <= ch <= "Z" or (index > 0 and "0" <= ch <= "9")):
            return True
    return False


def matcher_to_string(matcher: Matcher) -> str:
    """``labels.Matcher.String()``: ``name="value"``, the name quoted unless it is a plain identifier."""
    name = go_quote(matcher.name) if _matcher_needs_quoted_name(matcher.name) else matcher.name
    return f"{name}{matcher.type.value}{go_quote(matcher.value)}"


def _offset_suffix(offset_ns: int, offset_expr: DurationExpr | None) -> str:
    if offset_expr is not None:
        return f" offset {to_string(offset_expr)}"
    if offset_ns > 0:
        return f" offset {format_duration(offset_ns)}"
    if offset_ns < 0:
        return f" offset -{format_duration(-offset_ns)}"
    return ""


def _at_suffix(timestamp_ms: int | None, start_or_end: str | None) -> str:
    if timestamp_ms is not None:
        return f" @ {timestamp_ms / 1000.0:.3f}"
    if start_or_end is not None:
        return f" @ {start_or_end}()"
    return ""


def _selector_body(node: VectorSelector) -> str:
    labels = sorted(
        matcher_to_string(m)
        for m in node.matchers
        if not (m.name == METRIC_NAME_LABEL and m.type is MatchType.EQUAL and m.value == node.name and m.value)
    )
    if not labels:
        return node.name
    return f"{node.name}{{{','.join(labels)}}}"


def _matching_suffix(node: BinaryExpr) -> str:
    matching = node.vector_matching
    if matching is None or not (matching.matching_labels or matching.on):
        return ""
    text = f" {'on' if matching.on else 'ignoring'} ({_join_labels(matching.matching_labels)})"
    if matching.card in (Card.MANY_TO_ONE, Card.ONE_TO_MANY):
        side = "left" if matching.card is Card.MANY_TO_ONE else "right"
        text += f" group_{side} ({_join_labels(matching.include)})"
    return text


def _aggregate_prefix(node: AggregateExpr) -> str:
    if node.without:
        return f"{node.op} without ({_join_labels(node.grouping)}) "
    if node.grouping:
        return f"{node.op} by ({_join_labels(node.grouping)}) "
    return node.op


def _subquery_suffix(node: SubqueryExpr) -> str:
    if node.step_ns != 0:
        step = format_duration(node.step_ns)
    elif node.step_expr is not None:
        step = to_string(node.step_expr)
    else:
        step = ""
    range_text = to_string(node.range_expr) if node.range_expr is not None else format_duration(node.range_ns)
    at = _at_suffix(node.timestamp_ms, node.start_or_end)
    return f"[{range_text}:{step}]{at}{_offset_suffix(node.offset_ns, node.offset_expr)}"


def to_string(node: Node) -> str:
    """Print a tree on one line exactly as Prometheus's ``String()`` does."""
    if isinstance(node, NumberLiteral):
        if node.duration:
            if node.value < 0:
                return "-" + format_duration(int(-node.value * 1e9))
            return format_duration(int(node.value * 1e9))
        return format_float(node.value)
    if isinstance(node, StringLiteral):
        return go_quote(node.value)
    if isinstance(node, VectorSelector):
        at = _at_suffix(node.timestamp_ms, node.start_or_end)
        return f"{_selector_body(node)}{at}{_offset_suffix(node.offset_ns, node.offset_expr)}"
    if isinstance(node, MatrixSelector):
        inner = node.vector_selector
        range_text = to_string(node.range_expr) if node.range_expr is not None else format_duration(node.range_ns)
        at = _at_suffix(inner.timestamp_ms, inner.start_or_end)
        return f"{_selector_body(inner)}[{range_text}]{at}{_offset_suffix(inner.offset_ns, inner.offset_expr)}"
    if isinstance(node, SubqueryExpr):
        return to_string(node.expr) + _subquery_suffix(node)
    if isinstance(node, ParenExpr):
        return f"({to_string(node.expr)})"
    if isinstance(node, UnaryExpr):
        return f"{node.op}{to_string(node.expr)}"
    if isinstance(node, BinaryExpr):
        bool_text = " bool" if node.return_bool else ""
        return f"{to_string(node.lhs)} {node.op}{bool_text}{_matching_suffix(node)} {to_string(node.rhs)}"
    if isinstance(node, AggregateExpr):
        param = f"{to_string(node.param)}, " if node.op in AGGREGATOR_PARAM_TYPES else ""
        return f"{_aggregate_prefix(node)}({param}{to_string(node.expr)})"
    if isinstance(node, Call):
        return f"{node.func.name}({', '.join(to_string(arg) for arg in node.args)})"
    if isinstance(node, DurationExpr):
        if node.lhs is None:
            text = f"{node.op}{to_string(node.rhs)}"
        else:
            text = f"{to_string(node.lhs)} {node.op} {to_string(node.rhs)}"
        return f"({text})" if node.wrapped else text
    raise TypeError(f"cannot print {type(node).__name__}")


def _needs_split(node: Node) -> bool:
    return len(to_string(node).encode("utf-8", "surrogateescape")) > MAX_CHARACTERS_PER_LINE


def pretty(node: Node, level: int = 0) -> str:
    """Prometheus's prettier (``Node.Pretty(level)``): long expressions split over indented lines."""
    indent = _INDENT * level
    if isinstance(node, AggregateExpr):
        if not _needs_split(node):
            return indent + to_string(node)
        text = f"{indent}{_aggregate_prefix(node)}(\n"
        if node.op in AGGREGATOR_PARAM_TYPES:
            text += f"{pretty(node.param, level + 1)},\n"
        return text + f"{pretty(node.expr, level + 1)}\n{indent})"
    if isinstance(node, BinaryExpr):
        if not _needs_split(node):
            return indent + to_string(node)
        bool_text = " bool" if node.return_bool else ""
        return (f"{pretty(node.lhs, level + 1)}\n{indent}{node.op}{bool_text}{_matching_suffix(node)}\n"
                f"{pretty(node.rhs, level + 1)}")
    if isinstance(node, Call):
        if not _needs_split(node):
            return indent + to_string(node)
        args = ",\n".join(pretty(arg, level + 1) for arg in node.args)
        return f"{indent}{node.func.name}(\n{args}\n{indent})"
    if isinstance(node, ParenExpr):
        if not _needs_split(node):
            return indent + to_string(node)
        return f"{indent}(\n{pretty(node.expr, level + 1)}\n{indent})"
    if isinstance(node, SubqueryExpr):
        if not _needs_split(node):
            return to_string(node)
        return pretty(node.expr, level) + _subquery_suffix(node)
    if isinstance(node, UnaryExpr):
        return f"{indent}{node.op}{pretty(node.expr, level).strip()}"
    if isinstance(node, DurationExpr):
        if node.lhs is None:
            text = f"{node.op} {pretty(node.rhs)}"
        else:
            text = f"{pretty(node.lhs)} {node.op} {pretty(node.rhs)}"
        return f"({text})" if node.wrapped else text
    return indent + to_string(node)


def format_query(query: str) -> str:
    """What ``/api/v1/format_query`` returns: the query parsed and pretty-printed (Prometheus's
    ``Prettify``). Raises :class:`mimird.promql.parser.ParseError` for invalid queries."""
    from mimird.promql.parser import parse

    return pretty(parse(query))
