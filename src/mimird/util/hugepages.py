"""Transparent huge pages for the daemon's own memory.

Between two requests of an otherwise idle daemon the machine's caches and TLBs go cold, and a request then
pays for the pages it touches: on the benchmark's virtual machine a cold access walks the guest's and the
host's page tables before it reaches memory (about 0.57 us on a 4 KiB page of its own, 0.45 us on 2 MiB
pages; docs/benchmarks.md). A Python request touches many pages: its objects are spread over pymalloc's
arenas (one `mmap` of 4 KiB pages each), and its code objects, bytecode, dict tables and numpy arrays over
glibc's heap. On 2 MiB pages the same objects need fewer TLB entries and shorter walks.

Measured in process, 10k series, one request every 100 ms, two processes (one with both changes, one
without) loaded alike and queried in the same 25 s, four pairs with the roles swapped between them: the
huge-page process was faster in 11 of 12 comparisons, `vector(1)` by 1-19% (0.34-0.38 against 0.37-0.44
ms), `avg_over_time(sum by (cluster) (node_load1)[1h:5m])` by 4-14% (0.69-0.73 against 0.76-0.80 ms),
`max_over_time(node_load1{job="api"}[10m])` by -3 to 16% (0.43-0.44 against 0.43-0.51 ms); two processes
without either change, run the same way, differed by up to 20% in either direction on single queries.
Resident memory after loading 100k series: +4 MiB (+3%); ingest rate unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# glibc's tunable (2.35 and later) that advises its heap and mmapped chunks as transparent huge pages; glibc
# reads it only when a process starts.
HUGETLB_TUNABLE = "glibc.malloc.hugetlb"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_pages() -> bool:
    """True if the kernel gives transparent huge pages to memory advised for them (its setting is `always`
    or `madvise`, not `never`)."""
    try:
        with open(_THP_SETTING) as setting:
            return "[never]" not in setting.read()
    except OSError:
        return False


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        major, minor = (int(part) for part in version.split(".")[:2])
    except (ValueError, OSError):
        return None
    return (major, minor) if name == "glibc" else None


def huge_page_malloc_env(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to re-execute the daemon with so that glibc's malloc puts its heap on transparent
    huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), or None where there is nothing to do: the tunable
    is set already (an operator's own value included), the C library is not glibc 2.35 or later, or the
    kernel gives no transparent huge pages."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if HUGETLB_TUNABLE in tunables or not transparent_huge_pages():
        return None
    version = _glibc_version()
    if version is None or version < (2, 35):
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{HUGETLB_TUNABLE}=1" if tunables else f"{HUGETLB_TUNABLE}=1"
    return env


def use_huge_page_arenas() -> bool:
    """Serve pymalloc's arenas (where Python's small objects live) from a region on transparent huge pages
    (`_fast.hugearenas`); objects allocated before the call stay where they are. Returns False where the
    kernel gives no transparent huge pages or the region cannot be set up."""
    if not transparent_huge_pages():
        return False
    from mimird._fast import hugearenas

    return hugearenas.install()
