"""The Cython range-function kernels against the pure-Python reference, and the reference against
Prometheus 3.5's own expectations in functions.test and friends."""

import math
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rangefn_reference as reference
from mimird._fast import rangefn

ALL_FUNCTIONS = sorted(rangefn.FUNCTION_PARAMETER_COUNTS)
PROMQL_TESTS = Path("/work/shared/promql-tests")
# Raise for a long soak, e.g. RANGEFN_EXAMPLES=3000; the default keeps the file fast.
EXAMPLES = int(os.environ.get("RANGEFN_EXAMPLES", "50"))


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_matches_reference(name, ts, vals, eval_ts, range_ms, params=(), shift=0):
    out, present = rangefn.evaluate(name, ts, vals, eval_ts, range_ms, params, shift)
    if params and any(np.ndim(p) for p in params):
        per_step = [tuple(float(np.broadcast_to(p, len(eval_ts))[i]) for p in params)
                    for i in range(len(eval_ts))]
        expected = reference.evaluate(name, ts, vals, eval_ts, range_ms, per_step, shift)
    else:
        expected = reference.evaluate(name, ts, vals, eval_ts, range_ms, tuple(params), shift)
    for i, want in enumerate(expected):
        context = f"{name} step {i} at {eval_ts[i]}: want {want}, got {out[i]} (present={present[i]})"
        if want is None:
            assert present[i] == 0, context
        else:
            assert present[i] == 1 and same_float(want, float(out[i])), context


# --- hypothesis: kernels vs reference -------------------------------------------------------------

interesting_values = st.one_of(
    st.integers(-3, 6).map(float),  # small counters: resets, repeats, zero crossings
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, -1e308, 1e-300]),
)


@st.composite
def series_and_grid(draw, max_samples=30):
    n = draw(st.integers(0, max_samples))
    gaps = draw(st.lists(st.one_of(st.integers(1, 20_000), st.sampled_from([15_000, 30_000, 1])),
                         min_size=n, max_size=n))
    start = draw(st.integers(-100_000, 100_000))
    ts = list(np.cumsum([start] + gaps[1:])) if n else []
    kind = draw(st.sampled_from(["mixed", "counter", "gauge"]))
    if kind == "counter":
        vals, level = [], draw(st.floats(0, 100))
        for _ in range(n):
            level = 0.0 if draw(st.integers(0, 9)) == 0 else level + draw(st.floats(0, 50))
            vals.append(level)
    elif kind == "gauge":
        vals = draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n))
    else:
        vals = draw(st.lists(interesting_values, min_size=n, max_size=n))
    range_ms = draw(st.one_of(st.integers(1, 200_000), st.sampled_from([15_000, 30_000, 60_000])))
    # Evaluation times on sample timestamps and one range after them pin the left-open edge.
    anchors = [t for t in ts] + [t + range_ms for t in ts] + [t - 1 for t in ts]
    candidates = st.one_of(st.integers(-200_000, (ts[-1] if ts else 0) + 300_000),
                           st.sampled_from(anchors) if anchors else st.integers(-10, 10))
    eval_ts = sorted(draw(st.lists(candidates, min_size=1, max_size=25)))
    return (np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64),
            np.array(eval_ts, dtype=np.int64), range_ms)


def draw_params(draw, name, n_steps):
    if name == "quantile_over_time":
        qs = st.sampled_from([-0.5, 0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0, 1.5, math.nan])
        if draw(st.booleans()):
            return (np.array(draw(st.lists(qs, min_size=n_steps, max_size=n_steps))),)
        return (draw(qs),)
    if name == "predict_linear":
        return (draw(st.floats(-1e5, 1e5)),)
    if name == "double_exponential_smoothing":
        factor = st.floats(0.01, 0.99)
        return (draw(factor), draw(factor))
    return ()


