"""Differential PromQL test: the same data in mimird and in Debian's Prometheus 2.42, the same queries, the
same answers.

Both stores get one hour of data by remote write, one request per 15 s scrape round in time order
(Prometheus rejects out-of-order and too-old samples), ending a few minutes before now: 341 series of
counters with resets, gauges (five of which end half-way with a stale marker), an ``up`` and a
``build_info`` series per target, and classic histograms (``_bucket`` with ``le``, ``_sum``, ``_count``).
Every sample timestamp is a scrape round plus a jitter of 1-999 ms that is never 0 or 500. Each query of
``queries()`` then runs as instant queries at four times and as range queries over two ranges, in both
stores, and the answers must agree: same status and error (type and text), same result type, same label
sets, same series count, same timestamps, values equal within 1e-9 relative error (NaN equals NaN), and
for ``sort``-family queries the same order.

Where Prometheus 2.42 differs from 3.5 (whose semantics mimird implements), by design or by a bug fixed
since, the test either makes the difference impossible or asserts it:

1. **Window boundaries.** 3.x selects the samples of a range, of the lookback window and of a subquery in
   the left-open window (t-r, t]; 2.x in the closed [t-r, t]. A point on the left edge counts in 2.42
   only. Raw samples never sit on a whole or half second, and every evaluation time (instant times,
   range starts and ends, ``@`` times) is on a half second while ranges, offsets and steps are whole
   seconds, so no raw sample and no subquery step point (multiples of the step) can be on an edge.
   The one exception is a subquery inside a subquery: the inner one is evaluated at the outer one's step
   points, which are whole multiples of the outer step, so an inner subquery's range is never a multiple
   of its own step (``[330s:1m]``, not ``[5m:1m]``). Measured before these choices: whole-second
   evaluation times made ``count_over_time(up[10m:17s])`` differ by one point, and
   ``max_over_time(avg_over_time(g[5m:1m])[15m:5m])`` differed at every instant.
2. **Counter extrapolation towards zero.** ``rate``/``increase`` limit the extrapolation to the window
   start where the counter would reach zero. 2.x applies that limit before deciding whether the first
   sample is close enough to the window start to extrapolate to it at all; 3.x decides first and limits
   afterwards. They differ when a counter starts inside the window, low (first value between 0.5 and 1.1
   times its increase per step, for a subquery its increase per subquery step). The compared counters
   and histograms therefore carry a history (they start high) and do not reset in their first ten
   minutes (a reset in the first scrape round made ``rate(c[1h:5m] offset 1m)`` differ in some runs);
   ``test_counter_extrapolation_towards_zero_differs_as_documented`` asserts the difference on
   ``young_counter_total``, recomputing both formulas from the raw samples.
3. **``atan2`` and ``__name__``.** 2.42 keeps the left side's metric name after the ``atan2`` binary
   operator; 3.x drops it as after every arithmetic operator. For the queries in ``NAME_KEPT_BY_2_42``
   the 2.42 answer must carry ``__name__`` and is compared without it.
4. **Range-query preparation errors.** 3.x (and Mimir) report an error of preparing a range query (such as
   ``invalid expression type "range vector" for range query``) as ``invalid parameter "query": ...``;
   2.42's query_range handler leaves the prefix out. The comparison requires our prefix and compares the
   rest.
5. **A 2.42 bug: range queries of a non-step-invariant function over an ``@``-pinned range.**
   ``predict_linear(g[5m] @ T, 60)`` depends on the evaluation time, so it is evaluated at every step;
   2.42's range query answers only a few steps, with wrong values after the first, while its instant
   queries at the same times agree with mimird. For the queries in ``RANGE_FROM_INSTANTS`` the reference
   of a range evaluation is therefore assembled from Prometheus's instant queries at every step, and
   2.42's own range answer must still show the bug.
6. **Functions that exist in one version only** are not queried: ``holt_winters`` (2.x) is
   ``double_exponential_smoothing`` in 3.x, behind a feature flag; ``mad_over_time``, ``limitk``,
   ``limit_ratio``, ``info``, ``sort_by_label`` and duration expressions are 3.x-only. Native histograms
   are not written; classic ``le`` values are written in canonical form, so 3.x's le normalisation
   cannot show.

The module is skipped when ``/usr/bin/prometheus`` (``make peers``) is not installed.
"""

