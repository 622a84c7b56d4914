"""The remote write fast path (mimird._fast.fastappend) against the plain Python path.

Two in-process distributor+ingester stacks get the same requests: one through `Distributor.ingest`
with the decoded batch (fast path), one with the label/sample lists (the path OTLP and Influx take,
which never uses the series cache). Their answers, heads, WALs and counters must be identical.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from distributor_support import write_request_bytes
from mimird._fast import xorchunk
from mimird._fast.fastappend import SeriesCache, plan_fast_append
from mimird._fast.remotewrite import decode_write_request
from mimird.config.runtime import Overrides
from mimird.config.schema import load_config
from mimird.distributor.distributor import Distributor
from mimird.http.errors import HTTPError
from mimird.ingester.ingester import Ingester
from mimird.services import RUNNING
from mimird.tsdb import head as headmod
from mimird.tsdb import wal as walmod
from mimird.tsdb.head import INT64_MAX, INT64_MIN, Head

HOUR = 3600 * 1000


def raw_request(series, exemplars=None) -> bytes:
    """An uncompressed remote write 1.0 body; `series` is [(label pairs in wire order, [(t, v), ...])]."""
    return write_request_bytes(series, exemplars=exemplars)


class Stack:
    """A Distributor over a real (running) Ingester in `directory`."""

    def __init__(self, directory, fast: bool, *flags: str):
        config, _ = load_config([f"-blocks-storage.tsdb.dir={directory}", "-distributor.ingestion-rate-limit=1e9",
                                 "-distributor.ingestion-burst-size=1000000000", *flags])
        self.overrides = Overrides(config, None)
        self.ingester = Ingester(config, self.overrides, "local", None)
        self.ingester.state = RUNNING
        self.distributor = Distributor(config, self.ingester, "local")
        self.fast = fast
        self.fast_samples = 0  # how many samples the fast path took, to check it was used

    def push(self, tenant: str, raw: bytes):
        """(status, message) of pushing the request."""
        batch = decode_write_request(raw)
        d = self.distributor
        try:
            if self.fast:
                plan_fast = d._plan_fast

                def counting(*args):
                    plan = plan_fast(*args)
                    self.fast_samples += plan.fast_samples if plan is not None else 0
                    return plan

                d._plan_fast = counting
                try:
                    response = d.ingest(tenant, None, None, None, None, batch.exemplars, batch.metadata, batch=batch,
                                        histograms=batch.histograms)
                finally:
                    del d._plan_fast
            else:
                response = d.ingest(tenant, batch.series_labels, batch.sample_offsets.tolist(),
                                    batch.timestamps.tolist(), batch.values.tolist(), batch.exemplars, batch.metadata,
                                    histograms=batch.histograms)
            return response.status, None
        except HTTPError as error:
            return error.status, error.message

    def head(self, tenant: str) -> Head:
        return self.ingester.tenants[tenant].head

    def head_contents(self, tenant: str) -> dict:
        """labels -> (timestamps, value bits, ref, OOO timestamps) of every head series."""
        head = self.head(tenant)
        out = {}
        for labels, series in head.by_labels.items():
            chunks, ooo_t, ooo_v = series.snapshot(INT64_MIN, INT64_MAX)
            ts, vals = xorchunk.decode_chunks(chunks, INT64_MIN, INT64_MAX)
            out[labels] = (ts.tolist(), vals.view(np.uint64).tolist(), series.ref, list(ooo_t),
                           [_bits(v) for v in ooo_v])
        return out | {"min_time": head.min_time, "max_time": head.max_time}

    def wal_contents(self, tenant: str) -> tuple[list, dict]:
        """The WAL's series records in order, and per labels the multiset of logged samples."""
        series_records, samples = [], {}
        by_ref = {}
        for record in walmod.replay(self.ingester.tenants[tenant].wal_dir):
            if isinstance(record, walmod.SeriesRecord):
                series_records.append(sorted(record.series))
                by_ref.update(record.series)
            elif isinstance(record, walmod.SamplesRecord):
                for ref, t, v in zip(record.refs.tolist(), record.timestamps.tolist(), record.values.tolist(),
                                     strict=True):
                    samples.setdefault(by_ref[ref], []).append((t, _bits(v)))
        return series_records, {labels: sorted(found) for labels, found in samples.items()}

    def counters(self, tenant: str) -> dict:
        m = self.distributor.metrics
        found = {}
        for counter in (m.discarded_samples, m.received_samples, m.samples_in, m.received_requests,
                        m.discarded_exemplars, m.received_exemplars):
            for metric in counter.collect():
                for sample in metric.samples:
                    if sample.labels.get("user") == tenant and sample.name.endswith("_total"):
                        found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        db = self.ingester.tenants.get(tenant)
        if db is not None:
            found["ingester"] = (db.samples_appended, db.series_created, db.exemplars_appended, dict(db.discarded))
        return found


