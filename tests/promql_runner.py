"""Runs PromQL ``.test`` files (Prometheus 3.5's test language, see shared/promql-tests/FORMAT.md)
against our engine and storage head.

``load_cases(path)`` parses a file into ``Case`` objects (one per eval command) that know the
storage state they run against; ``run_case(case)`` performs every check of the upstream harness:
the plain run, the range-query cross-check and the ``@``-modifier invariance runs.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mimird.promql import ast, parse
from mimird.promql.engine import Engine
from mimird.promql.quoting import unquote
from mimird.promql.value import Matrix, QueryError, Scalar, Vector
from mimird.tsdb.head import Head
from mimird.tsdb.labels import Labels, Matcher, MatchType, format_labels, make_labels
from mimird.util.durations import parse_duration

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
_NUMBER = r"(?:(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?|[iI][nN][fF]|[nN][aA][nN])"
_STRING = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`"
_LABEL_PAIR = re.compile(rf"\s*(?:(\}}|,)|([a-zA-Z_][a-zA-Z0-9_]*|{_STRING})\s*=\s*({_STRING}))")
_ITEM = re.compile(rf"^([+-]?{_NUMBER})(?:([+-])({_NUMBER}))?(?:x(\d+))?$")
_EVAL_INSTANT = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_EVAL_RANGE = re.compile(r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$")
_TIME_FUNCTIONS = frozenset(("time", "timestamp", "predict_linear", "minute", "hour", "day_of_week",
                             "day_of_month", "day_of_year", "days_in_month", "month", "year"))

ENGINE = Engine(lookback_delta_ms=300_000, max_samples=10_000, timeout_s=100.0)


def duration_ms(text: str) -> int:
    """A test-file duration (``1m``, ``10s53ms``, ``0``) in milliseconds."""
    return 0 if text == "0" else round(parse_duration(text) * 1000)


class TestFileError(ValueError):
    """The .test file is malformed."""


def parse_number(text: str) -> float:
    text = text.replace("_", "")
    lowered = text.lower().lstrip("+-")
    sign = -1.0 if text.startswith("-") else 1.0
    if lowered == "inf":
        return sign * math.inf
    if lowered == "nan":
        return math.nan
    return float(text)


def parse_series_literal(text: str) -> tuple[Labels, str]:
    """``name{a="b"} rest`` -> (labels, rest)."""
    match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)?", text)
    name = match.group(1) or ""
    pos = match.end()
    pairs = {}
    if name:
        pairs["__name__"] = name
    if pos < len(text) and text[pos] == "{":
        pos += 1
        while True:
            m = _LABEL_PAIR.match(text, pos)
            if not m:
                raise TestFileError(f"bad series literal: {text!r}")
            pos = m.end()
            if m.group(1) == "}":
                break
            if m.group(1) == ",":
                continue
            name = m.group(2)
            pairs[unquote(name) if name[0] in "\"'`" else name] = unquote(m.group(3))
    return make_labels(pairs), text[pos:]


def expand_items(text: str) -> list[float | None]:
    """Slot values of a float series description; None is an empty slot."""
    out: list[float | None] = []
    for item in text.split():
        if item == "_":
            out.append(None)
            continue
        if item.startswith("_x"):
            out.extend([None] * int(item[2:]))
            continue
        if item == "stale":
            out.append(STALE_NAN)
            continue
        match = _ITEM.match(item)
        if not match:
            raise TestFileError(f"bad item {item!r}")
        value = parse_number(match.group(1))
        count = int(match.group(4)) if match.group(4) is not None else 0
        delta = parse_number(match.group(3)) if match.group(3) else 0.0
        if match.group(2) == "-":
            delta = -delta
        out.append(value)
        for _ in range(count):
            value = value + delta
            out.append(value)
    return out


@dataclass
class Load:
    step_ms: int
    series: dict[Labels, list[float | None]]
    histogram_series: set[Labels]


@dataclass
class Case:
    """One eval command with everything needed to run it."""

    file: str
    line: int
    header: str
    expr: str
    loads: list[Load]
    histogram_series: set[Labels]
    instant: bool
    time_ms: int = 0
    start_ms: int = 0
    end_ms: int = 0
    step_ms: int = 0
    fail: bool = False
    fail_message: str | None = None
    fail_regexp: str | None = None
    ordered: bool = False
    want_warn: bool = False
    want_info: bool = False
    expect_lines: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    scalar: float | None = None
    expected: list[tuple[Labels, list[float | None]]] = field(default_factory=list)
    histogram_expected: bool = False

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    def uses_native_histograms(self) -> bool:
        if self.histogram_expected:
            return True
        if not self.histogram_series:
            return False
        try:
            tree = parse(self.expr)
        except Exception:
            return False
        for node in ast.walk(tree):
            if isinstance(node, ast.VectorSelector):
                for labels in self.histogram_series:
                    values = dict(labels)
                    if all(m.matches(values.get(m.name, "")) for m in node.matchers):
                        return True
        return False


def load_cases(path: Path) -> list[Case]:
    """Parse a .test file into its eval cases."""
    lines = path.read_text(encoding="utf-8").split("\n")
    lines = ["" if line.strip(" \t\r").startswith("#") else line.strip(" \t\r") for line in lines]
    cases: list[Case] = []
    loads: list[Load] = []
    histogram_series: set[Labels] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        word = line.split()[0].lower()
        if word == "clear":
            loads = []
            histogram_series = set()
            i += 1
            continue
        if word.startswith("load"):
            step = duration_ms(line.split()[1])
            load = Load(step, {}, set())
            i += 1
            while i < len(lines) and lines[i]:
                labels, rest = parse_series_literal(lines[i])
                if "{{" in rest:
                    load.histogram_series.add(labels)
                else:
                    load.series[labels] = expand_items(rest)
                i += 1
            if word == "load_with_nhcb":
                for labels in list(load.series):
                    values = dict(labels)
                    name = values.get("__name__", "")
                    for suffix in ("_bucket", "_sum", "_count"):
                        if name.endswith(suffix):
                            base = {k: v for k, v in values.items() if k != "le"}
                            base["__name__"] = name[: -len(suffix)]
                            load.histogram_series.add(make_labels(base))
                            break
            histogram_series = histogram_series | load.histogram_series
            loads = [*loads, load]
            continue
        if word.startswith("eval"):
            case = _parse_eval(path.name, i + 1, line, loads, histogram_series)
            i += 1
            position = 0
            while i < len(lines) and lines[i]:
                body = lines[i]
                i += 1
                if body.startswith("expected_fail_message"):
                    case.fail_message = body[len("expected_fail_message"):].strip()
                    break
                if body.startswith("expected_fail_regexp"):
                    case.fail_regexp = body[len("expected_fail_regexp"):].strip()
                    break
                if body.split()[0] == "expect":
                    _parse_expect(case, body)
                    continue
                scalar = _parse_scalar_line(body)
                if scalar is not None:
                    case.scalar = scalar
                    break
                if "{{" in body:
                    case.histogram_expected = True
                    continue
                labels, rest = parse_series_literal(body)
                position += 1
                case.expected.append((labels, expand_items(rest)))
            cases.append(case)
            continue
        raise TestFileError(f"{path.name}:{i + 1}: unknown command {line!r}")
    return cases


def _parse_scalar_line(text: str) -> float | None:
    try:
        return float(int(text, 0))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _parse_expect(case: Case, body: str) -> None:
    parts = body.split(None, 2)
    kind = parts[1]
    rest = parts[2] if len(parts) > 2 else ""
    msg = regex = None
    if rest.startswith("msg:"):
        msg = rest[4:].strip()
    elif rest.startswith("regex:"):
        regex = rest[6:].strip()
    if kind == "fail":
        case.fail = True
        case.fail_message = msg
        case.fail_regexp = regex
    elif kind == "ordered":
        case.ordered = True
    else:
        case.expect_lines.append((kind, msg, regex))


def _parse_eval(file: str, line_no: int, line: str, loads, histogram_series) -> Case:
    match = _EVAL_INSTANT.match(line)
    if match:
        modifier, at, expr = match.groups()
        case = Case(file, line_no, line, expr, loads, histogram_series, True, time_ms=duration_ms(at))
    else:
        match = _EVAL_RANGE.match(line)
        if not match:
            raise TestFileError(f"{file}:{line_no}: bad eval header")
        modifier, start, end, step, expr = match.groups()
        case = Case(file, line_no, line, expr, loads, histogram_series, False, start_ms=duration_ms(start),
                    end_ms=duration_ms(end), step_ms=duration_ms(step))
    case.fail = modifier == "fail"
    case.ordered = modifier == "ordered"
    case.want_warn = modifier == "warn"
    case.want_info = modifier == "info"
    return case


# --- storage ------------------------------------------------------------------------------------

def load_samples(load: Load) -> list[tuple[Labels, list[tuple[int, float]]]]:
    """A load section's float series as (labels, [(ts_ms, value), ...]); stale markers are STALE_NAN."""
    return [(labels, [(index * load.step_ms, value) for index, value in enumerate(slots) if value is not None])
            for labels, slots in load.series.items()]


