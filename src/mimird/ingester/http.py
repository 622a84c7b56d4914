"""The ingester's HTTP endpoints (spec section "Ingester"), answering as Mimir's do."""

from __future__ import annotations

import html
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.services import RUNNING

if TYPE_CHECKING:
    from mimird.ingester.ingester import Ingester

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _format_time(ms: int) -> str:
    """Mimir's page format for a TSDB time: `<RFC3339 UTC> (<ms>)`, with the special values spelled out."""
    if ms in (INT64_MIN, INT64_MAX):
        return "math.MinInt64" if ms == INT64_MIN else "math.MaxInt64"
    if ms == 0:
        return "0"
    text = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{text} ({ms})"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class IngesterAPI:
    """Handlers bound to the ingester component."""

    def __init__(self, ingester: Ingester):
        self.ingester = ingester

    def _require_running(self) -> None:
        if self.ingester.state != RUNNING:
            raise HTTPError(503, f"ingester is unavailable (current state: {self.ingester.state})")

    async def flush(self, request: Request) -> Response:
        """GET|POST /ingester/flush?tenant=..&wait=true: cut heads into blocks and ship them. Always 204."""
        self._require_running()
        tenants = request.form.get("tenant") or None
        wait = request.arg("wait", "") == "true"
        task = self.ingester.start_flush(tenants)
        if wait:
            await task
        return Response(204)

    async def prepare_shutdown(self, request: Request) -> Response:
        """GET|POST|DELETE /ingester/prepare-shutdown: the persistent flush-and-unregister-on-shutdown mark."""
        if request.method == "GET":
            return Response.text("set\n" if self.ingester.shutdown_marker.exists() else "unset\n")
        self._require_running()
        self.ingester.set_prepare_shutdown(request.method == "POST")
        return Response(204)

    async def shutdown(self, request: Request) -> Response:
        """POST /ingester/shutdown: flush every tenant's head, then stop the ingester. The process stays up."""
        self._require_running()
        await self.ingester.shutdown_now()
        return Response(204)

    async def prepare_partition_downscale(self, request: Request) -> Response:
        """Partition downscale exists only with ingest storage (Kafka), which mimird does not have."""
        raise HTTPError(405, "prepare-partition-downscale is only available with ingest storage, "
                             "which mimird does not use")

    async def prepare_instance_ring_downscale(self, request: Request) -> Response:
        """GET|POST|DELETE: read-only mode (writes refused, reads served), with when it was set."""
        ingester = self.ingester
        if request.method != "GET":
            self._require_running()
        if request.method == "POST" and not ingester.read_only_since:
            ingester.read_only_since = time.time()
        elif request.method == "DELETE":
            if ingester.flush_lock.locked():
                raise HTTPError(409, "cannot clear read-only mode while forced compaction is pending or in progress")
            ingester.read_only_since = 0.0
        return Response.json({"timestamp": int(ingester.read_only_since)})

    async def unregister_on_shutdown(self, request: Request) -> Response:
        """GET|PUT|DELETE /ingester/unregister-on-shutdown with `{"unregister": bool}`."""
        ingester = self.ingester
        if request.method == "PUT":
            try:
                body = json.loads(request.body or b"null")
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("unregister"), bool):
                raise HTTPError(400, "")
            ingester.unregister_on_shutdown = body["unregister"]
        elif request.method == "DELETE":
            ingester.unregister_on_shutdown = ingester.config.ingester.ring.unregister_on_shutdown
        return Response.json({"unregister": ingester.unregister_on_shutdown})

    async def tsdb_metrics(self, request: Request) -> Response:
        """GET /ingester/tsdb_metrics: the tenant's own TSDB metrics in the Prometheus text format."""
        db = self.ingester.tsdb(request.tenant, create=False)
        if db is None:
            raise HTTPError(404, "user registry not found")
        return Response(200, self.ingester.tenant_metrics_text(request.tenant),
                        "text/plain; version=0.0.4; charset=utf-8")

    async def tenants(self, request: Request) -> Response:
        """GET /ingester/tenants: tenants with a TSDB here, their blocks and head time range."""
        rows = self.ingester.tenant_rows()
        if request.accepts_json():
            return Response.json({"Now": _now(), "Tenants": [{
                "Tenant": r["tenant"], "Blocks": r["blocks"], "MinTime": _format_time(r["min_time"]),
                "MaxTime": _format_time(r["max_time"]), "PastGracePeriod": r["past_grace"],
                "FutureGracePeriod": r["future_grace"], "Warning": r["warning"]} for r in rows]})
        body = "".join(
            f"<tr><td><a href=\"tsdb/{html.escape(r['tenant'])}\">{html.escape(r['tenant'])}</a></td>"
            f"<td>{r['blocks']}</td><td>{_format_time(r['min_time'])}</td><td>{_format_time(r['max_time'])}</td>"
            f"<td>(-{html.escape(r['past_grace'])}, +{html.escape(r['future_grace'])})</td>"
            f"<td>{html.escape(r['warning'])}</td></tr>" for r in rows)
        return Response.html(
            "<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><title>Ingester tenants</title></head><body>"
            f"<h1>Ingester tenants</h1><p>Current time: {_now()}</p><table border=\"1\"><thead><tr>"
            "<th>Tenant</th><th>Blocks</th><th>Head MinT</th><th>Head MaxT</th><th>Grace interval</th>"
            f"<th>Warning</th></tr></thead><tbody>{body}</tbody></table></body></html>")

    async def tenant_tsdb(self, request: Request) -> Response:
        """GET /ingester/tsdb/{tenant}: the head's state and the tenant's blocks."""
        tenant = request.params["tenant"]
        info = self.ingester.tenant_details(tenant)
        if info is None:
            raise HTTPError(404, f"TSDB not found for tenant {tenant}")
        if request.accepts_json():
            return Response.json(info)
        head = info["head"]
        blocks = "".join(
            f"<tr><td>{b['id']}</td><td>{_format_time(b['min_time'])}</td><td>{_format_time(b['max_time'])}</td>"
            f"<td>{b['series']}</td><td>{b['chunks']}</td><td>{b['samples']}</td><td></td>"
            f"<td>{'yes' if b['uploaded'] else 'no'}</td></tr>" for b in info["blocks"])
        return Response.html(
            "<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><title>Ingester TSDB</title></head><body>"
            f"<h1>TSDB of tenant {html.escape(tenant)}</h1><p>Current time: {_now()}</p><h2>Head</h2><ul>"
            f"<li>Number of series: {head['series']}</li><li>Min time: {_format_time(head['min_time'])}</li>"
            f"<li>Max time: {_format_time(head['max_time'])}</li>"
            f"<li>Appendable min valid time: {head['appendable_min_time']}</li>"
            f"<li>Min OOO time: {_format_time(head['min_ooo_time'])}</li>"
            f"<li>Max OOO time: {_format_time(head['max_ooo_time'])}</li></ul>"
            "<h2>Blocks</h2><table border=\"1\"><thead><tr><th>ID</th><th>Min Time</th><th>Max Time</th>"
            "<th>Number of Series</th><th>Number of Chunks</th><th>Number of Samples</th>"
            f"<th>Compaction Hints</th><th>Uploaded</th></tr></thead><tbody>{blocks}</tbody></table></body></html>")
