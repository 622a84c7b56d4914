"""The distributor's pages: `/api/v1/user_stats`, `/distributor/all_user_stats`, `/distributor/ha_tracker`.

HTML by default; the admin pages switch to JSON when `Accept` asks for it, with Mimir's field names
(reference §4 and §5).
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.util.durations import go_duration

if TYPE_CHECKING:
    from mimird.distributor.distributor import Distributor

_PAGE_HEAD = ('<!DOCTYPE html><html><head><meta charset="UTF-8"><title>{title}</title></head><body>'
              '<h1>{title}</h1><p>Current time: {now}</p>')


def rfc3339(ms: float) -> str:
    """A Unix time in milliseconds as Go's time.Time marshals to JSON (RFC 3339, trailing zeros cut)."""
    whole = datetime.fromtimestamp(int(ms // 1000), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = int(ms % 1000)
    return whole + (f".{fraction:03d}".rstrip("0") if fraction else "") + "Z"


def _go_json_numbers(row: dict) -> dict:
    """Whole float64s as Go's encoding/json writes them (`10`, not `10.0`)."""
    return {k: int(x) if isinstance(x, float) and x.is_integer() else x for k, x in row.items()}


class DistributorAPI:
    """HTTP handlers over a Distributor."""

    def __init__(self, distributor: Distributor):
        self.distributor = distributor

    async def user_stats(self, request: Request) -> Response:
        """GET /api/v1/user_stats: the tenant's ingestion rates and series count (JSON only)."""
        return Response.json(_go_json_numbers(self.distributor.user_stats(request.tenant)))

    async def all_user_stats(self, request: Request) -> Response:
        """GET /distributor/all_user_stats: every tenant's stats, HTML or JSON (`Accept` containing json)."""
        rows = self.distributor.all_user_stats()
        if "json" in request.headers.get("accept", ""):
            return Response.json([_go_json_numbers(row) for row in rows])
        body = [_PAGE_HEAD.format(title="Ingester Stats", now=html.escape(rfc3339(time.time() * 1000))),
                "<p><b>NB stats do not account for replication factor, which is currently set to 1</b></p>",
                "<table border=\"1\"><thead><tr><th>User</th><th># Series</th><th>Total Ingest Rate</th>"
                "<th>API Ingest Rate</th><th>Rule Ingest Rate</th></tr></thead><tbody>"]
        for row in rows:
            body.append(f"<tr><td>{html.escape(row['userID'])}</td><td align='right'>{row['numSeries']}</td>"
                        f"<td align='right'>{row['ingestionRate']:.2f}</td>"
                        f"<td align='right'>{row['APIIngestionRate']:.2f}</td>"
                        f"<td align='right'>{row['RuleIngestionRate']:.2f}</td></tr>")
        body.append("</tbody></table></body></html>")
        return Response.html("".join(body))

    async def ha_tracker(self, request: Request) -> Response:
        """GET /distributor/ha_tracker: the elected replica of every (tenant, cluster); 404 when disabled."""
        distributor = self.distributor
        if not distributor.ha_enabled:
            raise HTTPError(404, "404 page not found")
        now_ms = time.time() * 1000
        rows = distributor.ha_tracker.rows(distributor.overrides.for_tenant, int(now_ms))
        if request.accepts_json():
            return Response.json({"elected": [{
                "userID": row["userID"], "cluster": row["cluster"], "replica": row["replica"],
                "lastElectionTime": rfc3339(row["elected_at"]),
                "electedLastSeenTime": rfc3339(row["received_at"]),
                "updateDuration": row["update_ms"] * 1_000_000,
                "failoverDuration": row["failover_ms"] * 1_000_000,
            } for row in rows], "now": rfc3339(now_ms)})
        body = [_PAGE_HEAD.format(title="HA Tracker Status", now=html.escape(rfc3339(now_ms))),
                "<table width=\"100%\" border=\"1\"><thead><tr><th>User ID</th><th>Cluster</th><th>Replica</th>"
                "<th>Last Election</th><th>Elected Last Seen Time</th><th>Time Until Update</th>"
                "<th>Time Until Failover</th></tr></thead><tbody>"]
        for row in rows:
            cells = (row["userID"], row["cluster"], row["replica"], rfc3339(row["elected_at"]),
                     rfc3339(row["received_at"]), go_duration(row["update_ms"] * 1_000_000),
                     go_duration(row["failover_ms"] * 1_000_000))
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        body.append("</tbody></table></body></html>")
        return Response.html("".join(body))
