"""The typed PromQL syntax tree produced by :mod:`mimird.promql.parser`.

Nodes are frozen dataclasses. Equality compares meaning, not spelling: source positions are
ignored, the order of label matchers does not matter, and NaN number literals are equal to each
other. Durations are integer nanoseconds (like Go's ``time.Duration``); ``@`` timestamps are
integer milliseconds, as Prometheus stores them.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mimird.tsdb.labels import compile_regex

if TYPE_CHECKING:
    from mimird.promql.functions import Function


class ValueType(enum.StrEnum):
    """The type of value an expression evaluates to."""

    NONE = "none"
    SCALAR = "scalar"
    VECTOR = "vector"
    MATRIX = "matrix"
    STRING = "string"

    @property
    def documented(self) -> str:
        """The name Prometheus's error messages use (``instant vector``, ``range vector``, ...)."""
        if self is ValueType.VECTOR:
            return "instant vector"
        if self is ValueType.MATRIX:
            return "range vector"
        return self.value



class MatchType(enum.StrEnum):
    """Label matcher operators."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"



class Card(enum.StrEnum):
    """Cardinality of a binary operation's vector matching."""

    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_MANY = "many-to-many"



METRIC_NAME_LABEL = "__name__"

COMPARISON_OPERATORS = frozenset(("==", "!=", "<=", "<", ">=", ">"))
SET_OPERATORS = frozenset(("and", "or", "unless"))
ARITHMETIC_OPERATORS = frozenset(("+", "-", "*", "/", "%", "^", "atan2"))
BINARY_OPERATORS = COMPARISON_OPERATORS | SET_OPERATORS | ARITHMETIC_OPERATORS