from __future__ import annotations

import collections
import math
import random
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, Daemon, encode_write_request, free_port
from mimird._fast.xorchunk import STALE_NAN

pytestmark = pytest.mark.slow

PROMETHEUS = Path("/usr/bin/prometheus")
SCRAPE_MS = 15_000
ROUNDS = 240  # one hour
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")
JOBS = ("api", "db")
INSTANCES = tuple(f"i{n}" for n in range(10))
CODES = ("200", "404", "500")
SENSORS = ("cpu", "disk", "psu")
WRITE_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                 "X-Prometheus-Remote-Write-Version": "0.1.0"}
RELATIVE_TOLERANCE = 1e-9
# A counter that starts inside the hour, low enough for the extrapolation-towards-zero difference to show.
YOUNG_COUNTER = (("__name__", "young_counter_total"),)
YOUNG_COUNTER_FIRST, YOUNG_COUNTER_STEP = 8.0, 10.0
# No counter resets in the first ten minutes, so that every window reaching back to the data's start opens
# on a high counter value (module docstring, 2).
FIRST_RESET_ROUND = 40


def make_dataset(end_ms: int, seed: int = 20260) -> list[dict]:
    """One remote-write series dict per scrape round, the last round at ``end_ms``: {labels: [(ts, v)]}."""
    rng = random.Random(seed)
    start_ms = end_ms - (ROUNDS - 1) * SCRAPE_MS
    # counters and histograms have a history before the hour written (they do not start at 0): see the
    # counter-extrapolation difference in the module docstring, which young_counter_total shows instead
    counters = {(("__name__", "http_requests_total"), ("code", code), ("instance", instance), ("job", job)):
                float(rng.randint(1000, 100_000)) for job in JOBS for instance in INSTANCES for code in CODES}
    gauges = {(("__name__", "node_temperature_celsius"), ("instance", instance), ("job", job),
               ("sensor", sensor)): rng.uniform(-10, 80)
              for job in JOBS for instance in INSTANCES for sensor in SENSORS}
    # a few gauges stop half-way with a stale marker, as a scrape target going away
    stopping = set(list(gauges)[:5])
    targets = [(job, instance) for job in JOBS for instance in INSTANCES]
    histograms = {target: [0.0] * (len(BUCKETS) + 1) for target in targets}  # cumulative buckets, then sum

    def observe(job, instance, count):
        state = histograms[(job, instance)]
        for _ in range(count):
            observed = rng.expovariate(3.0 if job == "api" else 1.0)
            state[-1] += observed
            for index, le in enumerate(BUCKETS):
                if observed <= float(le):
                    state[index] += 1

    for job, instance in targets:
        observe(job, instance, rng.randint(300, 3000))
    rounds = []
    for number in range(ROUNDS):
        base = start_ms + number * SCRAPE_MS
        series: dict[tuple, list] = {}

        def scrape(labels, value, base=base, series=series):
            jitter = rng.randint(1, 998)  # never on a whole or a half second
            series[labels] = [(base + jitter + (jitter >= 500), value)]

        for labels in counters:
            if rng.random() < 0.01 and number >= FIRST_RESET_ROUND:
                counters[labels] = float(rng.randint(0, 3))
            else:
                counters[labels] += rng.randint(0, 20)
            scrape(labels, counters[labels])
        for labels in gauges:
            if labels in stopping and number >= ROUNDS // 2:
                if number == ROUNDS // 2:
                    scrape(labels, STALE_NAN)
                continue
            gauges[labels] += rng.uniform(-2, 2)
            scrape(labels, round(gauges[labels], 3))
        for job, instance in targets:
            target = (("instance", instance), ("job", job))
            scrape((("__name__", "up"), *target), 0.0 if (instance == "i3" and job == "db") else 1.0)
            scrape((("__name__", "build_info"), *target, ("version", "1.2" if instance < "i5" else "1.3")), 1.0)
            observe(job, instance, rng.randint(0, 30))
            state = histograms[(job, instance)]
            for index, le in enumerate(BUCKETS):
                scrape((("__name__", "request_duration_seconds_bucket"), *target, ("le", le)), state[index])
            scrape((("__name__", "request_duration_seconds_sum"), *target), round(state[-1], 6))
            scrape((("__name__", "request_duration_seconds_count"), *target), state[len(BUCKETS) - 1])
        scrape(YOUNG_COUNTER, YOUNG_COUNTER_FIRST + YOUNG_COUNTER_STEP * number)
        rounds.append(series)
    return rounds


