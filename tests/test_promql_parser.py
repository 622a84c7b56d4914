"""PromQL parser: the whole Prometheus 3.5 test corpus, precedence, literals, names, errors, types."""

from __future__ import annotations

import math

import pytest

from mimird.promql import ParseError, parse, to_string
from mimird.promql.ast import (
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
    walk,
)
from mimird.promql.durations import DurationError, resolve_duration_exprs
from mimird.promql.functions import FUNCTIONS
from mimird.promql.printer import pretty
from promql_corpus import all_eval_expressions, corpus_files, eval_expressions

MINUTE_NS = 60 * 10**9
SECOND_NS = 10**9


def shape(node) -> str:
    """Fully parenthesised rendering, so tests can see how the parser grouped operators."""
    if isinstance(node, BinaryExpr):
        return f"({shape(node.lhs)} {node.op} {shape(node.rhs)})"
    if isinstance(node, UnaryExpr):
        return f"({node.op}{shape(node.expr)})"
    if isinstance(node, ParenExpr):
        return f"[{shape(node.expr)}]"
    return to_string(node)


# ---- the corpus -----------------------------------------------------------------------------------------

CORPUS = all_eval_expressions()


def test_corpus_is_present():
    if not corpus_files():
        pytest.skip("shared/promql-tests is not next to the repository")
    assert len(CORPUS) > 1400
    assert {e.command for e in CORPUS} >= {"eval", "eval_fail", "eval_ordered", "eval_warn", "eval_info"}


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_file_parses_and_round_trips(path):
    # FORMAT.md §1: every eval expression (eval_fail included) must parse before the file runs.
    # One test per file keeps the run fast; the failure message lists every failing line.
    failures = []
    for case in eval_expressions(path):
        try:
            tree = parse(case.expr)
            printed = to_string(tree)
            again = parse(printed)
        except ParseError as exc:
            failures.append(f"{case.id}: {case.expr!r}: {exc}")
            continue
        if again != tree or to_string(again) != printed:
            failures.append(f"{case.id}: {case.expr!r} printed as {printed!r} does not round-trip")
        elif parse(pretty(tree)) != tree:
            failures.append(f"{case.id}: {case.expr!r} pretty-printed as {pretty(tree)!r} does not round-trip")
    assert not failures, "\n".join(failures)


def test_corpus_uses_every_kind_of_node():
    if not CORPUS:
        pytest.skip("corpus missing")
    kinds = set()
    for case in CORPUS:
        for node in walk(parse(case.expr)):
            kinds.add(type(node))
            for attr in ("range_expr", "step_expr", "offset_expr"):
                if getattr(node, attr, None) is not None:
                    kinds.add(type(getattr(node, attr)))
    assert kinds >= {NumberLiteral, StringLiteral, VectorSelector, MatrixSelector, SubqueryExpr, ParenExpr,
                     UnaryExpr, BinaryExpr, AggregateExpr, Call, DurationExpr}


# ---- precedence and associativity -----------------------------------------------------------------------

PRECEDENCE = [
    ("1 + 2 * 3", "(1 + (2 * 3))"),
    ("1 * 2 + 3", "((1 * 2) + 3)"),
    ("1 - 2 - 3", "((1 - 2) - 3)"),
    ("8 / 4 / 2", "((8 / 4) / 2)"),
    ("2 ^ 3 ^ 2", "(2 ^ (3 ^ 2))"),
    ("a % b * c", "((a % b) * c)"),
    ("a atan2 b * c", "((a atan2 b) * c)"),
    ("a + b atan2 c", "(a + (b atan2 c))"),
    ("a or b and c", "(a or (b and c))"),
    ("a and b or c", "((a and b) or c)"),
    ("a and b unless c", "((a and b) unless c)"),
    ("a unless b and c", "((a unless b) and c)"),
    ("a == b + c", "(a == (b + c))"),
    ("a > b == c", "((a > b) == c)"),
    ("a < b or c > d", "((a < b) or (c > d))"),
    # A sign binds like `*`: tighter than + and *, looser than ^.
    ("-a * b", "((-a) * b)"),
    ("-a + b", "((-a) + b)"),
    ("-a ^ b", "(-(a ^ b))"),
    ("-1 ^ 2", "(-(1 ^ 2))"),
    ("a ^ -b * c", "((a ^ (-b)) * c)"),
    ("a ^ -b ^ c", "(a ^ (-(b ^ c)))"),
    ("2 ^ -1", "(2 ^ -1)"),
    ("1 + -2 * 3", "(1 + (-2 * 3))"),
    ("- -1", "1"),
    ("+a", "(+a)"),
    ("-(a + b) * c", "((-[(a + b)]) * c)"),
    # Postfix modifiers bind tightest of all.
    ("a + b offset 5m", "(a + b offset 5m)"),
    ("-a offset 5m", "(-a offset 5m)"),
    ("a - b @ start()", "(a - b @ start())"),
    ("sum_over_time(x[5m:1m]) / 2", "(sum_over_time(x[5m:1m]) / 2)"),
    ("a ^ b @ 10", "(a ^ b @ 10.000)"),
    # A literal offset ends at the literal; only a parenthesised offset continues as arithmetic.
    ("metric offset 100 + 2", "(metric offset 1m40s + 2)"),
    ("metric offset 2 ^ 2", "(metric offset 2s ^ 2)"),
    ("metric offset -2 ^ 2", "(metric offset -2s ^ 2)"),
    ("metric offset -2 * 2", "(metric offset -2s * 2)"),
    ("metric offset (2 ^ 2)", "metric offset (2 ^ 2)"),
    ("metric offset (1h) * 2", "metric offset 1h * 2"),
]


