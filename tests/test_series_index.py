"""Label sets, matcher semantics (Prometheus's, RE2 regexes) and the series index against a brute-force filter."""

import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimird._fast.postings import xxhash64
from mimird.tsdb import series_index
from mimird.tsdb.labels import (
    InvalidRegexError,
    Matcher,
    MatchType,
    compile_regex,
    format_labels,
    label_value,
    labels_hash,
    make_labels,
)
from mimird.tsdb.series_index import SeriesIndex

# --- Label sets ---------------------------------------------------------------------------------------------


def test_make_labels_sorts_interns_and_drops_empty_values():
    labels = make_labels({"job": "api", "__name__": "up", "empty": "", "instance": "".join(["a", ":1"])})
    assert labels == (("__name__", "up"), ("instance", "a:1"), ("job", "api"))
    assert labels[1][1] is make_labels([("instance", "a:" + "1")])[0][1]
    assert label_value(labels, "job") == "api"
    assert label_value(labels, "missing") == ""


def test_make_labels_rejects_duplicate_and_empty_names():
    with pytest.raises(ValueError, match="duplicate"):
        make_labels([("a", "1"), ("a", "2")])
    with pytest.raises(ValueError, match="empty"):
        make_labels([("", "1")])


def test_labels_hash_is_prometheus_hash():
    labels = make_labels({"__name__": "up", "job": "api"})
    assert labels_hash(labels) == xxhash64(b"__name__\xffup\xffjob\xffapi\xff")
    assert labels_hash(make_labels({"a": "bc"})) != labels_hash(make_labels({"ab": "c"}))


def test_format_labels_quotes_as_go():
    labels = make_labels({"__name__": "up", "path": 'a"b\\c\nd\x01é'})
    assert format_labels(labels) == '{__name__="up", path="a\\"b\\\\c\\nd\\x01é"}'
    assert str(Matcher("=~", "job", "a|b")) == 'job=~"a|b"'


# --- Matchers -----------------------------------------------------------------------------------------------

MATCHER_CASES = [
    # (operator, matcher value, label value, expected)
    ("=", "foo", "foo", True),
    ("=", "foo", "Foo", False),
    ("=", "", "", True),
    ("=", "", "x", False),
    ("!=", "foo", "foo", False),
    ("!=", "foo", "", True),
    ("!=", "", "", False),
    ("!=", "", "x", True),
    # Anchored at both ends, alternatives too.
    ("=~", "foo", "xfoo", False),
    ("=~", "foo", "foox", False),
    ("=~", "a|bc", "ab", False),
    ("=~", "a|bc", "bc", True),
    ("=~", "5..", "500", True),
    ("=~", "5..", "5000", False),
    ("=~", ".*", "", True),
    ("=~", ".*", "anything\nat all", True),
    ("=~", ".+", "", False),
    ("=~", ".+", "\n", True),
    ("=~", "", "", True),
    ("=~", "", "x", False),
    ("=~", "a|", "", True),
    # `.` matches a newline (Prometheus 3), unless the pattern turns the s flag off.
    ("=~", "a.b", "a\nb", True),
    ("=~", "(?-s)a.b", "a\nb", False),
    ("=~", "foo$", "foo\n", False),
    ("=~", "(?m)foo$\n", "foo\n", True),
    ("=~", "^foo$", "foo", True),
    # Case-insensitive matching, as a whole or in part.
    ("=~", "(?i)foo|BAR", "FOO", True),
    ("=~", "(?i)foo|BAR", "bar", True),
    ("=~", "(?i)foo|BAR", "baz", False),
    ("=~", "(?i)k", "\u212a", True),  # KELVIN SIGN folds onto k in RE2 as in Python
    ("=~", "a(?i)b|c", "C", True),
    ("=~", "a(?i)b|c", "AB", False),
    ("=~", "(?i:a)b", "AB", False),
    # Prefix, suffix and substring shortcuts.
    ("=~", "foo.*", "foobar", True),
    ("=~", "foo.*", "xfoo", False),
    ("=~", ".*bar", "foobar", True),
    ("=~", ".*bar", "barx", False),
    ("=~", ".*o\\.b.*", "fo.bar", True),
    ("=~", ".*o\\.b.*", "foxbar", False),
    ("=~", ".+bar", "bar", False),
    ("=~", ".+bar", "\nbar", True),
    ("=~", "foo.+", "foo", False),
    ("=~", ".+o.+", "oo", False),
    ("=~", ".+o.+", "ooo", True),
    ("=~", ".*o.+", "o\n", True),
    ("=~", ".+.*", "", False),
    # RE2 syntax Python lacks or reads differently.
    ("=~", r"\d+", "123", True),
    ("=~", r"\d", "\u0663", False),  # RE2's \d is ASCII only
    ("=~", r"\w+", "é", False),
    ("=~", r"[[:alpha:]]+", "abZ", True),
    ("=~", r"[[:^digit:]]+", "ab", True),
    ("=~", r"\Qa.b*\E", "a.b*", True),
    ("=~", r"\Qa.b*\E", "axbb", False),
    ("=~", r"\x41\x{42}\103", "ABC", True),
    ("=~", r"a\z", "a", True),
    ("=~", "a{,2}", "a{,2}", True),
    ("=~", "(?U)(a+)(a*)", "aaa", True),
    ("=~", "(?P<x>a)(?<y>b)", "ab", True),
    ("=~", r"\pL+", "héllo", True),
    ("=~", r"\p{Lu}", "a", False),
    ("=~", r"[^a]", "\n", True),
    ("=~", r"\bfoo\b", "foo", True),
    ("!~", "foo|bar", "bar", False),
    ("!~", "foo|bar", "", True),
    ("!~", ".*", "", False),
    ("!~", ".+", "", True),
]


