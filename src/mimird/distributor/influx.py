"""Influx line protocol ingestion (`POST /api/v1/push/influx/write`): parsing and translation to series.

This module owns what Mimir 2.17 does in pkg/distributor/influx.go and pkg/distributor/influxpush, whose
parser is InfluxDB's `models.ParsePointsWithPrecision`:

* Lines end at a newline outside a quoted string field; blank lines and lines starting with `#` are
  skipped. A line is `measurement[,tag=value...] field=value[,field=value...] [timestamp]`.
* Escapes: while scanning, any character after a backslash is never a delimiter. When names are read
  back, a backslash before `,`, `"`, space or `=` is dropped in measurements and field keys, before `,`,
  space or `=` in tag keys and values; other backslashes stay. In string field values `\\"` and
  `\\\\` are a quote and a backslash. A tag value may not hold an unescaped `=`.
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
from dataclasses import dataclass

from mimird.distributor.otlp import GzipError, gunzip
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

_BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
             "f": False, "F": False, "false": False, "False": False, "FALSE": False}
_NUMBER_START = frozenset("0123456789.-Nn")  # scanFields: these start a number, anything else a boolean
_NUMERIC_TYPE_START = frozenset("0123456789-.nNiIu")  # the field iterator's test for numeric values
_DIGITS = frozenset("0123456789")
_WHITESPACE = frozenset(" \t\x00")
_PLAIN_TIMESTAMP = re.compile(r"-?[0-9]{1,19}")
# Numbers scanNumber surely accepts without a range check: short integers and plain decimals.
_PLAIN_NUMBER = re.compile(r"-?[0-9]{1,18}(?:i|\.[0-9]{0,5})?")
_INVALID_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")
MAX_KEY_LENGTH = 65535
INT64_RANGE = (-(1 << 63), (1 << 63) - 1)


class InfluxParseError(Exception):
    """A request Mimir answers 400 for; the message is what the logs get (the response has no body)."""


@dataclass
class Point:
    """One parsed line: measurement, tags, fields (typed values), timestamp in ns.

    Names are unescaped. `unsigned` holds the names of `u` fields (parsed, but never stored).
    """

    measurement: str
    tags: list[tuple[str, str]]
    fields: dict[str, float | int | bool | str]
    unsigned: set[str]
    timestamp_ns: int


def unescape(text: str) -> str:
    """escape.Unescape (measurements, field keys): a backslash before `,` `"` space `=` is dropped."""
    if "\\" not in text:
        return text
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in ',"= ':
            out.append(text[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def unescape_tag(text: str) -> str:
    """unescapeTag (tag keys and values): only `\\,` `\\ ` `\\=` are escapes."""
    return text.replace("\\,", ",").replace("\\ ", " ").replace("\\=", "=")


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
    if '"' not in text and "\\" not in text:
        return text.split("\n")
    lines = []
    start = index = 0
    quoted = in_fields = False
    equals = commas = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
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


def _skip_whitespace(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _go_parse_int(text: str) -> int:
    """strconv.ParseInt(text, 10, 64) with Go's error texts."""
    if not re.fullmatch(r"[+-]?\d+", text):
        raise InfluxParseError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        raise InfluxParseError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def _scan_number(line: str, index: int) -> int:
    """models.scanNumber: validate the number starting at `index`; return where it ends."""
    start = index
    length = len(line)
    is_int = is_unsigned = decimal = scientific = False
    if index < length and line[index] == "-":
        index += 1
        if index == length:
            raise InfluxParseError("invalid number")
    while index < length:
        char = line[index]
        if char == "," or char == " ":
            break
        if char == "i" and index > start and not (is_int or is_unsigned):
            is_int = True
            index += 1
            continue
        if char == "u" and index > start and not (is_int or is_unsigned):
            is_unsigned = True
            index += 1
            continue
        if char == ".":
            if decimal:
                raise InfluxParseError("invalid number")
            decimal = True
        if index > start and char in "eE":
            scientific = True
            index += 1
            continue
        if char in "+-" and line[index - 1] in "eE":
            index += 1
            continue
        if char in "Nn" and index + 2 < length:
            raise InfluxParseError("invalid number")  # NaN is not a value
        if char not in _DIGITS and char != ".":
            raise InfluxParseError("invalid number")
        index += 1
    if (is_int or is_unsigned) and (decimal or scientific):
        raise InfluxParseError("invalid number")
    digits = index - start - is_int - decimal - (line[start] == "-")
    if digits == 0:
        raise InfluxParseError("invalid number")
    text = line[start:index]
    if is_int:
        if text[-1] != "i":
            raise InfluxParseError("invalid number")
        if len(text) - 1 >= 19:
            try:
                _go_parse_int(text[:-1])
            except InfluxParseError as exc:
                raise InfluxParseError(f"unable to parse integer {text[:-1]}: {exc}") from None
    elif is_unsigned:
        if text[-1] != "u" or text[0] == "-":
            raise InfluxParseError("invalid number")
        if len(text) - 1 >= 20 and int(text[:-1]) >= 1 << 64:
            raise InfluxParseError(f'unable to parse unsigned {text[:-1]}: strconv.ParseUint: parsing '
                                   f'"{text[:-1]}": value out of range')
    elif scientific or len(text) >= 25:
        try:
            value = float(text)
        except ValueError:
            raise InfluxParseError("invalid float") from None
        if value in (float("inf"), float("-inf")):
            raise InfluxParseError("invalid float")
    return index