def _bits(value: float) -> int:
    return int(np.float64(value).view(np.uint64))


@pytest.fixture
def folds(monkeypatch):
    """How many times a head put a fast plan back among the slow series."""
    calls = []
    original = headmod._merge_fast

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(headmod, "_merge_fast", counting)
    return calls


@pytest.fixture
def stacks(tmp_path):
    def make(*flags):
        return Stack(tmp_path / "fast", True, *flags), Stack(tmp_path / "slow", False, *flags)
    return make


def push_both(fast: Stack, slow: Stack, tenant: str, raw: bytes):
    answer = fast.push(tenant, raw)
    assert answer == slow.push(tenant, raw)
    return answer


def assert_same(fast: Stack, slow: Stack, tenant: str) -> None:
    assert fast.head_contents(tenant) == slow.head_contents(tenant)
    assert fast.wal_contents(tenant) == slow.wal_contents(tenant)
    assert fast.counters(tenant) == slow.counters(tenant)


def name(metric: str, **labels: str) -> tuple:
    return tuple(sorted({"__name__": metric, **labels}.items()))


def test_mixed_request_same_answers_heads_and_wal(stacks, folds):
    fast, slow = stacks()
    now = int(time.time() * 1000) // 1000 * 1000
    t0 = now - 10 * 60 * 1000
    known = [name("up", job=f"j{i}") for i in range(6)]
    ancient = name("ancient")
    seed = [(labels, [(t0, 1.0), (t0 + 15000, 2.0)]) for labels in known] + [(ancient, [(now - 3 * HOUR, 1.0)])]
    assert push_both(fast, slow, "t", raw_request(seed)) == (200, None)
    assert len(fast.head("t").series_cache) == 7
    assert len(slow.head("t").series_cache) == 0  # the list path never fills it
    t1 = t0 + 30000
    mixed = [
        (known[0], [(t1, 3.0), (t1 + 15000, 4.0)]),                   # fast
        (name("new_metric", job="x"), [(t1, 1.0)]),                   # new series
        (known[1], [(t0 + 15000, 2.0)]),                              # identical resend: silently fine
        (known[2], [(t0 + 15000, 9.0)]),                              # duplicate timestamp, other value
        (known[3], [(t0 + 7000, 5.0), (t1, 6.0)]),                    # out of order, then in order
        (known[4], [(t1, 7.0), (t1, 8.0)]),                           # repeated timestamp in the request
        (known[5], [(now + 3600 * 1000, 1.0)]),                       # too far in the future
        (tuple(reversed(known[5])), [(t1, 2.0)]),                     # known labels in another order
        (known[5], [(t1 + 15000, float("nan"))]),                     # and again in order (both slow)
        ((("__name__", "bad-name"),), [(t1, 1.0)]),                   # invalid metric name
        (known[1] + (("zz", ""),), [(t1, 4.0)]),                      # an empty label value is dropped
    ]
    status, message = push_both(fast, slow, "t", raw_request(mixed))
    assert status == 400
    assert fast.fast_samples == 2 and not folds
    assert_same(fast, slow, "t")

    # too old for the head (older than max time - 1h), once the head has moved on
    later = [(labels, [(now, 1.0)]) for labels in known]
    push_both(fast, slow, "t", raw_request(later))
    old = [(ancient, [(now - 2 * HOUR, 1.0)]), (known[0], [(now - 2 * HOUR + 1, 1.0)]),
           (known[1], [(now + 1000, 1.5)]), (name("brand_new"), [(now - 2 * HOUR, 1.0)])]
    status, message = push_both(fast, slow, "t", raw_request(old))
    assert status == 400 and "too old" in message
    assert_same(fast, slow, "t")