@pytest.mark.parametrize(("operator", "pattern", "value", "expected"), MATCHER_CASES)
def test_matcher_semantics(operator, pattern, value, expected):
    matcher = Matcher(operator, "label", pattern)
    assert matcher.matches(value) is expected
    assert matcher.inverse().matches(value) is (not expected)


@pytest.mark.parametrize(
    "pattern",
    [
        "(", ")", "a**", "a*+", "a++", "a{2}*", "*", "a|*", r"\1", r"(a)\1", "(?=a)", "(?!a)", "(?<=a)b", "(?<!a)b",
        "(?>a)", "(?#comment)", "(?P=name)", r"\Z", r"\C", r"\e", r"\8", "[a", "[]", "[z-a]", "[[:foo:]]",
        "a{1001}", "a{2,1}", "x\\", "(?P<a>x)(?P<a>y)", "(?i-)", r"\p{Greek}",
    ],
)
def test_invalid_regexes_are_rejected(pattern):
    with pytest.raises(InvalidRegexError, match="invalid regular expression"):
        Matcher("=~", "label", pattern)
    # Equality matchers never compile their value.
    assert Matcher("=", "label", pattern).matches(pattern)


def test_alternation_fast_path_yields_set_matches():
    assert Matcher("=~", "code", "500|502|503").set_matches() == ("500", "502", "503")
    assert Matcher("=~", "code", "(?:500|50\\.2)").set_matches() == ("500", "50.2")
    assert Matcher("=", "code", "500").set_matches() == ("500",)
    assert Matcher("=~", "code", "(?i)500|502").set_matches() is None
    assert Matcher("=~", "code", "5..").set_matches() is None
    assert Matcher("!~", "code", "500|502").set_matches() is None


def test_compiled_regexes_are_cached():
    assert compile_regex("foo|bar") is compile_regex("foo|bar")


REGEX_PIECES = ["a", "b", "ab", ".", ".*", ".+", "|", "(?i)", "A", "\\.", "\n", "x?", "[ab]", "(a|b)", "[^a]"]
SUBJECT_CHARS = ["a", "b", "A", "B", ".", "\n", "x"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(REGEX_PIECES), max_size=5), st.lists(st.sampled_from(SUBJECT_CHARS), max_size=6))
def test_fast_paths_agree_with_the_regex(pieces, subject):
    pattern = "".join(pieces)
    try:
        regex = compile_regex(pattern)
    except InvalidRegexError:
        return
    value = "".join(subject)
    assert regex.matches(value) == (regex.compiled.fullmatch(value) is not None)
    # Without RE2-only syntax, the translation agrees with Python's own reading of ^(?s:pattern)$.
    if "(?i)" not in pattern[1:]:
        python = re.compile(pattern, re.DOTALL)
        assert regex.matches(value) == (python.fullmatch(value) is not None)