def queries(at: str) -> list[str]:
    """The compared expressions; ``at`` is a time inside the data (seconds) for the ``@`` queries."""
    c, g, h, up, info = ("http_requests_total", "node_temperature_celsius", "request_duration_seconds",
                         "up", "build_info")
    found = [
        # selectors, offsets and @
        c, g, f'{g}{{sensor="cpu"}}', f'{c}{{code=~"4..|5.."}}', f'{g}{{job!="api",sensor!~"c.*"}}', f"{g}[2m]",
        f"{c}[1m] offset 5m", f"{g} offset 10m", f"{g} @ {at}", f"rate({c}[5m] @ {at})", f"{g} @ start()",
        f"{g} @ end()", f"{g} offset -2m", "nonexistent_metric", f"{g}[90s] @ {at} offset 1m",
        # counter functions
        f"rate({c}[5m])", f"rate({c}[1m])", f"rate({c}[47s])", f"increase({c}[10m])", f"irate({c}[5m])",
        f"resets({c}[30m])", f"increase({h}_count[1h])", f"resets({h}_bucket[1h])", f"rate({c}[5m] offset 7m)",
        # gauge functions
        f"delta({g}[5m])", f"idelta({g}[5m])", f"deriv({g}[10m])", f"predict_linear({g}[10m], 600)",
        f"changes({g}[10m])", f"changes({up}[1h])",
        # *_over_time
        *(f"{name}({g}[5m])" for name in ("avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
                                           "count_over_time", "stddev_over_time", "stdvar_over_time",
                                           "last_over_time", "present_over_time")),
        f"quantile_over_time(0.9, {g}[10m])", f"quantile_over_time(0, {g}[3m])", f"quantile_over_time(1, {c}[3m])",
        f"absent_over_time({g}[5m])", 'absent_over_time(nonexistent_metric{job="x"}[5m])',
        f"sum_over_time({c}[20m])", f"count_over_time({g}[1h])",
        # aggregations
        f"sum(rate({c}[5m]))", f"sum by (job) (rate({c}[5m]))", f"sum without (instance) (rate({c}[5m]))",
        f"avg by (code) (rate({c}[5m]))", f"min by (sensor) ({g})", f"max without (sensor) ({g})",
        f"count({g})", f"count by (job) ({g} > 40)", f"group by (job) ({up})", f"stddev({g})",
        f"stddev by (sensor) ({g})", f"stdvar by (job) ({g})", f"topk(3, {g})", f"bottomk(2, rate({c}[5m]))",
        f"topk by (job) (2, {g})", f"bottomk without (code) (1, increase({c}[10m]))", f"quantile(0.5, {g})",
        f"quantile by (sensor) (0.9, {g})", f"quantile by (job) (0.1, rate({c}[5m]))", f'count_values("value", {up})',
        f'count_values without (instance) ("v", {up})', f"sum({c})", f"avg({g})",
        f"max by (instance) ({g}) - min by (instance) ({g})", f"sum by (job) ({h}_bucket)",
        # arithmetic and comparison
        f"{c} + 1", f"{g} * 2 - 3", f"{g} / 0", f"-{g}", f"{g} % 7", f"{g} ^ 2", f"2 ^ {g} / 1e10",
        f"{g} > 50", f"{g} > bool 50", f"20 < {g}", f"{g} >= bool 20", f"{g} == bool {g}", f"{g} != 0",
        f"{g} > on (instance, job, sensor) ({g} offset 10m)", f"{g} - {g} offset 5m",
        f"rate({c}[5m]) > 0.5", f"sum by (sensor) ({g}) > bool 100", "1 + 2 * 3", "2 ^ 3 ^ 2", "-1 % 0.3",
        f"({g} > 0) and ({g} < 50)",
        # vector matching
        f"rate({c}[5m]) * on (job, instance) group_left (version) {info}",
        f"{info} * on (job, instance) group_right (version) rate({c}[5m])",
        f'rate({c}{{code="500"}}[5m]) / ignoring (code) rate({c}{{code="200"}}[5m])',
        f"sum by (job, instance) (rate({c}[5m])) / on (job, instance) group_left {up}",
        f"sum by (job) (increase({c}[10m])) / ignoring (job) group_left sum(increase({c}[10m]))",
        f"{up} == 0", f"sum by (job, instance) (rate({c}[5m])) and on (job, instance) {up} == 1",
        f"{g} or {up}", f"{g} unless on (instance, job) {up} == 0", f"{up} == 2 or vector(0)",
        f'rate({c}[5m]) > 0.5 unless on (code) rate({c}{{code="500"}}[5m])',
        f"{g} and on () vector(1)", f"{up} or on (job) {info}",
        f"{h}_bucket / ignoring (le) group_left {h}_count",
        f"sum(rate({h}_sum[5m])) by (job) / sum(rate({h}_count[5m])) by (job)",
        f'scalar({up}{{instance="i0",job="api"}}) * {g}',
        # labels
        f'label_replace({up}, "host", "$1", "instance", "i(.*)")',
        f'label_replace({up}, "job", "", "job", "api")', f'label_replace({g}, "x", "$2-$1", "sensor", "(.)(.*)")',
        f'label_join({up}, "combo", "-", "job", "instance")', f'label_join({g}, "sensor", "", "sensor", "sensor")',
        # classic histograms
        f"histogram_quantile(0.9, sum by (le) (rate({h}_bucket[5m])))",
        f"histogram_quantile(0.5, rate({h}_bucket[10m]))",
        f"histogram_quantile(0.99, sum by (job, le) (rate({h}_bucket[5m])))",
        f"histogram_quantile(0, sum by (le) ({h}_bucket))", f"histogram_quantile(1, sum by (le) ({h}_bucket))",
        # math
        *(f"{name}({g})" for name in ("abs", "ceil", "floor", "round", "sgn", "sin", "cos", "tan", "atan",
                                       "deg", "rad", "sinh", "tanh")),
        f"round({g}, 5)", f"round({g}, 0.3)", f"clamp({g}, 0, 50)", f"clamp({g}, 50, 0)", f"clamp_min({g}, 10)",
        f"clamp_max({g}, 10)", f"sqrt(abs({g}))", f"sqrt({g})", f"exp({g} / 100)", f"exp({g})",
        f"ln(abs({g}) + 1)", f"ln({g})", f"log2({g})", f"log10(abs({g}))", f"asin({g} / 100)",
        f"acos({g} / 100)", f"{g} atan2 {g} offset 1m",
        # time
        "time()", f"timestamp({g})", f"timestamp({g} offset 3m)", "vector(1)", "vector(time())",
        f"scalar(sum({up}))", f"scalar({g})", f"hour(timestamp({up}))", f"minute(timestamp({up}))", "minute()",
        "day_of_week()", "day_of_month()", "day_of_year()", "days_in_month()", "month()", "year()",
        f"year({g} * 0 + 1e9)",
        # ordering
        f"sort({g})", f"sort_desc(rate({c}[5m]))", f"sort(sum by (job) ({g}))",
        # absent
        "absent(nonexistent_metric)", f'absent({up}{{job="nope"}})', f"absent({up})",
        'absent(nonexistent_metric{job="x",instance=~"y"})', f"absent(sum({g}))",
        # subqueries
        f"max_over_time(rate({c}[5m])[30m:1m])", f"avg_over_time({g}[20m:30s])", f"rate({c}[10m:1m])",
        f"deriv(sum({g})[15m:])", f"min_over_time(sum by (job) ({g})[10m:2m] offset 3m)",
        f"sum_over_time(({g} > 50)[15m:1m])", f"count_over_time({up}[10m:17s])",
        f"max_over_time(irate({c}[1m])[10m:45s] @ {at})",
        # more shapes: short and long windows, nesting, edge arguments, staleness
        f"rate({c}[5m]) * 60", f"increase({c}[90s])", f"irate({c}[30s])", f"delta({c}[2m])", f"idelta({up}[1m])",
        f"deriv({c}[5m])", f"predict_linear({c}[30m], 3600)", f"predict_linear({g}[5m] @ {at}, 60)",
        f"sum by (le) (increase({h}_bucket[10m]))", f"histogram_quantile(0.75, sum by (le, job) (rate({h}_bucket[1m])))",
        f"histogram_quantile(2, sum by (le) (rate({h}_bucket[5m])))",
        f"histogram_quantile(-1, sum by (le) (rate({h}_bucket[5m])))", f"histogram_quantile(0.5, {h}_bucket)",
        f"topk(1, sum by (job, instance) (rate({c}[5m])))", f"bottomk(3, {g} offset 30m)",
        f"quantile(0.25, rate({c}[1m]))", f"quantile(1.5, {g})", f"quantile(-0.5, {g})", f"topk(0, {g})",
        f"avg without (code) (rate({c}[5m]))", f"count without (sensor) ({g})", f"group without (instance) ({g})",
        f"sum by () ({g})", f"stddev by (job) (rate({c}[5m]))", f"stdvar({up})", f'count_values("job", {up})',
        f"{g} > bool on (instance, job, sensor) {g} offset 1m", f"{g} < {g} offset 5m", f"{g} <= 0",
        f"ceil({g}) == bool floor({g})", f"{g} / {g}", f"{g} % 0", f"-{up}", f"+{up}",
        f"sum by (job) (rate({c}[5m])) / on (job) group_left count by (job) ({up})",
        f"rate({c}[5m]) / on (instance) group_left sum by (instance) (rate({c}[5m]))",
        f"{up} unless {up} offset 1h", f"{up} and on (job, instance) {info}", f"{info} or on (job) {up}",
        "vector(1) + vector(2)", "scalar(vector(5)) * 2", f"time() - timestamp({g})",
        f"(time() - timestamp({g})) > 100", f'label_replace(rate({c}[5m]), "class", "${{1}}xx", "code", "(.).*")',
        f"sort_desc(sum by (instance) ({g}))", f"sort(-{g})",
        f'absent_over_time({g}{{sensor="cpu",instance="i0",job="api"}}[10m])', f"last_over_time({g}[1h])",
        f"changes({g}[1h])", f"resets({g}[1h])", f"max_over_time({g}[1h:5m])", f"rate({c}[1h:5m] offset 1m)",
        "sum_over_time(vector(1)[10m:1m])", f"stddev_over_time(rate({c}[2m])[20m:2m])",
        f"quantile_over_time(0.5, {g}[10m:1m] @ {at})", f"max_over_time(avg_over_time({g}[330s:1m])[15m:5m])",
        f"rate({c}[5m] @ end())", f"{g} @ start() offset 1m", "timestamp(vector(1))", f"timestamp(sum({g}))",
        "day_of_week(vector(1700000000))", "days_in_month(vector(1709251200))", "month(vector(0))",
        f"clamp({g}, -5, 5)", f"round({g}, -10)", "exp(vector(710))", "ln(vector(0))", "ln(vector(-1))",
        "sqrt(vector(-1))", f"sgn({g} - 20)", f"abs({g} - {g} offset 1m)", f"asinh({g})", f"acosh({g} + 100)",
        f"atanh({g} / 100)", f"cosh({g} / 10)", "pi()", f"{g} * pi()",
        # literals and errors
        '"hello"', "3.5", "-Inf", "NaN", f"rate({up})", "sum(", f"{up}[5m] + 1", f"{info} * on (job) {up}",
        f"{up} + ignoring (instance) {up}",
    ]
    return found


