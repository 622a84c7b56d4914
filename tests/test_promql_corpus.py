"""Prometheus 3.5's PromQL test corpus (and our own tests/promql/*.test) run against the engine.

Every eval command is one test case (``file:line``). Cases that need native histograms are
skipped; known failures are listed in promql_known_failures.py and run as strict xfails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from promql_corpus import CORPUS_DIR
from promql_known_failures import KNOWN_FAILURES
from promql_runner import all_test_files, load_cases, run_case

EXTRA_DIR = Path(__file__).parent / "promql"


def _cases():
    params = []
    for path in all_test_files(CORPUS_DIR, EXTRA_DIR):
        for case in load_cases(path):
            marks = []
            if case.id in KNOWN_FAILURES:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.id]))
            params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _cases())
def test_eval(case):
    if case.uses_native_histograms():
        pytest.skip("native histograms")
    run_case(case)
