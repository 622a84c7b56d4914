"""Prometheus duration strings: parsing (``model.ParseDuration``) and printing (``model.Duration.String``).

Durations are carried as integer nanoseconds, like Go's ``time.Duration``, so that values written as
fractional seconds (``[1.5]``) or produced by duration arithmetic keep the precision Prometheus has.
Printing works at millisecond resolution, as Prometheus's does.
"""

from __future__ import annotations

import math

import numpy as np

NANOS_PER_MILLI = 1_000_000
NANOS_PER_SECOND = 1_000_000_000
MAX_DURATION_NS = (1 << 63) - 1

# Unit name -> (rank, nanoseconds). Units must appear from the largest to the smallest rank.
_UNITS: dict[str, tuple[int, int]] = {
    "y": (1, 365 * 24 * 3600 * NANOS_PER_SECOND),
    "w": (2, 7 * 24 * 3600 * NANOS_PER_SECOND),
    "d": (3, 24 * 3600 * NANOS_PER_SECOND),
    "h": (4, 3600 * NANOS_PER_SECOND),
    "m": (5, 60 * NANOS_PER_SECOND),
    "s": (6, NANOS_PER_SECOND),
    "ms": (7, NANOS_PER_MILLI),
}

# Printing order; years and weeks are used only when they divide the remainder exactly.
_PRINT_UNITS: tuple[tuple[str, int, bool], ...] = (
    ("y", 365 * 24 * 3600 * 1000, True),
    ("w", 7 * 24 * 3600 * 1000, True),
    ("d", 24 * 3600 * 1000, False),
    ("h", 3600 * 1000, False),
    ("m", 60 * 1000, False),
    ("s", 1000, False),
    ("ms", 1, False),
)


class DurationError(ValueError):
    """A duration string that Prometheus would reject; the message is Prometheus's."""


def parse_duration(text: str) -> int:
    """Parse a Prometheus duration such as ``1h30m`` or ``500ms`` into nanoseconds.

    Accepts a bare ``0``. Units go from the largest to the smallest, each at most once.
    """
    if text == "0":
        return 0
    if text == "":
        raise DurationError("empty duration string")
    total = 0
    last_rank = 0
    rest = text
    while rest:
        if not rest[0].isascii() or not rest[0].isdigit():
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        i = 0
        while i < len(rest) and rest[i].isascii() and rest[i].isdigit():
            i += 1
        count = int(rest[:i])
        if count >= 1 << 64:
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        rest = rest[i:]
        j = 0
        while j < len(rest) and not (rest[j].isascii() and rest[j].isdigit()):
            j += 1
        if j == 0:
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        unit = rest[:j]
        rest = rest[j:]
        if unit not in _UNITS:
            raise DurationError(f"unknown unit {_go_quote(unit)} in duration {_go_quote(text)}")
        rank, mult = _UNITS[unit]
        if rank <= last_rank:
            raise DurationError(f"not a valid duration string: {_go_quote(text)}")
        last_rank = rank
        if count > (1 << 63) // mult:
            raise DurationError("duration out of range")
        total += count * mult
        if total > MAX_DURATION_NS:
            raise DurationError("duration out of range")
    return total


def format_duration(ns: int) -> str:
    """Render nanoseconds the way ``model.Duration.String()`` does (``1h30m``, ``0s``, ``-5m``).

    Sub-millisecond parts are dropped (truncated toward zero), as in Prometheus.
    """
    ms = _trunc_div(ns, NANOS_PER_MILLI)
    if ms == 0:
        return "0s"
    sign = ""
    if ms < 0:
        sign, ms = "-", -ms
    parts = []
    for unit, mult, exact in _PRINT_UNITS:
        if exact and ms % mult != 0:
            continue
        count = ms // mult
        if count > 0:
            parts.append(f"{count}{unit}")
            ms -= count * mult
    return sign + "".join(parts)


def seconds_to_ns(seconds: float) -> int:
    """Convert float seconds to nanoseconds as ``time.Duration(math.Round(s * 1e9))`` does."""
    return int(go_round(seconds * NANOS_PER_SECOND))


def ns_to_seconds(ns: int) -> float:
    """Convert nanoseconds to float seconds as ``time.Duration.Seconds()`` does."""
    whole = _trunc_div(ns, NANOS_PER_SECOND)
    frac = ns - whole * NANOS_PER_SECOND
    return float(whole) + float(frac) / 1e9


