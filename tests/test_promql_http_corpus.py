"""The PromQL test corpus run from the outside: data in by remote write, queries through the HTTP API.

The same cases as test_promql_corpus.py (parsed by promql_runner.load_cases), against one running
mimird instead of the engine in-process. Each storage state of a file (the loads seen since the last
``clear`` when an eval runs) is written by remote write into a tenant of its own, so a later ``load``
never shows up in an earlier eval; stale markers go over the wire as the stale NaN
(0x7ff0000000000002). Every eval then runs once through ``/prometheus/api/v1/query`` (instant evals)
or ``/prometheus/api/v1/query_range`` (range evals) and the Prometheus JSON answer is checked with the
in-process runner's own comparison (promql_runner.check_outcome / check_error), and an instant eval also
through the harness's range cross-check (the expression as a range query from t-1m to t+1m at a 1m step
must hold the expected result at t; promql_runner.check_range_cross_check) and the @-invariance re-runs
(the expression with every selector pinned by ``@`` to the eval time, printed back to text, at several
other times; promql_runner.at_invariance_runs), as the in-process runner does. On top of that:

* every instant-vector sample carries the evaluation time as its timestamp;
* a failing eval must answer with the errorType the engine's error maps to (``bad_data``, HTTP 400, for
  parse and type errors, whose text then carries Prometheus's ``invalid parameter "query": `` prefix;
  ``execution``, HTTP 422, for errors while evaluating).

The corpus's samples sit at t≈0 (1970): the daemon accepts them with an out-of-order window longer than
the time since, no past grace period, and ``-querier.query-ingesters-within=0`` so that queries ending in
1970 still read the ingester. Native-histogram cases are skipped, as in-process.
"""

from __future__ import annotations

import itertools
import signal
import struct
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import Daemon, encode_write_request, remote_write
from mimird.promql import ParseError, parse
from mimird.promql.printer import to_string
from mimird.promql.value import Matrix, QueryError, Sample, Scalar, Series, String, Vector
from mimird.tsdb.labels import make_labels
from promql_corpus import CORPUS_DIR
from promql_known_failures import KNOWN_FAILURES
from promql_runner import (
    ENGINE,
    STALE_NAN,
    CheckFailure,
    all_test_files,
    at_invariance_runs,
    build_head,
    check_error,
    check_outcome,
    check_range_cross_check,
    load_cases,
    load_samples,
)

pytestmark = pytest.mark.slow

EXTRA_DIR = Path(__file__).parent / "promql"

# Cases that pass in-process but not over HTTP, by file:line, with the reason (run as strict xfails).
HTTP_KNOWN_FAILURES: dict[str, str] = {}

BAD_DATA_PREFIX = 'invalid parameter "query": '
DAEMON_FLAGS = (
    "-ingester.out-of-order-time-window=1000000h",
    "-querier.query-ingesters-within=0",
    "-querier.query-store-after=0",
    "-distributor.ingestion-rate-limit=1e12",
    "-distributor.ingestion-burst-size=1000000000000",
    "-ingester.max-global-series-per-user=0",
    # the in-process runner's engine limit, which some corpus cases count on
    "-querier.max-samples=10000",
    "-log.level=warn",
)


def _cases():
    params = []
    for path in all_test_files(CORPUS_DIR, EXTRA_DIR):
        for case in load_cases(path):
            marks = []
            reason = KNOWN_FAILURES.get(case.id) or HTTP_KNOWN_FAILURES.get(case.id)
            if reason:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            params.append(pytest.param(case, id=case.id, marks=marks))
    return params


class CorpusStore:
    """One daemon and the tenants holding each storage state of the corpus files."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.client = httpx.Client(base_url=daemon.url, timeout=60)
        self.tenants: dict[tuple, str] = {}
        self._numbers = itertools.count()

    def tenant_for(self, case) -> str:
        """The tenant holding the case's loads, written on first use."""
        key = (case.file, tuple(id(load) for load in case.loads))
        tenant = self.tenants.get(key)
        if tenant is None:
            tenant = f"corpus-{next(self._numbers)}"
            for load in case.loads:
                series = {labels: samples for labels, samples in load_samples(load) if samples}
                if not series:
                    continue
                response = remote_write(self.daemon, tenant, series)
                assert response.status_code == 200, f"push for {case.id}: {response.status_code} {response.text}"
            self.tenants[key] = tenant
        return tenant

    def query(self, expr: str, tenant: str, time_ms: int) -> httpx.Response:
        params = {"query": expr, "time": seconds(time_ms)}
        return self.client.post("/prometheus/api/v1/query", data=params, headers={"X-Scope-OrgID": tenant})

    def query_range(self, expr: str, tenant: str, start_ms: int, end_ms: int, step_ms: int) -> httpx.Response:
        params = {"query": expr, "start": seconds(start_ms), "end": seconds(end_ms), "step": seconds(step_ms)}
        return self.client.post("/prometheus/api/v1/query_range", data=params, headers={"X-Scope-OrgID": tenant})