# --- The index ----------------------------------------------------------------------------------------------


def small_index() -> tuple[SeriesIndex, dict[int, tuple]]:
    index = SeriesIndex()
    refs = {}
    for labels in ({"__name__": "m", "a": "1"}, {"__name__": "m", "a": "2", "b": "x"}, {"__name__": "m", "b": "y"}):
        ref, created = index.get_or_create(make_labels(labels))
        assert created
        refs[ref] = make_labels(labels)
    return index, refs


EMPTY_VALUE_CASES = [
    # (matchers on the series {a=1}, {a=2,b=x}, {b=y}, expected refs)
    ([("=", "foo", "")], [1, 2, 3]),
    ([("=", "b", "")], [1]),
    ([("!=", "b", "")], [2, 3]),
    ([("=~", "b", ".*")], [1, 2, 3]),
    ([("=~", "b", ".+")], [2, 3]),
    ([("!~", "b", ".+")], [1]),
    ([("!~", "b", ".*")], []),
    ([("=~", "b", "x|")], [1, 2]),
    ([("!~", "b", "x|")], [3]),
    ([("!=", "b", "x")], [1, 3]),
    ([("!=", "b", "x"), ("=~", "b", ".+")], [3]),
    ([("=~", "b", ".+"), ("!=", "b", "y")], [2]),
    ([("=", "a", ""), ("=", "b", "")], []),
    ([("=", "__name__", "m"), ("=", "a", "")], [3]),
    ([("=", "__name__", "m"), ("!=", "a", "1")], [2, 3]),
    ([("=", "__name__", "other")], []),
    ([("=", "a", "1"), ("=", "b", "x")], []),
    ([("=~", "a", "1|2|3")], [1, 2]),
    ([("=~", "a", "(?i)1|2")], [1, 2]),
    ([], []),
]


@pytest.mark.parametrize(("matchers", "expected"), EMPTY_VALUE_CASES)
def test_select_empty_value_semantics(matchers, expected):
    index, _ = small_index()
    selected = index.select([Matcher(*m) for m in matchers])
    assert selected.dtype == np.uint64
    assert selected.tolist() == expected


def test_get_or_create_and_labels_of():
    index, refs = small_index()
    assert index.num_series == 3
    for ref, labels in refs.items():
        assert index.labels_of(ref) == labels
        assert index.get_or_create(labels) == (ref, False)
        assert index.get(labels) == ref
    assert index.get(make_labels({"a": "9"})) is None
    with pytest.raises(KeyError):
        index.labels_of(99)
    with pytest.raises(ValueError):
        index.get_or_create((("b", "1"), ("a", "1")))
    assert index.postings("a", "1").tolist() == [1]
    assert index.postings("a", "nope").tolist() == []
    assert index.all_postings().tolist() == [1, 2, 3]
    assert index.label_names() == ["__name__", "a", "b"]
    assert index.label_names(np.array([3], dtype=np.uint64)) == ["__name__", "b"]
    assert index.label_values("b") == ["x", "y"]
    assert index.label_values("b", np.array([1, 2], dtype=np.uint64)) == ["x"]
    assert index.label_values("nope", np.array([1, 2], dtype=np.uint64)) == []


def test_get_or_create_with_a_given_ref_as_wal_replay_does():
    index = SeriesIndex()
    assert index.get_or_create(make_labels({"a": "1"}), ref=10) == (10, True)
    assert index.get_or_create(make_labels({"a": "2"}), ref=12) == (12, True)
    # A duplicate series record keeps the first ref; the caller maps 15 onto 10.
    assert index.get_or_create(make_labels({"a": "1"}), ref=15) == (10, False)
    with pytest.raises(ValueError):
        index.get_or_create(make_labels({"a": "3"}), ref=11)
    assert index.get_or_create(make_labels({"a": "3"})) == (13, True)
    assert index.select([Matcher("=~", "a", ".+")]).tolist() == [10, 12, 13]


