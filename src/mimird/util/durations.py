"""Duration strings as Mimir's flags and YAML take them.

Mimir mixes Go's time.ParseDuration (`1.5h`, `300ms`, `2h45m`) and Prometheus's model.Duration
(`1d`, `2w`, `1y`); one parser accepts both so that any value a Mimir config holds is read here.
"""

import re

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")


def parse_duration(text: str) -> float:
    """Parse a duration such as `1h30m`, `500ms`, `1.5h`, `2w` or `0` into seconds."""
    text = text.strip()
    if text in ("0", "-0", "+0"):
        return 0.0
    sign = 1.0
    body = text
    if body[:1] in "+-":
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    pos = 0
    total = 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Render seconds the way Prometheus prints a model.Duration: `1h30m`, `15s`, `500ms`, `0s`."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    ms = round(abs(seconds) * 1000)
    parts = []
    for unit, size in (("y", 365 * 86400000), ("w", 7 * 86400000), ("d", 86400000), ("h", 3600000),
                       ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            count, ms = divmod(ms, size)
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def go_duration(ns: int) -> str:
    """A duration in nanoseconds as Go's time.Duration.String prints it (`1h0m0s`, `1m30.5s`, `-250ms`).

    Mimir's messages print durations this way; `go_duration_ms` takes whole milliseconds.
    """
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim_decimals(ns, 1000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim_decimals(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _trim_decimals(rest, 10**9)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def go_duration_ms(ms: int) -> str:
    """go_duration of whole milliseconds."""
    return go_duration(ms * 1_000_000)


def _trim_decimals(value: int, unit: int) -> str:
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")