def _scan_boolean(line: str, index: int) -> int:
    """models.scanBoolean: t, T, true, True, TRUE, f, F, false, False, FALSE."""
    start = index
    if index < len(line) and line[index] not in "tfTF":
        raise InfluxParseError("invalid boolean")
    index += 1
    while index < len(line) and line[index] not in ", ":
        index += 1
    if line[start:index] not in _BOOLEANS:
        raise InfluxParseError("invalid boolean")
    return index


def _field_value(raw: str) -> tuple[float | int | bool | str, bool]:
    """The field iterator's reading of a validated raw value: (value, is_unsigned)."""
    first = raw[0]
    if first == '"':
        return unescape_string_field(raw[1:-1]), False
    if first in _NUMERIC_TYPE_START:
        if raw[-1] == "i":
            return int(raw[:-1]), False
        if raw[-1] == "u":
            return int(raw[:-1]), True
        return float(raw), False
    return _BOOLEANS[raw], False


def _scan_field_value_end(fields: str, index: int) -> int:
    """scanFieldValue: the value ends at a comma outside quotes (only `\\"` and `\\\\` are escapes)."""
    quoted = False
    length = len(fields)
    while index < length:
        char = fields[index]
        if char == "\\" and index + 1 < length and fields[index + 1] in '"\\':
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            break
        index += 1
    return index


def _scan_to(text: str, index: int, stop: str) -> int:
    """scanTo: the first `stop` not preceded by a backslash."""
    while index < len(text):
        if text[index] == stop and (index == 0 or text[index - 1] != "\\"):
            return index
        index += 1
    return index


def _parse_plain_line(line: str, default_time_ns: int, precision: str) -> Point | None:
    """The common case quickly: a line without escapes, quotes, tabs or NULs that parses cleanly.

    Returns None whenever anything is unusual, leaving the exact diagnosis to `parse_line`.
    """
    parts = [part for part in line.split(" ") if part]
    if not 2 <= len(parts) <= 3 or line[0] == " ":
        return None
    key = parts[0].split(",")
    measurement = key[0]
    if not measurement or len(parts[0]) > MAX_KEY_LENGTH // 4:
        return None
    tags = []
    for pair in key[1:]:
        name, equals, value = pair.partition("=")
        if not name or not equals or not value or "=" in value:
            return None
        tags.append((name, value))
    if len(tags) > 1 and len({name for name, _ in tags}) != len(tags):
        return None
    fields: dict[str, float | int | bool | str] = {}
    unsigned: set[str] = set()
    for pair in parts[1].split(","):
        name, equals, raw = pair.partition("=")
        if not name or not equals or not raw or "=" in raw:
            return None
        if not _PLAIN_NUMBER.fullmatch(raw):
            try:
                if raw[0] in _NUMBER_START:
                    _scan_number(raw, 0)
                else:
                    _scan_boolean(raw, 0)
            except InfluxParseError:
                return None
        value, is_unsigned = _field_value(raw)
        fields[name] = value
        if is_unsigned:
            unsigned.add(name)
        else:
            unsigned.discard(name)
    multiplier = PRECISION_NANOS[precision]
    if len(parts) == 3:
        stamp = parts[2]
        if not _PLAIN_TIMESTAMP.fullmatch(stamp):
            return None
        stamp_value = int(stamp)
        timestamp = stamp_value * multiplier
        if not (INT64_RANGE[0] <= stamp_value <= INT64_RANGE[1] and MIN_NANO_TIME <= timestamp <= MAX_NANO_TIME):
            return None
    else:
        timestamp = default_time_ns - default_time_ns % multiplier
    return Point(measurement, tags, fields, unsigned, timestamp)


def parse_line(line: str, default_time_ns: int, precision: str = "ns") -> Point:
    """Parse one non-empty, non-comment line: models.parsePoint and the point's accessors."""
    if "\\" not in line and '"' not in line and "\t" not in line and "\x00" not in line:
        point = _parse_plain_line(line, default_time_ns, precision)
        if point is not None:
            return point
    return _parse_line_exactly(line, default_time_ns, precision)