@pytest.mark.parametrize("query,expected", PRECEDENCE)
def test_precedence_and_associativity(query, expected):
    assert shape(parse(query)) == expected


def test_unary_minus_folds_into_number_literals_only():
    assert parse("-5") == NumberLiteral(-5.0)
    assert parse("+5") == NumberLiteral(5.0)
    assert parse("-5m") == NumberLiteral(-300.0, duration=True)
    assert parse("-foo") == UnaryExpr("-", VectorSelector("foo", (Matcher(MatchType.EQUAL, "__name__", "foo"),)))


def test_binary_modifiers():
    tree = parse("a * on(x, y) group_left(z) b")
    assert tree.vector_matching == VectorMatching(Card.MANY_TO_ONE, ("x", "y"), True, ("z",))
    tree = parse("a / ignoring(x) group_right b")
    assert tree.vector_matching == VectorMatching(Card.ONE_TO_MANY, ("x",), False, ())
    tree = parse("a and b")
    assert tree.vector_matching == VectorMatching(Card.MANY_TO_MANY)
    tree = parse("a > bool 1")
    assert tree.return_bool and tree.vector_matching is None
    assert parse("a + on() b").vector_matching == VectorMatching(on=True)
    # `group_left (` always opens the label list, as in Prometheus.
    with pytest.raises(ParseError):
        parse("a * on(x) group_left (b)")


def test_aggregation_modifier_before_or_after_the_argument():
    before = parse("sum by (job, instance) (rate(x[5m]))")
    after = parse("sum(rate(x[5m])) by (job, instance)")
    assert before == after
    assert before.grouping == ("job", "instance") and not before.without
    tree = parse("topk without (a) (3, x)")
    assert tree.op == "topk" and tree.without and tree.grouping == ("a",)
    assert tree.param == NumberLiteral(3.0)
    assert parse("count_values('le', x)").param == StringLiteral("le")
    assert parse("sum by () (x)").grouping == ()
    for op in ("avg", "count", "min", "max", "group", "stddev", "stdvar", "bottomk", "quantile", "limitk",
               "limit_ratio"):
        args = "1, x" if op in ("bottomk", "quantile", "limitk", "limit_ratio") else "x"
        assert parse(f"{op}({args})").op == op


# ---- literals -------------------------------------------------------------------------------------------

NUMBERS = [
    ("1", 1.0), ("1.5", 1.5), (".5", 0.5), ("5.", 5.0), ("1e3", 1000.0), ("1E-3", 0.001),
    ("4.5e+08", 4.5e8), ("0x1F", 31.0), ("0X_1f", 31.0), ("0xdeadBEEF", 3735928559.0), ("017", 15.0),
    ("09", 9.0), ("1_000", 1000.0), ("1_000.000_1", 1000.0001), ("Inf", math.inf), ("+inf", math.inf),
    ("-Inf", -math.inf), ("INF", math.inf), ("9223372036854775808", 9.223372036854775808e18),
    ("1h30m", 5400.0), ("500ms", 0.5), ("1y", 31536000.0), ("2w", 1209600.0), ("10s53ms", 10.053),
]


