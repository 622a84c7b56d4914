"""Per-tenant validation of pushed series, samples, exemplars and metadata, as Mimir's distributor does it.

Mimir 2.17's pkg/distributor/validate.go: each check returns the `cortex_discarded_*_total` reason
(the error id with `-` turned into `_`) and the exact user-facing message, which ends with
`(err-mimir-<id>)` and, for per-tenant limits, the flag that changes the limit. Labels reach these
functions already in canonical form (empty values dropped, sorted by name), so a repeated name shows
up as two neighbours.
"""

from __future__ import annotations

import re

from mimird.tsdb.head import format_series
from mimird.tsdb.labels import Labels

METRIC_NAME = "__name__"

# Combined runes of an exemplar's label names and values (OpenMetrics' limit).
EXEMPLAR_MAX_LABEL_SET_LENGTH = 128
# Exemplars older than the request's earliest sample by more than this are dropped.
EXEMPLAR_MAX_AGE_MS = 5 * 60 * 1000

_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.ASCII)
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*", re.ASCII)

# Discard reasons (cortex_discarded_samples_total{reason}), Mimir's ids as label values.
MISSING_METRIC_NAME = "missing_metric_name"
METRIC_NAME_INVALID = "metric_name_invalid"
MAX_LABEL_NAMES_PER_SERIES = "max_label_names_per_series"
MAX_LABEL_NAMES_PER_INFO_SERIES = "max_label_names_per_info_series"
LABEL_INVALID = "label_invalid"
LABEL_NAME_TOO_LONG = "label_name_too_long"
LABEL_VALUE_INVALID = "label_value_invalid"
LABEL_VALUE_TOO_LONG = "label_value_too_long"
DUPLICATE_LABEL_NAMES = "duplicate_label_names"
TOO_FAR_IN_FUTURE = "too_far_in_future"
TOO_FAR_IN_PAST = "too_far_in_past"
SAMPLE_DUPLICATE_TIMESTAMP = "sample_duplicate_timestamp"
RATE_LIMITED = "rate_limited"
TOO_MANY_HA_CLUSTERS = "too_many_ha_clusters"

# cortex_discarded_exemplars_total reasons
EXEMPLAR_LABELS_MISSING = "exemplar_labels_missing"
EXEMPLAR_TIMESTAMP_INVALID = "exemplar_timestamp_invalid"
EXEMPLAR_LABELS_TOO_LONG = "exemplar_labels_too_long"
EXEMPLAR_LABELS_BLANK = "exemplar_labels_blank"
EXEMPLAR_TOO_OLD = "exemplar_too_old"
EXEMPLAR_TOO_FAR_IN_FUTURE = "exemplar_too_far_in_future"
TOO_MANY_EXEMPLARS_PER_SERIES_PER_REQUEST = "too_many_exemplars_per_series_per_request"

# cortex_discarded_metadata_total reasons
METADATA_METRIC_NAME_TOO_LONG = "metric_name_too_long"
METADATA_UNIT_TOO_LONG = "unit_too_long"


def plain_message(text: str, error_id: str) -> str:
    """`<text> (err-mimir-<id>)`."""
    return f"{text} (err-mimir-{error_id})"


def tenant_limit_message(text: str, error_id: str, *flags: str) -> str:
    """`<text> (err-mimir-<id>). To adjust the related per-tenant limit, configure -<flag>, ...`."""
    if len(flags) == 1:
        flag_list, plural = f"-{flags[0]}", ""
    else:
        flag_list = ", ".join(f"-{f}" for f in flags[:-1]) + f" and -{flags[-1]}"
        plural = "s"
    return (f"{text} (err-mimir-{error_id}). To adjust the related per-tenant limit{plural}, configure "
            f"{flag_list}, or contact your service administrator.")


def instance_limit_message(text: str, error_id: str, flag: str) -> str:
    """`<text> (err-mimir-<id>). To adjust the related limit, configure -<flag>, ...`."""
    return (f"{text} (err-mimir-{error_id}). To adjust the related limit, configure -{flag}, "
            "or contact your service administrator.")


def _cut(text: str) -> str:
    """Go's `%.200s`: at most 200 runes."""
    return text[:200]


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SURROGATE_RUN = re.compile("[\ud800-\udfff]+")


def _to_valid_utf8(text: str) -> str:
    """Go's strings.ToValidUTF8(s, "\ufffd"): each run of bytes that were not UTF-8 (decoded as lone
    surrogates) becomes one U+FFFD."""
    return _SURROGATE_RUN.sub("\ufffd", text)


def _remove_non_ascii(name: str) -> str:
    kept = "".join(c for c in name if ord(c) < 128)
    return kept if len(kept) == len(name) else kept + " (non-ascii characters removed)"


