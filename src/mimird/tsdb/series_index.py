"""The head's in-memory series index: label sets by ref, refs by label set, and inverted postings.

Each series gets a ref (1, 2, 3, ... in creation order) when its label set is first seen. The index owns:
- the label sets, stored compactly as pairs of symbol ids in flat numpy arrays (a Python tuple is built
  only when `labels_of` is asked), with every label string kept once in a symbol table;
- refs by label-set hash (Prometheus's XXH64 of the labels) in an open-addressing table, with collisions
  resolved by comparing label sets;
- postings `name -> value -> PostingsBuilder` of refs, plus the list of all refs, over which `select` runs
  Prometheus's PostingsForMatchers with the Cython kernels of mimird._fast.postings.

Writers must be serialised (the head does that). Reading from another thread meanwhile is safe: each
Cython call runs under the GIL, and the arrays `postings` and `select` return are read-only snapshots that
later appends do not change; a `select` that races with appends may miss the series created meanwhile.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from mimird._fast.postings import (
    PostingsBuilder,
    RefsByHash,
    SeriesLabelStore,
    intersect_many,
    subtract,
    union_many,
)
from mimird.tsdb.labels import Labels, Matcher, MatchType, labels_hash

_EMPTY_POSTINGS = np.empty(0, dtype=np.uint64)
_EMPTY_POSTINGS.flags.writeable = False
# Up to this many refs, sort_by_labels compares label sets directly instead of building rank keys: over a
# 10k-series head, 72 refs sort in 12 us instead of 35 us, while from about 200 refs on the keys win.
_SMALL_SORT = 128
# How many selectors' sorted refs select_sorted remembers (the whole memo is dropped when full), and
# the largest selection it remembers: small selections are where the fixed costs matter, and this
# bounds the memo to 8 MiB.
_SORTED_SELECTIONS_KEPT = 256
_SORTED_SELECTION_MAX_REFS = 4096
_MATCHER_KEY = operator.attrgetter("key")


class SeriesIndex:
    """Series refs for label sets, and the inverted index that selects refs by label matchers."""

    def __init__(self) -> None:
        self._symbol_ids: dict[str, int] = {}
        self._symbols: list[str] = []
        # Label sets as symbol-id pairs, by slot (slots are in ref order).
        self._store = SeriesLabelStore()
        # Refs by label-set hash; a collision leaves several refs under one hash.
        self._refs_by_hash = RefsByHash()
        self._postings: dict[str, dict[str, PostingsBuilder]] = {}
        self._all_postings = PostingsBuilder()
        self._next_ref = 1
        # Bumped once a change of the series set is complete; select_sorted's cached answers are valid
        # only for the generation they were computed in.
        self._generation = 0
        self._sorted_selections: dict[tuple, tuple[int, np.ndarray]] = {}

    @property
    def num_series(self) -> int:
        """How many series the index holds."""
        return len(self._store)

    # Series by labels, labels by series.

    def get_or_create(self, labels: Labels, ref: int | None = None) -> tuple[int, bool]:
        """The ref of the series with `labels`, and whether it was created by this call.

        `labels` is a label set as `make_labels` builds it: (name, value) pairs sorted by name. A new
        series gets the next ref, or `ref` when given (WAL replay restores the refs the WAL recorded; it
        must exceed every ref handed out so far). An existing series keeps its ref whatever `ref` says,
        and the caller maps the other ref onto it, as Prometheus does for duplicate series records.
        """
        for index in range(1, len(labels)):
            if labels[index - 1][0] >= labels[index][0]:
                raise ValueError(f"labels are not sorted by name or repeat a name: {labels!r}")
        label_hash = labels_hash(labels)
        for existing in self._refs_by_hash.get(label_hash):
            if self.labels_of(existing) == labels:
                return existing, False
        if ref is None:
            ref = self._next_ref
        elif ref < self._next_ref:
            raise ValueError(f"series ref {ref} is not above the refs already used (next is {self._next_ref})")
        self._next_ref = ref + 1
        symbol_ids = self._symbol_ids
        pair_ids = []
        for name, value in labels:
            name_id = symbol_ids.get(name)
            if name_id is None:
                name_id = self._new_symbol(name)
            value_id = symbol_ids.get(value)
            if value_id is None:
                value_id = self._new_symbol(value)
            pair_ids.append(name_id)
            pair_ids.append(value_id)
            by_value = self._postings.get(name)
            if by_value is None:
                by_value = self._postings[self._symbols[name_id]] = {}
            builder = by_value.get(value)
            if builder is None:
                builder = by_value[self._symbols[value_id]] = PostingsBuilder()
            builder.append(ref)
        self._store.append(ref, pair_ids)
        self._all_postings.append(ref)
        self._refs_by_hash.add(label_hash, ref)
        self._generation += 1
        return ref, True

    def get(self, labels: Labels) -> int | None:
        """The ref of the series with `labels`, or None when there is none."""
        for ref in self._refs_by_hash.get(labels_hash(labels)):
            if self.labels_of(ref) == labels:
                return ref
        return None

    def labels_of(self, ref: int) -> Labels:
        """The label set of series `ref`; KeyError when there is no such series."""
        slot = self._store.find(ref) if ref >= 1 else -1
        if slot < 0:
            raise KeyError(ref)
        return self._store.labels(slot, self._symbols)

    def __contains__(self, ref: int) -> bool:
        return ref >= 1 and self._store.find(ref) >= 0

    def _new_symbol(self, text: str) -> int:
        symbol_id = len(self._symbols)
        text = sys.intern(text)
        self._symbols.append(text)
        self._symbol_ids[text] = symbol_id
        return symbol_id

    def _slots_of(self, refs: np.ndarray) -> np.ndarray:
        """Slots of those of the sorted `refs` that are in the index."""
        slot_refs = self._store.refs()
        slots = np.searchsorted(slot_refs, refs)
        found = slots < len(slot_refs)
        found[found] = slot_refs[slots[found]] == refs[found]
        return slots[found]

    def _label_pairs_of(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(name ids, value ids, slot of each pair) for every label pair of the series in `slots`."""
        offsets = self._store.offsets()
        starts = offsets[slots]
        lengths = offsets[slots + 1] - starts
        total = int(lengths.sum())
        # Pair positions: each slot's run starts..starts+length, laid end to end.
        run_starts = np.cumsum(lengths) - lengths
        positions = np.arange(total, dtype=np.int64) + np.repeat(starts - run_starts, lengths)
        pairs = self._store.pairs()
        return pairs[2 * positions], pairs[2 * positions + 1], np.repeat(slots, lengths)

    # Postings and selection.

    def postings(self, name: str, value: str) -> np.ndarray:
        """Refs of the series with label `name` set to `value` (sorted, read-only)."""
        builder = self._postings.get(name, {}).get(value)
        return _EMPTY_POSTINGS if builder is None else builder.view()

    def all_postings(self) -> np.ndarray:
        """Refs of every series (sorted, read-only)."""
        return self._all_postings.view()

    def select(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """Refs of the series every matcher accepts (a missing label has the value "").

        This is Prometheus's PostingsForMatchers: intersect the postings of the matchers that need their
        label set, then subtract those of the matchers that exclude values. A matcher that accepts ""
        also accepts series without the label, so it only ever subtracts the series whose value it
        rejects. With no matcher that needs a label, the base is every series; with no matchers at all
        the result is empty, as in Prometheus.
        """
        if not matchers:
            return _EMPTY_POSTINGS
        if all(m.type is MatchType.EQUAL and m.value for m in matchers):
            # The common `metric{label="value"}`: only postings to intersect, so skip planning.
            lists = []
            for matcher in matchers:
                builder = self._postings.get(matcher.name, {}).get(matcher.value)
                if builder is None:
                    return _EMPTY_POSTINGS
                lists.append(builder.view())
            return lists[0] if len(lists) == 1 else intersect_many(lists)
        label_must_be_set = {m.name for m in matchers if not m.matches("")}
        # Each matcher as (matcher whose accepted or rejected values give postings, accepted?, intersect?).
        plan = []
        for matcher in matchers:
            if matcher.name not in label_must_be_set:
                # l="", l!="foo", l=~"|foo", l!~".+": exclude the series whose (present) value is rejected.
                plan.append((matcher, False, False))
            elif matcher.is_negative and matcher.matches(""):
                # l!="foo" where another matcher requires l: subtract the series with l="foo".
                plan.append((matcher.inverse(), True, False))
            else:
                # l="foo", l=~"a|b", l!="", l!~"" ...: the series whose value is accepted.
                plan.append((matcher, True, True))
        # Intersecting postings are read first, as Prometheus does: a series created meanwhile can then only
        # be missing from the base, never in the base but missing from what should be subtracted from it.
        intersecting = []
        for matcher, accepted, _ in (step for step in plan if step[2]):
            postings = self._postings_for_values(matcher, accepted)
            if len(postings) == 0:
                return _EMPTY_POSTINGS
            intersecting.append(postings)
        result = intersect_many(intersecting) if intersecting else self._all_postings.view()
        subtracting = [self._postings_for_values(matcher, accepted) for matcher, accepted, intersect in plan
                       if not intersect]
        if subtracting:
            result = subtract(result, union_many(subtracting))
        return result

    def _postings_for_values(self, matcher: Matcher, accepted: bool) -> np.ndarray:
        """The union of postings of the label's values that `matcher` accepts (or rejects, when not `accepted`)."""
        by_value = self._postings.get(matcher.name)
        if not by_value:
            return _EMPTY_POSTINGS
        exact = matcher.set_matches() if accepted else None
        if exact is not None:
            lists = [by_value[value].view() for value in exact if value in by_value]
        else:
            # copy() takes the entries in one step, so a writer in another thread cannot resize the dict under
            # us; keys and values come out as two lists, not a tuple per value, whose allocation over a label
            # of 100k values set off collections of the whole heap that took longer than the scan.
            snapshot = by_value.copy()
            hits = matcher.matches_each(list(snapshot))
            lists = [builder.view() for builder, hit in zip(snapshot.values(), hits, strict=True) if hit == accepted]
        return union_many(lists)

    def sort_by_labels(self, refs: np.ndarray) -> np.ndarray:
        """Those of `refs` the index holds, ordered by their label sets (as sorted() orders Labels tuples).

        The label sets are compared as integer keys built from the ranks of their strings
        (SeriesLabelStore.sort_keys), not as Python tuples; up to _SMALL_SORT refs, a merge sort comparing
        symbol ids (SeriesLabelStore.sorted_refs) is cheaper than building those keys.
        """
        refs = np.asarray(refs, dtype=np.uint64)
        if len(refs) <= _SMALL_SORT:
            return self._store.sorted_refs(refs, self._symbols)
        slots = self._slots_of(refs)
        if len(slots) <= 1:
            return self._store.refs()[slots]
        keys = self._store.sort_keys(slots, self._symbols)
        order = np.argsort(keys[0], kind="stable") if len(keys) == 1 else np.lexsort(keys[::-1])
        return self._store.refs()[slots[order]]

    def select_sorted(self, matchers: Sequence[Matcher]) -> np.ndarray:
        """sort_by_labels(select(matchers)), remembered until the next series is created or removed.

        Dashboards repeat the same selectors while the series set rarely changes, so the postings
        algebra and the sort are skipped for a selector already answered in this generation.
        """
        key = tuple(map(_MATCHER_KEY, matchers))
        generation = self._generation
        cached = self._sorted_selections.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        refs = self.sort_by_labels(self.select(matchers))
        refs.flags.writeable = False
        if len(refs) > _SORTED_SELECTION_MAX_REFS:
            return refs
        if len(self._sorted_selections) >= _SORTED_SELECTIONS_KEPT:
            self._sorted_selections.clear()
        # Tagged with the generation read before selecting: a change finishing meanwhile invalidates it.
        self._sorted_selections[key] = (generation, refs)
        return refs

    # Label names and values.

    def label_names(self, refs: np.ndarray | None = None) -> list[str]:
        """Sorted names of the labels of all series, or of the series in sorted `refs`."""
        if refs is None:
            return sorted(self._postings)
        slots = self._slots_of(np.asarray(refs, dtype=np.uint64))
        name_ids, _, _ = self._label_pairs_of(slots)
        return sorted(self._symbols[i] for i in np.unique(name_ids).tolist())

    def label_values(self, name: str, refs: np.ndarray | None = None) -> list[str]:
        """Sorted values of label `name` over all series, or over the series in sorted `refs`."""
        if refs is None:
            return sorted(self._postings.get(name, ()))
        name_id = self._symbol_ids.get(name)
        if name_id is None:
            return []
        slots = self._slots_of(np.asarray(refs, dtype=np.uint64))
        name_ids, value_ids, _ = self._label_pairs_of(slots)
        return sorted(self._symbols[i] for i in np.unique(value_ids[name_ids == name_id]).tolist())

    # Garbage collection.

    def remove(self, refs: Iterable[int] | np.ndarray) -> int:
        """Drop the series `refs` (those the index does not hold are ignored); return how many went."""
        refs = np.unique(np.asarray(refs if isinstance(refs, np.ndarray) else list(refs), dtype=np.uint64))
        slots = self._slots_of(refs)
        if len(slots) == 0:
            return 0
        removed_refs = self._store.refs()[slots]
        for ref in removed_refs.tolist():
            self._refs_by_hash.remove(labels_hash(self.labels_of(ref)), ref)
        self._remove_from_postings(slots)
        self._all_postings.remove(removed_refs)
        self._compact_slots(slots)
        self._maybe_compact_symbols()
        self._generation += 1
        return len(slots)

    def _remove_from_postings(self, slots: np.ndarray) -> None:
        name_ids, value_ids, pair_slots = self._label_pairs_of(slots)
        keys = (name_ids.astype(np.uint64) << np.uint64(32)) | value_ids.astype(np.uint64)
        # A stable sort by label pair keeps each pair's refs in increasing order, as `remove` needs.
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        pair_refs = self._store.refs()[pair_slots[order]]
        boundaries = np.flatnonzero(np.diff(keys)) + 1
        starts = np.concatenate([[0], boundaries]).tolist()
        ends = np.concatenate([boundaries, [len(keys)]]).tolist()
        for start, end in zip(starts, ends, strict=True):
            key = int(keys[start])
            name = self._symbols[key >> 32]
            value = self._symbols[key & 0xFFFFFFFF]
            by_value = self._postings[name]
            builder = by_value[value]
            builder.remove(np.ascontiguousarray(pair_refs[start:end]))
            if len(builder) == 0:
                del by_value[value]
                if not by_value:
                    del self._postings[name]

    def _compact_slots(self, removed_slots: np.ndarray) -> None:
        offsets = self._store.offsets()
        keep = np.ones(len(self._store), dtype=bool)
        keep[removed_slots] = False
        lengths = np.diff(offsets)
        pair_keep = np.repeat(keep, lengths)
        pairs = self._store.pairs().reshape(-1, 2)[pair_keep].reshape(-1)
        new_offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
        self._store.replace(self._store.refs()[keep], new_offsets, pairs)

    def _maybe_compact_symbols(self) -> None:
        """Forget label strings no series uses any more, once they are most of the table."""
        pairs = self._store.pairs()
        used = np.unique(pairs)
        if len(used) * 2 >= len(self._symbols):
            return
        self._symbols = [self._symbols[i] for i in used.tolist()]
        self._symbol_ids = {text: i for i, text in enumerate(self._symbols)}
        self._store.replace(self._store.refs(), self._store.offsets(), np.searchsorted(used, pairs))

    def memory_bytes(self) -> int:
        """Approximate bytes held by the numpy arrays of the index (postings, label pairs, refs, hash table)."""
        total = self._store.nbytes + self._all_postings.nbytes + self._refs_by_hash.nbytes
        for by_value in self._postings.values():
            for builder in by_value.values():
                total += builder.nbytes
        return total
