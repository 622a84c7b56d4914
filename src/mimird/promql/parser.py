"""Parse PromQL text into the typed syntax tree of :mod:`mimird.promql.ast`, as Prometheus 3.5 does.

The grammar lives in ``grammar/promql.lark`` (LALR(1), built once); tokens come from
:mod:`mimird.promql.lexer`. Tree-building callbacks run as the parser reduces, so semantic errors
found while building (a range on a non-selector, an unknown function, ...) are reported in the same
order as Prometheus reports them. The whole tree is then type-checked like Prometheus's
``checkAST``. Errors are raised as :class:`ParseError` with Prometheus's wording and position.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
from dataclasses import dataclass, replace

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedInput, UnexpectedToken
from lark.lexer import Lexer as LarkLexer

from mimird.promql import ast
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
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    ValueType,
    VectorMatching,
    VectorSelector,
)
from mimird.promql.durations import DurationError, go_round, ns_to_seconds, parse_duration, seconds_to_ns
from mimird.promql.functions import AGGREGATOR_PARAM_TYPES, EXPERIMENTAL_AGGREGATORS, get_function
from mimird.promql.lexer import AGGREGATOR_TOKENS, Item, Lexer, LexError
from mimird.promql.quoting import UnquoteError, go_quote, is_valid_utf8, unquote
from mimird.tsdb.labels import InvalidRegexError

__all__ = ["ParseError", "parse", "parse_expr"]


def _regex_error_text(pattern: str, reason: str) -> str:
    """Go's `regexp` compile error for the pattern Prometheus compiles, `^(?s:pattern)$`."""
    anchored = f"^(?s:{pattern})$"
    if reason in ("missing closing )", "unexpected )"):
        return f"error parsing regexp: {reason}: `{anchored}`"
    if reason.startswith("missing closing ]"):
        return f"error parsing regexp: missing closing ]: `{anchored[anchored.find('['):]}`"
    return f"error parsing regexp: {reason}"

# Offsets and ranges must fit time.Duration: |seconds| <= 2^63 / 1e9.
_MAX_DURATION_SECONDS = (1 << 63) / 1e9


class ParseError(Exception):
    """A PromQL syntax or type error, formatted as Prometheus does: ``1:9: parse error: <message>``.

    ``position`` is the character offset of the offending token in the query; ``line`` and
    ``column`` are 1-based, and the column counts UTF-8 bytes as Prometheus's does.
    """

    def __init__(self, message: str, position: int, query: str) -> None:
        self.message = message
        self.position = position
        self.query = query
        self.line, self.column = _line_and_column(query, position)
        super().__init__(self._format())

    def _format(self) -> str:
        if self.query == "":
            where = "unknown position"
        elif self.position < 0 or self.position > len(self.query):
            where = "invalid position"
        else:
            where = f"{self.line}:{self.column}"
        return f"{where}: parse error: {self.message}"


def _line_and_column(query: str, position: int) -> tuple[int, int]:
    prefix = query[: max(position, 0)]
    line = prefix.count("\n") + 1
    last_line = prefix.rsplit("\n", 1)[-1]
    # Prometheus counts columns in bytes, starting at 1.
    return line, len(last_line.encode("utf-8", "surrogateescape")) + 1


class _Problem(Exception):
    """Raised inside the tree builder; turned into a ParseError once the query text is at hand."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


# ---- number and string literals -------------------------------------------------------------------------

_GO_UNDERSCORE_OK = re.compile(r"^(0[xXoObB]_?)?[0-9a-fA-F]+(_[0-9a-fA-F]+)*$")


def _go_parse_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 0, 64)``: None when it would fail (syntax or range)."""
    if "_" in text and not _GO_UNDERSCORE_OK.match(text):
        return None
    digits = text.replace("_", "")
    lowered = digits.lower()
    if lowered.startswith("0x"):
        base, body = 16, digits[2:]
    elif lowered.startswith("0o"):
        base, body = 8, digits[2:]
    elif lowered.startswith("0b"):
        base, body = 2, digits[2:]
    elif len(digits) > 1 and digits[0] == "0":
        base, body = 8, digits[1:]
    else:
        base, body = 10, digits
    if body == "":
        return None
    try:
        value = int(body, base)
    except ValueError:
        return None
    if value > (1 << 63) - 1:
        return None
    return value