_HEADS: dict[tuple, Head] = {}


def build_head(case: Case) -> Head:
    """A head holding the case's loads (memoised per file state)."""
    key = (case.file, tuple(id(load) for load in case.loads))
    head = _HEADS.get(key)
    if head is not None:
        return head
    head = Head(ooo_window_ms=1 << 60)
    for load in case.loads:
        labels_list, offsets, timestamps, values = [], [0], [], []
        for labels, samples in load_samples(load):
            timestamps.extend(t for t, _ in samples)
            values.extend(v for _, v in samples)
            labels_list.append(labels)
            offsets.append(len(timestamps))
        head.append(labels_list, offsets, timestamps, values)
    if len(_HEADS) > 64:
        _HEADS.clear()
    _HEADS[key] = head
    return head


# --- checks -------------------------------------------------------------------------------------

_MIN_NORMAL = 2.2250738585072014e-308


def _is_stale(value: float) -> bool:
    return struct.pack("<d", value) == struct.pack("<d", STALE_NAN)


def float_equal(expected: float, got: float) -> bool:
    """util/almost.Equal with epsilon 1e-6, plus the stale-marker rule."""
    if _is_stale(expected) or _is_stale(got):
        return _is_stale(expected) and _is_stale(got)
    if math.isnan(expected) and math.isnan(got):
        return True
    if expected == got:
        return True
    absolute_sum = abs(expected) + abs(got)
    diff = abs(expected - got)
    if expected == 0 or got == 0 or absolute_sum < _MIN_NORMAL:
        return diff < 1e-6 * _MIN_NORMAL
    return diff / min(absolute_sum, 1.7976931348623157e308) < 1e-6