@pytest.mark.parametrize("name", ALL_FUNCTIONS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kernel_matches_reference(name, data):
    ts, vals, eval_ts, range_ms = data.draw(series_and_grid())
    params = draw_params(data.draw, name, len(eval_ts))
    shift = data.draw(st.integers(-100_000, 100_000)) if name == "predict_linear" else 0
    assert_matches_reference(name, ts, vals, eval_ts, range_ms, params, shift)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(series_and_grid(max_samples=15), min_size=1, max_size=5), st.sampled_from(ALL_FUNCTIONS),
       st.data())
def test_batch_matches_single_series(series, name, data):
    eval_ts = series[0][2]
    range_ms = series[0][3]
    params = draw_params(data.draw, name, len(eval_ts))
    ts = np.concatenate([s[0] for s in series])
    vals = np.concatenate([s[1] for s in series])
    offsets = np.cumsum([0] + [len(s[0]) for s in series])
    out, present = rangefn.evaluate_batch(name, ts, vals, offsets, eval_ts, range_ms, params)
    assert out.shape == present.shape == (len(series), len(eval_ts))
    for k, (s_ts, s_vals, _, _) in enumerate(series):
        one_out, one_present = rangefn.evaluate(name, s_ts, s_vals, eval_ts, range_ms, params)
        np.testing.assert_array_equal(one_present, present[k])
        np.testing.assert_array_equal(one_out[one_present == 1], out[k][present[k] == 1])



