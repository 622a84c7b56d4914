"""Tenant deletion through the real daemon: the mark, the compactor deleting every block on its next
cleanup, the ingester forgetting the tenant's head, and the status endpoint."""

from __future__ import annotations

import json
import time

from conftest import remote_write

HOUR = 3600_000
T0 = 19675 * 24 * HOUR
FAST = ("-compactor.compaction-interval=500ms", "-compactor.cleanup-interval=500ms")


def series(name: str) -> dict:
    return {(("__name__", name), ("job", "j")): [(T0 + k * 60_000, float(k)) for k in range(200)]}


def test_delete_tenant_removes_blocks_and_head(start_daemon):
    d = start_daemon(*FAST)
    for tenant in ("gone", "stay"):
        assert remote_write(d, tenant, series(f"m_{tenant}")).status_code == 200
    assert d.post("/ingester/flush?wait=true").status_code == 204
    root = d.workdir / "data" / "blocks"
    assert any((root / "gone").glob("01*/meta.json"))
    assert remote_write(d, "gone", {(("__name__", "late"),): [(T0 + 5 * HOUR, 1.0)]}).status_code == 200
    status = d.get("/compactor/delete_tenant_status", headers={"X-Scope-OrgID": "gone"})
    assert status.json() == {"tenant_id": "gone", "blocks_deleted": False}

    assert d.post("/compactor/delete_tenant").status_code == 401
    resp = d.post("/compactor/delete_tenant", headers={"X-Scope-OrgID": "gone"})
    assert (resp.status_code, resp.content) == (200, b"")
    mark = json.loads((root / "gone" / "markers" / "tenant-deletion-mark.json").read_text())
    assert abs(mark["deletion_time"] - time.time()) < 60

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = d.get("/compactor/delete_tenant_status", headers={"X-Scope-OrgID": "gone"}).json()
        if status["blocks_deleted"] and d.get("/ingester/tsdb/gone").status_code == 404:
            break
        time.sleep(0.1)
    assert status == {"tenant_id": "gone", "blocks_deleted": True}
    assert not any((root / "gone").glob("01*"))
    assert not (root / "gone" / "bucket-index.json.gz").exists()
    assert d.get("/ingester/tsdb/gone").status_code == 404
    assert not (d.workdir / "data" / "tsdb" / "gone").exists()
    # the other tenant is untouched
    assert any((root / "stay").glob("01*/meta.json"))
    assert d.get("/ingester/tsdb/stay").status_code == 200
    tenants = d.get("/compactor/tenants", headers={"Accept": "application/json"}).json()["tenants"]
    assert tenants == ["stay"]


def test_deleted_tenant_files_go_after_the_cleanup_delay(start_daemon):
    d = start_daemon(*FAST, "-compactor.tenant-cleanup-delay=0s")
    assert remote_write(d, "gone", series("m")).status_code == 200
    assert d.post("/ingester/flush?wait=true").status_code == 204
    assert d.post("/compactor/delete_tenant", headers={"X-Scope-OrgID": "gone"}).status_code == 200
    root = d.workdir / "data" / "blocks"
    deadline = time.monotonic() + 20
    while (root / "gone").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (root / "gone").exists()
    status = d.get("/compactor/delete_tenant_status", headers={"X-Scope-OrgID": "gone"}).json()
    assert status == {"tenant_id": "gone", "blocks_deleted": True}