# The evaluations of every query: instant at these offsets (s) from the data's end, and ranges. All are
# on half seconds (see the module docstring).
INSTANT_OFFSETS_S = (-1, -777, -2403, 100)
RANGES = ((-3000, 120, 60), (-1800, 0, 47))  # (start, end) offsets from the data's end, step, in seconds
HALF = 0.5
# Sort-family queries, whose instant results must come in the same order.
ORDERED = ("sort(", "sort_desc(")
QUERY_PREFIX = 'invalid parameter "query": '
# Queries whose 2.42 range answers are wrong (module docstring, 5): compared with 2.42's instant answers.
RANGE_FROM_INSTANTS = ("predict_linear(node_temperature_celsius[5m] @ ",)
# Binary operators after which Prometheus 2.42 keeps the metric name and 3.x drops it (module docstring).
NAME_KEPT_BY_2_42 = frozenset(("node_temperature_celsius atan2 node_temperature_celsius offset 1m",))


def equal_values(a: float, b: float) -> bool:
    """Equal within RELATIVE_TOLERANCE; NaN equals NaN, infinities must match exactly."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    if math.isinf(a) or math.isinf(b):
        return False
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))


def canonical(body: dict) -> tuple[str, list]:
    """A query answer as (resultType, [(labels, [(ts_ms, value)])]) with labels as sorted tuples."""
    data = body["data"]
    kind, result = data["resultType"], data["result"]
    if kind in ("scalar", "string"):
        value = result[1] if kind == "string" else float(result[1])
        return kind, [((), [(round(result[0] * 1000), value)])]
    out = []
    for item in result:
        labels = tuple(sorted(item["metric"].items()))
        points = [item["value"]] if kind == "vector" else item["values"]
        out.append((labels, [(round(t * 1000), float(v)) for t, v in points]))
    return kind, out


def differences(query: str, mine: dict, theirs: dict, range_query: bool = False) -> list[str]:
    """What differs between two answers to ``query``; empty when they agree. For the queries of
    NAME_KEPT_BY_2_42, Prometheus's answer must carry a metric name, and is compared without it; a
    range query's bad_data error must carry the parameter prefix 2.42 leaves out (module docstring)."""
    if mine["status"] != "success" or theirs["status"] != "success":
        if mine["status"] == theirs["status"]:
            my_error = mine["error"]
            if range_query and mine["errorType"] == "bad_data" and not theirs["error"].startswith(QUERY_PREFIX):
                if not my_error.startswith(QUERY_PREFIX):
                    return [f"bad_data error without {QUERY_PREFIX!r}: {my_error!r}"]
                my_error = my_error[len(QUERY_PREFIX):]
            same = (mine["errorType"], my_error) == (theirs["errorType"], theirs["error"])
            return [] if same else [f"errors {mine} vs {theirs}"]
        return [f"status: mimird {mine.get('error', 'success')!r}, prometheus {theirs.get('error', 'success')!r}"]
    my_kind, my_series = canonical(mine)
    their_kind, their_series = canonical(theirs)
    if query in NAME_KEPT_BY_2_42 and their_series:
        if not all(dict(labels).get("__name__") for labels, _ in their_series):
            return ["documented difference gone: Prometheus 2.42 no longer keeps __name__"]
        their_series = [(tuple(pair for pair in labels if pair[0] != "__name__"), points)
                        for labels, points in their_series]
    if my_kind != their_kind:
        return [f"result type {my_kind} vs {their_kind}"]
    if my_kind == "string":
        return [] if my_series == their_series else [f"{my_series} vs {their_series}"]
    problems = []
    if len(my_series) != len(their_series):
        problems.append(f"{len(my_series)} series vs {len(their_series)}")
    if my_kind == "vector" and query.startswith(ORDERED):
        if [labels for labels, _ in my_series] != [labels for labels, _ in their_series]:
            problems.append("order differs")
    mine_by_labels, theirs_by_labels = dict(my_series), dict(their_series)
    for labels in sorted(set(mine_by_labels) ^ set(theirs_by_labels)):
        side = "mimird" if labels in mine_by_labels else "prometheus"
        problems.append(f"only in {side}: {dict(labels)}")
    for labels in sorted(set(mine_by_labels) & set(theirs_by_labels)):
        ours, ref = mine_by_labels[labels], theirs_by_labels[labels]
        if [t for t, _ in ours] != [t for t, _ in ref]:
            problems.append(f"{dict(labels)}: timestamps {[t for t, _ in ours]} vs {[t for t, _ in ref]}")
        elif not all(equal_values(a, b) for (_, a), (_, b) in zip(ours, ref, strict=True)):
            problems.append(f"{dict(labels)}: values {ours} vs {ref}")
    return problems


