"""Transparent huge pages for the daemon's memory: pymalloc's arenas from one huge-page region
(`_fast.hugearenas`) and glibc's heap through its tunable, set by re-executing the daemon at start."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mimird.util import hugepages

needs_thp = pytest.mark.skipif(not hugepages.transparent_huge_pages(),
                               reason="the kernel gives no transparent huge pages")


@needs_thp
def test_arenas_come_from_the_region_and_freed_ones_are_reused():
    # in a process of its own: the allocator stays installed for the life of the process
    script = textwrap.dedent("""
        from mimird._fast import hugearenas
        assert hugearenas.install()
        assert not hugearenas.install()  # once only
        held = [str(i) * 4 for i in range(300_000)]
        grown = hugearenas.stats()
        assert grown["installed"] and grown["arenas_in_use"] > 5, grown
        del held
        freed = hugearenas.stats()
        assert freed["arenas_free"] > 0 and freed["arenas_in_use"] < grown["arenas_in_use"], freed
        again = [str(i) * 4 for i in range(300_000)]
        reused = hugearenas.stats()
        # the freed arenas served the new objects before any more of the region was handed out
        assert reused["bytes_handed_out"] <= grown["bytes_handed_out"] + 2 * reused["arena_bytes"], reused
        assert sum(len(s) for s in again) > 0
        rollup = open("/proc/self/smaps_rollup").read()
        huge_kb = int(rollup.split("AnonHugePages:")[1].split()[0])
        print("huge_kb", huge_kb)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "huge_kb" in done.stdout


def test_malloc_env_adds_the_tunable_only_where_it_is_missing(monkeypatch):
    monkeypatch.setattr(hugepages, "transparent_huge_pages", lambda: True)
    monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 36))
    assert hugepages.huge_page_malloc_env({"PATH": "/bin"}) == {
        "PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert hugepages.huge_page_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}
    # an operator's own choice, 0 included, is left alone; so is a process started with it already
    assert hugepages.huge_page_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 31))
    assert hugepages.huge_page_malloc_env({}) is None
    monkeypatch.setattr(hugepages, "_glibc_version", lambda: None)
    assert hugepages.huge_page_malloc_env({}) is None
    monkeypatch.setattr(hugepages, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(hugepages, "transparent_huge_pages", lambda: False)
    assert hugepages.huge_page_malloc_env({}) is None


def test_the_daemon_restarts_itself_once_with_the_tunable(start_daemon):
    import os

    expected = hugepages.huge_page_malloc_env(os.environ)
    daemon = start_daemon()
    with open(f"/proc/{daemon.proc.pid}/environ", "rb") as environ:
        tunables = [entry for entry in environ.read().split(b"\0") if entry.startswith(b"GLIBC_TUNABLES=")]
    if expected is None:
        own = os.environ.get("GLIBC_TUNABLES")
        assert tunables == ([b"GLIBC_TUNABLES=" + own.encode()] if own is not None else [])
    else:
        # the same process (exec keeps the pid), started over with the tunable, serving
        assert tunables == [b"GLIBC_TUNABLES=" + expected["GLIBC_TUNABLES"].encode()]
    assert daemon.get("/ready").status_code == 200