def parse_number(text: str) -> float:
    """Convert a NUMBER token to a float the way Prometheus does: integer syntax first (so ``0x1F``
    and octal ``017`` work), then float syntax (``1e3``, ``.5``, ``Inf``, ``NaN``)."""
    as_int = _go_parse_int(text)
    if as_int is not None:
        return float(as_int)
    lowered = text.lower()
    if lowered.startswith(("0x", "0o", "0b")):
        # Go's ParseFloat accepts hexadecimal only with a p exponent, which the lexer never lets through.
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax")
    if lowered in ("inf", "+inf"):
        return math.inf
    if lowered == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax") from None
    if math.isinf(value):
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: value out of range")
    return value


def _go_format_f(value: float) -> str:
    # Go's %f: six decimals, with +Inf/-Inf/NaN spelled out.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6f}"


# ---- tree builder ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matching:
    return_bool: bool
    matching: VectorMatching


@dataclass(frozen=True)
class _Labels:
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Args:
    args: tuple
    end: int


@dataclass(frozen=True)
class _Grouping:
    without: bool
    names: tuple[str, ...]


@dataclass(frozen=True)
class _AtValue:
    timestamp: float | None
    preprocessor: str | None
    end: int


def _tok_end(tok: Token) -> int:
    return tok.start_pos + len(tok.value)


def _unquote_token(tok: Token) -> str:
    try:
        return unquote(tok.value)
    except UnquoteError as exc:
        raise _Problem(f"error unquoting string {go_quote(tok.value)}: {exc}", tok.start_pos) from None


_VALID_OPS = {"ADD": "+", "SUB": "-", "MUL": "*", "DIV": "/", "MOD": "%", "POW": "^", "EQLC": "==",
              "NEQ": "!=", "LTE": "<=", "LSS": "<", "GTE": ">=", "GTR": ">", "LAND": "and", "LOR": "or",
              "LUNLESS": "unless", "ATAN2": "atan2"}
_MATCH_TYPES = {"EQL": MatchType.EQUAL, "NEQ": MatchType.NOT_EQUAL, "EQL_REGEX": MatchType.REGEX,
                "NEQ_REGEX": MatchType.NOT_REGEX}