def test_hash_collisions_are_resolved_by_labels(monkeypatch):
    monkeypatch.setattr(series_index, "labels_hash", lambda labels: 42)
    index = SeriesIndex()
    label_sets = [make_labels({"i": str(i)}) for i in range(5)]
    refs = [index.get_or_create(labels)[0] for labels in label_sets]
    assert refs == [1, 2, 3, 4, 5]
    assert [index.get_or_create(labels) for labels in label_sets] == [(ref, False) for ref in refs]
    assert index.remove([2, 4]) == 2
    assert index.get(label_sets[1]) is None
    assert index.get(label_sets[2]) == 3
    assert index.remove([1, 3]) == 2
    assert index.get(label_sets[4]) == 5
    assert index.get_or_create(label_sets[0]) == (6, True)


def test_remove_and_refs_keep_increasing():
    index, _ = small_index()
    assert index.remove([2, 7]) == 1
    assert index.num_series == 2
    assert 2 not in index and 1 in index
    assert index.select([Matcher("=~", "b", ".+")]).tolist() == [3]
    assert index.label_values("a") == ["1"]
    assert index.label_names() == ["__name__", "a", "b"]
    assert index.remove([1]) == 1
    assert index.label_names() == ["__name__", "b"]
    ref, created = index.get_or_create(make_labels({"__name__": "m", "a": "2", "b": "x"}))
    assert (ref, created) == (4, True)
    assert index.labels_of(3) == make_labels({"__name__": "m", "b": "y"})
    assert index.select([Matcher("=", "__name__", "m")]).tolist() == [3, 4]


# Label vocabularies for generated series; some labels are often absent, to exercise the "" rules.
GENERATED_LABELS = {
    "__name__": ["http_requests_total", "node_cpu_seconds_total", "up"],
    "job": ["api", "db", "node", "web\nx"],
    "instance": [f"host-{i}:9100" for i in range(12)],
    "code": ["200", "404", "500", "503", ""],
    "method": ["GET", "post", ""],
    "env": ["prod", "", "", ""],
}
MATCHER_VALUES = {
    "=": ["", "api", "200", "host-3:9100", "up", "prod"],
    "!=": ["", "api", "500", "GET"],
    "=~": ["", ".*", ".+", "5..", "200|404", "(?i)get|POST", "host-1.*", ".*:9100", "api|", "web.x", "a.*i"],
    "!~": ["", ".*", ".+", "5..", "200|404", "(?i)get", "db|"],
}


def generate_series(rng: random.Random, count: int) -> list[tuple]:
    label_sets = set()
    while len(label_sets) < count:
        label_sets.add(make_labels({name: rng.choice(values) for name, values in GENERATED_LABELS.items()}))
    return sorted(label_sets)


def random_matchers(rng: random.Random) -> list[Matcher]:
    matchers = []
    for _ in range(rng.randint(1, 3)):
        operator = rng.choice(list(MATCHER_VALUES))
        matchers.append(Matcher(operator, rng.choice(list(GENERATED_LABELS) + ["absent"]),
                                rng.choice(MATCHER_VALUES[operator])))
    return matchers


def brute_force(series: dict[int, tuple], matchers: list[Matcher]) -> list[int]:
    if not matchers:
        return []
    return sorted(ref for ref, labels in series.items()
                  if all(m.matches(label_value(labels, m.name)) for m in matchers))


def test_select_matches_brute_force_on_generated_series():
    rng = random.Random(1234)
    index = SeriesIndex()
    series = {}
    for labels in generate_series(rng, 3000):
        ref, created = index.get_or_create(labels)
        assert created
        series[ref] = labels
    removed = rng.sample(sorted(series), 600)
    assert index.remove(removed) == 600
    for ref in removed:
        del series[ref]
    assert index.num_series == len(series)
    for _ in range(400):
        matchers = random_matchers(rng)
        selected = index.select(matchers)
        assert selected.tolist() == brute_force(series, matchers), [str(m) for m in matchers]
        assert index.label_names(selected) == sorted({name for ref in selected.tolist() for name, _ in series[ref]})
        assert index.label_values("code", selected) == sorted(
            {label_value(series[ref], "code") for ref in selected.tolist()} - {""})
    for ref, labels in series.items():
        assert index.labels_of(ref) == labels
    for name, values in GENERATED_LABELS.items():
        for value in values:
            if value:
                assert index.postings(name, value).tolist() == sorted(
                    ref for ref, labels in series.items() if label_value(labels, name) == value)