def test_known_series_sent_twice_in_one_request_in_other_label_orders(stacks, folds):
    fast, slow = stacks()
    now = int(time.time() * 1000)
    labels = name("m", a="1", b="2")
    assert push_both(fast, slow, "t", raw_request([(labels, [(now - 60000, 1.0)])])) == (200, None)
    # the unsorted copy comes first, with a sample the sorted (fast-looking) copy would overtake
    request = [(tuple(reversed(labels)), [(now - 30000, 2.0), (now - 45000, 2.5)]), (labels, [(now - 20000, 3.0)])]
    push_both(fast, slow, "t", raw_request(request))
    assert_same(fast, slow, "t")
    request = [(labels, [(now - 10000, 4.0)]), (tuple(reversed(labels)), [(now - 15000, 5.0)])]
    push_both(fast, slow, "t", raw_request(request))
    assert_same(fast, slow, "t")
    # twice in the same label order: the second copy is fast if it continues the first
    request = [(labels, [(now - 5000, 6.0)]), (labels, [(now - 4000, 7.0), (now - 3000, 8.0)])]
    push_both(fast, slow, "t", raw_request(request))
    assert_same(fast, slow, "t")
    assert len(folds) == 2 and fast.fast_samples == 5
    # ... and if it does not, the request is appended in order the slow way
    request = [(labels, [(now - 2000, 6.0)]), (labels, [(now - 2500, 7.0), (now - 1000, 8.0)]),
               (labels, [(now, 9.0)])]
    push_both(fast, slow, "t", raw_request(request))
    assert_same(fast, slow, "t")
    assert len(folds) == 3


def test_limits_change_invalidates_the_cache(stacks):
    fast, slow = stacks()
    now = int(time.time() * 1000)
    labels = name("m", job="a-long-value")
    assert push_both(fast, slow, "t", raw_request([(labels, [(now - 2000, 1.0)])])) == (200, None)
    assert push_both(fast, slow, "t", raw_request([(labels, [(now - 1000, 1.0)])])) == (200, None)
    assert fast.fast_samples == 1
    for stack in (fast, slow):
        stack.overrides.defaults["max_label_value_length"] = 5
    status, message = push_both(fast, slow, "t", raw_request([(labels, [(now, 2.0)])]))
    assert status == 400 and "err-mimir-label-value-too-long" in message
    assert fast.fast_samples == 1
    assert len(fast.head("t").series_cache) == 0
    assert_same(fast, slow, "t")
    # back to the old limit: validated again, then fast again
    for stack in (fast, slow):
        stack.overrides.defaults["max_label_value_length"] = 2048
    assert push_both(fast, slow, "t", raw_request([(labels, [(now + 1000, 3.0)])])) == (200, None)
    assert push_both(fast, slow, "t", raw_request([(labels, [(now + 2000, 4.0)])])) == (200, None)
    assert fast.fast_samples == 2
    assert_same(fast, slow, "t")


def test_rate_limited_request_stores_nothing(stacks):
    fast, slow = stacks()
    now = int(time.time() * 1000)
    series = [name("m", i=str(i)) for i in range(3)]
    assert push_both(fast, slow, "t", raw_request([(s, [(now - 5000, 1.0)]) for s in series])) == (200, None)
    for stack in (fast, slow):
        stack.overrides.defaults["ingestion_rate"] = 1.0
        stack.overrides.defaults["ingestion_burst_size"] = 2
    status, message = push_both(fast, slow, "t", raw_request([(s, [(now - 4000, 2.0)]) for s in series]))
    assert status == 429
    assert fast.head_contents("t") == slow.head_contents("t")
    contents = fast.head_contents("t")
    assert [contents[s][0] for s in series] == [[now - 5000]] * 3
    assert_same(fast, slow, "t")


