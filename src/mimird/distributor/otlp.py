"""OTLP metrics ingestion (`POST /otlp/v1/metrics`): decoding, translation to Prometheus series, responses.

This module owns what Mimir 2.17 does in pkg/distributor/otel.go and the OTLP-to-Prometheus translator
it embeds (Prometheus's storage/remote/otlptranslator and prometheus/otlptranslator):

* Transport: `Content-Type` exactly `application/x-protobuf` or `application/json` (OTLP/JSON: lowerCamelCase
  keys, 64-bit integers as strings, trace and span ids in hex), `Content-Encoding` gzip, lz4 (frame
  format) or none, and `-distributor.max-otlp-request-size` checked on the body as received and after
  decompression (413).
* Translation: each OTel metric becomes Prometheus series as the translator does (names, attribute
  label names, job/instance from the service resource attributes, target_info, histogram buckets with
  `le`, summary quantiles, exemplars, metadata, the stale marker for points without a recorded value).
  Metrics that cannot be translated are left out and their errors collected; the request then answers
  400 `otlp parse error: ...` after storing whatever else it carried, as Mimir does. Exponential
  histograms would become native histograms, which this server cannot store; they are such errors.
  Delta sums and histograms are such errors too unless the tenant's `otel_native_delta_ingestion` is on.
* Responses are encoded in the request's content type (protobuf when it was neither): an empty
  `ExportMetricsServiceResponse` on success, a `google.rpc.Status` otherwise.

Samples then go through `Distributor.ingest`, the write path shared with remote write.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import operator
import re
import struct
import zlib
from dataclasses import dataclass, field
from decimal import Decimal

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from mimird import otlpb
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.distributor.otlp")

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"
DEFAULT_MAX_OTLP_REQUEST_SIZE = 100 << 20
"""`-distributor.max-otlp-request-size`: 100 MiB."""

MAX_ERROR_MESSAGE_LENGTH = 1024
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
MAX_EXEMPLAR_RUNES = 128
TARGET_INFO_INTERVAL_MS = 150_000  # half of the default 5m lookback delta
NO_RECORDED_VALUE = otlpb.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

# Prometheus metric types (MetricMetadata.MetricType).
UNKNOWN, COUNTER, GAUGE, HISTOGRAM, SUMMARY = 0, 1, 2, 3, 5

# gRPC codes used in error bodies.
GRPC_ALREADY_EXISTS = 6
GRPC_INVALID_ARGUMENT = 3
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_INTERNAL = 13
GRPC_UNAVAILABLE = 14

SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
IDENTIFYING_ATTRIBUTES = (SERVICE_NAMESPACE, SERVICE_NAME, SERVICE_INSTANCE_ID)


class OTLPDecodeError(Exception):
    """A request body that cannot be read; `status` is the HTTP status, also used as the Status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------------
# LZ4 frames (Content-Encoding: lz4, read in Mimir by pierrec/lz4's frame reader)

LZ4_FRAME_MAGIC = 0x184D2204


