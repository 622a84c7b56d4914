"""Handlers of the endpoints every Mimir service exposes: index, config, status, readiness, metrics."""

from __future__ import annotations

import html
import io
import platform
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mimird import __version__
from mimird.config.schema import OPTIONS, Config
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.services import RUNNING

if TYPE_CHECKING:
    from mimird.app import App

# Key order of Mimir's /api/v1/user_limits response.
USER_LIMITS_KEYS = (
    "compactor_blocks_retention_period", "ingestion_rate", "ingestion_burst_size", "ingestion_burst_factor",
    "max_global_series_per_user", "max_global_series_per_metric", "max_global_exemplars_per_user",
    "max_fetched_chunks_per_query", "max_fetched_series_per_query", "max_fetched_chunk_bytes_per_query",
    "ruler_max_rules_per_rule_group", "ruler_max_rule_groups_per_tenant",
)


def dump_yaml(tree) -> str:
    """YAML text of a nested mapping, in block style."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class StatusAPI:
    """The all-services endpoints, reading the app's config, services and runtime overrides."""

    def __init__(self, app: App):
        self.app = app

    async def index(self, request: Request) -> Response:
        """GET /: links to every admin page this process serves."""
        links = []
        for title, pages in self.app.index_pages():
            items = "".join(f'<li><a href="{html.escape(path)}">{html.escape(label)}</a></li>' for label, path in pages)
            links.append(f"<h2>{html.escape(title)}</h2><ul>{items}</ul>")
        body = ("<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><title>Grafana Mimir</title></head><body>"
                "<h1>mimird</h1><p>A single-process daemon that speaks the Grafana Mimir HTTP API.</p>"
                + "".join(links) + "</body></html>")
        return Response.html(body)

    async def config(self, request: Request) -> Response:
        """GET /config (?mode=diff|defaults): the effective configuration as YAML, secrets masked."""
        mode = request.arg("mode", "")
        if mode == "diff":
            tree = self.app.config.to_tree(only_diff=True)
        elif mode == "defaults":
            tree = Config.defaults().to_tree()
        elif mode == "":
            tree = self.app.config.to_tree()
        else:
            raise HTTPError(400, f"unknown value for mode query parameter: {mode}")
        return Response.text(dump_yaml(tree) if tree else "{}\n")

    async def status_config(self, request: Request) -> Response:
        """GET /api/v1/status/config: Prometheus's shape, with our effective YAML config."""
        return Response.json({"status": "success", "data": {"yaml": dump_yaml(self.app.config.to_tree())}})

    async def status_flags(self, request: Request) -> Response:
        """GET /api/v1/status/flags: Prometheus's shape, every flag and its effective value."""
        config = self.app.config
        flags = {opt.flag: opt.to_text(config.get(opt.path)) for opt in OPTIONS if opt.flag}
        flags["config.file"] = config.config_file
        return Response.json({"status": "success", "data": dict(sorted(flags.items()))})

    async def buildinfo(self, request: Request) -> Response:
        """GET /api/v1/status/buildinfo (also under both prefixes)."""
        return Response.json({"status": "success", "data": {
            "application": "mimird", "version": __version__, "revision": "", "branch": "",
            "goVersion": f"python{platform.python_version()}",
            "features": self.app.features(),
        }})

    async def services(self, request: Request) -> Response:
        """GET /services: each component and its state."""
        states = sorted((svc.name, svc.state) for svc in self.app.services)
        if request.accepts_json():
            return Response.json({"now": _now(), "services": [{"name": n, "status": s} for n, s in states]})
        rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{s}</td></tr>" for n, s in states)
        return Response.html("<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><title>Services' status</title>"
                             f"</head><body><h1>Services' status</h1><p>Current time: {_now()}</p>"
                             f"<table border=\"1\"><thead><tr><th>Service</th><th>Status</th></tr></thead>"
                             f"<tbody>{rows}</tbody></table></body></html>")

    async def ready(self, request: Request) -> Response:
        """GET /ready: 200 once every component runs; 503 while starting or stopping."""
        if self.app.stopping:
            return Response.text("Application is stopping", 503)
        not_running = [svc for svc in self.app.services if svc.state != RUNNING]
        if not_running:
            lines = "".join(f"{svc.name}: {svc.state}\n" for svc in not_running)
            return Response.text(f"Some services are not Running:\n{lines}", 503)
        return Response.text("ready")

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: this process's metrics in the Prometheus text format."""
        return Response(200, generate_latest(self.app.metrics.registry), CONTENT_TYPE_LATEST)

    async def runtime_config(self, request: Request) -> Response:
        """GET /runtime_config (?mode=diff): the runtime config in force."""
        runtime = self.app.runtime_config
        if not runtime.loaded:
            return Response.text("runtime config file doesn't exist")
        mode = request.arg("mode", "")
        if mode not in ("", "diff"):
            raise HTTPError(400, f"unknown value for mode query parameter: {mode}")
        defaults = self.app.config.limit_defaults()
        tree = {}
        for key, value in runtime.current.items():
            if key != "overrides":
                tree[key] = value
        overrides = {}
        for tenant, limits in sorted(runtime.current["overrides"].items()):
            effective = {**defaults, **limits}
            if mode == "diff":
                effective = {k: v for k, v in effective.items() if v != defaults[k]}
            overrides[tenant] = {k: _limit_to_yaml(k, v) for k, v in effective.items()}
        tree["overrides"] = overrides
        return Response.text(dump_yaml(tree))

    async def user_limits(self, request: Request) -> Response:
        """GET /api/v1/user_limits: the tenant's effective limits as JSON, in Mimir's key order."""
        limits = self.app.overrides.for_tenant(request.tenant)
        out = {}
        for key in USER_LIMITS_KEYS:
            value = limits[key]
            if key == "compactor_blocks_retention_period":
                out["compactor_blocks_retention_period_seconds"] = int(value)
            else:
                out[key] = int(value) if isinstance(value, float) and value.is_integer() else value
        return Response.json(out)

    async def memberlist(self, request: Request) -> Response:
        """GET /memberlist: there is no gossip cluster; show the single member and say so."""
        rings = self.app.rings
        member = {"name": rings.instance_id, "address": rings.address, "state": "alive",
                  "joined": datetime.fromtimestamp(rings.registered_at, UTC).isoformat().replace("+00:00", "Z")}
        if request.accepts_json():
            return Response.json({"now": _now(), "members": [member], "gossip": False,
                                  "kv_store": "in-process", "keys": sorted(k for k, _ in _ring_keys())})
        keys = "".join(f"<li>{html.escape(k)}: this instance ({html.escape(t)} ring)</li>" for k, t in _ring_keys())
        return Response.html(
            "<!DOCTYPE html><html><head><meta charset=\"UTF-8\"><title>Memberlist Status</title></head><body>"
            f"<h1>Memberlist Status</h1><p>Current time: {_now()}</p>"
            "<p>mimird runs every component in one process. There is no memberlist cluster and no gossip: "
            "the ring state lives in this process's memory.</p>"
            "<h2>Members</h2><table border=\"1\"><thead><tr><th>Name</th><th>Address</th><th>State</th>"
            f"<th>Joined</th></tr></thead><tbody><tr><td>{html.escape(member['name'])}</td>"
            f"<td>{html.escape(member['address'])}</td><td>alive</td><td>{member['joined']}</td></tr></tbody>"
            f"</table><h2>KV store</h2><ul>{keys}</ul>"
            f"<p>Generated at {time.strftime('%Y-%m-%d %H:%M:%S')}</p></body></html>")


def _ring_keys():
    from mimird.ring import RING_PATHS

    return [(key, title) for key, title in RING_PATHS.values()]


def _limit_to_yaml(name: str, value):
    from mimird.config.schema import LIMIT_OPTIONS

    return LIMIT_OPTIONS[name].to_yaml(value)