class _Builder(Transformer):
    """Reduction callbacks: build AST nodes and raise the errors Prometheus raises while building."""

    def __init__(self, experimental: bool) -> None:
        super().__init__(visit_tokens=False)
        self.experimental = experimental

    # -- literals --

    def start(self, children):
        return children[0]

    def number_literal(self, children):
        return self._literal(children[0])

    def _literal(self, tok: Token) -> NumberLiteral:
        if tok.type == "DURATION":
            try:
                seconds = ns_to_seconds(parse_duration(tok.value))
            except DurationError as exc:
                raise _Problem(str(exc), tok.start_pos) from None
            return NumberLiteral(seconds, duration=True, pos_start=tok.start_pos, pos_end=_tok_end(tok))
        try:
            value = parse_number(tok.value)
        except ValueError as exc:
            raise _Problem(f"error parsing number: {exc}", tok.start_pos) from None
        return NumberLiteral(value, pos_start=tok.start_pos, pos_end=_tok_end(tok))

    def string_literal(self, children):
        tok = children[0]
        return StringLiteral(_unquote_token(tok), pos_start=tok.start_pos, pos_end=_tok_end(tok))

    def paren_expr(self, children):
        left, expr, right = children
        return ParenExpr(expr, pos_start=left.start_pos, pos_end=_tok_end(right))

    def unary_expr(self, children):
        op, expr = children
        if isinstance(expr, NumberLiteral):
            value = -expr.value if op.type == "SUB" else expr.value
            return replace(expr, value=value, pos_start=op.start_pos)
        return UnaryExpr(op.value, expr, pos_start=op.start_pos, pos_end=expr.pos_end)

    # -- binary operators --

    def binary_expr(self, children):
        lhs, op, modifier, rhs = children
        operator = _VALID_OPS[op.type]
        written = modifier.matching
        matching: VectorMatching | None = written
        if operator in ast.SET_OPERATORS and matching.card is Card.ONE_TO_ONE:
            matching = replace(matching, card=Card.MANY_TO_MANY)
        if lhs.type is not ValueType.VECTOR or rhs.type is not ValueType.VECTOR:
            matching = None
        return BinaryExpr(operator, lhs, rhs, modifier.return_bool, matching, written,
                          op_pos=op.start_pos, pos_start=lhs.pos_start, pos_end=rhs.pos_end)

    def bin_modifier(self, children):
        return_bool = children[0]
        matching = VectorMatching()
        if len(children) > 1:
            on, labels = children[1]
            matching = VectorMatching(matching_labels=labels, on=on)
        if len(children) > 2:
            card, include = children[2]
            matching = replace(matching, card=card, include=include)
        return _Matching(return_bool, matching)

    def bool_modifier(self, children):
        return bool(children)

    def on_or_ignoring(self, children):
        keyword, labels = children
        return keyword.type == "ON", labels.names

    def group_modifier(self, children):
        card = Card.MANY_TO_ONE if children[0].type == "GROUP_LEFT" else Card.ONE_TO_MANY
        include = children[1].names if len(children) > 1 else ()
        return card, include

    def grouping_labels(self, children):
        if len(children) == 2:
            return _Labels(())
        return _Labels(tuple(children[1]))

    def grouping_label_list(self, children):
        if len(children) == 1:
            return [children[0]]
        return children[0] + [children[2]]

    def grouping_label(self, children):
        tok = children[0]
        if tok.type == "STRING":
            name = _unquote_token(tok)
            if name == "" or not is_valid_utf8(name):
                raise _Problem(f"invalid label name for grouping: {go_quote(name)}", tok.start_pos)
            return name
        return tok.value

    def maybe_label(self, children):
        return children[0]

    # -- offset, @, ranges, subqueries --

    def duration_literal(self, children):
        literal = self._literal(children[0])
        self._check_duration_range(literal, literal.pos_start)
        return literal

    def signed_duration_literal(self, children):
        op, tok = children
        literal = self._literal(tok)
        if op.type == "SUB":
            literal = replace(literal, value=-literal.value)
        self._check_duration_range(literal, op.start_pos)
        return replace(literal, pos_start=op.start_pos)

    @staticmethod
    def _check_duration_range(literal: NumberLiteral, position: int) -> None:
        # Prometheus's comparisons let NaN through to a float-to-int conversion whose result Go leaves to
        # the platform; no duration can come of it, so it is out of range here.
        if not -_MAX_DURATION_SECONDS <= literal.value <= _MAX_DURATION_SECONDS:
            raise _Problem("duration out of range", position)

    def duration_unary(self, children):
        op, expr = children
        if isinstance(expr, NumberLiteral):
            value = -expr.value if op.type == "SUB" else expr.value
            literal = replace(expr, value=value, pos_start=op.start_pos)
            self._check_duration_range(literal, op.start_pos)
            return literal
        if op.type == "SUB":
            return DurationExpr("-", None, expr, pos_start=op.start_pos, pos_end=expr.pos_end)
        return expr

    def duration_binary(self, children):
        lhs, op, rhs = children
        self._check_duration_expr_enabled(lhs)
        if isinstance(rhs, NumberLiteral) and rhs.value == 0:
            if op.type == "DIV":
                raise _Problem("division by zero", op.start_pos)
            if op.type == "MOD":
                raise _Problem("modulo by zero", op.start_pos)
        return DurationExpr(_VALID_OPS[op.type], lhs, rhs, pos_start=lhs.pos_start, pos_end=rhs.pos_end)

    def dur_paren(self, children):
        _left, expr, _right = children
        self._check_duration_expr_enabled(expr)
        if isinstance(expr, DurationExpr):
            return replace(expr, wrapped=True)
        return expr

    def _check_duration_expr_enabled(self, expr) -> None:
        if not self.experimental:
            raise _Problem("experimental duration expression is not enabled", expr.pos_start)

    @staticmethod
    def _positive(duration):
        if isinstance(duration, NumberLiteral) and duration.value <= 0:
            raise _Problem("duration must be greater than 0", duration.pos_start)
        return duration

    @staticmethod
    def _split_duration(duration) -> tuple[int, DurationExpr | None]:
        if isinstance(duration, NumberLiteral):
            return seconds_to_ns(duration.value), None
        return 0, duration

    def matrix_selector(self, children):
        expr, left, duration, right = children
        duration = self._positive(duration)
        problem = None
        if not isinstance(expr, VectorSelector):
            problem = "ranges only allowed for vector selectors"
        elif expr.offset_ns != 0:
            problem = "no offset modifiers allowed before range"
        elif expr.timestamp_ms is not None:
            problem = "no @ modifiers allowed before range"
        if problem:
            raise _Problem(problem, left.start_pos)
        range_ns, range_expr = self._split_duration(duration)
        return MatrixSelector(expr, range_ns, range_expr, pos_start=expr.pos_start, pos_end=_tok_end(right))

    def subquery_expr(self, children):
        expr, _left, duration = children[:3]
        duration = self._positive(duration)
        range_ns, range_expr = self._split_duration(duration)
        step_ns, step_expr = 0, None
        if len(children) == 6:
            step_ns, step_expr = self._split_duration(self._positive(children[4]))
        return SubqueryExpr(expr, range_ns, range_expr, step_ns, step_expr, pos_start=expr.pos_start,
                            pos_end=_tok_end(children[-1]))

    def offset_expr(self, children):
        expr, _keyword, value = children
        if isinstance(value, NumberLiteral):
            offset_ns, offset_expr = seconds_to_ns(value.value), None
        else:
            offset_ns, offset_expr = 0, value
        end = value.pos_end

        def already_set(node) -> bool:
            return node.offset_ns != 0 or node.offset_expr is not None

        if isinstance(expr, VectorSelector):
            if already_set(expr):
                raise _Problem("offset may not be set multiple times", expr.pos_start)
            return replace(expr, offset_ns=offset_ns, offset_expr=offset_expr, pos_end=end)
        if isinstance(expr, MatrixSelector):
            inner = expr.vector_selector
            if already_set(inner):
                raise _Problem("offset may not be set multiple times", expr.pos_start)
            inner = replace(inner, offset_ns=offset_ns, offset_expr=offset_expr)
            return replace(expr, vector_selector=inner, pos_end=end)
        if isinstance(expr, SubqueryExpr):
            if already_set(expr):
                raise _Problem("offset may not be set multiple times", expr.pos_start)
            return replace(expr, offset_ns=offset_ns, offset_expr=offset_expr, pos_end=end)
        raise _Problem("offset modifier must be preceded by an instant vector selector or range vector "
                       "selector or a subquery", expr.pos_start)

    def at_number(self, children):
        tok = children[-1]
        literal = self._literal(tok)
        value = -literal.value if len(children) == 2 and children[0].type == "SUB" else literal.value
        return _AtValue(value, None, _tok_end(tok))

    def at_preprocessor(self, children):
        keyword, _left, right = children
        return _AtValue(None, keyword.type.lower(), _tok_end(right))

    def at_expr(self, children):
        expr, _at, value = children
        if value.timestamp is not None:
            ts = value.timestamp
            if math.isinf(ts) or math.isnan(ts) or ts >= 2.0**63 or ts <= -(2.0**63):
                raise _Problem(f"timestamp out of bounds for @ modifier: {_go_format_f(ts)}", expr.pos_start)
        if isinstance(expr, MatrixSelector):
            target = expr.vector_selector
        elif isinstance(expr, (VectorSelector, SubqueryExpr)):
            target = expr
        else:
            raise _Problem("@ modifier must be preceded by an instant vector selector or range vector "
                           "selector or a subquery", expr.pos_start)
        if target.timestamp_ms is not None or target.start_or_end is not None:
            raise _Problem("@ <timestamp> may not be set multiple times", expr.pos_start)
        if value.timestamp is not None:
            target = replace(target, timestamp_ms=int(go_round(value.timestamp * 1000.0)))
        else:
            target = replace(target, start_or_end=value.preprocessor)
        if isinstance(expr, MatrixSelector):
            return replace(expr, vector_selector=target, pos_end=value.end)
        return replace(target, pos_end=value.end)

    # -- calls and aggregations --

    def function_call(self, children):
        name, body = children
        func = get_function(name.value)
        if func is None:
            raise _Problem(f"unknown function with name {go_quote(name.value)}", name.start_pos)
        if func.experimental and not self.experimental:
            raise _Problem(f"function {go_quote(name.value)} is not enabled", name.start_pos)
        args = body.args
        if func.name == "info" and len(args) > 1 and isinstance(args[1], VectorSelector):
            # info()'s second argument selects info metrics by labels alone, so it may match everything.
            args = (args[0], replace(args[1], bypass_empty_matcher_check=True), *args[2:])
        return Call(func, args, pos_start=name.start_pos, pos_end=body.end)

    def function_call_body(self, children):
        if len(children) == 2:
            return _Args((), _tok_end(children[1]))
        return _Args(tuple(children[1]), _tok_end(children[2]))

    def function_call_args(self, children):
        if len(children) == 1:
            return [children[0]]
        return children[0] + [children[2]]

    def trailing_comma(self, children):
        raise _Problem("trailing commas not allowed in function call args", children[1].start_pos)

    def aggregate_op(self, children):
        return children[0]

    def aggregate_modifier(self, children):
        keyword, labels = children
        return _Grouping(keyword.type == "WITHOUT", labels.names)

    def aggregate_modifier_first(self, children):
        op, grouping, body = children
        return self._aggregate(op, grouping, body)

    def aggregate_modifier_last(self, children):
        op, body, grouping = children
        return self._aggregate(op, grouping, body)

    def aggregate_plain(self, children):
        op, body = children
        return self._aggregate(op, _Grouping(False, ()), body)

    def _aggregate(self, op: Token, grouping: _Grouping, body: _Args) -> AggregateExpr:
        name = op.value.lower()
        args = body.args
        if not args:
            raise _Problem("no arguments for aggregate expression provided", op.start_pos)
        wanted = 1
        param = None
        if name in AGGREGATOR_PARAM_TYPES:
            if name in EXPERIMENTAL_AGGREGATORS and not self.experimental:
                raise _Problem(f"{name}() is experimental and must be enabled with "
                               "--enable-feature=promql-experimental-functions", op.start_pos)
            wanted = 2
            param = args[0]
        if len(args) != wanted:
            raise _Problem("wrong number of arguments for aggregate expression provided, "
                           f"expected {wanted}, got {len(args)}", op.start_pos)
        return AggregateExpr(name, args[wanted - 1], param, grouping.names, grouping.without,
                             pos_start=op.start_pos, pos_end=body.end)

    # -- selectors --

    def metric_identifier(self, children):
        return children[0]

    def vector_selector(self, children):
        if len(children) == 2:
            name_tok, (matchers, _start_pos, end) = children
            name = name_tok.value
            matchers = (*matchers, Matcher(MatchType.EQUAL, METRIC_NAME_LABEL, name))
            return VectorSelector(name, matchers, pos_start=name_tok.start_pos, pos_end=end)
        item = children[0]
        if isinstance(item, Token):
            return VectorSelector(item.value, (Matcher(MatchType.EQUAL, METRIC_NAME_LABEL, item.value),),
                                  pos_start=item.start_pos, pos_end=_tok_end(item))
        matchers, start, end = item
        return VectorSelector("", tuple(matchers), pos_start=start, pos_end=end)

    def label_matchers(self, children):
        matchers = children[1] if len(children) > 2 else []
        return matchers, children[0].start_pos, _tok_end(children[-1])

    def label_match_list(self, children):
        if len(children) == 1:
            return [children[0]]
        return children[0] + [children[2]]

    def label_matcher(self, children):
        name_tok, op, value_tok = children
        name = name_tok.value if name_tok.type == "IDENTIFIER" else _unquote_token(name_tok)
        value = _unquote_token(value_tok)
        match_type = _MATCH_TYPES[op.type]
        if match_type in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                ast.compile_matcher_regex(value)
            except InvalidRegexError as exc:
                raise _Problem(_regex_error_text(value, exc.reason), name_tok.start_pos) from None
        return Matcher(match_type, name, value)

    def metric_name_matcher(self, children):
        tok = children[0]
        return Matcher(MatchType.EQUAL, METRIC_NAME_LABEL, _unquote_token(tok))

    def match_op(self, children):
        return children[0]