@st.composite
def long_series_and_grid(draw):
    """Hundreds of samples on a regular step grid: windows that overlap a lot, or barely."""
    n = draw(st.integers(30, 250))
    scrape = draw(st.sampled_from([1_000, 15_000]))
    jitter = draw(st.lists(st.integers(0, scrape // 2), min_size=n, max_size=n))
    ts = np.arange(n, dtype=np.int64) * scrape + np.array(jitter, dtype=np.int64)
    vals = np.array(draw(st.lists(st.one_of(st.integers(-5, 5).map(float), interesting_values),
                                  min_size=n, max_size=n)))
    range_ms = scrape * draw(st.integers(1, 60))
    step = scrape * draw(st.sampled_from([1, 2, 7, 40]))
    eval_ts = np.arange(ts[0] - range_ms, ts[-1] + range_ms, step, dtype=np.int64)
    return ts, vals, eval_ts, range_ms


SLIDING_FUNCTIONS = ["quantile_over_time", "mad_over_time", "min_over_time", "max_over_time",
                     "ts_of_min_over_time", "ts_of_max_over_time", "rate", "resets", "changes"]


@pytest.mark.parametrize("name", SLIDING_FUNCTIONS)
@settings(max_examples=max(EXAMPLES // 8, 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sliding_kernels_on_long_series(name, data):
    ts, vals, eval_ts, range_ms = data.draw(long_series_and_grid())
    params = draw_params(data.draw, name, len(eval_ts))
    assert_matches_reference(name, ts, vals, eval_ts, range_ms, params)

# --- the left-open window and hand-checked values -------------------------------------------------


@pytest.mark.parametrize("name", ["rate", "increase", "delta"])
def test_extrapolation_at_its_thresholds(name):
    # The kernel settles most threshold comparisons by products and leaves the close ones to Prometheus's
    # divisions: gaps to the window's edges a millisecond either side of 1.1 average intervals, and
    # counters whose zero point lies a millisecond either side of the window's start, must both come out
    # as the reference's.
    rng = np.random.default_rng(5)
    for _ in range(300):
        interval = int(rng.choice([1000, 10_000, 15_000, 7]))
        n = int(rng.integers(2, 12))
        ts = np.arange(n, dtype=np.int64) * interval + int(rng.integers(0, 1000))
        step = 1.0 if name == "delta" else float(rng.choice([1.0, 0.5, 3.0]))
        first_value = float(rng.choice([0.0, step * 0.1, step, step * 1e-3, 1e-300]))
        vals = first_value + step * np.arange(n, dtype=np.float64)
        average = (ts[-1] - ts[0]) / (n - 1)
        threshold_ms = int(average * 1.1)
        eval_ts = []
        for lead in (threshold_ms - 1, threshold_ms, threshold_ms + 1):
            for range_ms in (int(ts[-1] - ts[0]) + lead + 1, int(ts[-1] - ts[0]) + lead + threshold_ms):
                eval_ts.append((ts[-1] + max(lead, 0), range_ms))
        # the zero point of the counter, in ms before its first sample, and a millisecond either side
        if step and first_value:
            zero_ms = int(first_value / step * interval)
            for delta_ms in (-1, 0, 1):
                eval_ts.append((ts[-1], int(ts[-1] - ts[0]) + zero_ms + delta_ms + 1))
        for end, range_ms in eval_ts:
            if range_ms > 0:
                assert_matches_reference(name, ts, vals, np.array([end], dtype=np.int64), range_ms, (), 0)

def test_window_is_left_open():
    ts = np.array([0, 15_000, 30_000])
    vals = np.array([1.0, 2.0, 4.0])
    out, present = rangefn.evaluate("count_over_time", ts, vals, [15_000, 30_000, 45_000, 60_000], 30_000)
    # (−15s, 15s] holds 0 and 15s; (0, 30s] drops the sample at 0; (15s, 45s] holds only 30s.
    assert list(out[present == 1]) == [2.0, 2.0, 1.0]
    assert list(present) == [1, 1, 1, 0]


def test_hand_checked_rates():
    # functions.test: load 5m, `http_requests_total 0+10x10`, `10+10x10`, `1+10x10`, at 50m over 100m.
    ts = np.arange(11) * 300_000
    for first, want in [(0.0, 100.0), (10.0, 105.0), (1.0, 101.0)]:
        out, _ = rangefn.evaluate("increase", ts, first + 10 * np.arange(11.0), [3_000_000], 6_000_000)
        assert out[0] == pytest.approx(want)
    # `0+27x4 0+27x5` at 50m: rate over 50m is 0.08 despite the reset in the middle.
    vals = np.array([0, 27, 54, 81, 108, 0, 27, 54, 81, 108, 135], dtype=float)
    out, _ = rangefn.evaluate("rate", ts, vals, [3_000_000], 3_000_000)
    assert out[0] == pytest.approx(0.08)
    # `0+10x4 0+10x5`: deriv over 100m, and predict_linear an hour ahead (plain and with `@ 3000` at 10m).
    vals = np.array([0, 10, 20, 30, 40, 0, 10, 20, 30, 40, 50], dtype=float)
    out, _ = rangefn.evaluate("deriv", ts, vals, [3_000_000], 6_000_000)
    assert out[0] == pytest.approx(0.010606060606060607)
    out, _ = rangefn.evaluate("predict_linear", ts, vals, [3_000_000], 3_000_000, (3600.0,))
    assert out[0] == pytest.approx(70.0)
    out, _ = rangefn.evaluate("predict_linear", ts, vals, [3_000_000], 3_300_000, (3600.0,), 600_000 - 3_000_000)
    assert out[0] == pytest.approx(51.36363636363637)


def test_quantile_edges():
    ts = np.array([1_000, 2_000, 3_000, 4_000])
    vals = np.array([1.0, 2.0, 3.0, 4.0])
    got = [rangefn.evaluate("quantile_over_time", ts, vals, [4_000], 10_000, (q,))[0][0]
           for q in (-1, 0, 0.5, 0.75, 1, 2)]
    assert got == [-math.inf, 1.0, 2.5, 3.25, 4.0, math.inf]
    assert math.isnan(rangefn.evaluate("quantile_over_time", ts, vals, [4_000], 10_000, (math.nan,))[0][0])


def test_min_max_ignore_nan_unless_all_nan():
    ts = np.array([1_000, 2_000, 3_000])
    vals = np.array([math.nan, 5.0, math.nan])
    assert rangefn.evaluate("min_over_time", ts, vals, [3_000], 10_000)[0][0] == 5.0
    assert rangefn.evaluate("ts_of_max_over_time", ts, vals, [3_000], 10_000)[0][0] == 2.0
    out, present = rangefn.evaluate("max_over_time", ts[:1], vals[:1], [3_000], 10_000)
    assert present[0] == 1 and math.isnan(out[0])
    assert rangefn.evaluate("ts_of_min_over_time", ts[[0, 2]], vals[[0, 2]], [3_000], 10_000)[0][0] == 3.0


def test_double_exponential_smoothing_parameter_check():
    rangefn.check_double_exponential_smoothing_params(0.5, 0.1)
    rangefn.check_double_exponential_smoothing_params(math.nan, 0.1)
    with pytest.raises(ValueError, match=r"invalid smoothing factor. Expected: 0 < sf < 1, got: 1.000000"):
        rangefn.check_double_exponential_smoothing_params(1.0, 0.1)
    with pytest.raises(ValueError, match=r"invalid trend factor. Expected: 0 < tf < 1, got: 0.000000"):
        rangefn.check_double_exponential_smoothing_params(0.5, 0.0)


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown range function"):
        rangefn.evaluate("holt_winters", [], [], [0], 1000, (0.5, 0.5))
    with pytest.raises(ValueError, match="takes 1"):
        rangefn.evaluate("quantile_over_time", [], [], [0], 1000)
    with pytest.raises(ValueError, match="one value per step"):
        rangefn.evaluate("quantile_over_time", [], [], [0, 1], 1000, (np.array([0.5]),))
    with pytest.raises(ValueError, match="differ in length"):
        rangefn.evaluate("rate", [1, 2], [1.0], [0], 1000)
    with pytest.raises(ValueError, match="non-decreasing"):
        rangefn.evaluate("rate", [1, 2], [1.0, 2.0], [5, 4], 1000)
    with pytest.raises(ValueError, match="series_offsets"):
        rangefn.evaluate_batch("rate", [1, 2], [1.0, 2.0], [0, 3], [0], 1000)


def test_empty_inputs():
    out, present = rangefn.evaluate_batch("rate", [], [], [0, 0, 0], [0, 1000], 1000)
    assert out.shape == (2, 2) and not present.any()
    out, present = rangefn.evaluate_batch("rate", [], [], [0], [0, 1000], 1000)
    assert out.shape == (0, 2)


def test_batch_releases_the_gil():
    n_series, per_series = 400, 2_000
    ts = np.tile(np.arange(per_series, dtype=np.int64) * 15_000, n_series)
    vals = np.arange(n_series * per_series, dtype=np.float64)
    offsets = np.arange(n_series + 1, dtype=np.int64) * per_series
    eval_ts = np.arange(0, per_series * 15_000, 15_000, dtype=np.int64)
    heartbeats: list[float] = []  # when the other thread ran, at most one entry per millisecond
    running = True

    def spin():
        last = 0.0
        while running:
            now = time.perf_counter()
            if now - last > 0.001:
                heartbeats.append(now)
                last = now

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.01)
        started = time.perf_counter()
        rangefn.evaluate_batch("stddev_over_time", ts, vals, offsets, eval_ts, 300_000)
        ended = time.perf_counter()
    finally:
        running = False
        spinner.join()
    # A thread holding the GIL still hands it over at bytecode boundaries next to the call (every
    # 5 ms switch interval), so only heartbeats well inside the call count.
    inside = [t for t in heartbeats if started + 0.01 < t < ended - 0.01]
    assert ended - started > 0.04, "batch too short to tell"
    assert len(inside) >= (ended - started - 0.02) * 1000 / 4


# --- the reference (and kernels) against Prometheus's own test files ------------------------------

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
           "y": 31_536_000_000}
STALE_BITS = 0x7FF0000000000002


def parse_duration_ms(text: str) -> int | None:
    if re.fullmatch(r"\d+", text):
        return int(text) * 1000  # bare numbers are seconds, in ranges and offsets alike
    parts = re.findall(r"(\d+)(ms|y|w|d|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * UNIT_MS[u] for n, u in parts)


def parse_number(text: str) -> float:
    return float(text.replace("_", ""))


def expand_items(items: list[str]) -> list[float | None]:
    """Slots of a load/expectation line: a float, None for `_`, or a stale marker NaN."""
    slots: list[float | None] = []
    for item in items:
        if item == "_":
            slots.append(None)
        elif m := re.fullmatch(r"_x(\d+)", item):
            slots.extend([None] * int(m.group(1)))
        elif item == "stale":
            slots.append(np.frombuffer(np.uint64(STALE_BITS).tobytes(), dtype=np.float64)[0])
        elif m := re.fullmatch(r"(.+?)x(\d+)", item):
            base, count = m.group(1), int(m.group(2))
            op = re.search(r"(?<=[0-9.a-zA-Z])[+-]", base)
            start = parse_number(base[: op.start()] if op else base)
            step = (1 if op.group() == "+" else -1) * parse_number(base[op.end():]) if op else 0.0
            value = start
            for _ in range(count + 1):
                slots.append(value)
                value += step
        else:
            slots.append(parse_number(item))
    return slots


def parse_series(text: str) -> tuple[dict[str, str], str]:
    m = re.match(r"([a-zA-Z_:][\w:]*)?(\{[^}]*\})?\s*", text)
    labels = dict(re.findall(r'([\w]+)\s*=\s*"([^"]*)"', m.group(2) or ""))
    if m.group(1):
        labels["__name__"] = m.group(1)
    return labels, text[m.end():]


CALL = re.compile(r"(?P<fn>\w+)\((?P<args>.*)\)")
MATRIX = re.compile(r"\(*(?P<sel>[\w:]*(\{[^}]*\})?)\[(?P<range>\w+)\](\s+offset\s+(?P<offset>\w+))?"
                    r"(\s+@\s+(?P<at>[\d.]+))?\)*")


def parse_call(expr: str):
    """Split `fn(args)` into the function, the matrix selector and the scalar parameters."""
    m = CALL.fullmatch(expr.strip())
    if not m or m.group("fn") not in rangefn.FUNCTION_PARAMETER_COUNTS:
        return None
    args = [a.strip() for a in m.group("args").split(",")] if "{" not in m.group("args") else None
    if args is None:  # commas inside label matchers: split after the closing brace/bracket
        args = [a.strip() for a in re.split(r",(?![^{]*\})", m.group("args"))]
    fn = m.group("fn")
    if fn == "quantile_over_time":
        args = args[1:] + args[:1]
    matrix = MATRIX.fullmatch(args[0])
    if not matrix or "!" in args[0] or "~" in args[0]:
        return None
    params = []
    for text in args[1:]:
        if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?|[-+]?(Inf|NaN)", text, re.I):
            params.append(float(text))
        elif (ms := parse_duration_ms(text)) is not None:
            params.append(ms / 1000)
        else:
            return None
    if len(params) != rangefn.FUNCTION_PARAMETER_COUNTS[fn]:
        return None
    selector, _ = parse_series(matrix.group("sel"))
    range_ms = parse_duration_ms(matrix.group("range"))
    offset_ms = parse_duration_ms(matrix.group("offset")) if matrix.group("offset") else 0
    at_ms = round(float(matrix.group("at")) * 1000) if matrix.group("at") else None
    if range_ms is None or offset_ms is None:
        return None
    return fn, selector, range_ms, offset_ms, at_ms, tuple(params)


def load_cases(path: Path):
    """Yield (label, series, call, eval_ms, expected) for float-only range-function evals."""
    store: dict[frozenset, tuple[list, bool]] = {}
    lines = [ln.strip() for ln in path.read_text().split("\n")]
    lines = ["" if ln.startswith("#") else ln for ln in lines]
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        body = []
        while line != "clear" and i < len(lines) and lines[i]:
            body.append(lines[i])
            i += 1
        if line == "clear":
            store = {}
        elif line.startswith("load"):
            step_ms = parse_duration_ms(line.split()[1])
            for entry in body:
                labels, rest = parse_series(entry)
                key = frozenset(labels.items())
                if "{{" in rest:
                    store[key] = ([], True)
                    continue
                samples = [(k * step_ms, v) for k, v in enumerate(expand_items(rest.split())) if v is not None]
                store[key] = (samples, False)
        elif re.match(r"eval(_warn|_info)? ", line):
            m = re.match(r"eval\S* (instant at (?P<at>\S+)|range from (?P<start>\S+) to (?P<end>\S+) step "
                         r"(?P<step>\S+)) (?P<expr>.*)", line)
            call = parse_call(m.group("expr"))
            if call is None or any(b.startswith("expect") or "{{" in b for b in body):
                continue
            if m.group("at"):
                eval_ms = [parse_duration_ms(m.group("at"))]
            else:
                start, end, step = (parse_duration_ms(m.group(k)) for k in ("start", "end", "step"))
                eval_ms = list(range(start, end + 1, step))
            selected = {k: v for k, v in store.items() if call[1].items() <= dict(k).items()}
            if any(is_hist for _, is_hist in selected.values()):
                continue
            expected = {}
            for entry in body:
                labels, rest = parse_series(entry)
                expected[frozenset(labels.items())] = expand_items(rest.split())
            yield pytest.param(f"{path.name}:{line}", selected, call, eval_ms, expected,
                               id=f"{path.name}:{i}")


def corpus_cases():
    if not PROMQL_TESTS.is_dir():
        return []
    return [case for f in ("functions.test", "range_queries.test", "at_modifier.test", "staleness.test")
            for case in load_cases(PROMQL_TESTS / f)]


def test_corpus_cases_are_found():
    if not PROMQL_TESTS.is_dir():
        pytest.skip("no PromQL test corpus on this machine")
    assert len(corpus_cases()) >= 60


@pytest.mark.parametrize("label,selected,call,eval_ms,expected", corpus_cases())
def test_prometheus_expectations(label, selected, call, eval_ms, expected):
    fn, _, range_ms, offset_ms, at_ms, params = call
    eval_ts = np.array(eval_ms, dtype=np.int64)
    shifted = (np.full_like(eval_ts, at_ms) if at_ms is not None else eval_ts) - offset_ms
    # With @ the selector is step-invariant: Prometheus evaluates once at the query start.
    shift = int(eval_ts[0] - shifted[0])
    got = {}
    for key, (samples, _) in selected.items():
        fresh = [(t, v) for t, v in samples
                 if np.float64(v).view(np.uint64) != STALE_BITS]
        ts = np.array([t for t, _ in fresh], dtype=np.int64)
        vals = np.array([v for _, v in fresh], dtype=np.float64)
        ref = reference.evaluate(fn, ts, vals, shifted, range_ms, params, shift)
        assert_matches_reference(fn, ts, vals, shifted, range_ms, params, shift)
        if any(v is not None for v in ref):
            labels = dict(key) if fn == "last_over_time" else {k: v for k, v in key if k != "__name__"}
            got[frozenset(labels.items())] = ref
    assert set(got) == set(expected), label
    for key, want in expected.items():
        want = want + [None] * (len(eval_ms) - len(want))
        for w, g in zip(want, got[key], strict=True):
            if w is None or g is None:
                assert w is g, label
            else:
                assert same_float(w, g) or abs(w - g) / min(abs(w) + abs(g), 1.7976931348623157e308) < 1e-6, \
                    f"{label}: want {want}, got {got[key]}"
