"""The Cython postings kernels against Python set operations, and XXH64 against the reference vectors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimird._fast import postings

# Small universes make overlaps likely; the wide one checks refs above 2**63 survive as uint64.
ref_values = st.one_of(
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=2**64 - 50, max_value=2**64 - 1),
)
ref_sets = st.sets(ref_values, max_size=300)


@st.composite
def skewed_pairs(draw):
    """A tiny set and a large one: very different sizes take the galloping paths (at a 32x length ratio).

    The large set comes from a seeded generator, because hypothesis is slow at drawing hundreds of elements.
    """
    small = draw(st.sets(ref_values, max_size=4))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32)))
    universe = np.concatenate([np.arange(401, dtype=np.uint64), np.arange(2**64 - 50, 2**64, dtype=np.uint64)])
    large = {int(v) for v in rng.choice(universe, size=draw(st.integers(150, 400)), replace=False)}
    return small, large


def as_postings(refs) -> np.ndarray:
    return np.array(sorted(refs), dtype=np.uint64)


def as_set(values: np.ndarray) -> set[int]:
    assert values.dtype == np.uint64
    assert postings.is_sorted_unique(values)
    return {int(v) for v in values}


@given(ref_sets, ref_sets)
def test_intersect(a, b):
    assert as_set(postings.intersect(as_postings(a), as_postings(b))) == a & b


@given(skewed_pairs())
def test_intersect_galloping(pair):
    small, large = pair
    assert as_set(postings.intersect(as_postings(small), as_postings(large))) == small & large
    assert as_set(postings.intersect(as_postings(large), as_postings(small))) == small & large


@given(st.lists(ref_sets, min_size=1, max_size=6))
def test_intersect_many(sets):
    expected = set.intersection(*sets)
    assert as_set(postings.intersect_many([as_postings(s) for s in sets])) == expected


def test_intersect_many_does_not_modify_inputs():
    first = as_postings(range(0, 100, 2))
    second = as_postings(range(0, 100, 3))
    result = postings.intersect_many([first, second])
    assert as_set(result) == set(range(0, 100, 6))
    assert as_set(first) == set(range(0, 100, 2))
    assert as_set(second) == set(range(0, 100, 3))


def test_intersect_many_needs_a_list():
    with pytest.raises(ValueError):
        postings.intersect_many([])


@given(st.lists(ref_sets, max_size=8))
def test_union_many(sets):
    expected = set().union(*sets)
    assert as_set(postings.union_many([as_postings(s) for s in sets])) == expected


@given(ref_sets, ref_sets)
def test_subtract(a, b):
    assert as_set(postings.subtract(as_postings(a), as_postings(b))) == a - b


@given(skewed_pairs())
def test_subtract_galloping(pair):
    small, large = pair
    assert as_set(postings.subtract(as_postings(small), as_postings(large))) == small - large
    assert as_set(postings.subtract(as_postings(large), as_postings(small))) == large - small


def test_kernels_reject_other_dtypes():
    with pytest.raises(ValueError):
        postings.intersect(np.array([1, 2], dtype=np.int32), as_postings([1]))


def test_large_union_and_intersection():
    rng = np.random.default_rng(7)
    lists = [np.unique(rng.integers(0, 1_000_000, size=50_000).astype(np.uint64)) for _ in range(20)]
    expected_union = np.unique(np.concatenate(lists))
    assert np.array_equal(postings.union_many(lists), expected_union)
    expected_intersection = lists[0]
    for other in lists[1:3]:
        expected_intersection = np.intersect1d(expected_intersection, other)
    assert np.array_equal(postings.intersect_many(lists[:3]), expected_intersection)


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=1, max_value=50), max_size=200))
def test_postings_builder_appends(gaps):
    builder = postings.PostingsBuilder()
    refs = list(np.cumsum(gaps, dtype=np.uint64))
    snapshots = []
    for ref in refs:
        builder.append(int(ref))
        snapshots.append(builder.view())
    assert len(builder) == len(refs)
    assert builder.view().tolist() == refs
    assert builder.last == (int(refs[-1]) if refs else None)
    # A view taken earlier keeps its contents while the list grows past it.
    for count, snapshot in enumerate(snapshots, start=1):
        assert snapshot.tolist() == refs[:count]


def test_postings_builder_rejects_out_of_order():
    builder = postings.PostingsBuilder()
    builder.append(5)
    with pytest.raises(ValueError):
        builder.append(5)
    with pytest.raises(ValueError):
        builder.append(3)
    with pytest.raises(ValueError):
        builder.extend(as_postings([4, 9]))
    with pytest.raises(ValueError):
        builder.extend(np.array([9, 7], dtype=np.uint64))
    assert builder.view().tolist() == [5]


def test_postings_builder_extend_and_remove():
    builder = postings.PostingsBuilder(capacity=1)
    builder.extend(as_postings(range(10)))
    builder.extend(as_postings(range(10, 1000)))
    before = builder.view()
    assert builder.remove(as_postings(range(0, 1000, 2))) == 500
    assert builder.view().tolist() == list(range(1, 1000, 2))
    assert before.tolist() == list(range(1000)), "a view taken before a removal is left intact"
    assert builder.remove(as_postings([2, 4])) == 0
    assert builder.remove(as_postings(range(1000))) == 500
    assert len(builder) == 0 and builder.last is None
    builder.append(3)
    assert builder.view().tolist() == [3]


def test_postings_builder_view_is_read_only():
    builder = postings.PostingsBuilder()
    builder.append(1)
    with pytest.raises(ValueError):
        builder.view()[0] = 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xEF46DB3751D8E999),
        (b"a", 0xD24EC4F1A98C6E5B),
        (b"abc", 0x44BC2CF5AD770999),
        (b"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1),
    ],
)
def test_xxhash64_reference_vectors(data, expected):
    assert postings.xxhash64(data) == expected


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=300)), max_size=12))
def test_labels_hash_is_xxhash_of_separated_pairs(pairs):
    # Prometheus's labels.Hash: name 0xff value 0xff ... (the long values cross the 1 KiB stack buffer).
    joined = b"".join(name.encode() + b"\xff" + value.encode() + b"\xff" for name, value in pairs)
    assert postings.labels_hash(tuple(pairs)) == postings.xxhash64(joined)


def test_labels_hash_rejects_non_strings():
    with pytest.raises(TypeError):
        postings.labels_hash((("a", 1),))


# Operations on a RefsByHash, checked against a dict of lists. Hashes come from a tiny set (and include the
# extremes) so that collisions, long probe runs and wrap-around at the end of the table are common.
hash_values = st.one_of(st.integers(min_value=0, max_value=40), st.sampled_from([2**64 - 1, 2**64 - 16, 2**63]))
hash_operations = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), hash_values, st.integers(min_value=1, max_value=60)),
    max_size=200,
)


@settings(max_examples=150)
@given(hash_operations)
def test_refs_by_hash_matches_a_dict_of_lists(operations):
    table = postings.RefsByHash(capacity=1)
    model: dict[int, set[int]] = {}
    for operation, label_hash, ref in operations:
        if operation == "add":
            if ref in model.get(label_hash, set()):
                continue
            table.add(label_hash, ref)
            model.setdefault(label_hash, set()).add(ref)
        else:
            expected = ref in model.get(label_hash, set())
            assert table.remove(label_hash, ref) is expected
            model.get(label_hash, set()).discard(ref)
        assert len(table) == sum(len(refs) for refs in model.values())
    for label_hash in set(range(41)) | {2**64 - 1, 2**64 - 16, 2**63}:
        assert sorted(table.get(label_hash)) == sorted(model.get(label_hash, set()))


def test_refs_by_hash_grows_and_rejects_ref_zero():
    table = postings.RefsByHash()
    for ref in range(1, 50_001):
        table.add(ref * 0x9E3779B97F4A7C15 % 2**64, ref)
    assert len(table) == 50_000
    assert table.nbytes <= 16 * 4 * 50_000 * 2
    assert all(table.get(ref * 0x9E3779B97F4A7C15 % 2**64) == [ref] for ref in range(1, 50_001, 997))
    with pytest.raises(ValueError):
        table.add(1, 0)


def test_series_label_store():
    store = postings.SeriesLabelStore(capacity=1)
    symbols = ["__name__", "up", "job", "api", "web"]
    for ref in range(1, 3001):
        store.append(ref * 2, [0, 1, 2, 3 + ref % 2])
    store.append(7000, [])
    assert len(store) == 3001
    assert store.find(10) == 4
    assert store.find(11) == -1 and store.find(0) == -1
    assert store.labels(4, symbols) == (("__name__", "up"), ("job", "web"))
    assert store.labels(3000, symbols) == ()
    assert store.refs()[:3].tolist() == [2, 4, 6]
    assert store.offsets()[:3].tolist() == [0, 2, 4]
    assert store.pairs()[:4].tolist() == [0, 1, 2, 4]
    with pytest.raises(ValueError):
        store.append(7000, [0, 1])
    with pytest.raises(ValueError):
        store.append(8000, [0])
    with pytest.raises(IndexError):
        store.labels(3001, symbols)
    with pytest.raises(IndexError):
        store.labels(0, symbols[:2])

    view = store.refs()
    store.replace(np.array([4, 9], dtype=np.uint64), np.array([0, 1, 3], dtype=np.int64),
                  np.array([2, 3, 0, 1, 2, 4], dtype=np.uint32))
    assert view[:2].tolist() == [2, 4], "views taken before a replace keep their contents"
    assert store.labels(store.find(9), symbols) == (("__name__", "up"), ("job", "web"))
    assert store.labels(store.find(4), symbols) == (("job", "api"),)
    store.append(10, [0, 1])
    assert store.refs().tolist() == [4, 9, 10]
    with pytest.raises(ValueError):
        store.replace(np.array([4], dtype=np.uint64), np.array([0, 2], dtype=np.int64), np.zeros(2, np.uint32))