# ---- type checking (Prometheus's checkAST) --------------------------------------------------------------


def _check(node) -> ValueType:
    """Type-check a tree bottom-up in Prometheus's order, raising the first problem found."""
    if isinstance(node, AggregateExpr):
        _expect(node.expr, ValueType.VECTOR, "aggregation expression")
        wanted = AGGREGATOR_PARAM_TYPES.get(node.op)
        if wanted is not None:
            _expect(node.param, wanted, "aggregation parameter")
    elif isinstance(node, BinaryExpr):
        _check_binary(node)
    elif isinstance(node, Call):
        _check_call(node)
    elif isinstance(node, ParenExpr):
        _check(node.expr)
    elif isinstance(node, UnaryExpr):
        inner = _check(node.expr)
        if inner not in (ValueType.SCALAR, ValueType.VECTOR):
            raise _Problem("unary expression only allowed on expressions of type scalar or instant vector, "
                           f"got {go_quote(inner.documented)}", node.pos_start)
    elif isinstance(node, SubqueryExpr):
        inner = _check(node.expr)
        if inner is not ValueType.VECTOR:
            raise _Problem(f"subquery is only allowed on instant vector, got {inner.value} instead",
                           node.pos_start)
    elif isinstance(node, MatrixSelector):
        _check(node.vector_selector)
    elif isinstance(node, VectorSelector):
        _check_vector_selector(node)
    return node.type