def test_symbols_are_forgotten_after_most_series_go():
    index = SeriesIndex()
    for i in range(200):
        index.get_or_create(make_labels({"__name__": "m", "pod": f"pod-{i}"}))
    index.remove(range(1, 191))
    assert index.label_values("pod") == sorted(f"pod-{i}" for i in range(190, 200))
    assert len(index._symbols) < 50
    assert index.labels_of(200) == make_labels({"__name__": "m", "pod": "pod-199"})
    assert index.get_or_create(make_labels({"__name__": "m", "pod": "pod-199"})) == (200, False)
    assert index.select([Matcher("=~", "pod", "pod-19.")]).tolist() == list(range(191, 201))


def test_match_type_values_are_promql_operators():
    assert [t.value for t in MatchType] == ["=", "!=", "=~", "!~"]


# --- Label order of selections ---------------------------------------------------------------------------

TRICKY_VALUES = ["", "a", "ab", "a b", "b", "é", "z", "\U0001F600", "aa", "A", "0", "10", "9"]


def _random_index(rng: random.Random, count: int) -> tuple[SeriesIndex, dict[int, tuple]]:
    index = SeriesIndex()
    by_ref = {}
    while len(by_ref) < count:
        pairs = {"__name__": rng.choice(["up", "up_total", "u"])}
        for name in ("a", "b", "job", "zz"):
            if rng.random() < 0.7:
                value = rng.choice(TRICKY_VALUES)
                if value:
                    pairs[name] = value
        labels = make_labels(pairs)
        ref, _ = index.get_or_create(labels)
        by_ref[ref] = labels
    return index, by_ref


@pytest.mark.parametrize("seed", range(40))
def test_small_selections_sort_as_label_tuples(seed):
    """Up to the small-sort bound, the merge sort over symbol ids orders as sorted() orders tuples."""
    rng = random.Random(seed)
    index, by_ref = _random_index(rng, rng.randint(1, series_index._SMALL_SORT))
    refs = sorted(rng.sample(sorted(by_ref), rng.randint(1, len(by_ref))))
    ordered = index.sort_by_labels(np.asarray(refs, dtype=np.uint64)).tolist()
    assert [by_ref[r] for r in ordered] == sorted(by_ref[r] for r in refs)
    # refs the index does not hold are left out, as by the rank-key path
    unknown = np.asarray(sorted(refs + [max(by_ref) + 1000]), dtype=np.uint64)
    assert index.sort_by_labels(unknown).tolist() == ordered


def test_select_sorted_follows_creates_and_removes():
    """The remembered sorted selection is forgotten whenever a series is created or removed."""
    rng = random.Random(7)
    index, by_ref = _random_index(rng, 60)
    selectors = [
        [Matcher(MatchType.EQUAL, "__name__", "up")],
        [Matcher(MatchType.EQUAL, "__name__", "up"), Matcher(MatchType.NOT_EQUAL, "a", "a")],
        [Matcher(MatchType.REGEX, "job", "a.*|é")],
    ]
    for step in range(300):
        if rng.random() < 0.5 and by_ref:
            victim = rng.choice(sorted(by_ref))
            index.remove(np.asarray([victim], dtype=np.uint64))
            del by_ref[victim]
        else:
            labels = make_labels({"__name__": "up", "a": rng.choice(TRICKY_VALUES[1:]), "n": str(step)})
            ref, _ = index.get_or_create(labels)
            by_ref[ref] = labels
        for matchers in selectors:
            expected = index.sort_by_labels(index.select(matchers)).tolist()
            assert index.select_sorted(matchers).tolist() == expected
            assert index.select_sorted(matchers).tolist() == expected  # the remembered answer