class CheckFailure(AssertionError):
    """A result did not match the expectations."""


def _check_annotations(case: Case, warnings: list[str], infos: list[str]) -> None:
    if case.want_warn and not warnings:
        raise CheckFailure(f"expected warnings, got none (infos: {infos})")
    if case.want_info and not infos:
        raise CheckFailure(f"expected info annotations, got none (warnings: {warnings})")
    for kind, got in (("warn", warnings), ("info", infos)):
        lines = [(msg, regex) for k, msg, regex in case.expect_lines if k == kind]
        if any(k == f"no_{kind}" for k, _, _ in case.expect_lines) and got:
            raise CheckFailure(f"expected no {kind} annotations, got {got}")
        if not lines:
            continue

        def matches(text, msg, regex):
            if msg is not None:
                return text == msg
            if regex is not None:
                return re.search(regex, text) is not None
            return True

        for msg, regex in lines:
            if not any(matches(text, msg, regex) for text in got):
                raise CheckFailure(f"expected {kind} annotation {msg or regex!r}, got {got}")
        for text in got:
            if not any(matches(text, msg, regex) for msg, regex in lines):
                raise CheckFailure(f"unexpected {kind} annotation {text!r}")


def _check_vector(case: Case, vector: list[tuple[Labels, float]]) -> None:
    if case.scalar is not None:
        raise CheckFailure(f"expected scalar {case.scalar}, got vector {vector}")
    expected = {labels: values[0] for labels, values in case.expected}
    order = [labels for labels, _ in case.expected]
    got = {}
    for labels, value in vector:
        if labels in got:
            raise CheckFailure(f"duplicate series {format_labels(labels)} in result")
        got[labels] = value
    for labels, value in got.items():
        if labels not in expected:
            raise CheckFailure(f"unexpected series {format_labels(labels)} {value} in result {vector}")
        if not float_equal(expected[labels], value):
            raise CheckFailure(f"{format_labels(labels)}: expected {expected[labels]}, got {value}")
    for labels in expected:
        if labels not in got:
            raise CheckFailure(f"expected series {format_labels(labels)} missing from result {vector}")
    if case.ordered:
        got_order = [labels for labels, _ in vector]
        if got_order != order:
            raise CheckFailure(f"order: expected {order}, got {got_order}")