def _expect(node, wanted: ValueType, context: str) -> None:
    got = _check(node)
    if got is not wanted:
        raise _Problem(f"expected type {wanted.documented} in {context}, got {got.documented}", node.pos_start)


def _check_binary(node: BinaryExpr) -> None:
    lhs_type = _check(node.lhs)
    rhs_type = _check(node.rhs)
    op = node.op
    written = node.written_matching or VectorMatching()
    if node.return_bool and op not in ast.COMPARISON_OPERATORS:
        raise _Problem("bool modifier can only be used on comparison operators", node.op_pos)
    if op in ast.COMPARISON_OPERATORS and not node.return_bool and lhs_type is ValueType.SCALAR \
            and rhs_type is ValueType.SCALAR:
        raise _Problem("comparisons between scalars must use BOOL modifier", node.op_pos)
    card = written.card
    if op in ast.SET_OPERATORS and card is Card.ONE_TO_ONE:
        card = Card.MANY_TO_MANY
    if written.on:
        for label in written.matching_labels:
            if label in written.include:
                raise _Problem(f"label {go_quote(label)} must not occur in ON and GROUP clause at once",
                               node.op_pos)
    for side_type, side in ((lhs_type, node.lhs), (rhs_type, node.rhs)):
        if side_type not in (ValueType.SCALAR, ValueType.VECTOR):
            raise _Problem("binary expression must contain only scalar and instant vector types", side.pos_start)
    if lhs_type is not ValueType.VECTOR or rhs_type is not ValueType.VECTOR:
        if written.matching_labels:
            raise _Problem("vector matching only allowed between instant vectors", node.pos_start)
    elif op in ast.SET_OPERATORS:
        if card in (Card.ONE_TO_MANY, Card.MANY_TO_ONE):
            raise _Problem(f"no grouping allowed for {go_quote(op)} operation", node.pos_start)
        if card is not Card.MANY_TO_MANY:
            raise _Problem("set operations must always be many-to-many", node.pos_start)
    if (lhs_type is ValueType.SCALAR or rhs_type is ValueType.SCALAR) and op in ast.SET_OPERATORS:
        raise _Problem(f"set operator {go_quote(op)} not allowed in binary scalar expression", node.pos_start)


