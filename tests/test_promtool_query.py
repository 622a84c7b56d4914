"""``promtool query instant|range|series|labels`` (Debian's Prometheus 2.42 tools, ``make peers``) against
mimird's Prometheus API at ``<url>/prometheus``, multi-tenancy off, as a user would point promtool at it.

Every command must exit 0 and print exactly what was pushed. promtool prints with the Go client's
``model`` types: a vector one ``metric => value @[time]`` line per sample, a matrix as ``metric =>`` then one
``value @[time]`` line per point (series sorted: fewer labels first, then by names and values), series one
label set per line, ``labels <name>`` one value per line; metrics as ``name{a="x", b="y"}`` with Go-quoted
values, values and times with the shortest decimal form (``'f'`` formatting). The output is parsed back and
compared with the pushed data; the ``-o json`` output of the same instant query is compared too.

Skipped when ``promtool`` is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import Daemon, remote_write

PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (run `make peers`)"),
]

STEP_MS = 15_000
POINTS = 40  # ten minutes
END_MS = (int(time.time() * 1000) // 60_000 - 3) * 60_000
START_MS = END_MS - (POINTS - 1) * STEP_MS

SERIES = {
    (("__name__", "pt_requests_total"), ("code", "200"), ("job", "api")):
        [(START_MS + i * STEP_MS, 100.0 + 3 * i) for i in range(POINTS)],
    (("__name__", "pt_requests_total"), ("code", "500"), ("job", "api")):
        [(START_MS + i * STEP_MS, 0.5 * i) for i in range(POINTS)],
    (("__name__", "pt_requests_total"), ("code", "200"), ("job", "batch jobs")):
        [(START_MS + i * STEP_MS, 1e21 + i) for i in range(POINTS)],
    (("__name__", "pt_temperature"), ("path", 'C:\\dir "x"')):
        [(START_MS + i * STEP_MS, -12.125 + i / 8) for i in range(POINTS)],
    (("__name__", "pt_bare"),): [(START_MS + i * STEP_MS, float(i % 7)) for i in range(POINTS)],
}

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)?(?:\{(.*)\})?$')
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:, |$)')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The promtool server argument of a mimird holding SERIES."""
    daemon = Daemon(tmp_path_factory.mktemp("promtool-query"), ["-auth.multitenancy-enabled=false"]).start()
    response = remote_write(daemon, None, SERIES)
    assert response.status_code == 200, response.text
    yield daemon.url + "/prometheus"
    daemon.stop(signal.SIGKILL)