class LZ4FrameError(Exception):
    """A corrupt LZ4 frame, or (`too_large`) one that inflates past the limit."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def _lz4_block(src: bytes, out: bytearray, limit: int) -> None:
    """Decode one LZ4 block onto `out`; matches may reach back into earlier blocks of the frame."""
    position, end = 0, len(src)
    while position < end:
        token = src[position]
        position += 1
        literal_length = token >> 4
        if literal_length == 15:
            while True:
                if position >= end:
                    raise LZ4FrameError("invalid source")
                extra = src[position]
                position += 1
                literal_length += extra
                if extra != 255:
                    break
        if position + literal_length > end:
            raise LZ4FrameError("invalid source")
        out += src[position:position + literal_length]
        position += literal_length
        if position >= end:
            break  # the last sequence carries literals only
        if position + 2 > end:
            raise LZ4FrameError("invalid source")
        offset = src[position] | (src[position + 1] << 8)
        position += 2
        match_length = token & 15
        if match_length == 15:
            while True:
                if position >= end:
                    raise LZ4FrameError("invalid source")
                extra = src[position]
                position += 1
                match_length += extra
                if extra != 255:
                    break
        match_length += 4
        if offset == 0 or offset > len(out):
            raise LZ4FrameError("invalid source")
        if len(out) + match_length > limit:
            raise LZ4FrameError("too large", too_large=True)
        start = len(out) - offset
        if offset >= match_length:
            out += out[start:start + match_length]
        else:
            # An overlapping match repeats the last `offset` bytes.
            pattern = bytes(out[start:])
            repeats, rest = divmod(match_length, offset)
            out += pattern * repeats + pattern[:rest]
        if len(out) > limit:
            raise LZ4FrameError("too large", too_large=True)


def decompress_lz4_frame(data: bytes, limit: int) -> bytes:
    """Decompress concatenated LZ4 frames (skippable frames ignored, checksums not verified)."""
    out = bytearray()
    position = 0
    while position < len(data):
        if position + 4 > len(data):
            raise LZ4FrameError("unexpected EOF")
        magic = int.from_bytes(data[position:position + 4], "little")
        position += 4
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            if position + 4 > len(data):
                raise LZ4FrameError("unexpected EOF")
            position += 4 + int.from_bytes(data[position:position + 4], "little")
            continue
        if magic != LZ4_FRAME_MAGIC:
            raise LZ4FrameError("invalid frame magic")
        if position + 3 > len(data):
            raise LZ4FrameError("unexpected EOF")
        flags = data[position]
        if flags >> 6 != 1:
            raise LZ4FrameError("unsupported frame version")
        block_checksum, content_size, content_checksum, dict_id = (
            flags & 0x10, flags & 0x08, flags & 0x04, flags & 0x01)
        position += 2 + (8 if content_size else 0) + (4 if dict_id else 0) + 1  # FLG, BD, fields, header checksum
        while True:
            if position + 4 > len(data):
                raise LZ4FrameError("unexpected EOF")
            size = int.from_bytes(data[position:position + 4], "little")
            position += 4
            if size == 0:
                break
            stored = size & 0x80000000
            size &= 0x7FFFFFFF
            if position + size > len(data):
                raise LZ4FrameError("unexpected EOF")
            block = data[position:position + size]
            position += size + (4 if block_checksum else 0)
            if stored:
                out += block
                if len(out) > limit:
                    raise LZ4FrameError("too large", too_large=True)
            else:
                _lz4_block(block, out, limit)
        position += 4 if content_checksum else 0
    return bytes(out)


# ---------------------------------------------------------------------------------------------------
# Decoding

def request_size_error(size: int | None, limit: int) -> OTLPDecodeError:
    """Mimir's 413 for a request over `-distributor.max-otlp-request-size` (size None: not known)."""
    size_text = f" of {size} bytes" if size is not None and size >= 0 else ""
    return OTLPDecodeError(
        413,
        f"the incoming OTLP request has been rejected because its message size{size_text} is larger than the "
        f"allowed limit of {limit} bytes (err-mimir-distributor-max-otlp-request-size). To adjust the related "
        "limit, configure -distributor.max-otlp-request-size, or contact your service administrator.",
    )


class GzipError(Exception):
    """A corrupt or truncated gzip body, or (`too_large`) one that inflates past the limit."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body of one or more members (Go's gzip reader reads them as one stream).

    Stops as soon as the output would pass `limit` bytes, so a small body cannot inflate without bound.
    """
    parts = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise GzipError(f"gzip: invalid header ({exc})") from None
        size += len(part)
        if size > limit:
            raise GzipError("too large", too_large=True)
        if not inflater.eof:
            raise GzipError("unexpected EOF")
        parts.append(part)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)


def _hex_ids_to_base64(node) -> None:
    """OTLP/JSON spells trace and span ids in hex; protobuf's JSON reader expects base64 for bytes."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "trace_id", "span_id") and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise OTLPDecodeError(400, f"parse {key}: invalid hex id {value!r}") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def _decode_json(body: bytes, request) -> None:
    """Fill `request` from an OTLP/JSON body, or raise OTLPDecodeError (RecursionError passes through)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OTLPDecodeError(400, f"ReadObject: {exc}") from None
    if document is None:
        document = {}  # `null` reads as an empty request
    if not isinstance(document, dict):
        found = body.lstrip()[:1].decode(errors="replace")
        raise OTLPDecodeError(400, f"ReadObjectCB: expect {{ or n, but found {found}")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise OTLPDecodeError(400, f"ReadObject: {exc}") from None


