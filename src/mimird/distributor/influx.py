"""Influx line protocol ingestion (`POST /api/v1/push/influx/write`): parsing and translation to series.

This module owns what Mimir 2.17 does in pkg/distributor/influx.go and pkg/distributor/influxpush, whose
parser is InfluxDB's `models.ParsePointsWithPrecision`:

* Lines end at a newline outside a quoted string field; blank lines and lines starting with `#` are
  skipped. A line is `measurement[,tag=value...] field=value[,field=value...] [timestamp]`.
* Escapes: a backslash before `,`, `"`, space or `=` stands for that character in measurements, tag
  keys and values and field keys (any other backslash is literal); in string field values `\\"` and
  `\\\\` are a quote and a backslash.
* Field values: floats (`1`, `-1.5`, `1e3`), integers (`1i`), unsigned integers (`1u`), booleans
  (`t`, `true`, `True`, `TRUE`, `f`, ...) and strings (`"..."`). Floats and integers keep their value,
  booleans become 1/0; string and unsigned fields are parsed but not stored (Mimir's type switch skips them).
* Timestamps are integers in the unit of the `precision` parameter (ns, us, ms or s; default ns), then
  truncated to milliseconds; a line without one is stamped with the server's clock.
* Any malformed line fails the whole request with 400 and nothing is stored. Responses have no body:
  204 on success, the write path's status otherwise.

Each field of each point becomes one series named `<measurement>_<field>` (just `<measurement>` for the
field `value`), with the tags as labels and `__proxy_source__="influx"`.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import zlib
from dataclasses import dataclass

from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.distributor.influx")

DEFAULT_MAX_INFLUX_REQUEST_SIZE = 100 << 20
"""`-distributor.max-influx-request-size`: 100 MiB."""

PROXY_SOURCE_LABEL = "__proxy_source__"
PRECISION_NANOS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MIN_NANO_TIME = -(1 << 63) + 2
MAX_NANO_TIME = (1 << 63) - 2

_UNESCAPES = {",", '"', " ", "="}
_BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
             "f": False, "F": False, "false": False, "False": False, "FALSE": False}
_FLOAT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?\d+")
_UNSIGNED = re.compile(r"\d+")
_TIMESTAMP = re.compile(r"-?\d+")
_INVALID_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")


class InfluxParseError(Exception):
    """A request Mimir answers 400 for; the message is what the logs get (the response has no body)."""


@dataclass
class Point:
    """One parsed line: measurement, tags in line order, fields (typed values), timestamp in ns."""

    measurement: str
    tags: list[tuple[str, str]]
    fields: dict[str, float | int | bool | str]
    unsigned: set[str]
    timestamp_ns: int


def unescape(text: str) -> str:
    """models' escape.Unescape: `\\,` `\\"` `\\ ` `\\=` become the character; other backslashes stay."""
    if "\\" not in text:
        return text
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in _UNESCAPES:
            out.append(text[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def unescape_string_field(text: str) -> str:
    """A string field's `\\\\` and `\\"` unescaped."""
    if "\\" not in text:
        return text
    out = []
    index = 0
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text) and text[index + 1] in ('\\', '"'):
            out.append(text[index + 1])
            index += 2
            continue
        out.append(text[index])
        index += 1
    return "".join(out)


def split_lines(text: str) -> list[str]:
    """Split a body into lines, not at newlines inside quoted string field values (models' scanLine)."""
    if '"' not in text and "\\\n" not in text:
        return text.split("\n")
    lines = []
    start = index = 0
    quoted = in_fields = False
    equals = commas = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\" and index + 2 < length:
            index += 2
            continue
        if char == " ":
            in_fields = True
        if in_fields:
            if not quoted and char == "=":
                equals += 1
                index += 1
                continue
            if not quoted and char == ",":
                commas += 1
                index += 1
                continue
            if char == '"' and equals > commas:
                quoted = not quoted
                index += 1
                continue
        if char == "\n" and not quoted:
            lines.append(text[start:index])
            start = index + 1
            quoted = in_fields = False
            equals = commas = 0
        index += 1
    if start < length:
        lines.append(text[start:])
    return lines


def _scan_until(text: str, index: int, stops: str) -> int:
    """Index of the first unescaped character of `stops` at or after `index` (len(text) if none)."""
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char in stops:
            return index
        index += 1
    return length


def _skip_spaces(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t":
        index += 1
    return index


def _parse_field_value(raw: str) -> tuple[float | int | bool | str, bool]:
    """(value, is_unsigned) of one field value, or InfluxParseError."""
    if not raw:
        raise InfluxParseError("missing field value")
    if raw[0] == '"':
        if len(raw) < 2 or raw[-1] != '"':
            raise InfluxParseError("unbalanced quotes")
        return unescape_string_field(raw[1:-1]), False
    if raw[0] in "tTfF":
        if raw not in _BOOLEANS:
            raise InfluxParseError("invalid boolean")
        return _BOOLEANS[raw], False
    if raw[-1] == "i" and _INTEGER.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if not -(1 << 63) <= value < (1 << 63):
            raise InfluxParseError(f"unable to parse integer {raw[:-1]}: value out of range")
        return value, False
    if raw[-1] == "u" and _UNSIGNED.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if value >= 1 << 64:
            raise InfluxParseError(f"unable to parse unsigned {raw[:-1]}: value out of range")
        return value, True
    if _FLOAT.fullmatch(raw):
        value = float(raw)
        if value in (float("inf"), float("-inf")):
            raise InfluxParseError(f"unable to parse floating point number {raw}: value out of range")
        return value, False
    raise InfluxParseError("invalid number")


def _split_fields(text: str) -> list[str]:
    """Split the field set on commas outside quoted string values."""
    parts = []
    start = index = 0
    quoted = False
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    if quoted:
        raise InfluxParseError("unbalanced quotes")
    parts.append(text[start:])
    return parts


def _end_of_fields(text: str, index: int) -> int:
    """Where the field set ends: the first space outside a quoted value."""
    quoted = False
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            return index
        index += 1
    if quoted:
        raise InfluxParseError("unbalanced quotes")
    return index


def _parse_plain_line(line: str, default_time_ns: int, precision: str) -> Point | None:
    """The common case quickly: a line without escapes, quotes or tabs that parses cleanly.

    Returns None whenever anything is unusual, leaving the exact diagnosis to `parse_line`.
    """
    parts = [part for part in line.split(" ") if part]
    if not 2 <= len(parts) <= 3:
        return None
    key = parts[0].split(",")
    measurement = key[0]
    if not measurement:
        return None
    tags = []
    for pair in key[1:]:
        name, equals, value = pair.partition("=")
        if not name or not equals or not value:
            return None
        tags.append((name, value))
    fields: dict[str, float | int | bool | str] = {}
    unsigned: set[str] = set()
    for pair in parts[1].split(","):
        name, equals, raw = pair.partition("=")
        if not name or not equals:
            return None
        try:
            value, is_unsigned = _parse_field_value(raw)
        except InfluxParseError:
            return None
        fields[name] = value
        if is_unsigned:
            unsigned.add(name)
        else:
            unsigned.discard(name)
    multiplier = PRECISION_NANOS[precision]
    if len(parts) == 3:
        if not _TIMESTAMP.fullmatch(parts[2]):
            return None
        timestamp = int(parts[2]) * multiplier
        if not MIN_NANO_TIME <= timestamp <= MAX_NANO_TIME:
            return None
    else:
        timestamp = default_time_ns - default_time_ns % multiplier
    if len(tags) > 1 and len({name for name, _ in tags}) != len(tags):
        return None
    return Point(measurement, tags, fields, unsigned, timestamp)


def parse_line(line: str, default_time_ns: int, precision: str = "ns") -> Point:
    """Parse one non-empty, non-comment line (models.parsePoint)."""
    if "\\" not in line and '"' not in line and "\t" not in line:
        point = _parse_plain_line(line, default_time_ns, precision)
        if point is not None:
            return point
    key_end = _scan_until(line, 0, " ")
    key = line[:key_end]
    measurement_end = _scan_until(key, 0, ",")
    if measurement_end == 0:
        raise InfluxParseError("missing measurement")
    measurement = unescape(key[:measurement_end])
    tags: list[tuple[str, str]] = []
    position = measurement_end
    while position < len(key):
        start = position + 1
        end = _scan_until(key, start, ",")
        pair = key[start:end]
        equals = _scan_until(pair, 0, "=")
        if equals == 0:
            raise InfluxParseError("missing tag key")
        if equals >= len(pair) - 1:
            raise InfluxParseError("missing tag value")
        tag_key, tag_value = unescape(pair[:equals]), unescape(pair[equals + 1:])
        tags.append((tag_key, tag_value))
        position = end
    if len({name for name, _ in tags}) != len(tags):
        raise InfluxParseError("duplicate tags")

    fields_start = _skip_spaces(line, key_end)
    if fields_start >= len(line):
        raise InfluxParseError("missing fields")
    fields_end = _end_of_fields(line, fields_start)
    fields: dict[str, float | int | bool | str] = {}
    unsigned: set[str] = set()
    for part in _split_fields(line[fields_start:fields_end]):
        equals = _scan_until(part, 0, "=")
        if equals >= len(part):
            raise InfluxParseError("invalid field format")
        if equals == 0:
            raise InfluxParseError("missing field key")
        name = unescape(part[:equals])
        value, is_unsigned = _parse_field_value(part[equals + 1:])
        fields[name] = value
        if is_unsigned:
            unsigned.add(name)
        else:
            unsigned.discard(name)

    rest = line[_skip_spaces(line, fields_end):]
    if not rest:
        multiplier = PRECISION_NANOS[precision]
        timestamp = default_time_ns - default_time_ns % multiplier
    else:
        if not _TIMESTAMP.fullmatch(rest):
            raise InfluxParseError("bad timestamp")
        timestamp = int(rest) * PRECISION_NANOS[precision]
        if not MIN_NANO_TIME <= timestamp <= MAX_NANO_TIME:
            raise InfluxParseError(f"time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}")
    return Point(measurement, tags, fields, unsigned, timestamp)


def parse_points(body: bytes, precision: str = "ns", now_ns: int | None = None) -> list[Point]:
    """Parse a whole body; any bad line raises InfluxParseError naming every bad line, as models does."""
    if precision not in PRECISION_NANOS:
        raise InfluxParseError(f"precision supplied is not valid: {precision}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InfluxParseError(f"can't parse points: invalid UTF-8: {exc}") from None
    default_time = time.time_ns() if now_ns is None else now_ns
    points = []
    failed = []
    for block in split_lines(text):
        start = _skip_spaces(block, 0)
        if start >= len(block) or block[start] == "#":
            continue
        line = block[start:]
        try:
            points.append(parse_line(line, default_time, precision))
        except InfluxParseError as exc:
            failed.append(f"unable to parse '{line}': {exc}")
    if failed:
        raise InfluxParseError("can't parse points: " + "\n".join(failed))
    return points


@functools.lru_cache(maxsize=4096)
def sanitize_name(name: str) -> str:
    """Mimir's replaceInvalidChars: anything outside [a-zA-Z0-9_] becomes `_`; a leading digit gets `_`."""
    name = _INVALID_NAME_CHAR.sub("_", name)
    if name and name[0].isdigit():
        name = "_" + name
    return name


def points_to_series(points: list[Point]) -> tuple[list[tuple], list[int], list[int], list[float]]:
    """One series per stored field per point: (series label pairs, offsets, timestamps ms, values)."""
    series_pairs: list[tuple] = []
    offsets = [0]
    timestamps: list[int] = []
    values: list[float] = []
    for point in points:
        # TimeToMillis: Go's integer division truncates toward zero.
        millis = int(point.timestamp_ns / 1_000_000) if point.timestamp_ns < 0 else point.timestamp_ns // 1_000_000
        tag_labels = [(sanitize_name(key), value) for key, value in point.tags
                      if key not in ("__name__", PROXY_SOURCE_LABEL)]
        for field, value in point.fields.items():
            if isinstance(value, str) or field in point.unsigned:
                continue
            name = point.measurement if field == "value" else f"{point.measurement}_{field}"
            series_pairs.append((("__name__", sanitize_name(name)), (PROXY_SOURCE_LABEL, "influx"), *tag_labels))
            timestamps.append(millis)
            values.append(float(value))
            offsets.append(len(timestamps))
    return series_pairs, offsets, timestamps, values


def _read_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    if len(body) > limit:
        raise InfluxParseError(f"can't read body: the request body is larger than the limit of {limit} bytes")
    if content_encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InfluxParseError(f"gzip compression error: {exc}") from None
        if len(body) > limit:
            raise InfluxParseError(f"can't read body: the request body is larger than the limit of {limit} bytes")
        if not inflater.eof:
            raise InfluxParseError("can't read body: unexpected EOF")
    return body


class InfluxHandler:
    """Serves `POST /api/v1/push/influx/write` on top of the distributor's shared write path."""

    def __init__(self, distributor, max_request_size: int = DEFAULT_MAX_INFLUX_REQUEST_SIZE):
        self.distributor = distributor
        self.max_request_size = max_request_size

    async def push(self, request: Request) -> Response:
        """POST /api/v1/push/influx/write."""
        tenant = request.tenant
        try:
            body = _read_body(request.body, request.headers.get("content-encoding"), self.max_request_size)
            points = parse_points(body, request.query.get("precision", [""])[0] or "ns")
        except InfluxParseError as exc:
            kv_log(log, logging.WARNING, "detected an error while ingesting Influx metrics request", user=tenant,
                   httpCode=400, err=str(exc))
            return Response(400)
        series_pairs, offsets, timestamps, values = points_to_series(points)
        try:
            self.distributor.ingest(tenant, series_pairs, offsets, timestamps, values,
                                    retry_attempt=request.headers.get("retry-attempt"))
        except HTTPError as exc:
            kv_log(log, logging.WARNING, "detected an error while ingesting Influx metrics request "
                   "(the request may have been partially ingested)", user=tenant, httpCode=exc.status,
                   err=exc.message)
            return Response(exc.status, headers=exc.headers)
        # Telegraf needs 204: on 200 it tries to read a JSON body and counts the write as failed.
        return Response(204)