def _check_result(case: Case, value) -> None:
    if isinstance(value, Scalar):
        if case.scalar is None:
            raise CheckFailure(f"got scalar {value.v}, expected series")
        if not float_equal(case.scalar, value.v):
            raise CheckFailure(f"scalar: expected {case.scalar}, got {value.v}")
        return
    if isinstance(value, Vector):
        _check_vector(case, [(s.labels, s.v) for s in value])
        return
    if isinstance(value, Matrix):
        _check_matrix(case, value)
        return
    raise CheckFailure(f"unexpected result type {type(value).__name__}")


def _check_matrix(case: Case, matrix: Matrix) -> None:
    if case.scalar is not None:
        raise CheckFailure("expected scalar, got matrix")
    labels_order = [s.labels for s in matrix]
    if labels_order != sorted(labels_order):
        raise CheckFailure("matrix not sorted by labels")
    expected = {}
    for labels, slots in case.expected:
        points = [(case.start_ms + k * case.step_ms, v) for k, v in enumerate(slots) if v is not None]
        expected[labels] = points
    got = {s.labels: list(zip(s.ts.tolist(), s.vals.tolist(), strict=True)) for s in matrix}
    if set(got) != set(expected):
        raise CheckFailure(f"series differ: expected {sorted(expected)}, got {sorted(got)}")
    for labels, points in expected.items():
        actual = got[labels]
        if len(actual) != len(points):
            raise CheckFailure(f"{format_labels(labels)}: expected {points}, got {actual}")
        for (et, ev), (at, av) in zip(points, actual, strict=True):
            if et != at or not float_equal(ev, av):
                raise CheckFailure(f"{format_labels(labels)}: expected {points}, got {actual}")


def _fail_matches(case: Case, error: Exception | str) -> None:
    text = str(error)
    if case.fail_message is not None and text != case.fail_message:
        raise CheckFailure(f"expected error {case.fail_message!r}, got {text!r}")
    if case.fail_regexp is not None and not re.search(case.fail_regexp, text):
        raise CheckFailure(f"expected error matching {case.fail_regexp!r}, got {text!r}")


def check_outcome(case: Case, value, warnings: list[str], infos: list[str]) -> None:
    """The checks of one successful evaluation of ``case`` (at its own time or over its own range)
    against the file's expectations: no error expected, annotations, and the value."""
    if case.fail:
        raise CheckFailure(f"expected an error, got {value}")
    _check_annotations(case, warnings, infos)
    if case.instant:
        _check_result(case, value)
    else:
        _check_matrix(case, value)


def check_error(case: Case, message: str) -> None:
    """The checks of one failed evaluation of ``case`` whose error text is ``message``."""
    if not case.fail:
        raise CheckFailure(f"unexpected error: {message}")
    _fail_matches(case, message)


def _run_instant_at(case: Case, head: Head, expr, time_ms: int) -> None:
    try:
        result = ENGINE.instant(head, expr, time_ms)
    except QueryError as error:
        if case.fail:
            _fail_matches(case, error)
            return
        raise CheckFailure(f"at {time_ms}: unexpected error: {error}") from error
    if case.fail:
        raise CheckFailure(f"at {time_ms}: expected an error, got {result.value}")
    _check_annotations(case, result.warnings, result.infos)
    _check_result(case, result.value)
    # Layer B: the same expression as a range query around the time.
    try:
        ranged = ENGINE.range(head, expr, time_ms - 60_000, time_ms + 60_000, 60_000)
    except QueryError as error:
        raise CheckFailure(f"range cross-check at {time_ms}: unexpected error: {error}") from error
    check_range_cross_check(case, result.value, ranged.value, time_ms)


