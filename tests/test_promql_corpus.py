"""Prometheus 3.5's PromQL test corpus (and our own tests/promql/*.test) run against the engine.

Every eval command is one test case (``file:line``). Cases that need native histograms are
skipped; known failures are listed in promql_known_failures.py and run as strict xfails. At the
end of the module a per-file table of passed/skipped/xfailed/failed cases is printed.
"""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path

import pytest

from promql_corpus import CORPUS_DIR
from promql_known_failures import KNOWN_FAILURES
from promql_runner import all_test_files, load_cases, run_case

EXTRA_DIR = Path(__file__).parent / "promql"

_OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def _cases():
    params = []
    for path in all_test_files(CORPUS_DIR, EXTRA_DIR):
        for case in load_cases(path):
            marks = []
            if case.id in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.id]))
            params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if not _OUTCOMES:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(f"{'PromQL .test file':<28} {'passed':>7} {'skipped':>8} {'xfailed':>8} {'failed':>7}")
        totals: collections.Counter = collections.Counter()
        for file in sorted(_OUTCOMES):
            counts = _OUTCOMES[file]
            totals.update(counts)
            reporter.write_line(f"{file:<28} {counts['passed']:>7} {counts['skipped']:>8} {counts['xfailed']:>8} "
                                f"{counts['failed']:>7}")
        reporter.write_line(f"{'total':<28} {totals['passed']:>7} {totals['skipped']:>8} {totals['xfailed']:>8} "
                            f"{totals['failed']:>7}")


@pytest.mark.parametrize("case", _cases())
def test_eval(case):
    if case.uses_native_histograms():
        _OUTCOMES[case.file]["skipped"] += 1
        pytest.skip("native histograms")
    known = case.id in KNOWN_FAILURES
    try:
        run_case(case)
    except BaseException:
        _OUTCOMES[case.file]["xfailed" if known else "failed"] += 1
        raise
    _OUTCOMES[case.file]["passed"] += 1
