"""Failpoints: named places where a test can make the process die, to prove crash safety.

Set `MIMIRD_FAILPOINT=<name>` in the environment and the process exits abruptly (as with SIGKILL: no
cleanup, no flush) the first time it reaches that point. Unset, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os

_ARMED = os.environ.get("MIMIRD_FAILPOINT", "")


def failpoint(name: str) -> None:
    """Die here if this failpoint is armed."""
    if _ARMED == name:
        os._exit(137)
