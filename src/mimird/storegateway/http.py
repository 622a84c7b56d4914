"""The store-gateway's HTTP pages: tenants, a tenant's blocks, prepare-shutdown."""

from __future__ import annotations

import asyncio
import html
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mimird.compactor.blocks import list_block_ids, list_tenants, scan_tenant
from mimird.compactor.http import page, rfc3339
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.services import RUNNING
from mimird.tsdb.block.meta import decode_ulid, ulid_time_ms
from mimird.util.durations import format_duration

if TYPE_CHECKING:
    from mimird.storegateway.gateway import StoreGateway


def hash_block_id(ulid: str) -> int:
    """FNV-1a (32 bit) of the ULID's 16 bytes, as Mimir's HashBlockID (used for the split ID)."""
    value = 0x811C9DC5
    for byte in decode_ulid(ulid).to_bytes(16, "big"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _time_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StoreGatewayAPI:
    """Handlers bound to the store-gateway."""

    def __init__(self, gateway: StoreGateway):
        self.gateway = gateway
        self.bucket = gateway.bucket

    def _tenants(self) -> list[str]:
        return [t for t in list_tenants(self.bucket) if list_block_ids(self.bucket, t)]

    async def tenants(self, request: Request) -> Response:
        """GET /store-gateway/tenants: tenants with blocks in the bucket."""
        tenants = await asyncio.to_thread(self._tenants)
        now = rfc3339(time.time())
        if request.accepts_json():
            return Response.json({"now": now, "tenants": tenants})
        items = "\n".join(f'<li><a href="tenant/{html.escape(t)}/blocks">{html.escape(t)}</a></li>' for t in tenants)
        return page("Store-gateway: bucket tenants", f"<p>Current time: {now}</p>\n<ul>\n{items}\n</ul>")

    async def tenant_blocks(self, request: Request) -> Response:
        """GET /store-gateway/tenant/{tenant}/blocks?show_deleted=on&show_sources=on&show_parents=on&split_count=N."""
        tenant = request.params["tenant"]
        show_deleted = request.arg("show_deleted", "") == "on"
        show_sources = request.arg("show_sources", "") == "on"
        show_parents = request.arg("show_parents", "") == "on"
        try:
            split_count = int(request.arg("split_count", "0") or 0)
        except ValueError:
            raise HTTPError(400, "invalid split_count") from None
        blocks = await asyncio.to_thread(scan_tenant, self.bucket, tenant)
        if not show_deleted:
            blocks = [b for b in blocks if b.deletion_time is None]
        blocks.sort(key=lambda b: (b.min_time, b.ulid))
        now = rfc3339(time.time())
        if request.accepts_json():
            metas = []
            for block in blocks:
                doc = block.meta.to_json()
                doc["deletedTime"] = rfc3339(block.deletion_time) if block.deletion_time is not None else None
                doc["splitId"] = hash_block_id(block.ulid) % split_count if split_count > 0 else None
                metas.append(doc)
            return Response.json({"now": now, "tenant": tenant, "metas": metas})
        header = ["Block ID"] + (["Split ID"] if split_count > 0 else []) + ["ULID Time", "Min Time", "Max Time",
                                                                            "Duration"]
        header += (["Deletion Time"] if show_deleted else []) + ["Lvl", "Size", "Series", "Samples", "Chunks",
                                                                 "Labels", "No Compact"]
        header += (["Sources"] if show_sources else []) + (["Parents"] if show_parents else [])
        rows = []
        for block in blocks:
            meta = block.meta
            cells = [meta.ulid] + ([str(hash_block_id(meta.ulid) % split_count)] if split_count > 0 else [])
            cells += [_time_text(ulid_time_ms(meta.ulid)), _time_text(meta.min_time), _time_text(meta.max_time),
                      format_duration((meta.max_time - meta.min_time) / 1000)]
            if show_deleted:
                cells.append(rfc3339(block.deletion_time) if block.deletion_time is not None else "")
            size = sum(f.size_bytes for f in meta.files)
            cells += [str(meta.level), f"{size / (1 << 20):.1f} MiB" if size else "", str(meta.num_series),
                      str(meta.num_samples), str(meta.num_chunks),
                      ", ".join(f"{k}={v}" for k, v in sorted(meta.thanos_labels.items())),
                      "true" if block.no_compact else ""]
            if show_sources:
                cells.append(" ".join(meta.sources))
            if show_parents:
                cells.append(" ".join(p.get("ulid", "") for p in meta.parents))
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        body = (f"<p>Current time: {now}</p>\n<form><label><input type=\"checkbox\" name=\"show_deleted\""
                f"{' checked' if show_deleted else ''}> Show deleted</label> <label><input type=\"checkbox\" "
                f"name=\"show_sources\"{' checked' if show_sources else ''}> Show sources</label> <label><input "
                f"type=\"checkbox\" name=\"show_parents\"{' checked' if show_parents else ''}> Show parents</label> "
                f"<label>Split count: <input name=\"split_count\" value=\"{split_count}\"></label> "
                f"<button type=\"submit\">Refresh</button></form>\n<table border=\"1\">\n<thead><tr>"
                + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>\n<tbody>\n" + "\n".join(rows)
                + "\n</tbody>\n</table>")
        return page(f"Store-gateway: blocks of tenant {tenant}", body)

    async def prepare_shutdown(self, request: Request) -> Response:
        """GET|POST|DELETE /store-gateway/prepare-shutdown: the unregister-on-shutdown flag."""
        if request.method == "GET":
            return Response.text("set\n" if self.gateway.prepare_shutdown else "unset\n")
        if self.gateway.state != RUNNING:
            raise HTTPError(503, f"store-gateway is unavailable (current state: {self.gateway.state})")
        self.gateway.prepare_shutdown = request.method == "POST"
        return Response(204)
