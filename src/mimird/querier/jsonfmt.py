"""Prometheus-exact JSON for the querier's API: the response envelope, sample values, timestamps, label
sets and the four PromQL result types.

Prometheus writes its API responses with jsoniter (standard-library compatible), so strings escape
`<`, `>`, `&`, U+2028 and U+2029 as Go's encoding/json does and keep other non-ASCII text as UTF-8;
label sets are objects in label-name order; timestamps are seconds with up to three decimals (never
trailing-zero trimmed: `1.500`); sample values are strings formatted as `strconv.FormatFloat(v, 'f',
-1, 64)`, switching to the exponent form below 1e-6 and from 1e21 on (jsonutil.MarshalFloat).

Responses are assembled from JSON fragments (strings) so that large matrices are rendered once,
without building an intermediate tree of Python objects; vectors and matrices, whose points dominate
range-query responses, are rendered by the Cython kernel `mimird._fast.jsonenc`, which writes the same
bytes as the single-value formatters here (`format_float`, `format_timestamp`, `labels_json`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from mimird._fast import jsonenc
from mimird.http.request import Response
from mimird.promql.querystats import TIMING_NAMES

Labels = Iterable[tuple[str, str]]

# Prometheus's errorType values and the status codes its API answers them with (web/api/v1/api.go).
ERROR_STATUS = {
    "bad_data": 400,
    "execution": 422,
    "canceled": 499,
    "timeout": 503,
    "internal": 500,
    "not_found": 404,
    "unavailable": 503,
}

# What Go's JSON encoders (jsoniter as Prometheus configures it) escape in strings: quotes, backslashes,
# control characters (\n, \r, \t by name, the others as \u00XX), the HTML-sensitive <, > and &, U+2028,
# U+2029; text that is not UTF-8 (lone surrogates here) becomes U+FFFD, written escaped. Mimir's
# query-frontend re-encodes query results with HTML escaping off, which leaves <, >, &, U+2028 and U+2029.
_NEEDS_ESCAPE = re.compile("[\"\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]")
_NEEDS_ESCAPE_NO_HTML = re.compile("[\"\\\\\x00-\x1f\ud800-\udfff]")
_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return "\\ufffd" if 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}"


def quote(text: str, html: bool = True) -> str:
    """One JSON string literal, escaped as Go does (`html=False`: as Mimir's query-frontend codec does)."""
    pattern = _NEEDS_ESCAPE if html else _NEEDS_ESCAPE_NO_HTML
    if pattern.search(text) is None:
        return f'"{text}"'
    return '"' + pattern.sub(_escape, text) + '"'


def dumps(value: Any) -> str:
    """JSON text as Go writes it: compact, strings escaped by `quote`, object keys in insertion order."""
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{quote(str(key))}:{dumps(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    return json.dumps(value)


def format_float(value: float) -> str:
    """A sample value as Prometheus prints it: shortest round-trip digits, `+Inf`, `-Inf`, `NaN`."""
    shortest = repr(float(value))
    if "e" not in shortest and "n" not in shortest:
        # Python's repr is already the shortest fixed form between 1e-4 and 1e16 ("1.0" is Go's "1")
        return shortest[:-2] if shortest.endswith(".0") else shortest
    return _format_float_slow(value, shortest)


def _format_float_slow(value: float, shortest: str) -> str:
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        # Go's 'e' form, which Python's repr matches in these ranges (two-digit exponent minimum)
        return shortest
    fixed = format(Decimal(shortest), "f")
    if "." in fixed:
        fixed = fixed.rstrip("0").rstrip(".")
    return fixed


def format_timestamp(ms: int) -> str:
    """Milliseconds as Prometheus's float seconds (jsonutil.MarshalTimestamp): `12.5` is written `12.500`."""
    sign = ""
    if ms < 0:
        sign = "-"
        ms = -ms
    seconds, fraction = divmod(ms, 1000)
    if fraction:
        return f"{sign}{seconds}.{fraction:03d}"
    return f"{sign}{seconds}"


def labels_json(labels: Iterable[tuple[str, str]], html: bool = True) -> str:
    """A label set as a JSON object in label-name order."""
    return "{" + ",".join([f"{quote(name, html)}:{quote(value, html)}" for name, value in sorted(labels)]) + "}"


def point_json(ms: int, value: float) -> str:
    """`[<seconds>,"<value>"]`."""
    return f'[{format_timestamp(ms)},"{format_float(value)}"]'


def string_list_json(values: Sequence[str], html: bool = True) -> str:
    return "[" + ",".join(quote(v, html) for v in values) + "]"


def envelope(data_json: str | None, warnings: Sequence[str] = (), infos: Sequence[str] = (),
             html: bool = True) -> str:
    """The success envelope around an already rendered `data`; empty warnings/infos are omitted."""
    data = "" if data_json is None else f',"data":{data_json}'
    return '{"status":"success"' + data + _annotations_json(warnings, infos, html) + "}"


def _annotations_json(warnings: Sequence[str], infos: Sequence[str], html: bool) -> str:
    # What follows `data` in the success envelope: `,"warnings":[...]` and `,"infos":[...]`, each when not empty.
    out = ""
    if warnings:
        out += f',"warnings":{string_list_json(list(warnings), html)}'
    if infos:
        out += f',"infos":{string_list_json(list(infos), html)}'
    return out


def success(data_json: str | None, warnings: Sequence[str] = (), infos: Sequence[str] = (),
            html: bool = True) -> Response:
    """A 200 JSON response with Prometheus's success envelope (`html=False` for query results, which
    Mimir's query-frontend re-encodes without HTML escaping)."""
    return Response(200, envelope(data_json, warnings, infos, html), "application/json")


def error(error_type: str, message: str, status: int | None = None, warnings: Sequence[str] = ()) -> Response:
    """Prometheus's error envelope with the status its API uses for `error_type`."""
    parts = ['"status":"error"', f'"errorType":{quote(error_type)}', f'"error":{quote(message)}']
    if warnings:
        parts.append(f'"warnings":{string_list_json(list(warnings))}')
    return Response(status or ERROR_STATUS.get(error_type, 500), "{" + ",".join(parts) + "}", "application/json")


# --- PromQL values ------------------------------------------------------------------------------------
#
# The engine's values (mimird.promql.value) are read by shape, so this module does not import the engine:
#   Scalar, String:  .t (ms) and .v
#   Vector:          a list of samples with .labels, .t (ms), .v (float)
#   Matrix:          a list of series with .labels, .ts (int64 ms array), .vals (float64 array)
# Query results reach clients through Mimir's query-frontend, whose codec writes strings without HTML
# escaping: label sets and string results here are quoted with html=False.

def _kind(value: Any) -> str:
    return type(value).__name__.lower()


def value_json(value: Any) -> str:
    """`{"resultType":...,"result":...}` for a PromQL value."""
    kind = _kind(value)
    if kind == "scalar":
        result = point_json(int(value.t), float(value.v))
    elif kind == "string":
        result = f"[{format_timestamp(int(value.t))},{quote(str(value.v), False)}]"
    elif kind == "vector":
        result = jsonenc.render_vector(value)
    elif kind == "matrix":
        result = jsonenc.render_matrix(value)
    else:
        raise TypeError(f"not a PromQL value: {type(value).__name__}")
    return f'{{"resultType":"{kind}","result":{result}}}'


def success_value(value: Any, warnings: Sequence[str] = (), infos: Sequence[str] = (),
                  stats_data: str | None = None) -> Response:
    """`success(value_json(value), ...)` for a query's PromQL value, with `data.stats` when `stats_data`
    (`stats_json`'s) is given: a vector or matrix is rendered straight into the body's bytes
    (`jsonenc.render_success`), without the copies of the text that building it as strings makes."""
    kind = _kind(value)
    if kind not in ("vector", "matrix"):
        data = value_json(value)
        if stats_data is not None:
            data = data[:-1] + ',"stats":' + stats_data + "}"
        return success(data, warnings, infos, html=False)
    data_extra = b"" if stats_data is None else b',"stats":' + stats_data.encode()
    extra = _annotations_json(warnings, infos, False)
    body = jsonenc.render_success(value, kind == "matrix", data_extra,
                                  extra.encode("utf-8", "surrogateescape") if extra else b"")
    return Response(200, body, "application/json")


def stats_json(stats: Any) -> str:
    """A `promql.querystats.QueryStatistics` as Prometheus's API encodes `data.stats` (Go's JSON, keys in
    struct order; per-step counts as `[<seconds>,<count>]` pairs, only when collected)."""
    timings = ",".join(f'"{name}":{format_float(stats.timings[name])}' for name in TIMING_NAMES)
    samples = []
    if stats.step_counts is not None and len(stats.step_counts):
        points = ",".join(f"[{format_float((stats.start_ms + i * stats.interval_ms) / 1000)},{count}]"
                          for i, count in enumerate(stats.step_counts.tolist()))
        samples.append(f'"totalQueryableSamplesPerStep":[{points}]')
    samples.append(f'"totalQueryableSamples":{stats.total_samples}')
    samples.append(f'"peakSamples":{stats.peak_samples}')
    return f'{{"timings":{{{timings}}},"samples":{{{",".join(samples)}}}}}'