@pytest.mark.parametrize("text,value", NUMBERS)
def test_number_literals(text, value):
    tree = parse(text)
    assert isinstance(tree, NumberLiteral) and tree.value == value


@pytest.mark.parametrize("text", ["NaN", "nan", "nAn", "-NaN"])
def test_nan_literals(text):
    tree = parse(text)
    assert isinstance(tree, NumberLiteral) and math.isnan(tree.value)
    assert tree == parse("NaN")


BAD_NUMBERS = [
    ("0x1p-2", 'bad number or duration syntax: "0x1"'),
    ("0b101", 'bad number or duration syntax: "0"'),
    ("1_", 'bad number or duration syntax: "1_"'),
    ("1__0", 'bad number or duration syntax: "1__"'),
    ("1_.5", 'bad number or duration syntax: "1_."'),
    ("1e", 'bad number or duration syntax: "1e"'),
    ("2.5.", 'bad number or duration syntax: "2.5."'),
    ("5mm", 'bad number or duration syntax: "5mm"'),
    ("1.5h", 'unknown unit "." in duration "1.5h"'),
    ("5m1h", 'not a valid duration string: "5m1h"'),
    ("5m5m", 'not a valid duration string: "5m5m"'),
    ("1" + "0" * 400, "value out of range"),
]


@pytest.mark.parametrize("text,message", BAD_NUMBERS)
def test_bad_numbers(text, message):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert message in str(info.value)
    assert str(info.value).startswith("1:1: parse error: ")


STRINGS = [
    (r'"plain"', "plain"),
    (r"'single'", "single"),
    (r"`raw\n\x41`", r"raw\n\x41"),
    (r'"\a\b\f\n\r\t\v\\"', "\a\b\f\n\r\t\v\\"),
    (r'"\"quoted\""', '"quoted"'),
    (r"'it\'s'", "it's"),
    (r'"\x41\x42"', "AB"),
    (r'"\101\060"', "A0"),
    (r'"\u00e9t\u00E9"', "été"),
    (r'"\U0001F600"', "\U0001f600"),
    ('"été 😀"', "été 😀"),
    # \x and octal escapes are bytes; a lone 0xc5 is not UTF-8 and is kept surrogate-escaped.
    (r'"a\xc5z"', "a\udcc5z"),
    (r'"\xc3\xa9"', "é"),
]


@pytest.mark.parametrize("text,value", STRINGS)
def test_string_literals(text, value):
    tree = parse(text)
    assert tree == StringLiteral(value)
    assert parse(to_string(tree)) == tree


BAD_STRINGS = [
    (r'"\c"', "1:1: parse error: unknown escape sequence U+0063 'c'"),
    (r'"\x4"', "1:1: parse error: illegal character U+0022 '\"' in escape sequence"),
    (r'"\400"', "1:1: parse error: escape sequence is an invalid Unicode code point"),
    (r'"\ud800"', "1:1: parse error: escape sequence is an invalid Unicode code point"),
    (r"'\"'", "1:1: parse error: unknown escape sequence U+0022 '\"'"),
    ('"abc', "1:1: parse error: unterminated quoted string"),
    ('"a\nb"', "1:1: parse error: unterminated quoted string"),
    ("`abc", "1:1: parse error: unterminated raw string"),
    ('"\\', "1:1: parse error: escape sequence not terminated"),
    ('x{a="\ufffd"}', "1:5: parse error: invalid UTF-8 rune"),
]


@pytest.mark.parametrize("text,message", BAD_STRINGS)
def test_bad_strings(text, message):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert str(info.value) == message


# ---- selectors, names and keywords ------------------------------------------------------------------------


def test_vector_selector_matchers():
    tree = parse('foo{a="1", b!="2", c=~"3.*", d!~"4",}')
    assert tree.name == "foo"
    assert set(tree.matchers) == {
        Matcher(MatchType.EQUAL, "a", "1"), Matcher(MatchType.NOT_EQUAL, "b", "2"),
        Matcher(MatchType.REGEX, "c", "3.*"), Matcher(MatchType.NOT_REGEX, "d", "4"),
        Matcher(MatchType.EQUAL, "__name__", "foo"),
    }
    assert tree.type is ValueType.VECTOR
    # Matcher order is not part of a selector's meaning.
    assert tree == parse('foo{d!~"4", c=~"3.*", b!="2", a="1"}')