def decode_request(body: bytes, content_type: str | None, content_encoding: str | None,
                   max_size: int = DEFAULT_MAX_OTLP_REQUEST_SIZE):
    """Turn a request body into an `ExportMetricsServiceRequest`, or raise OTLPDecodeError.

    Checks in Mimir's order: size as received (413), compression (415), content type (415), then
    decompression with the size limit (413) and decoding (400).
    """
    if len(body) > max_size:
        raise request_size_error(len(body), max_size)
    encoding = content_encoding or ""
    if encoding not in ("", "gzip", "lz4"):
        raise OTLPDecodeError(
            415, f'unsupported compression: {encoding}. Only "gzip", "lz4", or no compression supported')
    content_type = content_type or ""
    if content_type not in (PROTOBUF_CONTENT_TYPE, JSON_CONTENT_TYPE):
        raise OTLPDecodeError(
            415, f"unsupported content type: {content_type}, supported: [{JSON_CONTENT_TYPE}, {PROTOBUF_CONTENT_TYPE}]")
    if encoding == "gzip":
        try:
            body = gunzip(body, max_size)
        except GzipError as exc:
            if exc.too_large:
                raise request_size_error(None, max_size) from None
            raise OTLPDecodeError(400, f"read write request: {exc}") from None
    elif encoding == "lz4":
        try:
            body = decompress_lz4_frame(body, max_size)
        except LZ4FrameError as exc:
            if exc.too_large:
                raise request_size_error(None, max_size) from None
            raise OTLPDecodeError(400, f"read write request: lz4: {exc}") from None
    request = otlpb.ExportMetricsServiceRequest()
    if content_type == PROTOBUF_CONTENT_TYPE:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OTLPDecodeError(400, f"proto: {exc}") from None
    else:
        try:
            _decode_json(body, request)
        except RecursionError:
            # Nesting deeper than Python's stack (e.g. a body of 100000 `[`) is malformed input, not a crash.
            raise OTLPDecodeError(400, "ReadObject: max depth of nesting exceeded") from None
    _check_ids(request)
    return request


def _check_ids(request) -> None:
    """pdata refuses trace ids that are not 16 bytes and span ids that are not 8 (empty means none)."""
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    for exemplar in getattr(point, "exemplars", ()):
                        if len(exemplar.trace_id) not in (0, 16):
                            raise OTLPDecodeError(400, "invalid length for ID: trace_id must be 16 bytes")
                        if len(exemplar.span_id) not in (0, 8):
                            raise OTLPDecodeError(400, "invalid length for ID: span_id must be 8 bytes")


# ---------------------------------------------------------------------------------------------------
# Go's number and value formatting, as the translator's label values need them

def _shortest_decimal(value: float) -> tuple[str, int]:
    """The shortest round-tripping digits of a finite non-zero |value| and the exponent of its first digit."""
    sign, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, exponent + len(text) - 1