class Stores:
    """mimird and Prometheus, loaded with the same data; ``ask`` runs one query in both."""

    def __init__(self, daemon: Daemon, prometheus_url: str, end_ms: int):
        self.mimird = httpx.Client(base_url=daemon.url + "/prometheus", timeout=60)
        self.prometheus = httpx.Client(base_url=prometheus_url, timeout=60)
        self.end_s = end_ms // 1000

    def ask(self, path: str, params: dict) -> tuple[dict, dict]:
        return (self.mimird.post(path, data=params).json(), self.prometheus.post(path, data=params).json())

    def prometheus_range_from_instants(self, query: str, start: float, end: float, step: int) -> dict:
        """Prometheus's instant answers at every step of a range, as one range-query answer."""
        series: dict[tuple, dict] = {}
        steps = int((end - start) // step) + 1
        for number in range(steps):
            at = start + number * step
            body = self.prometheus.post("/api/v1/query", data={"query": query, "time": str(at)}).json()
            assert body["data"]["resultType"] == "vector", body
            for item in body["data"]["result"]:
                key = tuple(sorted(item["metric"].items()))
                series.setdefault(key, {"metric": item["metric"], "values": []})["values"].append(item["value"])
        result = [series[key] for key in sorted(series)]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def close(self) -> None:
        self.mimird.close()
        self.prometheus.close()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    if not PROMETHEUS.exists():
        pytest.skip("/usr/bin/prometheus is not installed (make peers)")
    sys.path.insert(0, str(REPO / "bench"))
    from ingest import start_prometheus

    # the data ends three minutes ago, on a scrape round: inside both stores' accepted window
    end_ms = (int(time.time() * 1000) - 180_000) // SCRAPE_MS * SCRAPE_MS
    rounds = make_dataset(end_ms)
    prometheus_dir = tmp_path_factory.mktemp("prometheus")
    prometheus, prometheus_write = start_prometheus(prometheus_dir, free_port())
    daemon = Daemon(tmp_path_factory.mktemp("mimird"), [
        "-auth.multitenancy-enabled=false", "-distributor.ingestion-rate-limit=1e12",
        "-distributor.ingestion-burst-size=1000000000000", "-log.level=warn"]).start()
    try:
        with httpx.Client(timeout=30) as client:
            for series in rounds:
                body = encode_write_request(series)
                for url in (prometheus_write, daemon.url + "/api/v1/push"):
                    response = client.post(url, content=body, headers=WRITE_HEADERS)
                    assert response.status_code in (200, 204), (
                        f"{url}: {response.status_code} {response.text}\n{daemon.log()[-4000:]}")
        loaded = Stores(daemon, prometheus_write.removesuffix("/api/v1/write"), end_ms)
        yield loaded
        loaded.close()
    finally:
        daemon.stop(signal.SIGKILL)
        prometheus.terminate()
        try:
            prometheus.wait(30)
        except Exception:
            prometheus.kill()
            prometheus.wait()


QUERY_COUNT = len(queries("0"))
_TALLY: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not _TALLY:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\nPromQL vs Prometheus 2.42: {QUERY_COUNT} queries, {_TALLY['evaluations']} "
                            f"evaluations compared, {_TALLY['evaluations equal']} equal")