def check_range_cross_check(case: Case, instant_value, ranged: Matrix, time_ms: int) -> None:
    """The harness's range cross-check of an instant eval: ``ranged``, the expression evaluated as a range
    query from ``time_ms`` - 1m to ``time_ms`` + 1m at a 1m step, must hold the expected result at
    ``time_ms`` (``instant_value`` is the instant query's result)."""
    if case.ordered:
        return
    labels_order = [s.labels for s in ranged]
    if labels_order != sorted(labels_order):
        raise CheckFailure("range cross-check: matrix not sorted by labels")
    at_t = []
    for series in ranged:
        hits = np.flatnonzero(series.ts == time_ms)
        if len(hits):
            at_t.append((series.labels, float(series.vals[hits[0]])))
    if isinstance(instant_value, Scalar):
        if not at_t or not float_equal(case.scalar, at_t[0][1]):
            raise CheckFailure(f"range cross-check at {time_ms}: scalar mismatch {at_t}")
        return
    try:
        _check_vector(case, at_t)
    except CheckFailure as failure:
        raise CheckFailure(f"range cross-check at {time_ms}: {failure}") from None


def with_at(node, time_ms: int):
    """The @-invariance rewrite of FORMAT.md §6.2 C; None when the case must skip it."""
    found_time_function = False

    def rewrite(n):
        nonlocal found_time_function
        if isinstance(n, ast.Call) and n.func.name in _TIME_FUNCTIONS:
            found_time_function = True
        if isinstance(n, ast.VectorSelector):
            if n.timestamp_ms is None or n.start_or_end is not None:
                return replace(n, timestamp_ms=time_ms, start_or_end=None)
            return n
        if isinstance(n, ast.SubqueryExpr):
            if n.timestamp_ms is None or n.start_or_end is not None:
                return replace(n, timestamp_ms=time_ms, start_or_end=None)
            return n
        return ast.map_children(n, rewrite)

    result = rewrite(node)
    return None if found_time_function else result


def run_case(case: Case) -> None:
    """Run one eval case with all of the harness's checks; raises CheckFailure on a mismatch."""
    head = build_head(case)
    expr = parse(case.expr)
    if not case.instant:
        try:
            result = ENGINE.range(head, expr, case.start_ms, case.end_ms, case.step_ms)
        except QueryError as error:
            if case.fail:
                _fail_matches(case, error)
                return
            raise CheckFailure(f"unexpected error: {error}") from error
        if case.fail:
            raise CheckFailure("expected an error")
        _check_annotations(case, result.warnings, result.infos)
        _check_matrix(case, result.value)
        return
    _run_instant_at(case, head, expr, case.time_ms)
    for rewritten, time_ms in at_invariance_runs(case, expr):
        _run_instant_at(case, head, rewritten, time_ms)


def at_invariance_runs(case: Case, expr) -> list[tuple[object, int]]:
    """The @-invariance re-runs of an instant eval (FORMAT.md §6.2 C): (rewritten tree, evaluation time)
    pairs, each of which must give the eval's expected result."""
    rewritten = with_at(expr, case.time_ms)
    if rewritten is None:
        return []
    t = case.time_ms
    times = [-1000, 0, 1000] if t == 0 else [-10 * t, 0, t // 5, t, 10 * t]
    return [(rewritten, time_ms) for time_ms in times]


def all_test_files(corpus_dir: Path, extra_dir: Path) -> list[Path]:
    files = sorted(corpus_dir.glob("*.test")) if corpus_dir.is_dir() else []
    return files + sorted(extra_dir.glob("*.test"))


__all__ = ["Case", "CheckFailure", "Matcher", "MatchType", "check_error", "check_outcome", "check_range_cross_check",
           "at_invariance_runs", "load_cases", "load_samples", "run_case"]
