"""Tenant isolation through every read endpoint: what tenant A writes is never visible to tenant B.

One daemon (tenant federation, the Influx endpoint, and per-tenant cardinality analysis and exemplars enabled
by runtime overrides) receives A's data through remote write (samples, exemplars, metadata), OTLP and
Influx, and B's own, smaller data through remote write. Every A series has a name starting with ``a_`` and a
label ``a_only``; B's start with ``b_``. As B and as a tenant C that never wrote, each read endpoint (query,
query_range, series, labels, label values, metadata, query_exemplars, remote read, the cardinality API,
user_stats, tsdb_metrics, ``/ingester/tsdb/{tenant}``) must show only that tenant's own data; after a flush
the bucket holds A's series under ``A/`` only. ``A|B`` with federation sees both, each series with its
``__tenant_id__``; a daemon without federation answers ``A|B`` with 422.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
import snappy

from conftest import Daemon, remote_write
from mimird import otlpb, prompb
from mimird.tsdb.block import BlockReader
from mimird.tsdb.labels import Matcher, MatchType

A, B, C = "tenant-a", "tenant-b", "tenant-c"
NOW_MS = int(time.time() * 1000) // 1000 * 1000
START_S, END_S = (NOW_MS - 60_000) / 1000, (NOW_MS + 1000) / 1000
P = "/prometheus/api/v1"

A_SERIES = {(("__name__", "a_requests_total"), ("a_only", "1"), ("job", "api")): [(NOW_MS - 2000, 3.0)],
            (("__name__", "a_temperature"), ("a_only", "1"), ("job", "api")): [(NOW_MS - 2000, 21.5)]}
B_SERIES = {(("__name__", "b_up"), ("job", "db")): [(NOW_MS - 2000, 1.0)]}
A_METADATA = [(1, "a_requests_total", "A's requests", "")]  # type 1 = COUNTER
B_METADATA = [(2, "b_up", "B's up", "")]  # type 2 = GAUGE


def write_a_with_exemplar(daemon: Daemon) -> None:
    request = prompb.WriteRequest()
    series = request.timeseries.add()
    for name, value in (("__name__", "a_latency_seconds"), ("a_only", "1"), ("job", "api")):
        series.labels.add(name=name, value=value)
    series.samples.add(timestamp=NOW_MS - 2000, value=0.25)
    exemplar = series.exemplars.add(timestamp=NOW_MS - 2000, value=0.25)
    exemplar.labels.add(name="trace_id", value="a-trace")
    response = daemon.post("/api/v1/push", content=snappy.compress(request.SerializeToString()),
                           headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                    "X-Prometheus-Remote-Write-Version": "0.1.0", "X-Scope-OrgID": A})
    assert response.status_code == 200, response.text


def write_a_otlp(daemon: Daemon) -> None:
    request = otlpb.ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    attribute = resource_metrics.resource.attributes.add(key="service.name")
    attribute.value.string_value = "a_service"
    metric = resource_metrics.scope_metrics.add().metrics.add(name="a_otlp_gauge")
    point = metric.gauge.data_points.add(time_unix_nano=(NOW_MS - 2000) * 1_000_000, as_double=7.0)
    label = point.attributes.add(key="a_only")
    label.value.string_value = "1"
    response = daemon.post("/otlp/v1/metrics", content=request.SerializeToString(),
                           headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": A})
    assert response.status_code == 200, response.text


def write_a_influx(daemon: Daemon) -> None:
    body = f"a_influx,a_only=1 value=5 {(NOW_MS - 2000) * 1_000_000}\n".encode()
    response = daemon.post("/api/v1/push/influx/write", content=body, headers={"X-Scope-OrgID": A})
    assert response.status_code == 204, response.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("isolation")
    enabled = "    cardinality_analysis_enabled: true\n    max_global_exemplars_per_user: 100\n"
    (workdir / "runtime.yaml").write_text(f"overrides:\n  {A}:\n{enabled}  {B}:\n{enabled}  {C}:\n{enabled}")
    proc = Daemon(workdir, ["-runtime-config.file=runtime.yaml", "-tenant-federation.enabled=true",
                            "-distributor.influx-endpoint-enabled=true"]).start()
    assert remote_write(proc, A, A_SERIES, A_METADATA).status_code == 200
    write_a_with_exemplar(proc)
    write_a_otlp(proc)
    write_a_influx(proc)
    assert remote_write(proc, B, B_SERIES, B_METADATA).status_code == 200
    yield proc
    proc.stop(signal.SIGKILL)


def get(daemon: Daemon, path: str, tenant: str, **params):
    response = daemon.get(P + path, params=params, headers={"X-Scope-OrgID": tenant})
    assert response.status_code == 200, f"{path} {params}: {response.status_code} {response.text}"
    return response.json()


def names_of(results: list[dict]) -> set[str]:
    return {item["metric"]["__name__"] for item in results}


ALL = '{__name__=~".+"}'


def a_names(daemon: Daemon) -> set[str]:
    return names_of(get(daemon, "/query", A, query=ALL, time=END_S)["data"]["result"])


def test_a_sees_everything_it_wrote(server):
    names = a_names(server)
    assert {"a_requests_total", "a_temperature", "a_latency_seconds", "a_otlp_gauge"} <= names
    assert any(name.startswith("a_influx") for name in names), names
    assert all(name.startswith("a_") for name in names), names


@pytest.mark.parametrize("tenant", [B, C])
def test_query_and_query_range(server, tenant):
    own = {B: {"b_up"}, C: set()}[tenant]
    assert names_of(get(server, "/query", tenant, query=ALL, time=END_S)["data"]["result"]) == own
    assert names_of(get(server, "/query_range", tenant, query=ALL, start=START_S, end=END_S,
                        step=15)["data"]["result"]) == own
    assert get(server, "/query", tenant, query='{a_only="1"}', time=END_S)["data"]["result"] == []
    assert get(server, "/query", tenant, query="count(a_requests_total)", time=END_S)["data"]["result"] == []


@pytest.mark.parametrize("tenant", [B, C])
def test_series_labels_and_label_values(server, tenant):
    own = {B: {"b_up"}, C: set()}[tenant]
    series = get(server, "/series", tenant, **{"match[]": ALL, "start": START_S, "end": END_S})["data"]
    assert {item["__name__"] for item in series} == own
    labels = get(server, "/labels", tenant, start=START_S, end=END_S)["data"]
    assert "a_only" not in labels and "service_name" not in labels
    assert set(labels) == ({"__name__", "job"} if own else set())
    assert set(get(server, "/label/__name__/values", tenant, start=START_S, end=END_S)["data"]) == own
    assert get(server, "/label/a_only/values", tenant)["data"] == []
    assert set(get(server, "/label/job/values", tenant)["data"]) == ({"db"} if own else set())


@pytest.mark.parametrize("tenant", [B, C])
def test_metadata(server, tenant):
    assert set(get(server, "/metadata", A)["data"]) >= {"a_requests_total"}
    assert set(get(server, "/metadata", tenant)["data"]) == ({"b_up"} if tenant == B else set())
    assert get(server, "/metadata", tenant, metric="a_requests_total")["data"] == {}


@pytest.mark.parametrize("tenant", [B, C])
def test_query_exemplars(server, tenant):
    params = {"query": ALL, "start": START_S, "end": END_S}
    seen_by_a = get(server, "/query_exemplars", A, **params)["data"]
    assert [item["seriesLabels"]["__name__"] for item in seen_by_a] == ["a_latency_seconds"]
    assert get(server, "/query_exemplars", tenant, **params)["data"] == []


@pytest.mark.parametrize("tenant", [B, C])
def test_remote_read(server, tenant):
    request = prompb.ReadRequest()
    query = request.queries.add(start_timestamp_ms=NOW_MS - 60_000, end_timestamp_ms=NOW_MS + 1000)
    query.matchers.add(type=2, name="__name__", value=".+")  # 2 = regex match
    response = server.post(P + "/read", content=snappy.compress(request.SerializeToString()),
                           headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                    "X-Prometheus-Remote-Read-Version": "0.1.0", "X-Scope-OrgID": tenant})
    assert response.status_code == 200, response.text
    decoded = prompb.ReadResponse()
    decoded.ParseFromString(snappy.uncompress(response.content))
    names = {label.value for ts in decoded.results[0].timeseries for label in ts.labels if label.name == "__name__"}
    assert names == ({"b_up"} if tenant == B else set())


@pytest.mark.parametrize("tenant", [B, C])
def test_cardinality(server, tenant):
    own_count = {B: 1, C: 0}[tenant]
    label_names = get(server, "/cardinality/label_names", tenant)
    assert {item["label_name"] for item in label_names["cardinality"]} == ({"__name__", "job"} if own_count else set())
    values = get(server, "/cardinality/label_values", tenant, **{"label_names[]": "__name__"})
    assert values["series_count_total"] == own_count
    assert {item["label_value"] for entry in values["labels"] for item in entry["cardinality"]} == (
        {"b_up"} if own_count else set())
    active = get(server, "/cardinality/active_series", tenant, selector=ALL)["data"]
    assert {item["__name__"] for item in active} == ({"b_up"} if own_count else set())
    # A's own answer counts only A's series.
    a_total = get(server, "/cardinality/label_values", A, **{"label_names[]": "__name__"})["series_count_total"]
    assert a_total == len(a_names(server))


def test_user_stats_and_tsdb_metrics(server):
    a_series = len(a_names(server))
    for tenant, expected in ((A, a_series), (B, 1)):
        stats = server.get("/api/v1/user_stats", headers={"X-Scope-OrgID": tenant}).json()
        assert stats["numSeries"] == expected, (tenant, stats)
        metrics = server.get("/ingester/tsdb_metrics", headers={"X-Scope-OrgID": tenant}).text
        assert re.search(rf"^prometheus_tsdb_head_series {expected}$", metrics, re.MULTILINE), (tenant, metrics)
    assert server.get("/api/v1/user_stats", headers={"X-Scope-OrgID": C}).json()["numSeries"] == 0


def test_ingester_tsdb_page_shows_only_its_tenant(server):
    a_series = len(a_names(server))
    page_a = server.get(f"/ingester/tsdb/{A}").text
    page_b = server.get(f"/ingester/tsdb/{B}").text
    assert f"TSDB of tenant {A}" in page_a and B not in page_a
    assert f"TSDB of tenant {B}" in page_b and A not in page_b
    assert f"Number of series: {a_series}<" in page_a
    assert "Number of series: 1<" in page_b
    assert server.get(f"/ingester/tsdb/{C}").status_code == 404


def test_federation_sees_both_with_tenant_label(server):
    result = get(server, "/query", f"{A}|{B}", query=ALL, time=END_S)["data"]["result"]
    by_tenant: dict[str, set[str]] = {}
    for item in result:
        by_tenant.setdefault(item["metric"]["__tenant_id__"], set()).add(item["metric"]["__name__"])
    assert by_tenant == {A: a_names(server), B: {"b_up"}}
    picked = get(server, "/query", f"{A}|{B}", query=f'{{__tenant_id__="{B}", __name__=~".+"}}', time=END_S)
    assert names_of(picked["data"]["result"]) == {"b_up"}
    series = get(server, "/series", f"{A}|{B}", **{"match[]": ALL, "start": START_S, "end": END_S})["data"]
    assert {(item["__tenant_id__"], item["__name__"]) for item in series} == {
        (tenant, name) for tenant, names in by_tenant.items() for name in names}
    assert set(get(server, "/label/__tenant_id__/values", f"{A}|{B}")["data"]) == {A, B}


def test_without_federation_several_tenants_are_422(start_daemon):
    daemon = start_daemon()
    response = daemon.get(P + "/query", params={"query": "up"}, headers={"X-Scope-OrgID": f"{A}|{B}"})
    assert response.status_code == 422
    assert "too many tenant IDs present in the request. max: 1 actual: 2" in response.text


def test_flushed_blocks_hold_each_tenant_under_its_own_prefix(server):
    expected = {A: a_names(server), B: {"b_up"}}
    assert server.post("/ingester/flush?wait=true").status_code == 204
    bucket = Path(server.workdir) / "data" / "blocks"
    assert {path.name for path in bucket.iterdir() if path.is_dir()} >= {A, B}
    assert not (bucket / C).exists()
    for tenant, names in expected.items():
        found: set[str] = set()
        metas = list((bucket / tenant).glob("*/meta.json"))
        assert metas, tenant
        for meta in metas:
            with BlockReader(meta.parent) as reader:
                for labels, _, _ in reader.read_series_samples([Matcher(MatchType.NOT_EQUAL, "__name__", "")]):
                    found.add(dict(labels)["__name__"])
        assert found == names, tenant
    # After the flush the queriers still keep the tenants apart (now reading blocks).
    assert names_of(get(server, "/query", B, query=ALL, time=END_S)["data"]["result"]) == {"b_up"}
    assert names_of(get(server, "/query", C, query=ALL, time=END_S)["data"]["result"]) == set()