@pytest.mark.parametrize("index", range(QUERY_COUNT))
def test_query_agrees_with_prometheus(stores, index):
    query = queries(f"{stores.end_s - 1234 + HALF}")[index]
    problems: list[str] = []
    compared = 0
    for offset in INSTANT_OFFSETS_S:
        mine, theirs = stores.ask("/api/v1/query", {"query": query, "time": str(stores.end_s + offset + HALF)})
        problems += [f"instant at end{offset:+d}s: {p}" for p in differences(query, mine, theirs)]
        compared += 1
    for start, end, step in RANGES:
        params = {"query": query, "start": str(stores.end_s + start + HALF), "end": str(stores.end_s + end + HALF),
                  "step": str(step)}
        mine, theirs = stores.ask("/api/v1/query_range", params)
        if query.startswith(RANGE_FROM_INSTANTS):
            assert differences(query, mine, theirs), f"{query}: the documented 2.42 range-query bug is gone"
            theirs = stores.prometheus_range_from_instants(query, stores.end_s + start + HALF,
                                                           stores.end_s + end + HALF, step)
        problems += [f"range {start:+d}s..{end:+d}s step {step}s: {p}"
                     for p in differences(query, mine, theirs, range_query=True)]
        compared += 1
    _TALLY["evaluations"] += compared
    _TALLY["evaluations equal"] += compared - len({p.split(": ", 1)[0] for p in problems})
    assert not problems, f"{query}:\n" + "\n".join(problems[:10])


