"""Cardinality analysis (`<prometheus-http-prefix>/api/v1/cardinality/...`): label names, label values
and active series of one tenant's in-memory series, as Mimir answers them.

Parameters are validated first, as Mimir's query-frontend does (400 JSON `bad_data`); then the per-tenant
`cardinality_analysis_enabled` limit is checked (400 plain text). `count_method=inmemory` counts every
series in the tenant's head; `count_method=active` (and the active_series endpoint) only the series that
received a sample newer than `-ingester.active-series-metrics-idle-timeout` ago, judged by the newest
sample timestamp.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from mimird.frontend.stats import frontend
from mimird.http.request import Request, Response
from mimird.querier import jsonfmt
from mimird.querier.params import ParamError, parse_selector, valid_label_name
from mimird.tsdb.labels import Labels, Matcher

if TYPE_CHECKING:
    from mimird.app import App

DEFAULT_LIMIT = 20
MIN_LIMIT = 0
COUNT_METHODS = ("active", "inmemory")
_GO_INT = re.compile(r"[+-]?\d+\Z")


class CardinalityParamError(ValueError):
    """A parameter the frontend rejects with `bad_data`."""


def _single(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name) or []
    if len(values) > 1:
        raise CardinalityParamError(f"multiple '{name}' params are not allowed")
    return values[0] if values else None


def extract_selector(form: dict[str, list[str]]) -> list[Matcher]:
    """The optional `selector` parameter as matchers (none: every series)."""
    text = _single(form, "selector")
    if text is None:
        return []
    try:
        return parse_selector(text)
    except ParamError as exc:
        raise CardinalityParamError(f"failed to parse selector: {exc.message}") from None


def extract_limit(form: dict[str, list[str]], max_limit: int) -> int:
    """`limit` (default 20) within [0, the tenant's cardinality_analysis_max_results]."""
    text = _single(form, "limit")
    if text is None:
        return DEFAULT_LIMIT
    if not _GO_INT.match(text):
        raise CardinalityParamError(f"strconv.Atoi: parsing {jsonfmt.quote(text)}: invalid syntax")
    limit = int(text)
    if limit < MIN_LIMIT:
        raise CardinalityParamError(f"'limit' param cannot be less than '{MIN_LIMIT}'")
    if limit > max_limit:
        raise CardinalityParamError(f"'limit' param cannot be greater than '{max_limit}'")
    return limit


def extract_count_method(form: dict[str, list[str]]) -> str:
    text = _single(form, "count_method")
    if text is None:
        return "inmemory"
    if text not in COUNT_METHODS:
        raise CardinalityParamError(f"invalid 'count_method' param '{text}'. valid options are: "
                                    f"[{','.join(COUNT_METHODS)}]")
    return text


def extract_label_names(form: dict[str, list[str]]) -> list[str]:
    names = form.get("label_names[]") or []
    if not names:
        raise CardinalityParamError("'label_names[]' param is required")
    for name in names:
        if not valid_label_name(name):
            raise CardinalityParamError(f"invalid 'label_names' param '{name}'")
    return sorted(names)


def label_names_cardinality(series: list[Labels], limit: int) -> dict:
    """Mimir's label_names answer: per label name its number of distinct values, largest first."""
    values: dict[str, set[str]] = defaultdict(set)
    for labels in series:
        for name, value in labels:
            values[name].add(value)
    items = sorted(((name, len(vals)) for name, vals in values.items()), key=lambda item: (-item[1], item[0]))
    return {
        "label_values_count_total": sum(count for _, count in items),
        "label_names_count": len(items),
        "cardinality": [{"label_name": name, "label_values_count": count} for name, count in items[:limit]],
    }


def label_values_cardinality(series: list[Labels], names: list[str], limit: int, series_total: int) -> dict:
    """Mimir's label_values answer: per requested label its values' series counts, largest first;
    `series_total` is the tenant's whole series count (not only the selected ones), as Mimir reports."""
    counts: dict[str, dict[str, int]] = {name: defaultdict(int) for name in names}
    for labels in series:
        for name, value in labels:
            if name in counts:
                counts[name][value] += 1
    labels_out = []
    for name, by_value in counts.items():
        if not by_value:
            continue
        ordered = sorted(by_value.items(), key=lambda item: (-item[1], item[0]))
        labels_out.append({
            "label_name": name,
            "label_values_count": len(by_value),
            "series_count": sum(by_value.values()),
            "cardinality": [{"label_value": value, "series_count": count} for value, count in ordered[:limit]],
        })
    labels_out.sort(key=lambda item: (-item["series_count"], item["label_name"]))
    return {"series_count_total": series_total, "labels": labels_out}


class CardinalityAPI:
    """Handlers of the cardinality endpoints for one tenant at a time."""

    def __init__(self, app: App):
        self.app = app

    def _limits(self, tenant: str) -> dict:
        return self.app.overrides.for_tenant(tenant)

    def _head_series(self, tenant: str, matchers: list[Matcher], active_only: bool) -> list[Labels]:
        db = self.app.ingester.tenants.get(tenant)
        if db is None:
            return []
        head = db.head
        idle_ms = int(self.app.config.ingester.active_series_metrics_idle_timeout * 1000)
        cutoff = int(time.time() * 1000) - idle_ms
        with head.lock:
            refs = head.index.select(matchers) if matchers else head.index.all_postings()
            out = []
            for ref in refs.tolist():
                series = head.series.get(ref)
                if series is None:
                    continue
                if active_only:
                    newest = max(series.last_t, series.ooo_t[-1] if series.ooo_t else series.last_t)
                    if newest < cutoff:
                        continue
                out.append(series.labels)
        return out

    def _disabled(self, tenant: str) -> Response | None:
        if not self._limits(tenant)["cardinality_analysis_enabled"]:
            return Response.error(400, f"cardinality analysis is disabled for the tenant: {tenant}")
        return None

    @frontend
    async def label_names(self, request: Request) -> Response:
        """`/api/v1/cardinality/label_names`."""
        tenant = request.tenant
        try:
            matchers = extract_selector(request.form)
            limit = extract_limit(request.form, self._limits(tenant)["cardinality_analysis_max_results"])
            method = extract_count_method(request.form)
        except CardinalityParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        disabled = self._disabled(tenant)
        if disabled is not None:
            return disabled
        series = await asyncio.to_thread(self._head_series, tenant, matchers, method == "active")
        return Response(200, jsonfmt.dumps(label_names_cardinality(series, limit)), "application/json")

    @frontend
    async def label_values(self, request: Request) -> Response:
        """`/api/v1/cardinality/label_values`."""
        tenant = request.tenant
        limits = self._limits(tenant)
        try:
            names = extract_label_names(request.form)
            matchers = extract_selector(request.form)
            limit = extract_limit(request.form, limits["cardinality_analysis_max_results"])
            method = extract_count_method(request.form)
            max_names = limits["label_values_max_cardinality_label_names_per_request"]
            if max_names and len(names) > max_names:
                raise CardinalityParamError(f"label values cardinality request label names limit "
                                            f"(limit: {max_names} actual: {len(names)}) exceeded")
        except CardinalityParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        disabled = self._disabled(tenant)
        if disabled is not None:
            return disabled
        active = method == "active"
        series = await asyncio.to_thread(self._head_series, tenant, matchers, active)
        total = len(series) if not matchers else len(await asyncio.to_thread(self._head_series, tenant, [], active))
        body = jsonfmt.dumps(label_values_cardinality(series, names, limit, total))
        return Response(200, body, "application/json")

    @frontend
    async def active_series(self, request: Request) -> Response:
        """`/api/v1/cardinality/active_series`: label sets of the active series matching `selector`."""
        tenant = request.tenant
        try:
            if not request.form.get("selector"):
                raise CardinalityParamError("missing 'selector' parameter")
            matchers = extract_selector(request.form)
        except CardinalityParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        disabled = self._disabled(tenant)
        if disabled is not None:
            return disabled
        series = await asyncio.to_thread(self._head_series, tenant, matchers, True)
        body = '{"data":[' + ",".join(jsonfmt.labels_json(labels) for labels in sorted(series)) + "]}"
        return Response(200, body, "application/json")

    @frontend
    async def active_native_histogram_metrics(self, request: Request) -> Response:
        """`/api/v1/cardinality/active_native_histogram_metrics`: per metric, the bucket statistics of its
        active native-histogram series. The heads keep float samples only, so there are none to list."""
        tenant = request.tenant
        try:
            if not request.form.get("selector"):
                raise CardinalityParamError("missing 'selector' parameter")
            extract_selector(request.form)
        except CardinalityParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        disabled = self._disabled(tenant)
        if disabled is not None:
            return disabled
        return Response(200, '{"data":[]}', "application/json")
