"""The store-gateway: select over bucket blocks merged and de-duplicated, label APIs, which blocks a sync
loads (in process); and through the real daemon, a block dropped into the bucket by hand being picked
up and dropped again, the pages and prepare-shutdown."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from mimird.bucket import FilesystemBucket
from mimird.compactor.blocks import mark_for_deletion
from mimird.config.schema import Config
from mimird.storegateway.gateway import StoreGateway
from mimird.tsdb.block import write_block
from mimird.tsdb.labels import Matcher, MatchType

HOUR = 3600_000
T0 = 19675 * 24 * HOUR


def put_block(root: Path, tenant: str, series: dict, mint: int, maxt: int, **kwargs) -> str:
    items = [(labels, np.array([t for t, _ in s], np.int64), np.array([v for _, v in s], np.float64))
             for labels, s in sorted(series.items())]
    (root / tenant).mkdir(parents=True, exist_ok=True)
    return write_block(root / tenant, items, mint, maxt, tenant=tenant, source="test", **kwargs)


def gateway(root: Path) -> StoreGateway:
    config = Config.defaults()
    config._values["blocks_storage.bucket_store.ignore_deletion_marks_delay"] = 60.0
    return StoreGateway(config, FilesystemBucket(root))


def name_is(name: str) -> list[Matcher]:
    return [Matcher(MatchType.EQUAL, "__name__", name)]


def test_select_merges_blocks_and_drops_duplicates(tmp_path):
    root = tmp_path / "bucket"
    a = {(("__name__", "m"), ("i", "1")): [(T0 + k * 1000, float(k)) for k in range(100)],
         (("__name__", "m"), ("i", "2")): [(T0, 5.0)]}
    b = {(("__name__", "m"), ("i", "1")): [(T0 + k * 1000, float(k)) for k in range(50, 150)],
         (("__name__", "other"), ("i", "3")): [(T0 + 1, 1.0)]}
    put_block(root, "t", a, T0, T0 + HOUR)
    put_block(root, "t", b, T0, T0 + HOUR)
    put_block(root, "t", {(("__name__", "m"), ("i", "1")): [(T0 + 2 * HOUR, 7.0)]}, T0 + 2 * HOUR, T0 + 3 * HOUR)
    sg = gateway(root)
    sg.sync_now()
    assert len(sg.loaded_blocks("t")) == 3
    got = [(labels, ts.tolist(), vals.tolist()) for labels, ts, vals in sg.select("t", name_is("m"))]
    assert [g[0] for g in got] == [(("__name__", "m"), ("i", "1")), (("__name__", "m"), ("i", "2"))]
    assert got[0][1] == [T0 + k * 1000 for k in range(150)] + [T0 + 2 * HOUR]
    assert got[0][2] == [float(k) for k in range(150)] + [7.0]
    # time bounds are inclusive and blocks outside them are not read
    bounded = list(sg.select("t", name_is("m"), T0 + 2 * HOUR, T0 + 2 * HOUR))
    assert [(labels, ts.tolist()) for labels, ts, _ in bounded] == [((("__name__", "m"), ("i", "1")), [T0 + 2 * HOUR])]
    assert list(sg.select("nobody", name_is("m"))) == []
    assert sg.label_names("t") == ["__name__", "i"]
    assert sg.label_values("t", "i") == ["1", "2", "3"]
    assert sg.label_values("t", "i", name_is("m")) == ["1", "2"]
    assert sg.label_values("t", "__name__", mint=T0 + 2 * HOUR) == ["m"]


def test_sync_skips_partial_superseded_and_long_deleted_blocks(tmp_path):
    root = tmp_path / "bucket"
    bucket = FilesystemBucket(root)
    s = {(("__name__", "m"),): [(T0, 1.0)]}
    one = put_block(root, "t", s, T0, T0 + HOUR)
    two = put_block(root, "t", {(("__name__", "m"),): [(T0 + HOUR, 1.0)]}, T0 + HOUR, T0 + 2 * HOUR)
    sg = gateway(root)
    sg.sync_now()
    assert sg.loaded_blocks("t") == sorted([one, two])
    # a compacted block holding both: its sources are no longer read (even before they are marked)
    merged = put_block(root, "t", {(("__name__", "m"),): [(T0, 1.0), (T0 + HOUR, 1.0)]}, T0, T0 + 2 * HOUR,
                       level=2, sources=sorted([one, two]))
    partial = put_block(root, "t", {(("__name__", "m"),): [(T0 + 3 * HOUR, 1.0)]}, T0 + 3 * HOUR, T0 + 4 * HOUR)
    (root / "t" / partial / "meta.json").unlink()
    sg.sync_now()
    assert sg.loaded_blocks("t") == [merged]
    # a query holding a block keeps it open across a sync that drops it
    query = sg.select("t", name_is("m"))
    labels, ts, _ = next(query)
    mark_for_deletion(bucket, "t", merged, now=time.time() - 3600)
    sg.sync_now()
    assert sg.loaded_blocks("t") == sorted([one, two])
    assert list(query) == [] and ts.tolist() == [T0, T0 + HOUR]
    # deletion marks younger than the delay keep a block readable
    mark_for_deletion(bucket, "t", one)
    sg.sync_now()
    assert sg.loaded_blocks("t") == sorted([one, two])
    shutil.rmtree(root / "t")
    sg.sync_now()
    assert sg.loaded_blocks("t") == [] and sg.num_loaded() == 0
    asyncio.run(sg.stop())


def loaded_metric(d) -> float:
    match = re.search(r"^cortex_bucket_store_blocks_loaded (\S+)$", d.get("/metrics").text, re.M)
    return float(match.group(1))


def wait_metric(d, value: float, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loaded_metric(d) == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"cortex_bucket_store_blocks_loaded never became {value}: {loaded_metric(d)}")


def test_daemon_picks_up_blocks_dropped_into_the_bucket(start_daemon, tmp_path):
    d = start_daemon("-blocks-storage.bucket-store.sync-interval=200ms",
                     "-blocks-storage.bucket-store.ignore-deletion-marks-delay=1m",
                     "-compactor.compaction-interval=1h")
    assert loaded_metric(d) == 0
    made = tmp_path / "made"
    ulid = put_block(made, "dropped", {(("__name__", "m"), ("i", "1")): [(T0, 1.0), (T0 + 1000, 2.0)]},
                     T0, T0 + HOUR)
    bucket = d.workdir / "data" / "blocks"
    (bucket / "dropped").mkdir(parents=True)
    shutil.copytree(made / "dropped" / ulid, bucket / "dropped" / f".{ulid}")
    (bucket / "dropped" / f".{ulid}").rename(bucket / "dropped" / ulid)
    wait_metric(d, 1)
    tenants = d.get("/store-gateway/tenants", headers={"Accept": "application/json"}).json()
    assert tenants["tenants"] == ["dropped"]
    blocks = d.get("/store-gateway/tenant/dropped/blocks", headers={"Accept": "application/json"}).json()
    assert blocks["tenant"] == "dropped" and [m["ulid"] for m in blocks["metas"]] == [ulid]
    assert blocks["metas"][0]["stats"]["numSamples"] == 2 and blocks["metas"][0]["deletedTime"] is None
    html_page = d.get("/store-gateway/tenant/dropped/blocks?split_count=4").text
    assert ulid in html_page and "Split ID" in html_page
    # marked long ago: the block is no longer read, and the page hides it unless show_deleted=on
    mark = {"id": ulid, "deletion_time": int(time.time()) - 3600, "version": 1}
    (bucket / "dropped" / ulid / "deletion-mark.json").write_text(json.dumps(mark))
    wait_metric(d, 0)
    blocks = d.get("/store-gateway/tenant/dropped/blocks", headers={"Accept": "application/json"}).json()
    assert blocks["metas"] == []
    shown = d.get("/store-gateway/tenant/dropped/blocks?show_deleted=on", headers={"Accept": "application/json"})
    assert shown.json()["metas"][0]["deletedTime"] is not None


def test_prepare_shutdown(start_daemon):
    d = start_daemon()
    assert d.get("/store-gateway/prepare-shutdown").text == "unset\n"
    assert d.post("/store-gateway/prepare-shutdown").status_code == 204
    assert d.get("/store-gateway/prepare-shutdown").text == "set\n"
    assert d.request("DELETE", "/store-gateway/prepare-shutdown").status_code == 204
    assert d.get("/store-gateway/prepare-shutdown").text == "unset\n"
    assert d.request("PUT", "/store-gateway/prepare-shutdown").status_code == 405


def test_blocks_open_on_first_query_and_close_when_idle(tmp_path):
    root = tmp_path / "bucket"
    early = put_block(root, "t", {(("__name__", "m"),): [(T0, 1.0)]}, T0, T0 + HOUR)
    put_block(root, "t", {(("__name__", "m"),): [(T0 + 5 * HOUR, 2.0)]}, T0 + 5 * HOUR, T0 + 6 * HOUR)
    sg = gateway(root)
    sg.idle_timeout = 0.2
    sg.sync_now()
    assert sg.num_loaded() == 2 and sg.num_open() == 0
    assert [ts.tolist() for _, ts, _ in sg.select("t", name_is("m"), T0, T0 + HOUR)] == [[T0]]
    assert sg.num_open() == 1 and sg.blocks["t"][early].reader is not None
    sg.sync_now()
    assert sg.num_open() == 1  # used moments ago
    time.sleep(0.3)
    sg.sync_now()
    assert sg.num_open() == 0
    assert [ts.tolist() for _, ts, _ in sg.select("t", name_is("m"))] == [[T0, T0 + 5 * HOUR]]
    assert sg.num_open() == 2


def test_queries_read_compacted_blocks_through_the_store_gateway(start_daemon):
    from conftest import remote_write

    d = start_daemon("-blocks-storage.bucket-store.sync-interval=200ms", "-compactor.compaction-interval=300ms",
                     "-compactor.first-level-compaction-wait-period=0s")
    series = {(("__name__", "old_metric"), ("i", str(i))): [(T0 + k * 300_000, float(k * (i + 1)))
                                                             for k in range(13 * 12)] for i in range(3)}
    assert remote_write(d, "q", series).status_code == 200
    assert d.post("/ingester/flush?wait=true").status_code == 204
    root = d.workdir / "data" / "blocks" / "q"

    def compacted_and_synced():
        metas = [json.loads(p.read_text()) for p in root.glob("*/meta.json")]
        return any(m["compaction"]["level"] == 2 for m in metas) and loaded_metric(d) >= 2

    deadline = time.monotonic() + 20
    while not compacted_and_synced() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert compacted_and_synced()

    def query():
        # the data is 2023's: beyond -querier.query-ingesters-within, only the store-gateway answers
        resp = d.get("/prometheus/api/v1/query_range", headers={"X-Scope-OrgID": "q"},
                     params={"query": "old_metric", "start": T0 / 1000, "end": (T0 + 13 * HOUR) / 1000, "step": "300"})
        assert resp.status_code == 200, resp.text
        return {r["metric"]["i"]: [(int(t * 1000), float(v)) for t, v in r["values"]]
                for r in resp.json()["data"]["result"]}

    expected = {labels[1][1]: samples for labels, samples in series.items()}
    # Two loaded blocks can also be the first two shipped, synced before the compaction: the compacted block
    # is served from the store-gateway's next sync on, so the answer may be partial until then.
    result = query()
    while result != expected and time.monotonic() < deadline + 5:
        time.sleep(0.1)
        result = query()
    assert result == expected
