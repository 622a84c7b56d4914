"""The helper threads of `mimird.util.cores`: a fan-out runs every part, and the helpers are kept off the
core the caller runs on (so a freshly woken helper is not queued behind the caller's own part)."""

from __future__ import annotations

import os
import threading

import pytest

from mimird._fast.sched import current_cpu
from mimird.util import cores


def test_current_cpu_is_one_of_ours():
    assert current_cpu() in os.sched_getaffinity(0)


def test_run_parts_runs_every_part_and_keeps_helpers_off_the_callers_core(monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to keep the helpers off")
    monkeypatch.setattr(cores, "PARTS", 2)
    seen: dict[int, int] = {}
    helper_ids: list[int] = []

    def run(part: int) -> None:
        seen[part] = threading.get_native_id()
        if part:
            helper_ids.append(threading.get_native_id())

    for cpu in sorted(os.sched_getaffinity(0))[:2]:
        # the caller moves to another core: the next fan-out moves the helpers off that one instead
        os.sched_setaffinity(0, {cpu})
        try:
            seen.clear()
            cores.run_parts(run, [0, 1, 2])
            assert sorted(seen) == [0, 1, 2] and seen[0] == threading.get_native_id()
            cores.run_parts(run, [0, 1])  # the helpers exist by now
        finally:
            os.sched_setaffinity(0, cores._ALL_CORES)
        for native_id in set(helper_ids):
            assert cpu not in os.sched_getaffinity(native_id)