def test_ha_replica_label_is_left_out_as_the_distributor_does(stacks):
    fast, slow = stacks()
    now = int(time.time() * 1000)
    for stack in (fast, slow):
        stack.overrides.defaults["accept_ha_samples"] = True
    with_replica = name("m", cluster="c", __replica__="r1")
    without_cluster = name("m", __replica__="r1")
    # no cluster label in the first series: nothing is dropped, the replica label is stored
    assert push_both(fast, slow, "t", raw_request([(without_cluster, [(now - 5000, 1.0)])])) == (200, None)
    # both HA labels: the replica label is stripped from every series of the request
    assert push_both(fast, slow, "t", raw_request([(with_replica, [(now - 4000, 1.0)])])) == (200, None)
    assert fast.fast_samples == 0
    # m{cluster="c"} is found without its replica label; m{} is new: the stored m{__replica__="r1"}
    # is not it, although the wire bytes of the request's series are those of that one
    request = [(with_replica, [(now - 3000, 2.0)]), (without_cluster, [(now - 3000, 3.0)])]
    assert push_both(fast, slow, "t", raw_request(request)) == (200, None)
    assert fast.fast_samples == 1
    assert {name("m"), name("m", cluster="c"), name("m", __replica__="r1")} <= set(fast.head_contents("t"))
    assert_same(fast, slow, "t")
    request = [(with_replica, [(now - 2000, 4.0)]), (without_cluster, [(now - 2000, 5.0)])]
    assert push_both(fast, slow, "t", raw_request(request)) == (200, None)
    assert fast.fast_samples == 3
    assert_same(fast, slow, "t")
    cache = fast.head("t").series_cache
    batch = decode_write_request(raw_request(request))
    assert cache.lookup(batch, 0, "__replica__") is fast.head("t").by_labels[name("m", cluster="c")]
    assert cache.lookup(batch, 0) is None


def test_exemplars_on_known_series(stacks):
    fast, slow = stacks("-ingester.max-global-exemplars-per-user=100")
    now = int(time.time() * 1000)
    series = [name("m", i=str(i)) for i in range(2)]
    assert push_both(fast, slow, "t", raw_request([(s, [(now - 5000, 1.0)]) for s in series])) == (200, None)
    request = [(series[0], [(now - 4000, 2.0)]), (series[1], [(now - 4000, 2.0)])]
    exemplars = {1: [((("trace_id", "abc"),), 1.0, now - 4000)]}
    assert push_both(fast, slow, "t", raw_request(request, exemplars)) == (200, None)
    assert fast.fast_samples == 1  # the series with an exemplar goes the Python way
    assert list(fast.head("t").exemplars) == list(slow.head("t").exemplars)
    assert_same(fast, slow, "t")


def test_truncate_forgets_removed_series_and_a_stale_plan_is_folded_back(tmp_path):
    fast, slow = Stack(tmp_path / "fast", True), Stack(tmp_path / "slow", False)
    now = int(time.time() * 1000)
    a, b = name("m", s="a"), name("m", s="b")
    for stack in (fast, slow):
        assert stack.push("t", raw_request([(a, [(now - HOUR, 1.0)]), (b, [(now - 60000, 1.0)])]))[0] == 200
    head = fast.head("t")
    assert len(head.series_cache) == 2
    plan = head.plan_fast_append(decode_write_request(raw_request([(b, [(now - 30000, 2.0)])])), None, now + 1000)
    assert plan.fast_samples == 1
    assert head.truncate(now - HOUR + 1) == 1  # `a` leaves the head, and the cache
    assert len(head.series_cache) == 1 and head.series_generation == 1
    # the plan was made before the truncation: its samples go through the full checks instead
    result = head.append([], [0], [], [], fast=plan, positions=[])
    assert result.samples_appended == 1 and result.fast_samples is None
    assert head.by_labels[b].last_t == now - 30000
    with pytest.raises(RuntimeError):
        plan.append(head.block_range)  # and are never appended twice


def test_write_batch_labels_are_built_lazily_and_match():
    pairs = [(("__name__", "m"), ("job", "a")), (("job", "b"), ("__name__", "m")), ()]
    raw = raw_request([(p, [(1000, 1.0)]) for p in pairs], exemplars={1: [((("t", "x"),), 1.0, 1000)]})
    batch = decode_write_request(raw)
    assert [batch.labels_of(i) for i in range(3)] == pairs
    assert batch.series_labels == pairs
    assert batch.num_series == 3
    assert batch.series_extras.tolist() == [0, 1, 0]
    assert batch.label_starts.tolist() == [0, 2, 4, 4]
    with pytest.raises(IndexError):
        decode_write_request(raw).labels_of(3)