def test_quoted_utf8_names():
    tree = parse('{"my.metric", "a.b"="c"}')
    assert tree.name == ""
    assert set(tree.matchers) == {Matcher(MatchType.EQUAL, "__name__", "my.metric"),
                                  Matcher(MatchType.EQUAL, "a.b", "c")}
    assert to_string(tree) == '{"a.b"="c",__name__="my.metric"}'
    assert parse('sum by ("a.b", c) (x)').grouping == ("a.b", "c")
    assert parse('a + on("x.y") b').vector_matching.matching_labels == ("x.y",)


KEYWORD_NAMES = [
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk", "count_values",
    "quantile", "limitk", "limit_ratio", "by", "without", "offset", "and", "or", "unless", "start", "end",
]


@pytest.mark.parametrize("word", KEYWORD_NAMES)
def test_keywords_as_metric_names(word):
    assert parse(word) == VectorSelector(word, (Matcher(MatchType.EQUAL, "__name__", word),))
    assert parse(f'{word}{{a="b"}}').name == word
    assert parse(f"{word}[5m]").vector_selector.name == word


def test_without_is_not_a_grouping_label_in_prometheus_3_5():
    with pytest.raises(ParseError, match="unexpected <without> in grouping opts, expected label"):
        parse("sum by (without) (x)")
    assert parse('sum by ("without") (x)').grouping == ("without",)


@pytest.mark.parametrize("word", ["on", "ignoring", "bool", "group_left", "group_right", "atan2"])
def test_keywords_that_cannot_name_metrics(word):
    with pytest.raises(ParseError):
        parse(word)


@pytest.mark.parametrize("word", KEYWORD_NAMES + ["on", "ignoring", "bool", "group_left", "group_right",
                                                  "atan2", "inf", "nan"])
def test_keywords_as_label_names(word):
    assert parse(f'x{{{word}="v"}}').matchers[0] == Matcher(MatchType.EQUAL, word, "v")
    # Prometheus 3.5's grammar leaves `without` out of the keywords usable as grouping labels.
    if word not in ("inf", "nan", "without"):
        assert parse(f"sum by ({word}) (x)").grouping == (word,)
        assert parse(f"a + on({word}) b").vector_matching.matching_labels == (word,)


def test_keywords_are_case_insensitive_but_names_are_not():
    assert parse("SUM BY (job) (x)") == parse("sum by (job) (x)")
    assert parse("x AND y").op == "and"
    assert parse("x Offset 5m").offset_ns == 5 * MINUTE_NS
    assert parse("SUM").name == "SUM"
    with pytest.raises(ParseError, match='unknown function with name "Rate"'):
        parse("Rate(x[5m])")


def test_metric_identifier_with_colons():
    assert parse("job:rate5m:sum").name == "job:rate5m:sum"


def test_comments_are_ignored():
    assert parse("x # a comment") == parse("x")
    assert parse("sum(\n  x # inner\n)") == parse("sum(x)")


# ---- offset, @, ranges, subqueries, durations -------------------------------------------------------------


def test_offsets():
    assert parse("x offset 5m").offset_ns == 5 * MINUTE_NS
    assert parse("x offset -5m").offset_ns == -5 * MINUTE_NS
    assert parse("x offset 1.5").offset_ns == 1500 * 10**6
    tree = parse("x[5m] offset 1h")
    assert isinstance(tree, MatrixSelector) and tree.vector_selector.offset_ns == 60 * MINUTE_NS
    assert parse("x[5m:] offset 1h").offset_ns == 60 * MINUTE_NS
    tree = parse("x offset (2 * 2)")
    assert tree.offset_ns == 0
    assert tree.offset_expr == DurationExpr("*", NumberLiteral(2.0), NumberLiteral(2.0), wrapped=True)


def test_at_modifier():
    assert parse("x @ 100").timestamp_ms == 100_000
    assert parse("x @ 1.5").timestamp_ms == 1500
    assert parse("x @ -1.5").timestamp_ms == -1500
    assert parse("x @ 5m").timestamp_ms == 300_000
    assert parse("x @ 0.0005").timestamp_ms == 1  # rounded half away from zero, like Go
    assert parse("x @ start()").start_or_end == "start"
    assert parse("x[5m] @ end()").vector_selector.start_or_end == "end"
    tree = parse("x[5m:1m] @ 10 offset 1m")
    assert isinstance(tree, SubqueryExpr) and tree.timestamp_ms == 10_000 and tree.offset_ns == MINUTE_NS
    assert to_string(parse("x offset 1m @ 10")) == "x @ 10.000 offset 1m"


