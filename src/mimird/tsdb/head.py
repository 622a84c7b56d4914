"""The in-memory head of one tenant's TSDB: series, their XOR chunks, out-of-order samples, exemplars
and metadata, with Prometheus's append rules.

Appends come from the event loop one decoded request at a time; queries read from worker threads.
A lock guards the series map and the index; chunk bytes are immutable once closed, and the open
chunk is copied under the lock, so readers decode without holding it.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from mimird._fast import xorchunk
from mimird._fast.fastappend import FastPlan, SeriesCache, plan_fast_append
from mimird._fast.headselect import HeadSnapshot
from mimird._fast.headseries import MemSeries, SeriesByRef, append_in_order, float_bits, shared_labels
from mimird.tsdb.fetchobserver import chunk_fetch_observer
from mimird.tsdb.labels import METRIC_NAME, Labels, Matcher, format_labels, go_quote, label_value
from mimird.tsdb.series_index import SeriesIndex
from mimird.tsdb.seriesbatch import SeriesBatch
from mimird.util import cores
from mimird.util.durations import go_duration_ms

INT64_MIN = -(2**63)
METADATA_RETAIN_PERIOD_S = 600.0  # Mimir's -ingester.metadata-retain-period
INT64_MAX = 2**63 - 1


def format_series(labels: Labels) -> str:
    """A series as Mimir prints it in errors: `name{a="b", c="d"}`."""
    name = label_value(labels, METRIC_NAME)
    rest = ", ".join(f"{k}={go_quote(v)}" for k, v in labels if k != METRIC_NAME)
    return f"{name}{{{rest}}}"


def _rfc3339_ms(ts_ms: int) -> str:
    dt = datetime.fromtimestamp(ts_ms / 1000, UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = ts_ms % 1000
    return text + (f".{frac:03d}".rstrip("0") if frac else "") + "Z"


# Per-sample rejections, as Mimir's ingester words them (reason -> message template).
OUT_OF_ORDER = "sample-out-of-order"
TOO_OLD = "sample-timestamp-too-old"
DUPLICATE = "sample-duplicate-timestamp"
PER_USER_SERIES = "max-series-per-user"
PER_METRIC_SERIES = "max-series-per-metric"

# cortex_discarded_samples_total reasons, as Mimir names them.
DISCARD_REASONS = {
    OUT_OF_ORDER: "sample-out-of-order",
    TOO_OLD: "sample-out-of-bounds",
    DUPLICATE: "new-value-for-timestamp",
    PER_USER_SERIES: "per_user_series_limit",
    PER_METRIC_SERIES: "per_metric_series_limit",
}


@dataclass
class AppendResult:
    """What one append call did: counts, the first per-sample error (Mimir's message) and discards."""

    samples_appended: int = 0
    series_created: int = 0
    exemplars_appended: int = 0
    first_error: str | None = None
    discarded: dict[str, int] = field(default_factory=dict)
    # What the WAL must record for this batch, in append order.
    new_series: list[tuple[int, Labels]] = field(default_factory=list)
    refs: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    # The fast path's samples, (refs, timestamps, values) arrays, logged before `refs`/... (None: none).
    fast_samples: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def wal_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Every appended sample as (uint64 refs, int64 timestamps, float64 values), or None."""
        fast = self.fast_samples
        if not self.refs:
            return fast
        slow = (np.asarray(self.refs, dtype=np.uint64), np.asarray(self.timestamps, dtype=np.int64),
                np.asarray(self.values, dtype=np.float64))
        if fast is None:
            return slow
        return tuple(np.concatenate(pair) for pair in zip(fast, slow, strict=True))

    def reject(self, reason: str, message: str, count: int = 1) -> None:
        self.discarded[reason] = self.discarded.get(reason, 0) + count
        if self.first_error is None:
            self.first_error = message


def _merge_fast(fast: FastPlan, series_labels, offsets, timestamps, values, positions):
    """The request's fast series put back among the others in request order, as plain lists."""
    fast_series = fast.fast_series()
    order = sorted([(index, series.labels, ts, vs) for index, series, ts, vs in fast_series]
                   + [(positions[i], series_labels[i], timestamps[offsets[i]:offsets[i + 1]],
                       values[offsets[i]:offsets[i + 1]]) for i in range(len(series_labels))],
                   key=lambda item: item[0])
    merged_labels, merged_offsets, merged_ts, merged_values = [], [0], [], []
    for _, labels, ts, vs in order:
        merged_labels.append(labels)
        merged_ts.extend(ts)
        merged_values.extend(vs)
        merged_offsets.append(len(merged_ts))
    return merged_labels, merged_offsets, merged_ts, merged_values


def merge_samples(ts: np.ndarray, vals: np.ndarray, ooo_t: Sequence[int], ooo_v: Sequence[float]):
    """Merge in-order and out-of-order samples by timestamp; an in-order sample wins a tie."""
    if not len(ooo_t):
        return ts, vals
    all_t = np.concatenate([ts, np.asarray(ooo_t, dtype=np.int64)])
    all_v = np.concatenate([vals, np.asarray(ooo_v, dtype=np.float64)])
    order = np.argsort(all_t, kind="stable")
    all_t, all_v = all_t[order], all_v[order]
    keep = np.ones(len(all_t), dtype=bool)
    keep[1:] = all_t[1:] != all_t[:-1]
    return all_t[keep], all_v[keep]


@dataclass(frozen=True)
class Metadata:
    """A metric family's metadata as remote write sends it."""

    type: int
    help: str
    unit: str


class Head:
    """One tenant's in-memory series, appendable and selectable by label matchers."""

    def __init__(self, *, block_range_ms: int = 2 * 3600 * 1000, ooo_window_ms: int = 0,
                 max_exemplars: int = 0):
        self.block_range = block_range_ms
        self.ooo_window = ooo_window_ms
        self.index = SeriesIndex()
        self.series = SeriesByRef()  # ref -> MemSeries
        self.by_labels: dict[Labels, MemSeries] = {}
        self._label_pairs: dict[tuple[str, str], tuple[str, str]] = {}
        self.lock = threading.RLock()
        self.min_time = INT64_MAX
        self.max_time = INT64_MIN
        # Samples older than this are out of bounds; raised as blocks are cut from the head.
        self.min_valid_time = INT64_MIN
        self.exemplars: deque = deque(maxlen=max_exemplars or None)
        self.max_exemplars = max_exemplars
        # Per metric family, each distinct metadata seen and when (seconds), as Mimir's ingester keeps
        # them for -ingester.metadata-retain-period.
        self.metadata: dict[str, dict[Metadata, float]] = {}
        self.metadata_retain_period = METADATA_RETAIN_PERIOD_S
        self.series_per_metric: dict[str, int] = {}
        # The fast ingest path's validated series (see mimird._fast.fastappend); series leaving the
        # head leave it too, and bump the generation (which voids fast plans made before).
        self.series_cache = SeriesCache()
        self.series_generation = 0

    @property
    def num_series(self) -> int:
        return len(self.series)

    def set_max_exemplars(self, limit: int) -> None:
        if limit != self.max_exemplars:
            self.exemplars = deque(self.exemplars, maxlen=limit or None)
            self.max_exemplars = limit

    def appendable_min_time(self) -> int:
        """Oldest timestamp an in-order append may have: max(min valid time, maxT - half a block)."""
        if self.max_time == INT64_MIN:
            return self.min_valid_time
        return max(self.min_valid_time, self.max_time - self.block_range // 2)

    def get_or_create_series(self, labels: Labels, ref: int | None = None) -> tuple[MemSeries, bool]:
        """The series with `labels`, created if new (with `ref` when replaying a WAL)."""
        series = self.by_labels.get(labels)
        if series is not None:
            return series, False
        # The head keeps its own copy of the labels, built from shared (name, value) pairs.
        labels = shared_labels(self._label_pairs, tuple(labels))
        ref, _ = self.index.get_or_create(labels, ref)
        series = MemSeries(ref, labels)
        self.series[ref] = series
        self.by_labels[labels] = series
        # sorted labels usually start with the metric name
        name = labels[0][1] if labels and labels[0][0] == METRIC_NAME else label_value(labels, METRIC_NAME)
        self.series_per_metric[name] = self.series_per_metric.get(name, 0) + 1
        return series, True

    def plan_fast_append(self, batch, min_ms: int | None, max_ms: int, drop_name: str | None = None) -> FastPlan:
        """Split a decoded remote write 1.0 request into the samples of known series that can be
        appended as they are and the rest (see mimird._fast.fastappend). Changes nothing."""
        plan = plan_fast_append(self.series_cache, batch, INT64_MIN if min_ms is None else min_ms, max_ms,
                                self.appendable_min_time(), drop_name)
        plan.generation = self.series_generation
        return plan

    def remember_validated(self, series_labels: Sequence[Labels], validated_under) -> None:
        """Let the fast path take these series from now on: the distributor validated them under the
        label limits `validated_under` (the cache forgets everything when those change)."""
        cache = self.series_cache
        if cache.validated_under != validated_under:
            cache.clear()
            cache.validated_under = validated_under
        cache.add_known(self.by_labels, series_labels)

    def append(self, series_labels: Sequence[Labels], offsets: Sequence[int], timestamps: Sequence[int],
               values: Sequence[float], *, max_series: int = 0, max_series_per_metric: int = 0,
               tenant: str = "", fast: FastPlan | None = None, positions: Sequence[int] = ()) -> AppendResult:
        """Append many series' samples; per-sample rejections are counted, the rest kept.

        `series_labels[i]` are sorted label sets; their samples are timestamps/values[offsets[i]:
        offsets[i+1]] (plain Python sequences or lists). `fast` is the request's fast part (from
        `plan_fast_append`), appended first; `positions[i]` is then series i's index in the request.
        Returns what happened, including what the WAL must record.
        """
        result = AppendResult()
        with self.lock:
            min_valid = self.appendable_min_time()
            if fast is not None and fast.fast_samples:
                if self._fast_plan_holds(fast, min_valid, series_labels):
                    result.fast_samples = fast.append(self.block_range)
                    self.min_time = min(self.min_time, fast.min_t)
                    self.max_time = max(self.max_time, fast.max_t)
                else:
                    series_labels, offsets, timestamps, values = _merge_fast(fast, series_labels, offsets,
                                                                             timestamps, values, positions)
            # The common case (the next sample of a known series) runs in Cython; the rest comes back.
            deferred, lo, hi = append_in_order(self.by_labels, series_labels, offsets, timestamps, values,
                                               min_valid, self.block_range, result.refs, result.timestamps,
                                               result.values)
            if result.refs:
                self.min_time = min(self.min_time, lo)
                self.max_time = max(self.max_time, hi)
            for index, start in deferred:
                labels = series_labels[index]
                end = offsets[index + 1]
                series = self.by_labels.get(labels)
                if series is None:
                    # As Prometheus, a series whose samples are all out of bounds is not created.
                    if max(timestamps[start:end]) < min_valid and not any(
                            self._in_ooo_window(timestamps[i]) for i in range(start, end)):
                        for i in range(start, end):
                            self._reject_sample(result, TOO_OLD, timestamps[i], labels)
                        continue
                    error = self._series_limit_error(labels, max_series, max_series_per_metric)
                    if error is not None:
                        reason, message = error
                        result.reject(reason, message, end - start)
                        continue
                    series, _ = self.get_or_create_series(labels)
                    result.series_created += 1
                    result.new_series.append((series.ref, labels))
                for i in range(start, end):
                    t = timestamps[i]
                    v = values[i]
                    if t > series.last_t:
                        if t < min_valid and not self._in_ooo_window(t):
                            self._reject_sample(result, TOO_OLD, t, labels)
                            continue
                        series.append(t, v, self.block_range)
                    elif t == series.last_t:
                        if float_bits(v) == series.last_v_bits:
                            continue  # an identical resend is silently fine
                        self._reject_duplicate(result, t, series)
                        continue
                    elif self._in_ooo_window(t) and t >= self.min_valid_time:
                        if not self._ooo_insert(series, t, v, result):
                            continue
                    else:
                        self._reject_sample(result, OUT_OF_ORDER if self.ooo_window == 0 else TOO_OLD, t, labels)
                        continue
                    result.refs.append(series.ref)
                    result.timestamps.append(t)
                    result.values.append(v)
                    if t < self.min_time:
                        self.min_time = t
                    if t > self.max_time:
                        self.max_time = t
            result.samples_appended = len(result.refs)
            if result.fast_samples is not None:
                result.samples_appended += len(result.fast_samples[0])
        return result

    def _fast_plan_holds(self, fast: FastPlan, min_valid: int, series_labels: Sequence[Labels]) -> bool:
        """Whether the fast part can still be appended on its own, before the rest, with the result of
        appending the request in order: no series left the head and the appendable minimum did not
        move since it was planned, and no other series of the request is one of its series."""
        if fast.generation != self.series_generation or fast.min_valid != min_valid:
            return False
        by_labels = self.by_labels
        for labels in series_labels:
            series = by_labels.get(labels)
            if series is not None and fast.claims_fast(series):
                return False
        return True

    def replay_samples(self, refs: Sequence[int], timestamps: Sequence[int], values: Sequence[float],
                       series_by_wal_ref: dict[int, MemSeries]) -> int:
        """Re-apply samples read back from the WAL; returns how many were new.

        They were accepted once, so only what a block already holds (before the min valid time) is
        skipped, and a sample the head already has (a batch logged twice) is a no-op.
        """
        applied = 0
        with self.lock:
            for ref, t, v in zip(refs, timestamps, values, strict=True):
                series = series_by_wal_ref.get(ref)
                if series is None or t < self.min_valid_time:
                    continue
                if t > series.last_t:
                    series.append(t, v, self.block_range)
                elif t == series.last_t or not self._replay_ooo(series, t, v):
                    continue
                applied += 1
                if t < self.min_time:
                    self.min_time = t
                if t > self.max_time:
                    self.max_time = t
        return applied

    def _replay_ooo(self, series: MemSeries, t: int, v: float) -> bool:
        chunks, _, _ = series.snapshot(t, t)
        if chunks and len(xorchunk.decode_chunks(chunks, t, t)[0]):
            return False
        return series.insert_ooo(t, v)

    def _in_ooo_window(self, t: int) -> bool:
        return self.ooo_window > 0 and self.max_time != INT64_MIN and t >= self.max_time - self.ooo_window

    def _ooo_insert(self, series: MemSeries, t: int, v: float, result: AppendResult) -> bool:
        index = bisect.bisect_left(series.ooo_t, t)
        if index < len(series.ooo_t) and series.ooo_t[index] == t:
            if float_bits(series.ooo_v[index]) != float_bits(v):
                self._reject_duplicate(result, t, series)
            return False
        # an in-order chunk may already hold this timestamp
        chunks, _, _ = series.snapshot(t, t)
        if chunks:
            found_t, found_v = xorchunk.decode_chunks(chunks, t, t)
            if len(found_t):
                if float_bits(float(found_v[0])) != float_bits(v):
                    self._reject_duplicate(result, t, series)
                return False
        series.insert_ooo(t, v)
        return True

    def _series_limit_error(self, labels: Labels, max_series: int, max_per_metric: int):
        if max_series and len(self.series) >= max_series:
            return PER_USER_SERIES, (
                f"per-user series limit of {max_series} exceeded (err-mimir-max-series-per-user). To adjust the "
                "related per-tenant limit, configure -ingester.max-global-series-per-user, or contact your "
                "service administrator.")
        if max_per_metric:
            name = label_value(labels, METRIC_NAME)
            if self.series_per_metric.get(name, 0) >= max_per_metric:
                return PER_METRIC_SERIES, (
                    f"per-metric series limit of {max_per_metric} exceeded (err-mimir-max-series-per-metric). To "
                    "adjust the related per-tenant limit, configure -ingester.max-global-series-per-metric, or "
                    f"contact your service administrator. This is for series {format_labels(labels)}")
        return None

    def _reject_sample(self, result: AppendResult, reason: str, t: int, labels: Labels) -> None:
        if reason == OUT_OF_ORDER:
            text = ("the sample has been rejected because another sample with a more recent timestamp has "
                    "already been ingested and out-of-order samples are not allowed")
        elif self.ooo_window:
            window = go_duration_ms(self.ooo_window)
            text = ("the sample has been rejected because another sample with a more recent timestamp has "
                    f"already been ingested and this sample is beyond the out-of-order time window of {window}")
        else:
            text = "the sample has been rejected because its timestamp is too old"
        result.reject(reason, f"{text} (err-mimir-{reason}). The affected sample has timestamp "
                              f"{_rfc3339_ms(t)} and is from series {format_labels(labels)}")

    def _reject_duplicate(self, result: AppendResult, t: int, series: MemSeries) -> None:
        result.reject(DUPLICATE, (
            f"the sample has been rejected because another sample with the same timestamp, but a different "
            f"value, has already been ingested (err-mimir-{DUPLICATE}). The affected sample has timestamp "
            f"{_rfc3339_ms(t)} and is from series {format_labels(series.labels)}"))

    # exemplars and metadata
    def add_exemplars(self, exemplars: Sequence[tuple[Labels, Labels, float, int]]) -> int:
        """Keep (series labels, exemplar labels, value, ts) in the tenant's circular buffer."""
        if not self.max_exemplars:
            return 0
        with self.lock:
            self.exemplars.extend(exemplars)
        return len(exemplars)

    def set_metadata(self, entries: Sequence[tuple[int, str, str, str]]) -> None:
        """Record (type, metric family name, help, unit); entries unseen for the retain period expire."""
        now = time.time()
        expired_before = now - self.metadata_retain_period
        with self.lock:
            for mtype, name, help_text, unit in entries:
                if not name:
                    continue
                seen = self.metadata.setdefault(name, {})
                seen[Metadata(mtype, help_text, unit)] = now
                if len(seen) > 1:
                    for meta in [m for m, at in seen.items() if at < expired_before]:
                        del seen[meta]

    def metadata_entries(self) -> list[tuple[str, list[Metadata]]]:
        """Each metric family's metadata seen within the retain period, oldest first."""
        expired_before = time.time() - self.metadata_retain_period
        with self.lock:
            return [(name, [m for m, at in seen.items() if at >= expired_before])
                    for name, seen in self.metadata.items()]

    # reads
    def select(self, matchers: Sequence[Matcher], mint: int = INT64_MIN, maxt: int = INT64_MAX
               ) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """Series matching all matchers with their samples in [mint, maxt], sorted by labels (per-series
        views of `select_batch`'s arrays)."""
        yield from self.select_batch(matchers, mint, maxt)

    def select_batch(self, matchers: Sequence[Matcher], mint: int = INT64_MIN, maxt: int = INT64_MAX,
                     latest_only: bool = False) -> SeriesBatch:
        """The series matching all matchers that have samples in [mint, maxt], sorted by labels, with
        those samples decoded into one pair of arrays.

        The chunks are noted under the lock and decoded after it is released; the chunks read are
        reported to the query's chunk-fetch observer. `latest_only` says that the reader wants only each
        series' newest sample in the range (an instant selection at maxt): a series whose newest sample
        in the head lies in the range then gives just that one, without decoding."""
        labels, offsets, ts, vals = self.snapshot(matchers, mint, maxt, latest_only).decode(cores.PARTS)
        return SeriesBatch(labels, ts, vals, offsets)

    def snapshot(self, matchers: Sequence[Matcher], mint: int, maxt: int, latest_only: bool = False
                 ) -> HeadSnapshot:
        """The matching series' chunks in [mint, maxt], noted under the lock (decoded after it is released),
        and reported to the query's chunk-fetch observer."""
        with self.lock:
            refs = self.index.select_sorted(matchers)
            snapshot = HeadSnapshot.take(self.series, refs, mint, maxt, latest_only)
        observe = chunk_fetch_observer.get()
        if observe is not None and (snapshot.num_chunks or snapshot.chunk_bytes):
            observe(snapshot.num_chunks, snapshot.chunk_bytes)
        return snapshot

    def evaluate_range(self, matchers: Sequence[Matcher], mint: int, maxt: int, kernel: str, eval_ts: np.ndarray,
                       range_ms: int, params: tuple = (), intercept_shift_ms: int = 0,
                       between: Callable[[], None] | None = None, slice_samples: int = 0):
        """The range function `kernel` (arguments as `rangefn.evaluate_batch`'s) over the matching series'
        samples in [mint, maxt], each series decoded and evaluated at once (`HeadSnapshot.evaluate`):
        (labels, values, present, counts), a row per matching series with chunks in the range, sorted by
        labels; counts[i] is (samples read, samples other than stale markers). `between()` is called between
        slices of about `slice_samples` samples (a deadline check). Chunks are reported as `select_batch`
        reports them."""
        return self.snapshot(matchers, mint, maxt).evaluate(kernel, eval_ts, range_ms, params, intercept_shift_ms,
                                                            cores.PARTS, between, slice_samples)

    def select_fold(self, matchers: Sequence[Matcher], mint: int, maxt: int, latest_only: bool, op: str,
                    times: np.ndarray, lookback_ms: int, grouping: tuple[str, ...], without: bool):
        """`select_batch`'s read aggregated where it is decoded (`HeadSnapshot.fold`): the matching series
        selected at `times` with `lookback_ms` and folded by `op` into groups `by (grouping)` (or `without`).
        Returns (labels, num_samples, keys, order, result, seen, selected, n_seen): the label sets of the
        series read and their samples, the groups' label sets, and `aggregate.select_fold`'s result. Chunks are
        reported as `select_batch` reports them."""
        return self.snapshot(matchers, mint, maxt, latest_only).fold(op, times, lookback_ms, grouping, without,
                                                                     cores.PARTS)

    def series_labels(self, matchers: Sequence[Matcher], mint: int = INT64_MIN, maxt: int = INT64_MAX
                      ) -> list[Labels]:
        """Label sets of the series matching the matchers that have samples overlapping [mint, maxt]."""
        with self.lock:
            refs = self.index.select(matchers)
            out = []
            for ref in refs.tolist():
                series = self.series.get(ref)
                if series is None:
                    continue
                if mint == INT64_MIN and maxt == INT64_MAX:
                    out.append(series.labels)
                    continue
                lo = series.min_time
                hi = max(series.last_t, series.ooo_t[-1] if series.ooo_t else INT64_MIN)
                if hi >= mint and lo <= maxt:
                    out.append(series.labels)
        out.sort()
        return out

    # block cutting
    def compactable(self) -> bool:
        """True when the head spans more than 1.5 block ranges, as Prometheus decides."""
        return (self.max_time != INT64_MIN and self.min_time != INT64_MAX
                and self.max_time - self.min_time > self.block_range * 3 // 2)

    def series_for_block(self, mint: int, maxt: int) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """Every series' samples in [mint, maxt) for writing a block, sorted by labels."""
        with self.lock:
            items = sorted(self.by_labels.items())
            snapshots = [(labels, *series.snapshot(mint, maxt - 1)) for labels, series in items]
        for labels, chunks, ooo_t, ooo_v in snapshots:
            if not chunks and not ooo_t:
                continue
            ts, vals = xorchunk.decode_chunks(chunks, mint, maxt - 1)
            ts, vals = merge_samples(ts, vals, ooo_t, ooo_v)
            if len(ts):
                yield labels, ts, vals

    def truncate(self, mint: int) -> int:
        """Drop every sample before `mint` (now in a block) and series left empty; returns series removed."""
        with self.lock:
            self.min_valid_time = max(self.min_valid_time, mint)
            removed = []
            for ref, series in self.series.items():
                series.drop_closed_before(mint)
                if series.open is not None and series.last_t < mint:
                    series.open = None
                    series.open_mint = INT64_MAX
                if series.ooo_t and series.ooo_t[0] < mint:
                    cut = bisect.bisect_left(series.ooo_t, mint)
                    del series.ooo_t[:cut]
                    del series.ooo_v[:cut]
                if not series.num_closed and series.open is None and not series.ooo_t:
                    removed.append(ref)
            for ref in removed:
                series = self.series.pop(ref)
                del self.by_labels[series.labels]
                self.series_cache.discard(series)
                name = label_value(series.labels, METRIC_NAME)
                self.series_per_metric[name] -= 1
                if not self.series_per_metric[name]:
                    del self.series_per_metric[name]
            if removed:
                self.series_generation += 1
                self.index.remove(np.asarray(removed, dtype=np.uint64))
                self._label_pairs = {pair: pair for series in self.series.values() for pair in series.labels}
            self.min_time = min((s.min_time for s in self.series.values()), default=INT64_MAX)
            if self.min_time == INT64_MAX:
                self.max_time = max(self.max_time, INT64_MIN)
            return len(removed)
