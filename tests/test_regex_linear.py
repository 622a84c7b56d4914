"""Regex matchers run in linear time, as Go's do, and keep Go's semantics where RE2 cannot be used.

Python's `re` backtracks: `(a+)+b` against forty `a`s would take hours, holding the GIL, so one query
could stall the whole daemon. These tests would hang without RE2 (pytest-timeout ends them).
"""

from __future__ import annotations

import pytest

from mimird.promql.engine import Engine
from mimird.tsdb.head import Head
from mimird.tsdb.labels import GoRegex, InvalidRegexError, Matcher, RegexMatcher, make_labels

LONG = "a" * 40


@pytest.fixture(scope="module")
def head():
    head = Head(ooo_window_ms=1 << 60)
    series = [make_labels({"__name__": "redos", "job": LONG}), make_labels({"__name__": "redos", "job": LONG + "b"})]
    head.append(series, [0, 1, 2], [0, 0], [1.0, 2.0])
    return head


def test_nested_quantifiers_match_in_linear_time():
    matcher = RegexMatcher("(a+)+b")
    assert not matcher.matches(LONG)
    assert matcher.matches(LONG + "b")


def test_selector_with_nested_quantifiers(head):
    result = Engine().instant(head, 'redos{job=~"(a+)+b"}', 0)
    assert [sample.v for sample in result.value] == [2.0]
    result = Engine().instant(head, 'redos{job!~"(a+)+b"}', 0)
    assert [sample.v for sample in result.value] == [1.0]


def test_label_replace_with_nested_quantifiers_and_groups(head):
    result = Engine().instant(head, 'label_replace(redos, "tail", "${3}-$1", "job", "((a+)+)(b)")', 0)
    tails = sorted(dict(sample.labels).get("tail", "") for sample in result.value)
    assert tails == ["", "b-" + LONG]


def test_go_semantics_kept():
    assert GoRegex("a.c").fullmatch("a\nc")  # (?s)
    assert GoRegex("(?i)k").fullmatch("\u212a")  # Unicode simple case folding: KELVIN SIGN
    assert GoRegex("a|ab").fullmatch("ab")  # whole-text match, not leftmost-first prefix
    match = GoRegex("(?P<x>a)(b)?").fullmatch("a")
    assert (match.group("x"), match.group(2), match.re.groups) == ("a", None, 2)


def test_text_that_is_not_utf8_falls_back_to_the_translation():
    # label bytes that are not UTF-8 arrive surrogate-escaped; RE2 takes only UTF-8
    assert GoRegex("a.c").fullmatch("a\udcffc")
    assert not GoRegex("a.c").fullmatch("a\udcff\udcfec")


def test_invalid_patterns_keep_gos_messages():
    with pytest.raises(InvalidRegexError, match="missing closing \\)"):
        GoRegex("(a")


@pytest.mark.parametrize("pattern,text", [("a.c", "a\nc"), ("a.c", "abd"), ("(?i)k", "\u212a"), ("a|ab", "ab"),
                                          ("a.c", "a\udcffc"), ("(a+)+b", LONG), ("é+", "éé"), ("", "")])
def test_yes_no_tests_agree_with_fullmatch(pattern, text):
    regex = GoRegex(pattern)
    assert regex.test(text) == (regex.fullmatch(text) is not None)


@pytest.mark.parametrize("op", ["=~", "!~", "=", "!="])
@pytest.mark.parametrize("pattern", ["(a+)+b", "a.c", "(?i)K", "api|web", ".*b", "x"])
def test_matches_each_agrees_with_matches(op, pattern):
    values = ["", "a\nc", "abc", "a\udcffc", "\u212a", "k", "api", "web", "aaab", "x", LONG]
    matcher = Matcher(op, "job", pattern)
    assert matcher.matches_each(values) == [matcher.matches(value) for value in values]
