"""The HA tracker through the real daemon (election, 202 for the other replica, failover, the cluster limit,
the replica label stripped, the page, state across a restart) and its election rules directly."""

from __future__ import annotations

import json
import signal
import time

import pytest

from distributor_support import metric_value, module_daemon, now_ms, push, stored_series
from mimird.distributor.hatracker import HADecline, HATracker

HA_FLAGS = ["-distributor.ha-tracker.enable=true", "-distributor.ha-tracker.enable-for-all-users=true",
            "-distributor.ha-tracker.update-timeout=100ms", "-distributor.ha-tracker.update-timeout-jitter-max=0s",
            "-distributor.ha-tracker.failover-timeout=1200ms"]

RUNTIME = """
overrides:
  one-cluster:
    ha_max_clusters: 1
  sticky:
    ha_tracker_failover_timeout: 1h
  short-values:
    max_label_value_length: 5
  other-labels:
    ha_cluster_label: prom_cluster
    ha_replica_label: prom_replica
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from module_daemon(tmp_path_factory, "ha", HA_FLAGS, RUNTIME)


def sample(replica: str, cluster: str = "c1", name: str = "up", ts: int | None = None, extra=()):
    return [((("__name__", name), ("cluster", cluster), ("__replica__", replica), *extra),
             [(ts if ts is not None else now_ms(), 1.0)])]


def not_elected(replica: str, elected: str) -> str:
    return f"replicas did not match, rejecting sample: replica={replica}, elected={elected}\n"


def elected(d, tenant: str) -> dict:
    response = d.get("/distributor/ha_tracker", headers={"Accept": "application/json"})
    assert response.status_code == 200
    return {(row["userID"], row["cluster"]): row for row in response.json()["elected"]}


def test_first_replica_is_elected_and_others_get_202(d):
    assert push(d, "t1", sample("a")).status_code == 200
    response = push(d, "t1", sample("b"))
    assert response.status_code == 202
    assert response.text == not_elected("b", "a")
    assert metric_value(d, "cortex_distributor_deduped_samples_total", user="t1", cluster="c1") == 1
    # the replica label is gone, the cluster label kept
    assert stored_series(d, "t1") == {(("__name__", "up"), ("cluster", "c1"))}
    assert elected(d, "t1")[("t1", "c1")]["replica"] == "a"


def test_only_the_first_series_decides(d):
    # the first series has no HA labels: the whole request is accepted as it is, replica labels kept
    series = [((("__name__", "plain"),), [(now_ms(), 1.0)])] + sample("z", name="kept")
    assert push(d, "t2", series).status_code == 200
    assert (("__name__", "kept"), ("__replica__", "z"), ("cluster", "c1")) in stored_series(d, "t2")
    assert metric_value(d, "cortex_distributor_non_ha_samples_received_total", user="t2") == 2


def test_failover_after_the_timeout(d):
    assert push(d, "t3", sample("a")).status_code == 200
    assert push(d, "t3", sample("b")).status_code == 202
    time.sleep(1.3)  # the elected replica is silent for longer than the failover timeout
    assert push(d, "t3", sample("b")).status_code == 200
    assert push(d, "t3", sample("a")).status_code == 202
    row = elected(d, "t3")[("t3", "c1")]
    assert row["replica"] == "b"
    assert metric_value(d, "cortex_ha_tracker_elected_replica_changes_total", user="t3", cluster="c1") == 1
    # one series: the replica label never reached storage
    assert stored_series(d, "t3") == {(("__name__", "up"), ("cluster", "c1"))}


def test_a_sending_replica_keeps_its_election(d):
    deadline = time.monotonic() + 1.6
    while time.monotonic() < deadline:
        assert push(d, "t4", sample("a")).status_code == 200
        assert push(d, "t4", sample("b")).status_code == 202
        time.sleep(0.15)


def test_clusters_are_independent_and_limited(d):
    assert push(d, "one-cluster", sample("a", "c1")).status_code == 200
    response = push(d, "one-cluster", sample("a", "c2"))
    assert response.status_code == 400
    assert response.text == (
        "the write request has been rejected because the maximum number of high-availability (HA) clusters has "
        "been reached for this tenant (limit: 1) (err-mimir-tenant-too-many-ha-clusters). To adjust the related "
        "per-tenant limit, configure -distributor.ha-tracker.max-clusters, or contact your service administrator.\n")
    assert metric_value(d, "cortex_discarded_samples_total", reason="too_many_ha_clusters", user="one-cluster") == 1
    assert push(d, "t5", sample("a", "c1")).status_code == 200
    assert push(d, "t5", sample("b", "c2")).status_code == 200


def test_a_too_long_replica_is_left_to_validation(d):
    # not tracked, not stripped: the series then fails validation on the replica's value
    response = push(d, "short-values", sample("replica-1"))
    assert response.status_code == 400
    assert "label: '__replica__', value: 'replica-1'" in response.text
    assert ("short-values", "c1") not in elected(d, "short-values")


def test_per_tenant_label_names(d):
    labels = (("__name__", "up"), ("prom_cluster", "x"), ("prom_replica", "r1"))
    assert push(d, "other-labels", [(labels, [(now_ms(), 1.0)])]).status_code == 200
    other = (("__name__", "up"), ("prom_cluster", "x"), ("prom_replica", "r2"))
    assert push(d, "other-labels", [(other, [(now_ms(), 1.0)])]).status_code == 202
    assert stored_series(d, "other-labels") == {(("__name__", "up"), ("prom_cluster", "x"))}


def test_page_html_and_json(d):
    assert push(d, "t6", sample("a")).status_code == 200
    page = d.get("/distributor/ha_tracker")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for heading in ("HA Tracker Status", "User ID", "Cluster", "Replica", "Last Election", "Elected Last Seen Time",
                    "Time Until Update", "Time Until Failover", "<td>t6</td>"):
        assert heading in page.text
    document = d.get("/distributor/ha_tracker", headers={"Accept": "application/json"}).json()
    row = next(r for r in document["elected"] if r["userID"] == "t6")
    assert set(row) == {"userID", "cluster", "replica", "lastElectionTime", "electedLastSeenTime", "updateDuration",
                        "failoverDuration"}
    assert row["replica"] == "a" and row["lastElectionTime"].endswith("Z")
    assert 0 < row["failoverDuration"] <= 1_200_000_000 and isinstance(row["updateDuration"], int)
    users = [(r["userID"], r["cluster"]) for r in document["elected"]]
    assert users == sorted(users)
    assert 'href="/distributor/ha_tracker"' in d.get("/").text


def test_failover_timeout_must_exceed_update_timeout(start_daemon):
    daemon = start_daemon("-distributor.ha-tracker.enable=true", "-distributor.ha-tracker.failover-timeout=20s",
                          wait_ready=False)
    assert daemon.proc.wait(20) == 1
    assert ("error: HA Tracker failover timeout (20s) must be at least 1s greater than update timeout - max jitter "
            "(21s)") in daemon.log()


def test_disabled_tracker_has_no_page_but_still_strips_the_replica(start_daemon):
    daemon = start_daemon("-distributor.ha-tracker.enable-for-all-users=true")
    assert daemon.get("/distributor/ha_tracker").status_code == 404
    assert push(daemon, "t", sample("a")).status_code == 200
    assert push(daemon, "t", sample("b", ts=now_ms() + 1)).status_code == 200
    assert stored_series(daemon, "t") == {(("__name__", "up"), ("cluster", "c1"))}


LIMITS = {"ha_tracker_update_timeout": 15.0, "ha_tracker_update_timeout_jitter_max": 0.0,
          "ha_tracker_failover_timeout": 30.0, "ha_max_clusters": 100}


def test_election_rules_directly(tmp_path):
    tracker = HATracker(tmp_path)
    tracker.check_replica("u", "c", "a", LIMITS, now_ms=0)
    tracker.check_replica("u", "c", "a", LIMITS, now_ms=10_000)  # within the update timeout: no write
    assert tracker.elected[("u", "c")].received_at == 0
    tracker.check_replica("u", "c", "a", LIMITS, now_ms=16_000)  # past it: the receive time is refreshed
    assert tracker.elected[("u", "c")].received_at == 16_000
    with pytest.raises(HADecline) as declined:
        tracker.check_replica("u", "c", "b", LIMITS, now_ms=45_000)  # 29 s after the last refresh
    assert declined.value.status == 202
    tracker.check_replica("u", "c", "b", LIMITS, now_ms=46_000)  # 30 s: failover
    desc = tracker.elected[("u", "c")]
    assert (desc.replica, desc.elected_at, desc.elected_changes) == ("b", 46_000, 1)
    reloaded = HATracker(tmp_path)
    reloaded.load()
    assert reloaded.elected == tracker.elected


def test_background_reelection_and_cleanup():
    tracker = HATracker(None)
    tracker.check_replica("u", "c", "a", LIMITS, now_ms=0)
    with pytest.raises(HADecline):
        tracker.check_replica("u", "c", "b", LIMITS, now_ms=20_000)
    tracker.maintain(lambda tenant: LIMITS, now_ms=25_000)
    assert tracker.elected[("u", "c")].replica == "a"  # a is not yet past the failover timeout
    tracker.maintain(lambda tenant: LIMITS, now_ms=31_000)
    assert tracker.elected[("u", "c")].replica == "b"  # b was seen recently and a went quiet
    tracker.maintain(lambda tenant: LIMITS, now_ms=20_000 + 31 * 60_000)
    assert tracker.elected[("u", "c")].deleted_at and tracker.rows(lambda t: LIMITS) == []
    tracker.check_replica("u", "c", "z", LIMITS, now_ms=20_000 + 32 * 60_000)  # a deleted entry is free
    assert tracker.elected[("u", "c")].replica == "z"
    tracker.elected[("u", "c")].deleted_at = 1
    tracker.maintain(lambda tenant: LIMITS, now_ms=20_000 + 62 * 60_000)
    assert ("u", "c") not in tracker.elected


def test_state_survives_a_restart(d):
    # last in the module: it restarts the module's daemon ('sticky' has a failover timeout of 1h)
    assert push(d, "sticky", sample("a")).status_code == 200
    state = json.loads((d.workdir / "data" / "tsdb" / "ha-tracker.json").read_text())
    assert ("sticky", "c1", "a") in [(e["tenant"], e["cluster"], e["replica"]) for e in state["replicas"]]
    d.stop(signal.SIGKILL)  # written through on every change: survives a crash too
    d.start()
    assert elected(d, "sticky")[("sticky", "c1")]["replica"] == "a"
    response = push(d, "sticky", sample("b"))
    assert response.status_code == 202 and response.text == not_elected("b", "a")
