"""Canonical label sets of pushed series: the Cython fast path against the plain definition."""

from hypothesis import given
from hypothesis import strategies as st

from mimird._fast.labelset import canonical_labels, canonical_labels_many

names = st.sampled_from(["__name__", "a", "b", "job", "le", "__replica__", "zz", "é"])
pairs = st.lists(st.tuples(names, st.sampled_from(["", "x", "1", "y z"])), max_size=6).map(tuple)


def reference(series, drop_name=None):
    return tuple(sorted((n, v) for n, v in series if v != "" and n != drop_name))


@given(pairs, st.sampled_from([None, "__replica__"]))
def test_matches_definition(series, drop_name):
    assert canonical_labels(series, drop_name) == reference(series, drop_name)
    assert canonical_labels_many([series, list(series)], drop_name) == [reference(series, drop_name)] * 2


def test_canonical_input_is_returned_as_is():
    series = (("__name__", "up"), ("job", "a"))
    assert canonical_labels(series) is series
    assert canonical_labels((("job", "a"), ("__name__", "up"))) == series
    assert canonical_labels((("__name__", "up"), ("job", ""))) == (("__name__", "up"),)
    assert canonical_labels((("a", "1"), ("a", "2"))) == (("a", "1"), ("a", "2"))