# Names already found valid (bounded: cleared when full), so the regular expressions run once per name.
_VALID_METRIC_NAMES: set[str] = set()
_VALID_LABEL_NAMES: set[str] = set()
_MAX_REMEMBERED = 100_000


def _remember(names: set[str], name: str) -> None:
    if len(names) >= _MAX_REMEMBERED:
        names.clear()
    names.add(name)


def metric_name_of(labels: Labels) -> str | None:
    for name, value in labels:
        if name == METRIC_NAME:
            return value
    return None


def validate_labels(labels: Labels, limits: dict, skip_label_validation: bool = False,
                    skip_label_count_validation: bool = False) -> tuple[str, str] | None:
    """Check one canonical series' labels; (discard reason, message) for the first problem, else None."""
    metric = metric_name_of(labels)
    if metric is None:
        return MISSING_METRIC_NAME, plain_message("received series has no metric name", "missing-metric-name")
    if metric not in _VALID_METRIC_NAMES:
        if not _METRIC_NAME_RE.fullmatch(metric):
            return METRIC_NAME_INVALID, plain_message(
                f"received a series with invalid metric name: '{_cut(_remove_non_ascii(metric))}'",
                "metric-name-invalid")
        _remember(_VALID_METRIC_NAMES, metric)
    count = len(labels)
    if not skip_label_count_validation and count > limits["max_label_names_per_series"]:
        series = format_series(labels)
        ellipsis = "\u2026" if len(series) > 200 else ""
        if metric.endswith("_info"):
            info_limit = limits["max_label_names_per_info_series"]
            if count > info_limit:
                return MAX_LABEL_NAMES_PER_INFO_SERIES, tenant_limit_message(
                    f"received an info series whose number of labels exceeds the limit (actual: {count}, "
                    f"limit: {info_limit}) series: '{_cut(series)}{ellipsis}'",
                    "max-label-names-per-info-series", "validation.max-label-names-per-info-series")
        else:
            return MAX_LABEL_NAMES_PER_SERIES, tenant_limit_message(
                f"received a series whose number of labels exceeds the limit (actual: {count}, "
                f"limit: {limits['max_label_names_per_series']}) series: '{_cut(series)}{ellipsis}'",
                "max-label-names-per-series", "validation.max-label-names-per-series")
    max_name_length = limits["max_label_name_length"]
    max_value_length = limits["max_label_value_length"]
    previous = ""
    for name, value in labels:
        # Valid names are ASCII, so their length in bytes is their length; they are remembered.
        if name in _VALID_LABEL_NAMES:
            name_length = len(name)
        elif (skip_label_validation and _valid_utf8(name)) or _LABEL_NAME_RE.fullmatch(name):
            name_length = len(name.encode("utf-8", "surrogateescape"))
            if not skip_label_validation:
                _remember(_VALID_LABEL_NAMES, name)
        else:
            return LABEL_INVALID, plain_message(
                f"received a series with an invalid label: '{_cut(name)}' series: '{_cut(format_series(labels))}'",
                "label-invalid")
        if name_length > max_name_length:
            return LABEL_NAME_TOO_LONG, tenant_limit_message(
                f"received a series whose label name length exceeds the limit, label: '{_cut(name)}' "
                f"series: '{_cut(format_series(labels))}'", "label-name-too-long", "validation.max-length-label-name")
        if value.isascii():
            value_length = len(value)
        else:
            # Checked even when label validation is skipped: a value that is not UTF-8 (kept by the
            # decoder as surrogates) cannot be stored, where Mimir would store the raw bytes.
            if not _valid_utf8(value):
                return LABEL_VALUE_INVALID, plain_message(
                    f"received a series with invalid value in label '{_cut(name)}': '{_cut(_to_valid_utf8(value))}' "
                    f"metric: '{_cut(_to_valid_utf8(metric))}'", "label-value-invalid")
            value_length = len(value.encode("utf-8", "surrogateescape"))
        if value_length > max_value_length:
            return LABEL_VALUE_TOO_LONG, tenant_limit_message(
                f"received a series whose label value length exceeds the limit, label: '{name}', "
                f"value: '{_cut(value)}' (truncated) series: '{_cut(format_series(labels))}'",
                "label-value-too-long", "validation.max-length-label-value")
        if name == previous:
            return DUPLICATE_LABEL_NAMES, plain_message(
                f"received a series with duplicate label name, label: '{_cut(name)}' "
                f"series: '{_cut(format_series(labels))}'", "duplicate-label-names")
        previous = name
    return None