def test_ranges_and_subqueries():
    tree = parse("x[1h30m]")
    assert tree.range_ns == 90 * MINUTE_NS and tree.type is ValueType.MATRIX
    assert parse("x[90]").range_ns == 90 * SECOND_NS
    tree = parse("rate(x[5m])[30m:1m]")
    assert isinstance(tree, SubqueryExpr) and tree.range_ns == 30 * MINUTE_NS and tree.step_ns == MINUTE_NS
    tree = parse("x[30m:]")
    assert tree.step_ns == 0 and tree.step_expr is None
    assert parse("x[ 5m ]").range_ns == 5 * MINUTE_NS


def test_duration_expressions():
    tree = parse("x[1h/2]")
    assert tree.range_ns == 0
    assert tree.range_expr == DurationExpr("/", NumberLiteral(3600.0, duration=True), NumberLiteral(2.0))
    tree = parse("x[29s+1s:((8 - 2) / 3) * 5s]")
    assert to_string(tree) == "x[29s + 1s:((8 - 2) / 3) * 5s]"
    assert tree.step_expr.op == "*" and tree.step_expr.lhs.wrapped
    tree = parse("x offset -(5m + 1m)")
    assert tree.offset_expr == DurationExpr("-", None, DurationExpr("+", NumberLiteral(300.0, True),
                                                                     NumberLiteral(60.0, True), wrapped=True))
    assert to_string(tree) == "x offset -(5m + 1m)"
    assert parse("x[-5m+35m]").range_expr.lhs == NumberLiteral(-300.0, duration=True)
    assert parse("x[(5m)]").range_ns == 5 * MINUTE_NS
    assert parse("x[2^3]").range_expr.op == "^"


def test_number_literal_durations_print_as_durations():
    assert to_string(parse("5m")) == "5m"
    assert to_string(parse("-90s")) == "-1m30s"
    assert to_string(parse("300")) == "300"


# ---- functions and type checking ------------------------------------------------------------------------


def test_function_table_covers_prometheus_3_5():
    expected_experimental = {"double_exponential_smoothing", "info", "mad_over_time", "sort_by_label",
                             "sort_by_label_desc", "ts_of_min_over_time", "ts_of_max_over_time",
                             "ts_of_last_over_time"}
    assert {f.name for f in FUNCTIONS.values() if f.experimental} == expected_experimental
    assert len(FUNCTIONS) == 80
    assert "holt_winters" not in FUNCTIONS
    assert FUNCTIONS["label_join"].max_args is None
    assert FUNCTIONS["round"].min_args == 1 and FUNCTIONS["round"].max_args == 2


def test_calls_carry_function_and_type():
    tree = parse('label_replace(x, "dst", "$1", "src", "(.*)")')
    assert isinstance(tree, Call) and tree.func.name == "label_replace" and len(tree.args) == 5
    assert parse("time()").type is ValueType.SCALAR
    assert parse("scalar(x)").type is ValueType.SCALAR
    assert parse("vector(1)").type is ValueType.VECTOR
    assert parse("1 + 2").type is ValueType.SCALAR
    assert parse("1 + x").type is ValueType.VECTOR
    assert parse('"s"').type is ValueType.STRING
    assert parse("round(x)").args == (parse("x"),)
    assert len(parse('sort_by_label(x, "a", "b", "c")').args) == 4
    assert parse("day_of_week()").args == ()


def test_info_accepts_a_selector_without_a_name_that_matches_everything():
    tree = parse('info(x, {__name__=~".+_info"})')
    assert tree.args[1].bypass_empty_matcher_check
    parse('info(x, {k=~".*"})')


def test_experimental_features_can_be_switched_off():
    with pytest.raises(ParseError, match='function "mad_over_time" is not enabled'):
        parse("mad_over_time(x[5m])", experimental=False)
    with pytest.raises(ParseError, match=r"limitk\(\) is experimental"):
        parse("limitk(1, x)", experimental=False)
    with pytest.raises(ParseError, match="experimental duration expression is not enabled"):
        parse("x[5m+1m]", experimental=False)
    assert parse("x[5m]", experimental=False).range_ns == 5 * MINUTE_NS