def promtool(*args: str, expect_rc: int = 0) -> str:
    result = subprocess.run([PROMTOOL, "query", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == expect_rc, f"promtool query {args}: rc {result.returncode}\n{result.stdout}\n" \
                                           f"{result.stderr}"
    return result.stdout + result.stderr if expect_rc else result.stdout


def parse_metric(text: str) -> tuple:
    """A Go ``model.Metric`` string back to a sorted label tuple."""
    match = METRIC_LINE.match(text)
    assert match, text
    name, body = match.groups()
    pairs = [("__name__", name)] if name else []
    if body:
        found = LABEL_PAIR.findall(body)
        assert ", ".join(f'{n}="{v}"' for n, v in found) == body, body
        pairs += [(n, json.loads(f'"{v}"')) for n, v in found]
    return tuple(sorted(pairs))


def parse_point(text: str) -> tuple[int, float]:
    """``value @[time]`` to (time ms, value)."""
    value, at = text.split(" @[")
    assert at.endswith("]")
    return round(float(at[:-1]) * 1000), float(value)


def seconds(ms: int) -> str:
    """Milliseconds as the shortest decimal seconds, as Go's ``model.Time`` prints them."""
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".")


def test_instant(server):
    at_ms = END_MS - 5 * STEP_MS + 7_000  # seven seconds after a sample: lookback picks that sample
    output = promtool("instant", f"--time={seconds(at_ms)}", server, '{__name__=~"pt_.*"}')
    got = {}
    for line in output.splitlines():
        metric, point = line.split(" => ")
        got[parse_metric(metric)] = parse_point(point)
    expected = {labels: (at_ms, samples[-6][1]) for labels, samples in SERIES.items()}
    assert got == expected
    # the printed form of one line, exactly
    assert f'pt_temperature{{path="C:\\\\dir \\"x\\""}} => {-12.125 + 34 / 8} @[{seconds(at_ms)}]' in \
        output.splitlines()
    assert f"pt_requests_total{{code=\"200\", job=\"batch jobs\"}} => 1000000000000000000000 @[{seconds(at_ms)}]" \
        in output.splitlines()
    as_json = json.loads(promtool("instant", "-o", "json", f"--time={seconds(at_ms)}", server, "pt_bare"))
    assert as_json == [{"metric": {"__name__": "pt_bare"}, "value": [at_ms / 1000, repr(float(34 % 7))[:-2]]}]


def test_instant_aggregation_and_scalar(server):
    at = seconds(END_MS)
    output = promtool("instant", f"--time={at}", server, "sum by (job) (pt_requests_total)")
    got = {parse_metric(metric): parse_point(point) for metric, point in
           (line.split(" => ") for line in output.splitlines())}
    assert got == {(("job", "api"),): (END_MS, 100.0 + 3 * 39 + 0.5 * 39),
                   (("job", "batch jobs"),): (END_MS, 1e21 + 39)}
    output = promtool("instant", f"--time={at}", server, 'scalar(pt_bare)')
    assert output.strip() == f"scalar: {39 % 7} @[{seconds(END_MS)}]"


def test_range(server):
    output = promtool("range", f"--start={seconds(START_MS)}", f"--end={seconds(END_MS)}", "--step=15s", server,
                      '{__name__=~"pt_.*"}')
    got: dict[tuple, list] = {}
    order = []
    current = None
    for line in output.splitlines():
        if line.endswith(" =>"):
            current = parse_metric(line[:-3])
            order.append(current)
            got[current] = []
        else:
            got[current].append(parse_point(line))
    assert got == SERIES
    # promtool sorts a matrix as the Go model does: fewer labels first, then label by label
    assert order[0] == (("__name__", "pt_bare"),)
    assert order[1] == (("__name__", "pt_temperature"), ("path", 'C:\\dir "x"'))
    # a coarser step over a sub-range
    output = promtool("range", f"--start={seconds(START_MS + 1000)}", f"--end={seconds(START_MS + 301_000)}",
                      "--step=1m", server, "pt_bare")
    lines = output.splitlines()
    assert lines[0] == "pt_bare =>"
    assert [parse_point(line) for line in lines[1:]] == [
        (START_MS + 1000 + k * 60_000, float((4 * k) % 7)) for k in range(6)]


def test_series(server):
    output = promtool("series", "--match=pt_requests_total{code='200'}", "--match=pt_bare", server)
    got = [parse_metric(line) for line in output.splitlines()]
    assert sorted(got) == sorted(labels for labels in SERIES
                                 if labels[0][1] == "pt_bare" or ("code", "200") in labels)
    assert len(got) == 3
    # a time range before the data holds no series
    output = promtool("series", "--match={__name__=~'pt_.*'}", f"--start={seconds(START_MS - 7_200_000)}",
                      f"--end={seconds(START_MS - 3_600_000)}", server)
    assert output.strip() == ""
    output = promtool("series", "--match={__name__=~'pt_.*'}", f"--start={seconds(START_MS)}",
                      f"--end={seconds(END_MS)}", server)
    assert sorted(parse_metric(line) for line in output.splitlines()) == sorted(SERIES)


def test_labels(server):
    assert promtool("labels", server, "job").splitlines() == ["api", "batch jobs"]
    assert promtool("labels", server, "__name__").splitlines() == ["pt_bare", "pt_requests_total",
                                                                   "pt_temperature"]
    assert promtool("labels", server, "path").splitlines() == ['C:\\dir "x"']
    assert promtool("labels", "--match=pt_requests_total{code='500'}", server, "job").splitlines() == ["api"]
    assert promtool("labels", server, "nonexistent").strip() == ""


def test_query_error_is_reported(server):
    output = promtool("instant", server, "sum(", expect_rc=1)
    assert 'bad_data: invalid parameter "query": 1:5: parse error: unclosed left parenthesis' in output