def test_series_cache_hits_only_exact_label_bytes():
    head = Head()
    labels = name("m", job="é-ünïcode")
    series, _ = head.get_or_create_series(labels)
    cache = SeriesCache()
    assert cache.add(series) and not cache.add(series)
    assert len(cache) == 1 and cache.memory_bytes > 0
    batch = decode_write_request(raw_request([(labels, [(1, 1.0)]), (tuple(reversed(labels)), [(1, 1.0)]),
                                              (labels + (("x", "y"),), [(1, 1.0)]), (labels[:1], [(1, 1.0)])]))
    assert cache.lookup(batch, 0) is series
    assert [cache.lookup(batch, i) for i in (1, 2, 3)] == [None, None, None]
    assert cache.lookup(batch, 0, "job") is None  # a request that strips `job` never hits
    plan = plan_fast_append(cache, batch, INT64_MIN, INT64_MAX, INT64_MIN)
    assert plan.fast_samples == 1 and plan.slow_indices == [1, 2, 3]
    assert plan.slow_offsets.tolist() == [0, 1, 2, 3]
    refs, ts, vals = plan.append(head.block_range)
    assert refs.tolist() == [series.ref] and ts.tolist() == [1] and vals.tolist() == [1.0]
    assert series.last_t == 1
    cache.clear()
    assert len(cache) == 0 and cache.lookup(batch, 0) is None


def test_many_series_grow_the_cache_and_stale_nan_bits_survive(tmp_path):
    fast, slow = Stack(tmp_path / "fast", True), Stack(tmp_path / "slow", False)
    now = int(time.time() * 1000)
    series = [name("m", i=str(i)) for i in range(3000)]
    stale = float(np.uint64(0x7FF0000000000002).view(np.float64))
    for step in range(3):
        raw = raw_request([(s, [(now - 60000 + step * 1000, stale if step == 2 else float(step))]) for s in series])
        assert push_both(fast, slow, "t", raw) == (200, None)
    assert fast.fast_samples == 6000
    assert len(fast.head("t").series_cache) == 3000
    contents = fast.head_contents("t")
    assert contents[series[7]][1][-1] == 0x7FF0000000000002
    assert math.isnan(stale)
    assert_same(fast, slow, "t")


def test_series_cache_discard_keeps_every_other_entry_reachable():
    head = Head()
    cache = SeriesCache()
    series = [head.get_or_create_series(name("m", i=str(i)))[0] for i in range(3000)]
    for s in series:
        cache.add(s)
    batch = decode_write_request(raw_request([(s.labels, [(1, 1.0)]) for s in series]))
    gone = set(range(0, 3000, 3)) | set(range(1, 3000, 7))
    for i in sorted(gone):
        assert cache.discard(series[i])
    assert not cache.discard(series[0])
    assert len(cache) == 3000 - len(gone)
    for i, s in enumerate(series):
        assert cache.lookup(batch, i) is (None if i in gone else s)
    for i in sorted(gone):
        cache.add(series[i])
    assert all(cache.lookup(batch, i) is s for i, s in enumerate(series))


def test_remote_write_2_batches_take_the_plain_path(tmp_path):
    from mimird._fast.remotewrite import decode_write_request_v2
    from mimird.prompb import writev2

    stack = Stack(tmp_path, True)
    now = int(time.time() * 1000)
    request = writev2.Request(symbols=["", "__name__", "up", "job", "a"])
    for step in range(3):
        request.timeseries.add(labels_refs=[1, 2, 3, 4]).samples.add(value=float(step), timestamp=now - 3000 + step)
    batch = decode_write_request_v2(request.SerializeToString())
    assert batch.label_spans is None
    d = stack.distributor
    assert d.ingest("t", None, None, None, None, batch=batch).status == 200
    for series in request.timeseries:
        series.samples[0].timestamp += 10
    batch = decode_write_request_v2(request.SerializeToString())
    assert d.ingest("t", None, None, None, None, batch=batch).status == 200  # a known series, still plain
    assert stack.head_contents("t")[name("up", job="a")][0] == [now - 3000, now - 2999, now - 2998, now - 2990,
                                                                now - 2989, now - 2988]
    assert len(stack.head("t").series_cache) == 0