def go_round(value: float) -> float:
    """Round half away from zero, like Go's ``math.Round`` (Python's ``round`` rounds half to even)."""
    if math.isnan(value) or math.isinf(value):
        return value
    whole = math.trunc(value)
    if abs(value - whole) >= 0.5:
        whole += math.copysign(1.0, value)
    return float(whole)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _go_quote(text: str) -> str:
    # Local import: quoting depends on nothing here, and this keeps the modules independent.
    from mimird.promql.quoting import go_quote

    return go_quote(text)


def _go_float_op(ufunc, lhs: float, rhs: float) -> float:
    # Go's math.Mod and math.Pow give NaN or an infinity where Python's math module raises (an infinite
    # dividend, a negative base under a fractional power, an overflow); the caller then reports the
    # duration as out of range.
    with np.errstate(all="ignore"):
        return float(ufunc(np.float64(lhs), np.float64(rhs)))


def evaluate_duration_expr(expr) -> float:
    """Evaluate a duration expression (a NumberLiteral or DurationExpr tree) to float seconds, as
    Prometheus's ``evaluateDurationExpr`` does. Raises DurationError on division or modulo by zero."""
    from mimird.promql.ast import DurationExpr, NumberLiteral

    if isinstance(expr, NumberLiteral):
        return expr.value
    if not isinstance(expr, DurationExpr):
        raise DurationError(f"unexpected duration expression type {type(expr).__name__}")
    lhs = evaluate_duration_expr(expr.lhs) if expr.lhs is not None else 0.0
    rhs = evaluate_duration_expr(expr.rhs)
    where = f"{expr.pos_start}:{expr.pos_end}"
    if expr.op == "+":
        return lhs + rhs
    if expr.op == "-":
        return -rhs if expr.lhs is None else lhs - rhs
    if expr.op == "*":
        return lhs * rhs
    if expr.op == "/":
        if rhs == 0:
            raise DurationError(f"{where}: division by zero")
        return lhs / rhs
    if expr.op == "%":
        if rhs == 0:
            raise DurationError(f"{where}: modulo by zero")
        return _go_float_op(np.fmod, lhs, rhs)
    if expr.op == "^":
        return _go_float_op(np.power, lhs, rhs)
    raise DurationError(f"unexpected duration expression operator {expr.op!r}")


def duration_expr_ns(expr, allow_negative: bool) -> int:
    """Nanoseconds of a duration expression, as Prometheus's ``calculateDuration``: evaluated in
    seconds, truncated to whole milliseconds; ranges and steps must be positive, offsets need not be."""
    seconds = evaluate_duration_expr(expr)
    where = f"{expr.pos_start}:{expr.pos_end}"
    if seconds <= 0 and not allow_negative:
        raise DurationError(f"{where}: duration must be greater than 0")
    if math.isnan(seconds) or math.isinf(seconds) or abs(seconds * 1000) >= 2.0**63:
        raise DurationError(f"{where}: duration is out of range")
    return int(seconds * 1000) * NANOS_PER_MILLI


def resolve_duration_exprs(node):
    """A copy of a parsed tree with every duration expression evaluated into ``range_ns``,
    ``step_ns`` and ``offset_ns`` (the expressions stay, so printing is unchanged). This is the
    step Prometheus runs before evaluating a query; errors are DurationError."""
    from dataclasses import replace

    from mimird.promql.ast import MatrixSelector, SubqueryExpr, VectorSelector, map_children

    node = map_children(node, resolve_duration_exprs)
    if isinstance(node, VectorSelector) and node.offset_expr is not None:
        return replace(node, offset_ns=duration_expr_ns(node.offset_expr, True))
    if isinstance(node, MatrixSelector) and node.range_expr is not None:
        return replace(node, range_ns=duration_expr_ns(node.range_expr, False))
    if isinstance(node, SubqueryExpr):
        changes = {}
        if node.offset_expr is not None:
            changes["offset_ns"] = duration_expr_ns(node.offset_expr, True)
        if node.step_expr is not None:
            changes["step_ns"] = duration_expr_ns(node.step_expr, False)
        if node.range_expr is not None:
            changes["range_ns"] = duration_expr_ns(node.range_expr, False)
        return replace(node, **changes) if changes else node
    return node
