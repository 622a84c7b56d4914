"""A small path router: static segments, `{param}` segments, method dispatch.

Paths are matched on the still-encoded URL, split on `/`, so `%2F` stays inside one segment (the
ruler's namespaces rely on this, as in Mimir); parameters are percent-decoded after matching.
A known path with another method is a 405 with `Allow`; anything else is a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response, decode_path_segment

Handler = Callable[[Request], Awaitable[Response]]

# Resolved paths the router remembers; past this many it starts over (paths with parameters can vary
# without bound).
_RESOLVED_ENTRIES = 4096
_RESOLVED_PATH_CHARS = 512


@dataclass
class Route:
    """One (methods, pattern) -> handler entry and how the server treats its requests."""

    pattern: str
    methods: tuple[str, ...]
    handler: Handler
    name: str
    auth: bool = False  # needs X-Scope-OrgID (spec: "Requires authentication")
    federated: bool = False  # may name several tenants (read paths)
    gzip_request: bool = False  # the server inflates Content-Encoding: gzip bodies
    gzip_response: bool = True  # the server compresses responses for Accept-Encoding: gzip
    max_body: int | None = None  # overrides the server-wide request body limit


@dataclass
class _Node:
    static: dict[str, _Node] = field(default_factory=dict)
    param_name: str | None = None
    param: _Node | None = None
    routes: dict[str, Route] = field(default_factory=dict)


def route_name(pattern: str) -> str:
    """Metric label for a route, as Mimir derives it from the path template."""
    cleaned = "".join(c if c.isalnum() else "_" for c in pattern.replace("{", "").replace("}", ""))
    return "_".join(part for part in cleaned.split("_") if part) or "root"


class Router:
    """Maps (method, raw path) to a Route and its decoded parameters."""

    def __init__(self):
        self._root = _Node()
        self.routes: list[Route] = []
        # (method, raw path) -> (route, decoded parameters) of paths resolved before: the server resolves
        # each request's path twice (for its body limit, then to dispatch) and clients repeat paths.
        self._resolved: dict[tuple[str, str], tuple[Route, dict[str, str]]] = {}

    def add(self, methods: str | tuple[str, ...], pattern: str, handler: Handler, **options) -> Route:
        """Register `handler` for `methods` on `pattern` (e.g. `/ingester/tsdb/{tenant}`)."""
        if isinstance(methods, str):
            methods = tuple(m.strip() for m in methods.split(","))
        route = Route(pattern, methods, handler, route_name(pattern), **options)
        node = self._root
        for segment in _segments(pattern):
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if node.param is None:
                    node.param, node.param_name = _Node(), name
                elif node.param_name != name:
                    raise ValueError(f"conflicting parameter names at {pattern}")
                node = node.param
            else:
                node = node.static.setdefault(segment, _Node())
        for method in methods:
            if method in node.routes:
                raise ValueError(f"duplicate route {method} {pattern}")
            node.routes[method] = route
        self.routes.append(route)
        self._resolved.clear()
        return route

    def resolve(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """Find the route; raise HTTPError 404 or 405 (with Allow) if there is none."""
        known = self._resolved.get((method, raw_path))
        if known is not None:
            return known[0], dict(known[1])
        route, decoded = self._resolve(method, raw_path)
        if len(raw_path) <= _RESOLVED_PATH_CHARS:
            if len(self._resolved) >= _RESOLVED_ENTRIES:
                self._resolved.clear()
            self._resolved[(method, raw_path)] = (route, decoded)
        return route, dict(decoded)

    def _resolve(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        found = self._match(self._root, _segments(raw_path), 0, {})
        if found is None:
            raise HTTPError(404, "404 page not found")
        node, params = found
        route = node.routes.get(method)
        if route is None and method == "HEAD":
            route = node.routes.get("GET")
        if route is None:
            raise HTTPError(405, "", [("Allow", ", ".join(sorted(node.routes)))])
        try:
            decoded = {name: decode_path_segment(value) for name, value in params.items()}
        except UnicodeDecodeError:
            raise HTTPError(400, "invalid percent-encoding in path") from None
        return route, decoded

    def _match(self, node: _Node, segments: list[str], index: int, params: dict[str, str]):
        if index == len(segments):
            return (node, params) if node.routes else None
        segment = segments[index]
        child = node.static.get(segment)
        if child is not None:
            found = self._match(child, segments, index + 1, params)
            if found is not None:
                return found
        if node.param is not None and segment != "":
            found = self._match(node.param, segments, index + 1, {**params, node.param_name: segment})
            if found is not None:
                return found
        return None


def _segments(path: str) -> list[str]:
    if path == "/":
        return [""]
    return path[1:].split("/") if path.startswith("/") else path.split("/")