ERRORS = [
    # Syntax errors, worded and positioned as Prometheus does.
    ("", "unknown position: parse error: no expression found in input"),
    ("   # only a comment", "1:1: parse error: no expression found in input"),
    ("sum by (a) 1", '1:12: parse error: unexpected number "1" in aggregation'),
    ("sum(x) by (a) 1", '1:15: parse error: unexpected number "1"'),
    ("rate(x[5m)", '1:10: parse error: unexpected ")" in subquery or range, expected ":" or "]"'),
    ("x[5m:1m", "1:8: parse error: unclosed left bracket"),
    ("x[5m+]", '1:6: parse error: unexpected "]" in subquery selector, expected number or duration'),
    ("x[5m:1m*]", '1:9: parse error: unexpected "]" in subquery selector, expected number or duration or "]"'),
    ("x[5m:]]", "1:7: parse error: unexpected right bracket ']'"),
    ("x[(5m]", '1:6: parse error: unexpected "]" in subquery selector, expected number or duration'),
    ("x[5m:1m 2m]", '1:9: parse error: unexpected duration "2m" in subquery selector, expected "]"'),
    ('x{a="a-very-long-value"} "another-long-string"', '1:26: parse error: unexpected string "\\"another-l"...'),
    ("1 +", "1:4: parse error: unexpected end of input"),
    ("sum(x", "1:6: parse error: unclosed left parenthesis"),
    ("x[5m", "1:5: parse error: unclosed left bracket"),
    (")", "1:2: parse error: unexpected right parenthesis ')'"),
    ("foo{a}", '1:6: parse error: unexpected "}" in label matching, expected label matching operator'),
    ("foo{a=}", '1:7: parse error: unexpected "}" in label matching, expected string'),
    ("foo{a=b}", '1:7: parse error: unexpected identifier "b" in label matching, expected string'),
    ('foo{a="b" c="d"}', '1:11: parse error: unexpected identifier "c" in label matching, expected "," or "}"'),
    ("foo{,}", '1:5: parse error: unexpected "," in label matching, expected identifier or "}"'),
    ('foo{a>"b"}', "1:6: parse error: unexpected character inside braces: '>'"),
    ('foo{a="b"', "1:10: parse error: unexpected end of input inside braces"),
    ('foo{a=~"b"} {', "1:13: parse error: unexpected \"{\""),
    ("sum by foo (x)", '1:8: parse error: unexpected identifier "foo" in grouping opts, expected "("'),
    ("sum by (a b) (x)", '1:11: parse error: unexpected identifier "b" in grouping opts, expected "," or ")"'),
    ("sum by (,) (x)", '1:9: parse error: unexpected "," in grouping opts, expected label'),
    ("sum by (==) (x)", "1:9: parse error: unexpected <op:==> in grouping opts, expected label"),
    ('sum by ("") (x)', '1:9: parse error: invalid label name for grouping: ""'),
    ("x offset", "1:9: parse error: unexpected end of input in offset, expected number or duration"),
    ("x @", "1:4: parse error: unexpected end of input in @, expected timestamp"),
    ("x[]", '1:3: parse error: unexpected "]" in subquery selector, expected number or duration'),
    ("x[5m:1m:2m]", "1:8: parse error: unexpected colon ':'"),
    ("x[:5m]", "1:4: parse error: unexpected colon before duration in duration expression"),
    ("x[5m:1m", "1:8: parse error: unclosed left bracket"),
    ("x[5m y]", None),  # a letter inside brackets acts as the colon in Prometheus: this is x[5m:]
    ("rate(x[5m],)", "1:11: parse error: trailing commas not allowed in function call args"),
    ("x == = y", '1:6: parse error: unexpected "="'),
    ("sum(x) by (a) by (b)", "1:15: parse error: unexpected <by>"),
    ("a * on(x) group_left(y) group_left(z) b", "1:25: parse error: unexpected <group_left>"),
    ("1 ! 2", "1:3: parse error: unexpected character after '!': ' '"),
    ("x =~ y", "1:3: parse error: unexpected character after '=': '~'"),
    ("x $ y", "1:3: parse error: unexpected character: '$'"),
    ("x\n  + ", "2:5: parse error: unexpected end of input"),
    ('"é" + ', "1:8: parse error: unexpected end of input"),
    # Errors found while building the tree.
    ("Rate(x[5m])", '1:1: parse error: unknown function with name "Rate"'),
    ("x[0s]", "1:3: parse error: duration must be greater than 0"),
    ("x[5m/0]", "1:5: parse error: division by zero"),
    ("x[5m%0]", "1:5: parse error: modulo by zero"),
    ("x offset 1m offset 1m", "1:1: parse error: offset may not be set multiple times"),
    ("(x) offset 5m", "1:1: parse error: offset modifier must be preceded by an instant vector selector or "
                      "range vector selector or a subquery"),
    ("sum(x) @ 10", "1:1: parse error: @ modifier must be preceded by an instant vector selector or range "
                    "vector selector or a subquery"),
    ("x @ 1 @ 2", "1:1: parse error: @ <timestamp> may not be set multiple times"),
    ("x @ Inf", "1:1: parse error: timestamp out of bounds for @ modifier: +Inf"),
    ("x @ NaN", "1:1: parse error: timestamp out of bounds for @ modifier: NaN"),
    ("x offset NaN", "1:10: parse error: duration out of range"),
    ("x offset -NaN", "1:10: parse error: duration out of range"),
    ("(x)[5m]", "1:4: parse error: ranges only allowed for vector selectors"),
    ("x offset 5m [5m]", "1:13: parse error: no offset modifiers allowed before range"),
    ("x @ 10 [5m]", "1:8: parse error: no @ modifiers allowed before range"),
    ("sum()", "1:1: parse error: no arguments for aggregate expression provided"),
    ("topk(x)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 2, "
                "got 1"),
    ("sum(1, x)", "1:1: parse error: wrong number of arguments for aggregate expression provided, expected 1, "
                  "got 2"),
    ('foo{a=~"("}', "1:5: parse error: error parsing regexp: missing closing ): `^(?s:()$`"),
    ('foo{a!~"x)"}', "1:5: parse error: error parsing regexp: unexpected ): `^(?s:x))$`"),
    ('foo{a=~"[x"}', "1:5: parse error: error parsing regexp: missing closing ]: `[x)$`"),
    ('foo{a=~"*"}', "1:5: parse error: error parsing regexp: missing argument to repetition operator: `*`"),
    ('foo{a=~"a**"}', "1:5: parse error: error parsing regexp: invalid nested repetition operator: `**`"),
    # Type checks (Prometheus's checkAST).
    ("rate(x)", '1:6: parse error: expected type range vector in call to function "rate", got instant vector'),
    ("floor(1)", '1:7: parse error: expected type instant vector in call to function "floor", got scalar'),
    ("floor()", '1:1: parse error: expected 1 argument(s) in call to "floor", got 0'),
    ("hour(x, y)", '1:1: parse error: expected at most 1 argument(s) in call to "hour", got 2'),
    ("label_join(x)", '1:1: parse error: expected at least 3 argument(s) in call to "label_join", got 1'),
    ("time(1)", '1:1: parse error: expected 0 argument(s) in call to "time", got 1'),
    ("sum(x[5m])", "1:5: parse error: expected type instant vector in aggregation expression, got range vector"),
    ("topk(x, y)", "1:6: parse error: expected type scalar in aggregation parameter, got instant vector"),
    ("count_values(1, x)", "1:14: parse error: expected type string in aggregation parameter, got scalar"),
    ('"a" + 1', "1:1: parse error: binary expression must contain only scalar and instant vector types"),
    ("x[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"),
    ("x and 1", '1:1: parse error: set operator "and" not allowed in binary scalar expression'),
    ("1 or x", '1:1: parse error: set operator "or" not allowed in binary scalar expression'),
    ("1 == 1", "1:3: parse error: comparisons between scalars must use BOOL modifier"),
    ("x + bool y", "1:3: parse error: bool modifier can only be used on comparison operators"),
    ("1 + on(a) x", "1:1: parse error: vector matching only allowed between instant vectors"),
    ("x and on(a) group_left(b) y", '1:1: parse error: no grouping allowed for "and" operation'),
    ("x * on(a) group_left(a) y", '1:3: parse error: label "a" must not occur in ON and GROUP clause at once'),
    ('-"a"', '1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, '
             'got "string"'),
    ("-x[5m]", '1:1: parse error: unary expression only allowed on expressions of type scalar or instant '
               'vector, got "range vector"'),
    ("x[5m][5m:]", "1:1: parse error: subquery is only allowed on instant vector, got matrix instead"),
    ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ('{a=""}', "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ('{a=~".*"}', "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ('foo{__name__="bar"}', '1:1: parse error: metric name must not be set twice: "foo" or "bar"'),
    ("info(x, y)", "1:9: parse error: expected label selectors only, got vector selector instead"),
]


@pytest.mark.parametrize("query,message", ERRORS)
def test_errors(query, message):
    if message is None:
        parse(query)
        return
    with pytest.raises(ParseError) as info:
        parse(query)
    assert str(info.value) == message


def test_parse_error_exposes_position_and_message():
    with pytest.raises(ParseError) as info:
        parse("sum(rate(x[5m])) by foo")
    error = info.value
    assert isinstance(error, Exception)
    assert error.position == 20 and error.line == 1 and error.column == 21
    assert error.message == 'unexpected identifier "foo" in grouping opts, expected "("'
    assert str(error) == '1:21: parse error: unexpected identifier "foo" in grouping opts, expected "("'


def test_nodes_print_as_promql():
    tree = parse("sum(rate(x[5m])) by (job)")
    assert str(tree) == "sum by (job) (rate(x[5m]))"
    assert str(tree.expr.args[0]) == "x[5m]"


def test_selectors_accept_regexes_with_inner_flags():
    tree = parse('x{a=~".*((?i)duc).*"}')
    matcher = next(m for m in tree.matchers if m.name == "a")
    assert matcher.matches("PRODUCTION") and matcher.matches("production") and not matcher.matches("prod")
    assert Matcher(MatchType.REGEX, "a", "a|b").matches("b")
    assert not Matcher(MatchType.REGEX, "a", "a").matches("ab")  # fully anchored
    assert Matcher(MatchType.REGEX, "a", "a.b").matches("a\nb")  # `.` matches newlines
    assert Matcher(MatchType.NOT_REGEX, "a", "a+").matches("")


RESOLVED_DURATIONS = [
    ("x[26m+4m]", "range_ns", 30 * MINUTE_NS),
    ("x[60*30]", "range_ns", 30 * MINUTE_NS),
    ("x[2m*(10+5)]", "range_ns", 30 * MINUTE_NS),
    ("x[24m+((1.5*2m)+2m)]", "range_ns", 29 * MINUTE_NS),
    ("x[1h/2]", "range_ns", 30 * MINUTE_NS),
    ("x[1h30m % 1h]", "range_ns", 30 * MINUTE_NS),
    ("x[30m1s-30m1s % 1m]", "range_ns", 30 * MINUTE_NS),
    ("x[1.0005]", "range_ns", 1000500000),
    ("x[(1/3)]", "range_ns", 333 * 10**6),  # truncated to whole milliseconds
    ("x offset (100 + 2)", "offset_ns", 102 * SECOND_NS),
    ("x offset -(2 * 2)", "offset_ns", -4 * SECOND_NS),
]


@pytest.mark.parametrize("query,field,ns", RESOLVED_DURATIONS)
def test_resolving_duration_expressions(query, field, ns):
    tree = resolve_duration_exprs(parse(query))
    if isinstance(tree, MatrixSelector) and field == "offset_ns":
        tree = tree.vector_selector
    assert getattr(tree, field) == ns
    assert to_string(tree) == to_string(parse(query))


def test_resolving_subquery_durations():
    tree = resolve_duration_exprs(parse("sum_over_time(x[29s+1s:((((8 - 2) / 3) * 7s) % 4) + 8000ms] offset (2*2))"))
    subquery = tree.args[0]
    assert (subquery.range_ns, subquery.step_ns, subquery.offset_ns) == (30 * SECOND_NS, 10 * SECOND_NS,
                                                                          4 * SECOND_NS)


@pytest.mark.parametrize("query,message", [
    ("x[5m-10m]", "2:8: duration must be greater than 0"),
    ("x[5m:1m-1m]", "5:10: duration must be greater than 0"),
    ("x[5m/(1-1)]", "2:9: division by zero"),
    # overflows and undefined powers come out as Go's infinities and NaNs, not as Python's exceptions
    ("x offset (2^1500)", "10:16: duration is out of range"),
    ("x offset ((-2)^0.5)", "11:18: duration is out of range"),
    ("x[((2^1500) % 3)]", "4:15: duration is out of range"),
    ("x[5m:(2^1500)]", "6:12: duration is out of range"),
])
def test_resolving_bad_duration_expressions(query, message):
    with pytest.raises(DurationError, match=f"^{message}$"):
        resolve_duration_exprs(parse(query))


def test_duration_modulo_by_an_infinity_keeps_the_dividend():
    resolved = resolve_duration_exprs(parse("x offset (90 % (2^1500))"))
    assert resolved.offset_ns == 90 * 10**9