def _check_call(node: Call) -> None:
    func = node.func
    nargs = len(func.arg_types)
    given = len(node.args)
    if func.variadic == 0:
        if nargs != given:
            raise _Problem(f"expected {nargs} argument(s) in call to {go_quote(func.name)}, got {given}",
                           node.pos_start)
    else:
        fewest = nargs - 1
        if fewest > given:
            raise _Problem(f"expected at least {fewest} argument(s) in call to {go_quote(func.name)}, "
                           f"got {given}", node.pos_start)
        if func.variadic > 0 and fewest + func.variadic < given:
            raise _Problem(f"expected at most {fewest + func.variadic} argument(s) in call to "
                           f"{go_quote(func.name)}, got {given}", node.pos_start)
    if func.name == "info" and given > 1:
        second = node.args[1]
        if second.type is not ValueType.VECTOR:
            raise _Problem(f"expected type {ValueType.VECTOR.documented} in call to function \"info\", "
                           f"got {second.type.documented}", node.pos_start)
        if not isinstance(second, VectorSelector) or second.name != "":
            raise _Problem("expected label selectors only, got vector selector instead", second.pos_start)
    for index, arg in enumerate(node.args):
        if index >= nargs and func.variadic == 0:
            break
        wanted = func.arg_type(index)
        if _check(arg) is not wanted:
            raise _Problem(f"expected type {wanted.documented} in call to function {go_quote(func.name)}, "
                           f"got {arg.type.documented}", arg.pos_start)