def extrapolated_increase(points: list[tuple[int, float]], t_ms: int, range_ms: int, zero_cap_first: bool) -> float:
    """``increase`` of a counter without resets over (t-range, t]: Prometheus 2.x's extrapolation
    (``zero_cap_first``: the towards-zero cap applied before the extrapolation threshold) or 3.x's."""
    (first_t, first_v), (last_t, last_v) = points[0], points[-1]
    result = last_v - first_v
    to_start = (first_t - (t_ms - range_ms)) / 1000
    to_end = (t_ms - last_t) / 1000
    sampled = (last_t - first_t) / 1000
    average = sampled / (len(points) - 1)
    threshold = average * 1.1
    to_zero = sampled * first_v / result if result > 0 and first_v >= 0 else math.inf
    if zero_cap_first:
        to_start = min(to_start, to_zero)
        to_start = to_start if to_start < threshold else average / 2
    else:
        to_start = min(to_start if to_start < threshold else average / 2, to_zero)
    to_end = to_end if to_end < threshold else average / 2
    return result * (sampled + to_start + to_end) / sampled


def test_counter_extrapolation_towards_zero_differs_as_documented(stores):
    """A counter that starts inside the window, low: 2.42 and 3.x extrapolate its start differently.

    Both are recomputed from the raw samples (which both stores must return identically): mimird must
    give 3.x's value, Prometheus 2.42 its own, and the two must differ."""
    at = str(stores.end_s - 40 * 60 + HALF)  # the 1h window starts 20 minutes before the first sample
    raw_mine, raw_theirs = stores.ask("/api/v1/query", {"query": "young_counter_total[1h]", "time": at})
    assert not differences("young_counter_total[1h]", raw_mine, raw_theirs)
    (_, points), = canonical(raw_theirs)[1]
    t_ms = round(float(at) * 1000)
    want_3x = extrapolated_increase(points, t_ms, 3_600_000, zero_cap_first=False)
    want_2x = extrapolated_increase(points, t_ms, 3_600_000, zero_cap_first=True)
    assert not equal_values(want_2x, want_3x)
    mine, theirs = stores.ask("/api/v1/query", {"query": "increase(young_counter_total[1h])", "time": at})
    (_, [(_, mine_value)]), = canonical(mine)[1]
    (_, [(_, their_value)]), = canonical(theirs)[1]
    assert equal_values(mine_value, want_3x), (mine_value, want_3x, want_2x)
    assert equal_values(their_value, want_2x), (their_value, want_2x, want_3x)
