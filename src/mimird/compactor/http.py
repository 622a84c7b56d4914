"""The compactor's HTTP endpoints: tenant deletion and the tenants and planned-jobs pages."""

from __future__ import annotations

import asyncio
import gzip
import html
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mimird.compactor.blocks import BUCKET_INDEX, mark_tenant_for_deletion
from mimird.compactor.planner import group_key, plan_jobs
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response

if TYPE_CHECKING:
    from mimird.compactor.compactor import Compactor


def rfc3339(seconds: float) -> str:
    """A Unix time as Go's time.Time marshals to JSON (RFC 3339, UTC, with the fraction if any)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def page(title: str, body: str) -> Response:
    return Response.html(f"<!DOCTYPE html>\n<html>\n<head><meta charset=\"UTF-8\"><title>{html.escape(title)}"
                         f"</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


class _IndexedBlock:
    """A block as the bucket index lists it (what the planned-jobs page plans from)."""

    def __init__(self, entry: dict):
        self.ulid = entry["block_id"]
        self.min_time = int(entry["min_time"])
        self.max_time = int(entry["max_time"])


class CompactorAPI:
    """Handlers bound to the compactor."""

    def __init__(self, compactor: Compactor, instance_address: str):
        self.compactor = compactor
        self.bucket = compactor.bucket
        self.address = instance_address

    async def delete_tenant(self, request: Request) -> Response:
        """POST /compactor/delete_tenant: mark the tenant; its blocks go on the next cleanup cycle."""
        await asyncio.to_thread(mark_tenant_for_deletion, self.bucket, request.tenant)
        return Response(200)

    async def delete_tenant_status(self, request: Request) -> Response:
        """GET /compactor/delete_tenant_status: {"tenant_id", "blocks_deleted"}."""
        deleted = await asyncio.to_thread(self.compactor.tenant_blocks_deleted, request.tenant)
        return Response.json({"tenant_id": request.tenant, "blocks_deleted": deleted})

    async def tenants(self, request: Request) -> Response:
        """GET /compactor/tenants: tenants with blocks in the bucket."""
        tenants = await asyncio.to_thread(self.compactor.tenants)
        if request.accepts_json():
            return Response.json({"now": rfc3339(time.time()), "tenants": tenants})
        items = "\n".join(f'<li><a href="tenant/{html.escape(t)}/planned_jobs">{html.escape(t)}</a></li>'
                          for t in tenants)
        return page("Compactor: bucket tenants", f"<p>Current time: {rfc3339(time.time())}</p>\n<ul>\n{items}\n</ul>")

    async def planned_jobs(self, request: Request) -> Response:
        """GET /compactor/tenant/{tenant}/planned_jobs: the merge jobs planned from the bucket index."""
        tenant = request.params["tenant"]
        try:
            index = json.loads(gzip.decompress(await asyncio.to_thread(self.bucket.get, f"{tenant}/{BUCKET_INDEX}")))
        except FileNotFoundError:
            raise HTTPError(404, "Bucket index not found") from None
        except (OSError, ValueError) as exc:
            raise HTTPError(500, f"Failed to read bucket index for tenant: {exc}") from None
        marked = {m["block_id"] for m in index.get("block_deletion_marks") or []}
        blocks = [_IndexedBlock(b) for b in index.get("blocks") or [] if b["block_id"] not in marked]
        jobs = plan_jobs(blocks, self.compactor.ranges_ms, group_key({}))
        rows = [{"key": job.key, "min_time": rfc3339(job.min_time / 1000), "max_time": rfc3339(job.max_time / 1000),
                 "blocks": [b.ulid for b in job.blocks], "compactor": self.address} for job in jobs]
        updated = rfc3339(int(index.get("updated_at", 0)))
        if request.accepts_json():
            return Response.json({"now": rfc3339(time.time()), "bucket_index_updated": updated, "tenant": tenant,
                                  "jobs": rows, "split_jobs_count": 0, "merge_jobs_count": len(rows),
                                  "tenant_split_groups": 1, "tenant_merge_shards": 0})
        show_blocks = request.arg("show_blocks", "") == "on"
        show_compactor = request.arg("show_compactor", "") == "on"
        header = "<th>Job Number</th><th>Start Time</th><th>End Time</th><th>Number of Blocks</th><th>Job Key</th>"
        header += "<th>Blocks</th>" if show_blocks else ""
        header += "<th>Compactor</th>" if show_compactor else ""
        lines = []
        for number, row in enumerate(rows, 1):
            cells = (f"<td>{number}</td><td>{row['min_time']}</td><td>{row['max_time']}</td>"
                     f"<td>{len(row['blocks'])}</td><td>{html.escape(row['key'])}</td>")
            if show_blocks:
                cells += f"<td>{'<br>'.join(row['blocks'])}</td>"
            if show_compactor:
                cells += f"<td>{html.escape(row['compactor'])}</td>"
            lines.append(f"<tr>{cells}</tr>")
        body = (f"<p>Current time: {rfc3339(time.time())}</p>\n<p>Bucket index updated: {updated}</p>\n"
                f"<p>Merge jobs: {len(rows)}</p>\n<table border=\"1\">\n<thead><tr>{header}</tr></thead>\n"
                f"<tbody>\n{''.join(lines)}\n</tbody>\n</table>")
        return page(f"Compactor: planned jobs of tenant {tenant}", body)
