"""Series grouping for aggregations (`aggregate.group_series`) and distinct label values, against the
plain Python definitions."""

from __future__ import annotations

import random

from mimird._fast.aggregate import distinct_label_values, group_series
from mimird.tsdb.labels import make_labels


def python_groups(labels, grouping, without):
    keys: dict = {}
    ids = []
    names = set(grouping) | ({"__name__"} if without else set())
    for series in labels:
        if without:
            key = tuple(pair for pair in series if pair[0] not in names)
        else:
            key = tuple(pair for pair in series if pair[0] in names)
        ids.append(keys.setdefault(key, len(keys)))
    return ids, list(keys)


def random_labels(rng: random.Random, n: int):
    out = []
    for _ in range(n):
        pairs = {}
        for name in ("__name__", "a", "b", "job", "le"):
            if rng.random() < 0.75:
                pairs[name] = rng.choice(["x", "y", "z", "1"])
        out.append(make_labels(pairs))
    return out


def test_group_series_matches_python():
    rng = random.Random(1)
    labels = random_labels(rng, 400)
    for grouping in [(), ("a",), ("le", "job"), ("missing",), ("__name__", "b")]:
        for without in (False, True):
            ids, keys = group_series(labels, grouping, without)
            want_ids, want_keys = python_groups(labels, grouping, without)
            assert ids.tolist() == want_ids and keys == want_keys
    assert group_series([], (), False)[1] == [] and group_series(tuple(labels[:2]), ("a",), False)[0].shape == (2,)


def test_distinct_label_values_in_first_seen_order():
    rng = random.Random(2)
    labels = random_labels(rng, 300)
    want: dict = {}
    for series in labels:
        want.setdefault(dict(series).get("__name__", ""), None)
    assert distinct_label_values(labels, "__name__") == list(want)
    assert distinct_label_values([], "__name__") == []
