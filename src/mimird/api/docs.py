"""Renders docs/api.md from the route table: `python -m mimird.api.docs > docs/api.md`.

Every endpoint this build serves, with its methods, whether it needs a tenant, and the function that
handles it, so that a reader goes from a URL to its code in one step.
"""

from __future__ import annotations

import sys
import tempfile


def render_markdown() -> str:
    """The endpoint table of a daemon with default flags (plus a runtime config, which adds two pages)."""
    from mimird.app import App
    from mimird.config.schema import load_config

    with tempfile.TemporaryDirectory() as tmp:
        config, _ = load_config([f"-blocks-storage.tsdb.dir={tmp}/tsdb", f"-blocks-storage.filesystem.dir={tmp}/blocks",
                                 f"-runtime-config.file={tmp}/runtime.yaml", "-distributor.influx-endpoint-enabled"])
        app = App(config)
        routes = sorted(app.router.routes, key=lambda r: r.pattern)
    lines = [
        "# HTTP API",
        "",
        "Generated from the route table (`src/mimird/api/routes.py`) by `python -m mimird.api.docs`; do not edit.",
        "`<P>` is `-http.prometheus-http-prefix` (`/prometheus`), `<AM>` `-http.alertmanager-http-prefix`.",
        "\"Tenant\" marks endpoints that need `X-Scope-OrgID` (when multi-tenancy is on); \"federated\" ones may",
        "name several tenants separated by `|` with `-tenant-federation.enabled`. `/runtime_config` and",
        "`/api/v1/user_limits` exist only with `-runtime-config.file`; the Influx endpoint only with",
        "`-distributor.influx-endpoint-enabled`. Anything not listed answers 404.",
        "",
        "| Path | Methods | Tenant | Handler |",
        "|---|---|---|---|",
    ]
    prefix = config.api.prometheus_http_prefix
    am_prefix = config.api.alertmanager_http_prefix
    for route in routes:
        path = route.pattern
        if path.startswith(prefix + "/"):
            path = "<P>" + path[len(prefix):]
        elif path.startswith(am_prefix + "/"):
            path = "<AM>" + path[len(am_prefix):]
        handler = route.handler
        owner = getattr(handler, "__self__", None)
        module = (type(owner).__module__ if owner is not None else handler.__module__)
        name = getattr(handler, "__qualname__", getattr(handler, "__name__", repr(handler)))
        tenant = ("yes, federated" if route.federated else "yes") if route.auth else ""
        lines.append(f"| `{path}` | {', '.join(route.methods)} | {tenant} | `{module}.{name}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
