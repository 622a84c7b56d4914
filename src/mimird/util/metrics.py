"""The process's own metrics registry, exposed at /metrics in the Prometheus text format.

prometheus_client does the exposition (escaping, histogram layout, content negotiation); this module
owns the metric definitions shared by the HTTP server and build information.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

from mimird import __version__


class Metrics:
    """The registry and the server-level metrics, named as Mimir names them."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        self.request_duration = Histogram(
            "cortex_request_duration_seconds", "Time (in seconds) spent serving HTTP requests.",
            ["method", "route", "status_code", "ws"], registry=self.registry)
        self.inflight_requests = Gauge(
            "cortex_inflight_requests", "Current number of inflight requests.", ["method", "route"],
            registry=self.registry)
        self.requests_total = Counter(
            "cortex_http_requests", "Number of HTTP requests answered, by route and status code.",
            ["method", "route", "status_code"], registry=self.registry)
        build = Gauge("cortex_build_info", "A metric with a constant '1' value labeled by version, revision, "
                      "branch and the runtime mimird was built with.",
                      ["version", "revision", "branch", "goversion"], registry=self.registry)
        build.labels(__version__, "", "", f"python{platform.python_version()}").set(1)
        # (method, route, status) -> the children of request_duration and requests_total: `.labels()`
        # validates and locks on every call, a dictionary lookup does not. Bounded by the route table.
        self._request_children: dict[tuple[str, str, int], tuple] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request and its duration."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            code = str(status)
            children = (self.request_duration.labels(method, route, code, "false"),
                        self.requests_total.labels(method, route, code))
            self._request_children[key] = children
        children[0].observe(seconds)
        children[1].inc()
