"""Rings with one member: this process.

Mimir's components find each other through hash rings kept in a gossiped KV store. mimird runs
them all in one process, so each ring holds exactly this instance, ACTIVE, owning all its tokens;
the heartbeat is a local timestamp refreshed every heartbeat period. The ring pages show this
truthfully, in Mimir's page and JSON shapes, so that tools that read them keep working.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import time
from datetime import UTC, datetime

from mimird.http.request import Request, Response
from mimird.services import Service

# ring page path -> (ring key in Mimir, page title)
RING_PATHS = {
    "/distributor/ring": ("distributor", "Distributor"),
    "/ingester/ring": ("ingester", "Ingester"),
    "/ruler/ring": ("ruler", "Ruler"),
    "/compactor/ring": ("compactor", "Compactor"),
    "/store-gateway/ring": ("store-gateway", "Store-gateway"),
    "/query-scheduler/ring": ("query-scheduler", "Query-scheduler"),
    "/overrides-exporter/ring": ("overrides-exporter", "Overrides-exporter"),
    "/multitenant_alertmanager/ring": ("alertmanager", "Alertmanager"),
}
_HIDE_TOKENS = {"distributor"}  # Mimir's distributor ring page has no token columns


def _tokens(ring: str, instance_id: str, count: int) -> list[int]:
    """Deterministic tokens for this instance in `ring` (stable across restarts, like a tokens file)."""
    tokens: set[int] = set()
    counter = 0
    while len(tokens) < count:
        digest = hashlib.sha256(f"{ring}/{instance_id}/{counter}".encode()).digest()
        for i in range(0, len(digest), 4):
            tokens.add(int.from_bytes(digest[i:i + 4], "big"))
            if len(tokens) == count:
                break
        counter += 1
    return sorted(tokens)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class LocalRings(Service):
    """Every ring's single entry, refreshed by a heartbeat task."""

    name = "ring"

    def __init__(self, instance_id: str, address: str, num_tokens: int, heartbeat_period: float):
        super().__init__()
        self.instance_id = instance_id
        self.address = address
        self.num_tokens = num_tokens
        self.heartbeat_period = heartbeat_period
        self.registered_at = time.time()
        self.last_heartbeat = self.registered_at
        self.tokens = {key: _tokens(key, instance_id, num_tokens) for key, _ in RING_PATHS.values()}
        self._task: asyncio.Task | None = None

    def instance_state(self) -> str:
        return {"Running": "ACTIVE", "Starting": "JOINING", "New": "PENDING"}.get(self.state, "LEAVING")

    async def starting(self) -> None:
        self.registered_at = self.last_heartbeat = time.time()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_period)
            self.last_heartbeat = time.time()

    async def stopping(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def handle_ring_page(self, request: Request) -> Response:
        """GET or POST /<component>/ring: the ring's members (this instance), HTML or JSON."""
        key, title = RING_PATHS[request.route.pattern]
        if request.method == "POST" and request.arg("forget"):
            # Forgetting the only member would have it re-register at its next heartbeat; do that now.
            if request.arg("forget") == self.instance_id:
                self.registered_at = self.last_heartbeat = time.time()
            return Response(302, headers=[("Location", "#")])
        now = time.time()
        tokens = self.tokens[key]
        if request.accepts_json():
            shard = {
                "id": self.instance_id, "state": self.instance_state(), "address": self.address,
                "timestamp": _rfc3339(self.last_heartbeat), "registered_timestamp": _rfc3339(self.registered_at),
                "read_only": False, "read_only_updated_timestamp": "", "zone": "", "tokens": tokens,
            }
            return Response.json({"shards": [shard], "now": _rfc3339(now)})
        show_tokens = request.arg("tokens") == "true"
        age = now - self.last_heartbeat
        beat = datetime.fromtimestamp(self.last_heartbeat, UTC).strftime("%H:%M:%S.%f")[:-3]
        token_cells = "" if key in _HIDE_TOKENS else f"<td>{len(tokens)}</td><td>100%</td>"
        token_heads = "" if key in _HIDE_TOKENS else "<th>Tokens</th><th>Ownership</th>"
        rows = (
            f"<tr><td>{html.escape(self.instance_id)}</td><td></td><td>{self.instance_state()}</td>"
            f"<td>{html.escape(self.address)}</td><td>{_rfc3339(self.registered_at)}</td><td>false</td><td></td>"
            f"<td>{age:.1f}s ago ({beat})</td>{token_cells}"
            f"<td><button name=\"forget\" value=\"{html.escape(self.instance_id)}\" type=\"submit\">Forget</button>"
            "</td></tr>"
        )
        token_list = ""
        if show_tokens and key not in _HIDE_TOKENS:
            token_list = f"<h2>Tokens</h2><p>{html.escape(self.instance_id)}: {', '.join(map(str, tokens))}</p>"
        body = (
            f"<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><title>{title} Ring Status</title></head><body>"
            f"<h1>{title} Ring Status</h1><p>Current time: {_rfc3339(now)}</p>"
            "<p>mimird runs every component in this one process, so this ring has a single member that owns "
            "all of its tokens; no other instance can join it.</p>"
            "<form action=\"\" method=\"POST\"><table border=\"1\"><thead><tr><th>Instance ID</th>"
            "<th>Availability Zone</th><th>State</th><th>Address</th><th>Registered At</th><th>Read-Only</th>"
            f"<th>Read-Only Updated</th><th>Last Heartbeat</th>{token_heads}<th>Actions</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></form>{token_list}</body></html>"
        )
        return Response.html(body)