def compile_matcher_regex(pattern: str):
    """The storage's matcher for an RE2 pattern (fully anchored, `.` matching newlines, as Prometheus 3);
    raises mimird.tsdb.labels.InvalidRegexError where RE2 would reject it."""
    return compile_regex(pattern)


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``name op "value"``."""

    type: MatchType
    name: str
    value: str

    def matches(self, value: str) -> bool:
        """Whether a label value (``""`` for a missing label) satisfies this matcher."""
        if self.type is MatchType.EQUAL:
            return value == self.value
        if self.type is MatchType.NOT_EQUAL:
            return value != self.value
        hit = compile_matcher_regex(self.value).matches(value)
        return hit if self.type is MatchType.REGEX else not hit


def _float_key(value: float) -> bytes:
    # NaNs of any payload compare equal; otherwise bit-exact (so 0 and -0 differ, as printing shows).
    if math.isnan(value):
        return b"nan"
    return struct.pack("<d", value)


@dataclass(frozen=True)
class Node:
    """Base class of every syntax-tree node; ``pos_start``/``pos_end`` are character offsets."""

    @property
    def type(self) -> ValueType:
        """The value type this expression evaluates to."""
        raise TypeError(f"{type(self).__name__} has no value type")

    def __str__(self) -> str:
        # str() gives PromQL text, as Prometheus's String() does; repr() keeps the dataclass form.
        from mimird.promql.printer import to_string

        return to_string(self)


def _pos() -> int:
    return field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, eq=False)
class NumberLiteral(Node):
    """A number; ``duration`` is set when it was written as a duration (``5m``) and prints so."""

    value: float
    duration: bool = False
    pos_start: int = _pos()
    pos_end: int = _pos()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumberLiteral):
            return NotImplemented
        return _float_key(self.value) == _float_key(other.value) and self.duration == other.duration

    def __hash__(self) -> int:
        return hash((_float_key(self.value), self.duration))

    @property
    def type(self) -> ValueType:
        return ValueType.SCALAR


@dataclass(frozen=True)
class StringLiteral(Node):
    """A string (already unquoted; raw bytes that are not UTF-8 are surrogate-escaped)."""

    value: str
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return ValueType.STRING


@dataclass(frozen=True)
class DurationExpr(Node):
    """Duration arithmetic inside ``[...]`` or after ``offset`` (experimental in Prometheus 3.5).

    ``lhs`` is None for a unary minus. ``wrapped`` records parentheses written around it.
    Operands are NumberLiterals (seconds) or nested DurationExprs.
    """

    op: str
    lhs: Expr | None
    rhs: Expr
    wrapped: bool = False
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return ValueType.SCALAR


@dataclass(frozen=True, eq=False)
class VectorSelector(Node):
    """An instant vector selector. A name written before the braces is also an ``__name__`` matcher.

    ``offset_ns`` / ``offset_expr`` hold the offset as written; ``timestamp_ms`` holds ``@ <time>``;
    ``start_or_end`` is ``"start"`` or ``"end"`` for ``@ start()`` / ``@ end()``.
    """

    name: str
    matchers: tuple[Matcher, ...]
    offset_ns: int = 0
    offset_expr: DurationExpr | None = None
    timestamp_ms: int | None = None
    start_or_end: str | None = None
    bypass_empty_matcher_check: bool = field(default=False, compare=False, repr=False)
    pos_start: int = _pos()
    pos_end: int = _pos()

    def _key(self) -> tuple:
        matchers = sorted(self.matchers, key=lambda m: (m.name, m.type.value, m.value))
        return (self.name, tuple(matchers), self.offset_ns, self.offset_expr, self.timestamp_ms,
                self.start_or_end)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorSelector):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR


@dataclass(frozen=True)
class MatrixSelector(Node):
    """A range selector ``selector[range]``; offset and ``@`` live on the inner VectorSelector."""

    vector_selector: Expr
    range_ns: int
    range_expr: DurationExpr | None = None
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX


@dataclass(frozen=True)
class SubqueryExpr(Node):
    """A subquery ``expr[range:step]``; ``step_ns`` is 0 when the step was left out."""

    expr: Expr
    range_ns: int
    range_expr: DurationExpr | None = None
    step_ns: int = 0
    step_expr: DurationExpr | None = None
    offset_ns: int = 0
    offset_expr: DurationExpr | None = None
    timestamp_ms: int | None = None
    start_or_end: str | None = None
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return ValueType.MATRIX


@dataclass(frozen=True)
class ParenExpr(Node):
    """An expression in parentheses (kept so that printing reproduces the grouping)."""

    expr: Expr
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return self.expr.type


@dataclass(frozen=True)
class UnaryExpr(Node):
    """Unary ``-expr`` or ``+expr`` (a sign in front of a number literal is folded into it instead)."""

    op: str
    expr: Expr
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return self.expr.type


@dataclass(frozen=True)
class VectorMatching:
    """How the two sides of a vector/vector binary operation are matched."""

    card: Card = Card.ONE_TO_ONE
    matching_labels: tuple[str, ...] = ()
    on: bool = False
    include: tuple[str, ...] = ()


@dataclass(frozen=True)
class BinaryExpr(Node):
    """``lhs op rhs``. ``vector_matching`` is None unless both sides are instant vectors."""

    op: str
    lhs: Expr
    rhs: Expr
    return_bool: bool = False
    vector_matching: VectorMatching | None = None
    # The matching clause as written, before it is dropped for scalar operands; used by type checks.
    written_matching: VectorMatching | None = field(default=None, compare=False, repr=False)
    op_pos: int = field(default=-1, compare=False, repr=False, kw_only=True)
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        if self.lhs.type is ValueType.SCALAR and self.rhs.type is ValueType.SCALAR:
            return ValueType.SCALAR
        return ValueType.VECTOR


@dataclass(frozen=True)
class AggregateExpr(Node):
    """An aggregation such as ``sum by (job) (x)`` or ``topk(3, x)``; ``param`` is the first argument
    of ``topk``/``bottomk``/``quantile``/``count_values``/``limitk``/``limit_ratio``."""

    op: str
    expr: Expr | None
    param: Expr | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return ValueType.VECTOR


@dataclass(frozen=True)
class Call(Node):
    """A function call."""

    func: Function
    args: tuple[Expr, ...]
    pos_start: int = _pos()
    pos_end: int = _pos()

    @property
    def type(self) -> ValueType:
        return self.func.return_type


Expr = (
    NumberLiteral | StringLiteral | DurationExpr | VectorSelector | MatrixSelector | SubqueryExpr | ParenExpr
    | UnaryExpr | BinaryExpr | AggregateExpr | Call
)


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of a node, in source order."""
    if isinstance(node, (ParenExpr, UnaryExpr)):
        return (node.expr,)
    if isinstance(node, BinaryExpr):
        return (node.lhs, node.rhs)
    if isinstance(node, AggregateExpr):
        return tuple(n for n in (node.param, node.expr) if n is not None)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, MatrixSelector):
        return (node.vector_selector,)
    if isinstance(node, SubqueryExpr):
        return (node.expr,)
    if isinstance(node, DurationExpr):
        return tuple(n for n in (node.lhs, node.rhs) if n is not None)
    return ()


def walk(node: Node):
    """Yield the node and all its descendants, depth first, parents before children."""
    yield node
    for child in children(node):
        yield from walk(child)


def map_children(node: Node, fn) -> Node:
    """``node`` with its direct sub-expressions replaced by ``fn(child)``: a copy when some child changed,
    else ``node`` itself (a query's rewrites of its tree mostly change nothing, and copying every node
    through ``dataclasses.replace`` costs tens of microseconds a query)."""
    if isinstance(node, (ParenExpr, UnaryExpr, SubqueryExpr)):
        expr = fn(node.expr)
        return node if expr is node.expr else replace(node, expr=expr)
    if isinstance(node, BinaryExpr):
        lhs, rhs = fn(node.lhs), fn(node.rhs)
        return node if lhs is node.lhs and rhs is node.rhs else replace(node, lhs=lhs, rhs=rhs)
    if isinstance(node, AggregateExpr):
        expr = fn(node.expr)
        param = fn(node.param) if node.param is not None else None
        return node if expr is node.expr and param is node.param else replace(node, expr=expr, param=param)
    if isinstance(node, Call):
        args = tuple(fn(arg) for arg in node.args)
        return node if all(new is old for new, old in zip(args, node.args, strict=True)) else replace(node, args=args)
    if isinstance(node, MatrixSelector):
        selector = fn(node.vector_selector)
        return node if selector is node.vector_selector else replace(node, vector_selector=selector)
    return node
