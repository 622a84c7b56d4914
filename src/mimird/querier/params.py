"""Prometheus's HTTP API parameters: timestamps, durations, `limit` and `match[]` selectors.

Each parser raises `ParamError(param, message)`; `str()` of it is Prometheus's
`invalid parameter "<param>": <message>` text. Times come back as milliseconds (Mimir truncates request
times to milliseconds), durations as milliseconds too.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence

from mimird.promql import ParseError, parse
from mimird.promql import ast as promql_ast
from mimird.promql.durations import DurationError
from mimird.promql.durations import parse_duration as parse_prom_duration
from mimird.promql.lexer import Lexer, LexError
from mimird.tsdb.labels import Matcher, go_quote

# Prometheus's MinTime/MaxTime (web/api/v1/api.go), which clients send back formatted as RFC3339.
MIN_TIME_MS = (-(2**63) // 1000 + 1 + 62135596801) * 1000  # + 1: Go's division truncates towards zero
MAX_TIME_MS = ((2**63 - 1) // 1000 - 62135596801) * 1000 + 999
MIN_TIME_FORMATTED = "-292273086-05-16T16:47:06Z"
MAX_TIME_FORMATTED = "292277025-08-18T07:12:54.999999999Z"

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# strconv.ParseFloat's decimal syntax (what Prometheus tries before RFC3339); Python's float() is laxer
# (whitespace, underscores), so the text is checked first.
_GO_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf|infinity|nan))\Z")
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))\Z")
_GO_INT = re.compile(r"[+-]?\d+\Z")
_LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


class ParamError(ValueError):
    """A request parameter Prometheus would reject with `bad_data`."""

    def __init__(self, param: str | None, message: str):
        super().__init__(message)
        self.param = param
        self.message = message

    def __str__(self) -> str:
        if self.param is None:
            return self.message
        return f'invalid parameter "{self.param}": {self.message}'


def parse_time(text: str, param: str) -> int:
    """A timestamp in Unix seconds (fractions rounded to ms) or RFC3339Nano, as milliseconds."""
    if len(text) <= 15 and text.isascii():
        whole, dot, fraction = text.partition(".")
        if (whole.isdigit() and len(fraction) <= 3 and (fraction.isdigit() or not fraction)
                and (not dot or len(whole) <= 11)):
            # Whole seconds, or seconds with up to three decimals below 1e11 (what dashboards send): the
            # float path rounds these to exactly the milliseconds they spell, so they are read as written,
            # without its regex and arithmetic.
            return int(whole) * 1000 + int(fraction.ljust(3, "0"))
    if _GO_FLOAT.match(text):
        ms = _float_seconds_ms(text)
        if ms is not None:
            return ms
    else:
        parsed = _parse_rfc3339(text)
        if parsed is not None:
            return parsed
        if text == MIN_TIME_FORMATTED:
            return MIN_TIME_MS
        if text == MAX_TIME_FORMATTED:
            return MAX_TIME_MS
    raise ParamError(param, f"cannot parse {go_quote(text)} to a valid timestamp")


def _float_seconds_ms(text: str) -> int | None:
    """Go's float seconds as milliseconds: math.Modf, the fraction rounded half away from zero to ms,
    time.Unix, then UnixNano/1e6; None when out of range."""
    seconds = float(text)
    if not (math.isfinite(seconds) and abs(seconds) < 9.2e15):
        return None
    whole = math.trunc(seconds)
    scaled = (seconds - whole) * 1000
    fraction = math.copysign(math.floor(abs(scaled) + 0.5), scaled) / 1000
    total_ns = int(whole) * 1_000_000_000 + int(fraction * 1e9)
    return _go_div(total_ns, 1_000_000)


def _parse_rfc3339(text: str) -> int | None:
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, zulu, sign, off_hour, off_minute = match.group(7, 8, 9, 10, 11)
    try:
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        return None
    offset = 0
    if not zulu:
        if int(off_hour) > 23 or int(off_minute) > 59:
            return None
        offset = (int(off_hour) * 60 + int(off_minute)) * 60 * (1 if sign == "+" else -1)
    epoch_seconds = (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(seconds=1) - offset
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    return epoch_seconds * 1000 + millis


def _go_div(a: int, b: int) -> int:
    """Integer division truncating towards zero, as Go's."""
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def parse_time_or(text: str | None, param: str, default: int) -> int:
    """`parse_time`, or `default` when the parameter is absent or empty."""
    if not text:
        return default
    return parse_time(text, param)


def parse_duration(text: str, param: str) -> int:
    """Float seconds or a Prometheus duration (`5m`, `1h30m`) as milliseconds (truncated, as Mimir does)."""
    if len(text) <= 12 and text.isdigit() and text.isascii():
        # whole seconds (a dashboard's step): exactly what the float path gives, without its regex
        return int(text) * 1000
    if _GO_FLOAT.match(text):
        # Mimir's frontend (parseDurationMs): seconds times 1000, truncated, checked against int64
        millis = float(text) * 1000
        if millis != millis:
            return INT64_MIN  # Go converts NaN to the smallest int64
        if millis > INT64_MAX or millis < INT64_MIN:
            raise ParamError(param, f"cannot parse {go_quote(text)} to a valid duration. It overflows int64")
        return int(millis)
    try:
        nanos = parse_prom_duration(text)
    except (DurationError, ValueError):
        raise ParamError(param, f"cannot parse {go_quote(text)} to a valid duration") from None
    return nanos // 1_000_000