def go_format_float(value: float, fmt: str = "f") -> str:
    """strconv.FormatFloat(value, fmt, -1, 64) for fmt 'f' or 'e'."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + ("0" if fmt == "f" else "0e+00")
    digits, point = _shortest_decimal(value)
    if fmt == "e":
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{sign}0.{'0' * (-point - 1)}{digits}"
    if point + 1 >= len(digits):
        return sign + digits + "0" * (point + 1 - len(digits))
    return f"{sign}{digits[:point + 1]}.{digits[point + 1:]}"


def _es6_float(value: float) -> str:
    """pcommon's double-to-string: ES6 number formatting (as Go's encoding/json writes floats)."""
    if math.isnan(value) or math.isinf(value):
        return f"json: unsupported value: {go_format_float(value, 'f')}"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = go_format_float(value, "e")
        if len(text) >= 4 and text[-4] == "e" and text[-3] == "-" and text[-2] == "0":
            text = text[:-2] + text[-1]
        return text
    return go_format_float(value, "f")


def _json_string(text: str) -> str:
    """A JSON string as Go's encoding/json writes it (HTML-sensitive characters escaped)."""
    encoded = json.dumps(text, ensure_ascii=False)
    return (encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _any_value_json(value) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _json_string(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return _es6_float(value.double_value)
    if kind == "bytes_value":
        return _json_string(base64.b64encode(value.bytes_value).decode())
    if kind == "array_value":
        return "[" + ",".join(_any_value_json(item) for item in value.array_value.values) + "]"
    if kind == "kvlist_value":
        entries = {kv.key: kv.value for kv in value.kvlist_value.values}
        return "{" + ",".join(f"{_json_string(key)}:{_any_value_json(entries[key])}" for key in sorted(entries)) + "}"
    return "null"


def any_value_string(value) -> str:
    """pcommon.Value.AsString(): how an attribute value becomes a label value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return _es6_float(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "string_value_strindex":
        return ""
    return _any_value_json(value)


# ---------------------------------------------------------------------------------------------------
# Names

_INVALID_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_INVALID_METRIC_CHAR = re.compile(r"[^a-zA-Z0-9:_]+")
_NON_COMPLIANT_METRIC_CHAR = re.compile(r"[^a-zA-Z0-9:]+")
_MULTIPLE_UNDERSCORES = re.compile(r"__+")

UNIT_NAMES = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "1": "", "%": "percent",
}
PER_UNIT_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


@functools.lru_cache(maxsize=8192)
def normalize_label(name: str) -> str:
    """otlptranslator.NormalizeLabel: an attribute key as a Prometheus label name."""
    if not name:
        return name
    name = _INVALID_LABEL_CHAR.sub("_", name)
    if name[0].isdigit():
        return "key_" + name
    if name.startswith("_") and not name.startswith("__"):
        return "key" + name
    return name


def _clean_unit(unit: str) -> str:
    return _MULTIPLE_UNDERSCORES.sub("_", _NON_COMPLIANT_METRIC_CHAR.sub("_", unit)).removeprefix("_")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    parts = unit.split("/", 1)
    main = parts[0].strip()
    main_suffix = UNIT_NAMES.get(main, main) if main and "{" not in main and "}" not in main else ""
    per_suffix = ""
    if len(parts) > 1 and parts[1]:
        per = parts[1].strip()
        if per and "{" not in per and "}" not in per:
            per_suffix = PER_UNIT_NAMES.get(per, per)
        if per_suffix:
            per_suffix = "per_" + per_suffix
    return _clean_unit(main_suffix), _clean_unit(per_suffix)


def metric_name(name: str, unit: str, metric_type: str, add_suffixes: bool) -> str:
    """The Prometheus name of an OTel metric (MetricNamer.Build with legacy-compliant names).

    `metric_type` is one of "gauge", "counter" (monotonic sum), "updown" (non-monotonic sum),
    "histogram", "exponential_histogram", "summary".
    """
    if not add_suffixes:
        built = "_".join(piece for piece in _INVALID_METRIC_CHAR.split(name) if piece)
    else:
        tokens = [piece for piece in _NON_COMPLIANT_METRIC_CHAR.split(name) if piece]
        main_suffix, per_suffix = _unit_suffixes(unit)
        if main_suffix in tokens:
            main_suffix = ""
        # The per-unit suffix is compared whole ("per_second") with tokens that never hold an
        # underscore, so it is always added: `bytes_per_second` in By/s becomes
        # `bytes_per_second_per_second`, as in otlptranslator.
        per_suffix = "" if per_suffix == "per_" else per_suffix.removesuffix("_")
        if per_suffix in tokens:
            per_suffix = ""
        if per_suffix:
            main_suffix = main_suffix.removesuffix("_")
        tokens += [suffix for suffix in (main_suffix, per_suffix) if suffix]
        if metric_type == "counter":
            tokens = [token for token in tokens if token != "total"] + ["total"]
        if unit == "1" and metric_type == "gauge":
            tokens = [token for token in tokens if token != "ratio"] + ["ratio"]
        built = "_".join(tokens)
    if built and built[0].isdigit():
        built = "_" + built
    return built


# ---------------------------------------------------------------------------------------------------
# Translation

@dataclass
class TranslationSettings:
    """The per-tenant knobs of the translator (Mimir's limits of the same names)."""

    add_suffixes: bool = False
    promote_resource_attributes: tuple[str, ...] = ()
    keep_identifying_resource_attributes: bool = False
    promote_scope_metadata: bool = False
    allow_delta_temporality: bool = False


@dataclass
class Translation:
    """Series in `Distributor.ingest`'s layout plus the errors of metrics that were left out."""

    series_pairs: list[tuple] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    timestamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    exemplars: list[tuple] = field(default_factory=list)
    metadata: list[tuple[int, str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def error_message(self) -> str | None:
        """Mimir's `otlp parse error: ...` for the collected errors (multierr joins them with "; ")."""
        if not self.errors:
            return None
        return "otlp parse error: " + "; ".join(self.errors)[:MAX_ERROR_MESSAGE_LENGTH]


class _SeriesSet:
    """Series keyed by their labels; a second sample for the same labels joins the first's series."""

    def __init__(self):
        self.index: dict[tuple, int] = {}
        self.labels: list[tuple] = []
        self.samples: list[list[tuple[int, float]]] = []
        self.exemplars: list[tuple] = []

    def add(self, labels: dict[str, str], timestamp: int, value: float) -> int:
        key = tuple(sorted(labels.items()))
        position = self.index.get(key)
        if position is None:
            position = self.index[key] = len(self.labels)
            self.labels.append(key)
            self.samples.append([])
        self.samples[position].append((timestamp, value))
        return position

    def add_exemplars(self, position: int, exemplars: list[tuple]) -> None:
        for labels, value, timestamp in exemplars:
            self.exemplars.append((position, labels, value, timestamp))

    def fill(self, out: Translation) -> None:
        for labels, samples in zip(self.labels, self.samples, strict=True):
            out.series_pairs.append(labels)
            for timestamp, value in samples:
                out.timestamps.append(timestamp)
                out.values.append(value)
            out.offsets.append(len(out.timestamps))
        out.exemplars.extend(self.exemplars)


def _ms(nanos: int) -> int:
    return nanos // 1_000_000


def _point_value(point) -> float:
    kind = point.WhichOneof("value")
    if kind == "as_double":
        return point.as_double
    if kind == "as_int":
        return float(point.as_int)
    return 0.0


def _exemplars(point) -> list[tuple]:
    """A data point's exemplars as (label pairs, value, timestamp ms) (getPromExemplars)."""
    out = []
    for exemplar in point.exemplars:
        kind = exemplar.WhichOneof("value")
        if kind is None:
            raise ValueError("unsupported exemplar value type: Empty")
        value = exemplar.as_double if kind == "as_double" else float(exemplar.as_int)
        labels = []
        runes = 0
        if any(exemplar.trace_id):
            trace_id = exemplar.trace_id.hex()
            runes += len("trace_id") + len(trace_id)
            labels.append(("trace_id", trace_id))
        if any(exemplar.span_id):
            span_id = exemplar.span_id.hex()
            runes += len("span_id") + len(span_id)
            labels.append(("span_id", span_id))
        attributes = []
        for kv in exemplar.filtered_attributes:
            text = any_value_string(kv.value)
            runes += len(kv.key) + len(text)
            attributes.append((kv.key, text))
        if runes <= MAX_EXEMPLAR_RUNES:
            labels.extend(attributes)
        out.append((tuple(labels), value, _ms(exemplar.time_unix_nano)))
    return out


class _ResourceContext:
    """What every series of one ResourceMetrics (and scope) shares: job, instance, promoted attributes."""

    def __init__(self, resource, settings: TranslationSettings):
        self.attributes = {kv.key: kv.value for kv in resource.attributes}
        self.settings = settings
        self.extra: dict[str, str] = {}
        if SERVICE_NAME in self.attributes:
            job = any_value_string(self.attributes[SERVICE_NAME])
            if SERVICE_NAMESPACE in self.attributes:
                job = f"{any_value_string(self.attributes[SERVICE_NAMESPACE])}/{job}"
            self.extra["job"] = job
        if SERVICE_INSTANCE_ID in self.attributes:
            self.extra["instance"] = any_value_string(self.attributes[SERVICE_INSTANCE_ID])
        self.promoted = [(normalize_label(name), any_value_string(self.attributes[name]))
                         for name in settings.promote_resource_attributes if name in self.attributes]
        self.scope_labels: dict[str, str] = {}

    def set_scope(self, scope_metrics) -> None:
        self.scope_labels = {}
        scope = scope_metrics.scope
        if not self.settings.promote_scope_metadata or not scope.name:
            return
        for kv in scope.attributes:
            self.scope_labels[normalize_label("otel_scope_" + kv.key)] = any_value_string(kv.value)
        self.scope_labels["otel_scope_name"] = scope.name
        self.scope_labels["otel_scope_version"] = scope.version
        self.scope_labels["otel_scope_schema_url"] = scope_metrics.schema_url

    def labels(self, attributes, ignore=(), promote=True, **extras) -> dict[str, str]:
        """createAttributes: point attributes (sanitised, colliding keys merged), then the shared labels."""
        pairs = sorted(((kv.key, any_value_string(kv.value)) for kv in attributes if kv.key not in ignore),
                       key=_BY_NAME)
        labels: dict[str, str] = {}
        for key, value in pairs:
            name = normalize_label(key)
            labels[name] = labels[name] + ";" + value if name in labels else value
        if promote:
            for name, value in self.promoted:
                labels.setdefault(name, value)
            labels.update(self.scope_labels)
        labels.update(self.extra)
        for name, value in extras.items():
            labels[name if name == "__name__" else normalize_label(name)] = value
        return labels


_BY_NAME = operator.itemgetter(0)


def _metric_type(metric) -> str:
    kind = metric.WhichOneof("data")
    if kind == "sum":
        return "counter" if metric.sum.is_monotonic else "updown"
    return kind or "empty"


def _temporality_error(metric, allow_delta: bool) -> str | None:
    """Why a metric's type and temporality cannot be translated, or None (aggregationTemporality and its check)."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return f"could not get aggregation temporality for {metric.name} as it has unsupported metric type Empty"
    if kind in ("gauge", "summary"):
        return None
    temporality = getattr(metric, kind).aggregation_temporality
    if temporality == otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE or (
            allow_delta and temporality == otlpb.AGGREGATION_TEMPORALITY_DELTA):
        return None
    return f'invalid temporality and type combination for metric "{metric.name}"'


_METADATA_TYPE = {"gauge": GAUGE, "counter": COUNTER, "updown": GAUGE, "histogram": HISTOGRAM,
                  "exponential_histogram": HISTOGRAM, "summary": SUMMARY}


def _metadata_type(metric, metric_type: str) -> int:
    """otelMetricTypeToPromMetricType: delta sums and histograms are UNKNOWN (no way to flag deltas yet)."""
    kind = metric.WhichOneof("data")
    if kind in ("sum", "histogram", "exponential_histogram") and \
            getattr(metric, kind).aggregation_temporality == otlpb.AGGREGATION_TEMPORALITY_DELTA:
        return UNKNOWN
    return _METADATA_TYPE[metric_type]


def translate(request, settings: TranslationSettings | None = None) -> Translation:
    """Translate an ExportMetricsServiceRequest into Prometheus series, metadata and per-metric errors."""
    settings = settings or TranslationSettings()
    out = Translation()
    series = _SeriesSet()
    for resource_metrics in request.resource_metrics:
        context = _ResourceContext(resource_metrics.resource, settings)
        earliest: int | None = None
        latest: int | None = None
        for scope_metrics in resource_metrics.scope_metrics:
            context.set_scope(scope_metrics)
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    for point in getattr(metric, kind).data_points:
                        t = point.time_unix_nano
                        earliest = t if earliest is None or t < earliest else earliest
                        latest = t if latest is None or t > latest else latest
                problem = _temporality_error(metric, settings.allow_delta_temporality)
                if problem is not None:
                    out.errors.append(problem)
                    continue
                try:
                    _translate_metric(metric, context, settings, series, out)
                except ValueError as exc:
                    out.errors.append(str(exc))
        if earliest is not None:
            _add_target_info(resource_metrics.resource, context, settings, earliest, latest, series)
    series.fill(out)
    return out


def _translate_metric(metric, context: _ResourceContext, settings: TranslationSettings, series: _SeriesSet,
                      out: Translation) -> None:
    kind = metric.WhichOneof("data")
    metric_type = _metric_type(metric)
    name = metric_name(metric.name, metric.unit, metric_type, settings.add_suffixes)
    points = getattr(metric, kind).data_points
    if kind == "exponential_histogram":
        raise ValueError(f"exponential histogram {metric.name} is dropped: native histograms are not "
                         "supported by this server")
    out.metadata.append((_metadata_type(metric, metric_type), name, metric.description, metric.unit))
    if not points:
        raise ValueError(f"empty data points. {metric.name} is dropped")
    if kind in ("gauge", "sum"):
        for point in points:
            value = STALE_NAN if point.flags & NO_RECORDED_VALUE else _point_value(point)
            position = series.add(context.labels(point.attributes, __name__=name), _ms(point.time_unix_nano), value)
            if kind == "sum":  # the translator reads exemplars of sums, not of gauges
                series.add_exemplars(position, _exemplars(point))
    elif kind == "histogram":
        for point in points:
            _add_histogram_point(point, name, context, series)
    else:
        for point in points:
            _add_summary_point(point, name, context, series)


def _add_histogram_point(point, name: str, context: _ResourceContext, series: _SeriesSet) -> None:
    timestamp = _ms(point.time_unix_nano)
    stale = bool(point.flags & NO_RECORDED_VALUE)
    base = context.labels(point.attributes)
    if point.HasField("sum"):
        series.add({**base, "__name__": name + "_sum"}, timestamp, STALE_NAN if stale else point.sum)
    series.add({**base, "__name__": name + "_count"}, timestamp, STALE_NAN if stale else float(point.count))
    buckets: list[tuple[float, int]] = []
    cumulative = 0
    for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
        cumulative += count
        position = series.add({**base, "__name__": name + "_bucket", "le": go_format_float(bound)}, timestamp,
                              STALE_NAN if stale else float(cumulative))
        buckets.append((bound, position))
    position = series.add({**base, "__name__": name + "_bucket", "le": "+Inf"}, timestamp,
                          STALE_NAN if stale else float(point.count))
    buckets.append((math.inf, position))
    buckets.sort(key=lambda bucket: bucket[0])
    for exemplar in _exemplars(point):
        value = exemplar[1]
        for bound, position in buckets:
            if value <= bound:
                series.add_exemplars(position, [exemplar])
                break


def _add_summary_point(point, name: str, context: _ResourceContext, series: _SeriesSet) -> None:
    timestamp = _ms(point.time_unix_nano)
    stale = bool(point.flags & NO_RECORDED_VALUE)
    base = context.labels(point.attributes)
    series.add({**base, "__name__": name + "_sum"}, timestamp, STALE_NAN if stale else point.sum)
    series.add({**base, "__name__": name + "_count"}, timestamp, STALE_NAN if stale else float(point.count))
    for quantile in point.quantile_values:
        series.add({**base, "__name__": name, "quantile": go_format_float(quantile.quantile)}, timestamp,
                   STALE_NAN if stale else quantile.value)


def _add_target_info(resource, context: _ResourceContext, settings: TranslationSettings, earliest_ns: int,
                     latest_ns: int, series: _SeriesSet) -> None:
    """One `target_info` series per resource with descriptive attributes, sampled every 2m30s.

    Samples run from the resource's earliest to its latest data point (stepping in nanoseconds, as
    the translator steps a time.Time) plus one at the latest.
    """
    keys = {kv.key for kv in resource.attributes}
    if not keys - set(IDENTIFYING_ATTRIBUTES):
        return
    ignore = () if settings.keep_identifying_resource_attributes else IDENTIFYING_ATTRIBUTES
    labels = context.labels(resource.attributes, ignore=ignore, promote=False, __name__="target_info")
    if "job" not in labels and "instance" not in labels:
        return
    timestamp = earliest_ns
    while timestamp < latest_ns:
        series.add(labels, _ms(timestamp), 1.0)
        timestamp += TARGET_INFO_INTERVAL_MS * 1_000_000
    series.add(labels, _ms(latest_ns), 1.0)


# ---------------------------------------------------------------------------------------------------
# HTTP

def _encode(message, content_type: str) -> tuple[bytes, str]:
    """Encode a response message as Mimir does: JSON (Go's encoding/json of the struct) or protobuf.

    Go's encoder leaves out zero fields (`omitempty`), so a success is `{}` and a Status carries only
    a non-zero code and a non-empty message; strings are written as Go writes them.
    """
    if content_type == JSON_CONTENT_TYPE:
        members = []
        if message.DESCRIPTOR.name == "Status":
            if message.code:
                members.append(f'"code":{message.code}')
            if message.message:
                members.append(f'"message":{_json_string(message.message)}')
        return ("{" + ",".join(members) + "}").encode(), JSON_CONTENT_TYPE
    return message.SerializeToString(), PROTOBUF_CONTENT_TYPE


def otlp_response(request_content_type: str | None, status: int, message,
                  headers: list[tuple[str, str]] | None = None) -> Response:
    """An OTLP answer in the request's content type (protobuf unless it was JSON)."""
    body, content_type = _encode(message, request_content_type or "")
    response = Response(status, body, content_type, headers)
    response.headers.append(("X-Content-Type-Options", "nosniff"))
    return response


def status_response(request_content_type: str | None, http_status: int, grpc_code: int, text: str,
                    headers: list[tuple[str, str]] | None = None) -> Response:
    """A `google.rpc.Status` error body."""
    return otlp_response(request_content_type, http_status, otlpb.Status(code=grpc_code, message=text), headers)


def _grpc_code_for(status: int) -> tuple[int, int]:
    """(HTTP status, gRPC code) for an error of the shared write path, with OTLP's retryable 5xx rule."""
    if status == 400:
        return 400, GRPC_INVALID_ARGUMENT
    if status == 429:
        return 429, GRPC_RESOURCE_EXHAUSTED
    if status == 202:
        return 202, GRPC_ALREADY_EXISTS
    if 500 <= status < 600:
        # OTLP clients retry only 429, 502, 503 and 504.
        return (status if status in (502, 503, 504) else 503), (GRPC_UNAVAILABLE if status == 503 else GRPC_INTERNAL)
    return status, GRPC_INTERNAL


class OTLPHandler:
    """Serves `POST /otlp/v1/metrics` on top of the distributor's shared write path."""

    def __init__(self, distributor, overrides, max_request_size: int = DEFAULT_MAX_OTLP_REQUEST_SIZE):
        self.distributor = distributor
        self.overrides = overrides
        self.max_request_size = max_request_size

    def settings_for(self, tenant: str) -> TranslationSettings:
        """The tenant's translation options from its limits."""
        get = self.overrides.get
        return TranslationSettings(
            add_suffixes=bool(get(tenant, "otel_metric_suffixes_enabled")),
            promote_resource_attributes=tuple(get(tenant, "promote_otel_resource_attributes") or ()),
            keep_identifying_resource_attributes=bool(get(tenant, "otel_keep_identifying_resource_attributes")),
            promote_scope_metadata=bool(get(tenant, "otel_promote_scope_metadata")),
            allow_delta_temporality=bool(get(tenant, "otel_native_delta_ingestion")),
        )

    async def push(self, request: Request) -> Response:
        """POST /otlp/v1/metrics."""
        tenant = request.tenant
        content_type = request.headers.get("content-type")
        try:
            export = decode_request(request.body, content_type, request.headers.get("content-encoding"),
                                    self.max_request_size)
        except OTLPDecodeError as exc:
            # httpgrpc errors carry the HTTP status where the gRPC code would be.
            return status_response(content_type, exc.status, exc.status, exc.message)
        translation = translate(export, self.settings_for(tenant))
        parse_error = translation.error_message()
        if parse_error is not None and not translation.series_pairs:
            kv_log(log, logging.WARNING, "detected an error while ingesting OTLP metrics request", user=tenant,
                   httpCode=400, err=parse_error)
            return status_response(content_type, 400, 400, parse_error)
        try:
            self.distributor.ingest(tenant, translation.series_pairs, translation.offsets, translation.timestamps,
                                    translation.values, translation.exemplars, translation.metadata,
                                    retry_attempt=request.headers.get("retry-attempt"))
        except HTTPError as exc:
            http_status, grpc_code = _grpc_code_for(exc.status)
            kv_log(log, logging.WARNING, "detected an error while ingesting OTLP metrics request "
                   "(the request may have been partially ingested)", user=tenant, httpCode=http_status,
                   err=exc.message)
            return status_response(content_type, http_status, grpc_code, exc.message, exc.headers)
        if parse_error is not None:
            return status_response(content_type, 400, 400, parse_error)
        return otlp_response(content_type, 200, otlpb.ExportMetricsServiceResponse())