def _parse_line_exactly(line: str, default_time_ns: int, precision: str) -> Point:
    """The scanner of models.parsePoint, character by character, with its error for every bad line."""
    length = len(line)
    start = _skip_whitespace(line, 0)
    index = start
    # measurement (scanMeasurement): a character after a backslash never ends it
    if index >= length or line[index] == ",":
        raise InfluxParseError("missing measurement")
    while True:
        index += 1
        if index >= length:
            raise InfluxParseError("missing fields")
        if line[index - 1] == "\\":
            continue
        if line[index] in ", ":
            break
    measurement_end = index
    raw_tags: list[tuple[str, str]] = []
    if line[index] == ",":
        index += 1
        while True:
            key_start = index
            if index >= length or line[index] in " ,=":
                raise InfluxParseError("missing tag key")
            while True:
                index += 1
                if index >= length or (line[index] in " ," and line[index - 1] != "\\"):
                    raise InfluxParseError("missing tag value")
                if line[index] == "=" and line[index - 1] != "\\":
                    break
            tag_key = line[key_start:index]
            index += 1
            value_start = index
            if index >= length or line[index] in ", ":
                raise InfluxParseError("missing tag value")
            while True:
                index += 1
                if index >= length:
                    raise InfluxParseError("missing fields")
                char = line[index]
                if line[index - 1] == "\\":
                    continue
                if char == "=":
                    raise InfluxParseError("invalid tag format")
                if char in ", ":
                    break
            raw_tags.append((tag_key, line[value_start:index]))
            if line[index] == " ":
                break
            index += 1
    key = line[start:index]
    if len({name for name, _ in raw_tags}) != len(raw_tags):
        raise InfluxParseError("duplicate tags")
    key_length = len(key.encode()) if len(key) > MAX_KEY_LENGTH // 4 else len(key)
    if key_length > MAX_KEY_LENGTH:
        raise InfluxParseError(f"max key length exceeded: {key_length} > {MAX_KEY_LENGTH}")

    # fields (scanFields)
    index = fields_start = _skip_whitespace(line, index)
    quoted = False
    equals = commas = 0
    while index < length:
        char = line[index]
        if char == "\\" and index + 1 < length:
            index += 2
            continue
        if char == '"' and equals > commas:
            quoted = not quoted
            index += 1
            continue
        if char == "=" and not quoted:
            equals += 1
            before, before2 = line[index - 1], line[index - 2]
            if before in " ," and before2 != "\\":
                raise InfluxParseError("missing field key")
            if index + 1 >= length or line[index + 1] in ", ":
                raise InfluxParseError("missing field value")
            if line[index + 1] in _NUMBER_START:
                index = _scan_number(line, index + 1)
                continue
            if line[index + 1] != '"':
                index = _scan_boolean(line, index + 1)
                continue
        if char == "," and not quoted:
            commas += 1
        if char == " " and not quoted:
            break
        index += 1
    if quoted:
        raise InfluxParseError("unbalanced quotes")
    if equals == 0 or commas != equals - 1:
        raise InfluxParseError("invalid field format")
    field_text = line[fields_start:index]
    if not field_text:
        raise InfluxParseError("missing fields")

    # timestamp (scanTime), then only spaces may follow
    index = stamp_start = _skip_whitespace(line, index)
    while index < length and line[index] not in "\n ":
        if not (index == stamp_start and line[index] == "-") and line[index] not in _DIGITS:
            raise InfluxParseError("bad timestamp")
        index += 1
    stamp = line[stamp_start:index]
    multiplier = PRECISION_NANOS[precision]
    if stamp:
        timestamp = _go_parse_int(stamp) * multiplier
        if not MIN_NANO_TIME <= timestamp <= MAX_NANO_TIME:
            raise InfluxParseError(f"time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}")
        if line[index:].strip(" "):
            raise InfluxParseError("point is invalid")
    else:
        timestamp = default_time_ns - default_time_ns % multiplier

    # what the point's accessors give back: unescaped names, typed field values
    measurement = unescape(line[start:_scan_to(line[:measurement_end], start, ",")])
    has_escape = "\\" in key
    tags = [(unescape_tag(k), unescape_tag(v)) if has_escape else (k, v) for k, v in raw_tags]
    fields: dict[str, float | int | bool | str] = {}
    unsigned: set[str] = set()
    position = 0
    while position < len(field_text):
        key_end = _scan_to(field_text, position, "=")
        name = unescape(field_text[position:key_end])
        value_end = _scan_field_value_end(field_text, key_end + 1)
        raw = field_text[key_end + 1:value_end]
        position = value_end + 1
        if not name or not raw:
            continue
        value, is_unsigned = _field_value(raw)
        fields[name] = value
        if is_unsigned:
            unsigned.add(name)
        else:
            unsigned.discard(name)
    for name in fields:
        size = key_length + 4 + len(name.encode())
        if size > MAX_KEY_LENGTH:
            raise InfluxParseError(f"max key length exceeded: {size} > {MAX_KEY_LENGTH}")
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
        start = _skip_whitespace(block, 0)
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
    """The line protocol text of a request, gunzipped when it says gzip (or x-gzip).

    Mimir limits what it reads after decompression, so a compressed body may itself be larger than
    the limit as long as its content is not.
    """
    too_large = f"can't read body: http: request body too large (limit {limit} bytes)"
    if content_encoding not in ("gzip", "x-gzip"):
        if len(body) > limit:
            raise InfluxParseError(too_large)
        return body
    try:
        return gunzip(body, limit)
    except GzipError as exc:
        if exc.too_large:
            raise InfluxParseError(too_large) from None
        raise InfluxParseError(f"gzip compression error: {exc}") from None


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