def _check_vector_selector(node: VectorSelector) -> None:
    if node.name:
        for matcher in node.matchers[:-1]:
            if matcher.name == METRIC_NAME_LABEL:
                raise _Problem(f"metric name must not be set twice: {go_quote(node.name)} or "
                               f"{go_quote(matcher.value)}", node.pos_start)
        return
    if node.bypass_empty_matcher_check:
        return
    if not any(not matcher.matches("") for matcher in node.matchers):
        raise _Problem("vector selector must contain at least one non-empty matcher", node.pos_start)


# ---- syntax errors --------------------------------------------------------------------------------------


class _Context:
    """Tracks which bracketed construct the parser is inside, to word syntax errors as Prometheus does."""

    _GROUPING_KEYWORDS = frozenset(("BY", "WITHOUT", "ON", "IGNORING", "GROUP_LEFT", "GROUP_RIGHT"))
    _OPERATORS = frozenset(("ADD", "SUB", "MUL", "DIV", "MOD", "POW", "LEFT_PAREN"))

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.previous: Item | None = None
        self.before_previous: Item | None = None
        self.bracket_colon = False
        # Set right after `sum by (...)`, where only the aggregation's argument list may follow.
        self.expecting_aggregation_body = False

    def advance(self, item: Item) -> None:
        kind = item.type
        self.expecting_aggregation_body = False
        if kind == "LEFT_PAREN":
            grouping = self.previous is not None and self.previous.type in self._GROUPING_KEYWORDS
            if grouping and self.previous.type in ("BY", "WITHOUT") and self.before_previous is not None \
                    and self.before_previous.type in AGGREGATOR_TOKENS:
                self.stack.append("aggregation grouping")
            else:
                self.stack.append("grouping" if grouping else "paren")
        elif kind == "LEFT_BRACE":
            self.stack.append("braces")
        elif kind == "LEFT_BRACKET":
            self.stack.append("bracket")
            self.bracket_colon = False
        elif kind in ("RIGHT_PAREN", "RIGHT_BRACE", "RIGHT_BRACKET") and self.stack:
            self.expecting_aggregation_body = self.stack.pop() == "aggregation grouping"
        elif kind == "COLON":
            self.bracket_colon = True
        self.before_previous = self.previous
        self.previous = item

    def message(self, item: Item) -> str:
        context, expected = self._context_and_expected()
        text = f"unexpected {item.describe()}"
        if context:
            text += f" in {context}"
        if expected:
            text += f", expected {expected}"
        return text

    def _context_and_expected(self) -> tuple[str, str]:
        prev = self.previous.type if self.previous else None
        top = self.stack[-1] if self.stack else None
        if top == "aggregation grouping":
            top = "grouping"
        if self.expecting_aggregation_body:
            return "aggregation", ""
        if prev == "OFFSET":
            return "offset", "number or duration"
        if prev == "AT":
            return "@", "timestamp"
        if prev in ("BY", "WITHOUT", "ON", "IGNORING"):
            return "grouping opts", '"("'
        if top == "grouping":
            if prev in ("LEFT_PAREN", "COMMA"):
                return "grouping opts", "label"
            return "grouping opts", '"," or ")"'
        if top == "braces":
            if prev in ("LEFT_BRACE", "COMMA"):
                return "label matching", 'identifier or "}"'
            if prev == "IDENTIFIER":
                return "label matching", "label matching operator"
            if prev in ("EQL", "NEQ", "EQL_REGEX", "NEQ_REGEX"):
                return "label matching", "string"
            return "label matching", '"," or "}"'
        if top == "bracket" or (top == "paren" and "bracket" in self.stack):
            # An unfinished duration (after `[`, `:`, an operator or inside its parentheses) is
            # reported against the bracket or the colon, where Prometheus's grammar recovers.
            unfinished = prev in ("LEFT_BRACKET", "COLON") or prev in self._OPERATORS or top == "paren"
            if unfinished:
                if self.bracket_colon:
                    return "subquery selector", 'number or duration or "]"'
                return "subquery selector", "number or duration"
            if self.bracket_colon:
                return "subquery selector", '"]"'
            return "subquery or range", '":" or "]"'
        return "", ""