class SampleTimeBounds:
    """The window a tenant's sample timestamps must fall in, fixed at the start of a request."""

    __slots__ = ("max_ms", "min_ms")

    def __init__(self, now_ms: int, limits: dict):
        self.max_ms = now_ms + int(limits["creation_grace_period"] * 1000)
        past = limits["past_grace_period"]
        self.min_ms = (now_ms - int(past * 1000) - int(limits["out_of_order_time_window"] * 1000)
                       if past > 0 else None)

    def check(self, ts: int, metric: str) -> tuple[str, str] | None:
        """(reason, message) if `ts` is outside the window, else None."""
        if ts > self.max_ms:
            return TOO_FAR_IN_FUTURE, tenant_limit_message(
                f"received a sample whose timestamp is too far in the future, timestamp: {ts} series: '{_cut(metric)}'",
                "too-far-in-future", "validation.create-grace-period")
        if self.min_ms is not None and ts < self.min_ms:
            return TOO_FAR_IN_PAST, tenant_limit_message(
                f"received a sample whose timestamp is too far in the past, timestamp: {ts} series: '{_cut(metric)}'",
                "too-far-in-past", "validation.past-grace-period")
        return None


INVALID_NATIVE_HISTOGRAM_SCHEMA = "invalid_native_histogram_schema"
MIN_HISTOGRAM_SCHEMA, MAX_HISTOGRAM_SCHEMA, CUSTOM_BUCKETS_SCHEMA = -4, 8, -53


def check_histograms(histograms, labels: Labels, bounds: SampleTimeBounds) -> tuple[tuple[str, str] | None, int]:
    """Validate one series' native histograms: ((reason, message) or None, number kept).

    The same time window as float samples, then the schema (-4..8, or -53 for custom buckets); the
    first of several histograms sharing a timestamp is the one kept.
    """
    metric = metric_name_of(labels) or ""
    seen: set[int] = set()
    for histogram in histograms:
        if histogram.timestamp in seen:
            continue
        seen.add(histogram.timestamp)
        problem = bounds.check(histogram.timestamp, metric)
        if problem is not None:
            return problem, 0
        schema = histogram.schema
        if not (MIN_HISTOGRAM_SCHEMA <= schema <= MAX_HISTOGRAM_SCHEMA or schema == CUSTOM_BUCKETS_SCHEMA):
            return (INVALID_NATIVE_HISTOGRAM_SCHEMA, plain_message(
                f"received a native histogram sample with an invalid schema: {schema}",
                "invalid-native-histogram-schema")), 0
    return None, len(seen)


def storable_labels(pairs) -> bool:
    """Whether every name and value is valid UTF-8 (decoded bytes that were not are lone surrogates)."""
    for name, value in pairs:
        if not (name.isascii() and value.isascii()) and not (_valid_utf8(name) and _valid_utf8(value)):
            return False
    return True


def exemplar_discard_reason(labels, ts: int, min_ts: int, max_ts: int) -> str | None:
    """Why an exemplar is dropped (Mimir never fails a request for one), or None to keep it."""
    if not labels:
        return EXEMPLAR_LABELS_MISSING
    if ts == 0:
        return EXEMPLAR_TIMESTAMP_INVALID
    if sum(len(name) + len(value) for name, value in labels) > EXEMPLAR_MAX_LABEL_SET_LENGTH:
        return EXEMPLAR_LABELS_TOO_LONG
    if not any(name and value for name, value in labels):
        return EXEMPLAR_LABELS_BLANK
    if ts < min_ts:
        return EXEMPLAR_TOO_OLD
    if ts > max_ts:
        return EXEMPLAR_TOO_FAR_IN_FUTURE
    return None


def clean_metadata(entry: tuple[int, str, str, str], limits: dict
                   ) -> tuple[tuple[int, str, str, str] | None, tuple[str, str] | None]:
    """Truncate the help text and check one metadata entry: (kept entry or None, (reason, message) or None)."""
    mtype, name, help_text, unit = entry
    if limits["enforce_metadata_metric_name"] and not name:
        return None, (MISSING_METRIC_NAME,
                      plain_message("received a metric metadata with no metric name", "metadata-missing-metric-name"))
    max_length = limits["max_metadata_length"]
    help_bytes = help_text.encode()
    if len(help_bytes) > max_length:
        # cut at the last character boundary within the limit, as Mimir does
        help_text = help_bytes[:max_length].decode("utf-8", "ignore")
    if len(name.encode()) > max_length:
        return None, (METADATA_METRIC_NAME_TOO_LONG, tenant_limit_message(
            f"received a metric metadata whose metric name length exceeds the limit, metric name: '{_cut(name)}'",
            "metric-name-too-long", "validation.max-metadata-length"))
    if len(unit.encode()) > max_length:
        return None, (METADATA_UNIT_TOO_LONG, tenant_limit_message(
            f"received a metric metadata whose unit name length exceeds the limit, unit: '{_cut(unit)}' "
            f"metric name: '{_cut(name)}'", "unit-too-long", "validation.max-metadata-length"))
    return (mtype, name, help_text, unit), None