def parse_limit(text: str | None) -> int:
    """The `limit` parameter: 0 (no limit) when absent, else a non-negative integer."""
    if not text:
        return 0
    if not _GO_INT.match(text):
        raise ParamError("limit", f"strconv.Atoi: parsing {go_quote(text)}: invalid syntax")
    limit = int(text)
    if not INT64_MIN <= limit <= INT64_MAX:
        raise ParamError("limit", f"strconv.Atoi: parsing {go_quote(text)}: value out of range")
    if limit < 0:
        raise ParamError("limit", "limit must be non-negative")
    return limit


def to_tsdb_matchers(matchers: Sequence[promql_ast.Matcher]) -> list[Matcher]:
    """The parser's matchers as storage matchers."""
    return [Matcher(m.type.value, m.name, m.value) for m in matchers]


def parse_selector(text: str, param: str | None = None) -> list[Matcher]:
    """One series selector (`up{job="x"}`, `{__name__=~"a.*"}`) as storage matchers.

    Raises ParamError with the parser's message (prefixed with the parameter name when one is given).
    """
    outside_braces = _selector_syntax_error(text)
    if outside_braces is not None:
        raise ParamError(param, str(outside_braces))
    try:
        expr = parse(text)
    except ParseError as exc:
        expr = _selector_matching_everything(text, exc)
        if expr is None:
            raise ParamError(param, str(exc)) from None
    return to_tsdb_matchers(expr.matchers)


# The tokens Prometheus's grammar accepts as a metric name (its `metric_identifier`): keywords included.
_METRIC_NAME_TOKENS = frozenset((
    "IDENTIFIER", "METRIC_IDENTIFIER", "AVG", "BOTTOMK", "BY", "COUNT", "COUNT_VALUES", "GROUP", "LAND", "LOR",
    "LUNLESS", "MAX", "MIN", "OFFSET", "QUANTILE", "STDDEV", "STDVAR", "SUM", "TOPK", "WITHOUT", "START", "END",
    "LIMITK", "LIMIT_RATIO"))


def _selector_syntax_error(text: str) -> ParseError | None:
    """The error of Prometheus's ParseMetricSelector when the tokens outside the braces are not
    `name? {...}? EOF`: its grammar stops at the first token that does not fit (`sum(x)` is
    `1:4: parse error: unexpected "("`), or at a lexer error met before. None when they fit; errors inside
    the braces are left to the expression parser, whose messages there are the same."""
    tokens = Lexer(text).items()
    try:
        token = next(tokens)
        consumed = False
        if token.type in _METRIC_NAME_TOKENS:
            token, consumed = next(tokens), True
        if token.type == "LEFT_BRACE":
            while token.type not in ("RIGHT_BRACE", "EOF"):
                token = next(tokens)
            if token.type == "EOF":
                return None
            token, consumed = next(tokens), True
    except LexError as exc:
        return ParseError(exc.message, exc.pos, text)
    if consumed and token.type == "EOF":
        return None
    return ParseError(f"unexpected {token.describe()}", token.pos, text)


def _selector_matching_everything(text: str, error: ParseError) -> promql_ast.VectorSelector | None:
    """Prometheus's ParseMetricSelector skips the expression checks, so `{job=~".*"}` is a selector there
    (the API then rejects it with its own message). Our parser checks while parsing; info()'s second
    argument is the one place that accepts such a selector, so parse it there."""
    if not str(error).endswith("vector selector must contain at least one non-empty matcher"):
        return None
    try:
        call = parse(f"info(x, {text})")
    except ParseError:
        return None
    selector = call.args[1]
    return selector if isinstance(selector, promql_ast.VectorSelector) else None


def parse_match_params(values: Sequence[str], param: str | None = None) -> list[list[Matcher]]:
    """Every `match[]` value as a matcher set; each set must have a matcher that rejects the empty value."""
    sets = [parse_selector(value, param) for value in values]
    for matchers in sets:
        if not any(not m.matches("") for m in matchers):
            raise ParamError(param, "match[] must contain at least one non-empty matcher")
    return sets


def valid_label_name(name: str) -> bool:
    """Prometheus's legacy label name rule, which Mimir validates names with."""
    return bool(_LEGACY_LABEL_NAME.match(name))


def unescape_label_name(name: str) -> str:
    """A label name from a URL path: Prometheus's `U__` value-encoding escape (`U__a_2e_b` is `a.b`)."""
    if not name.startswith("U__"):
        return name
    body = name[3:]
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "_":
            if body.startswith("__", i):
                out.append("_")
                i += 2
                continue
            end = body.find("_", i + 1)
            if end == -1:
                return name
            try:
                code = int(body[i + 1:end], 16)
                out.append(chr(code))
            except ValueError:
                return name
            i = end + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)