# ---- entry points ---------------------------------------------------------------------------------------


class _NoLexer(LarkLexer):
    """Placeholder: tokens are fed to the interactive parser by :func:`parse`."""

    def __init__(self, lexer_conf) -> None:
        pass

    def lex(self, data):
        return iter(())


@functools.cache
def _lark(experimental: bool) -> Lark:
    grammar = importlib.resources.files("mimird.grammar").joinpath("promql.lark").read_text()
    return Lark(grammar, parser="lalr", lexer=_NoLexer, transformer=_Builder(experimental),
                maybe_placeholders=False)


def parse(query: str, *, experimental: bool = True) -> ast.Expr:
    """Parse and type-check a PromQL expression; raise :class:`ParseError` like Prometheus would.

    ``experimental`` switches on the experimental functions, aggregators and duration arithmetic
    (Prometheus's ``--enable-feature=promql-experimental-functions,promql-duration-expr``); the test
    corpus needs it, so it is on by default. Trees are immutable, so dashboards' repeated queries
    share one parse.
    """
    return _parse_cached(query, experimental)


@functools.lru_cache(maxsize=1024)
def _parse_cached(query: str, experimental: bool) -> ast.Expr:
    parser = _lark(experimental).parse_interactive()
    context = _Context()
    lexer = Lexer(query)
    item: Item | None = None
    try:
        for item in lexer.items():
            if item.type == "EOF":
                if context.previous is None:
                    raise _Problem("no expression found in input", 0)
                token = Token("$END", "", start_pos=item.pos)
            else:
                token = Token(item.type, item.value, start_pos=item.pos)
            try:
                result = parser.feed_token(token)
            except UnexpectedToken:
                raise _Problem(context.message(item), item.pos) from None
            context.advance(item)
        _check(result)
        return result
    except LexError as exc:
        raise ParseError(exc.message, exc.pos, query) from None
    except _Problem as exc:
        raise ParseError(exc.message, exc.position, query) from None
    except UnexpectedInput as exc:  # pragma: no cover - every token error is caught above
        raise ParseError(str(exc), item.pos if item else 0, query) from None


parse_expr = parse