def seconds(ms: int) -> str:
    """Milliseconds as the API's decimal seconds, exactly."""
    return str(Decimal(ms) / 1000)


def to_ms(value: float) -> int:
    return int(round(float(value) * 1000))


def parse_value(data: dict):
    """A Prometheus JSON ``data`` object as the engine's value types."""
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return Scalar(to_ms(result[0]), float(result[1]))
    if kind == "string":
        return String(to_ms(result[0]), result[1])
    if kind == "vector":
        return Vector(Sample(make_labels(item["metric"]), to_ms(item["value"][0]), float(item["value"][1]))
                      for item in result)
    if kind == "matrix":
        return Matrix(Series(make_labels(item["metric"]),
                             np.array([to_ms(t) for t, _ in item["values"]], dtype=np.int64),
                             np.array([float(v) for _, v in item["values"]], dtype=np.float64))
                      for item in result)
    raise CheckFailure(f"unknown resultType {kind!r}")


def expected_error_type(case, expr_text: str, time_ms: int) -> str:
    """The errorType Prometheus answers the eval's error with (bad_data for parse and type errors), from
    the engine's in-process error."""
    try:
        expr = parse(expr_text)
    except ParseError:
        return "bad_data"
    try:
        if case.instant:
            ENGINE.instant(build_head(case), expr, time_ms)
        else:
            ENGINE.range(build_head(case), expr, case.start_ms, case.end_ms, case.step_ms)
    except QueryError as error:
        return error.error_type
    return "none (the engine does not fail in-process)"


def check_answer(case, response: httpx.Response, expr_text: str, time_ms: int):
    """Check one HTTP answer to the eval (at ``time_ms`` for instant evals); the parsed value, or None
    for an (expected) error."""
    body = response.json()
    if body["status"] == "error":
        want_type = expected_error_type(case, expr_text, time_ms)
        message = body["error"]
        assert body["errorType"] == want_type, f"{response.status_code} {body}"
        assert response.status_code == {"bad_data": 400, "execution": 422}[want_type], body
        if want_type == "bad_data":
            assert message.startswith(BAD_DATA_PREFIX), message
            message = message[len(BAD_DATA_PREFIX):]
        check_error(case, message)
        return None
    assert response.status_code == 200, body
    value = parse_value(body["data"])
    if isinstance(value, Vector):
        stamps = {sample.t for sample in value}
        assert stamps <= {time_ms}, f"vector sample timestamps {stamps}, evaluated at {time_ms}"
    check_outcome(case, value, body.get("warnings", []), body.get("infos", []))
    return value


def check_instant(store: CorpusStore, case, tenant: str, expr_text: str, time_ms: int) -> None:
    """An instant eval (or one of its @-invariance re-runs) through /query, then through the harness's
    range cross-check on /query_range."""
    value = check_answer(case, store.query(expr_text, tenant, time_ms), expr_text, time_ms)
    if value is None:
        return
    ranged = store.query_range(expr_text, tenant, time_ms - 60_000, time_ms + 60_000, 60_000).json()
    assert ranged["status"] == "success", f"range cross-check at {time_ms}: {ranged}"
    check_range_cross_check(case, value, parse_value(ranged["data"]), time_ms)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("http-corpus")
    daemon = Daemon(workdir, list(DAEMON_FLAGS)).start()
    corpus_store = CorpusStore(daemon)
    yield corpus_store
    corpus_store.client.close()
    daemon.stop(signal.SIGKILL)


def test_stale_nan_travels_bit_exact():
    """The remote write encoding keeps the stale marker's payload (and the runner's loads carry it)."""
    import snappy

    from mimird import prompb

    body = encode_write_request({(("__name__", "m"),): [(0, STALE_NAN)]})
    request = prompb.WriteRequest()
    request.ParseFromString(snappy.decompress(body))
    value = request.timeseries[0].samples[0].value
    assert struct.pack("<d", value) == struct.pack("<Q", 0x7FF0000000000002)


@pytest.mark.parametrize("case", _cases())
def test_eval_over_http(store, case):
    if case.uses_native_histograms():
        pytest.skip("native histograms")
    tenant = store.tenant_for(case)
    if not case.instant:
        response = store.query_range(case.expr, tenant, case.start_ms, case.end_ms, case.step_ms)
        check_answer(case, response, case.expr, case.start_ms)
        return
    check_instant(store, case, tenant, case.expr, case.time_ms)
    try:
        tree = parse(case.expr)
    except ParseError:
        return
    for rewritten, time_ms in at_invariance_runs(case, tree):
        text = to_string(rewritten)
        try:
            check_instant(store, case, tenant, text, time_ms)
        except (AssertionError, CheckFailure) as failure:
            raise CheckFailure(f"@-invariance run of {text!r} at {time_ms}: {failure}") from None
