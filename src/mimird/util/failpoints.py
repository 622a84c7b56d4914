"""Failpoints: named places where a test can make the process die, to prove crash safety, or wait.

Set `MIMIRD_FAILPOINT=<name>` in the environment and the process exits abruptly (as with SIGKILL: no
cleanup, no flush) the first time it reaches that point. `MIMIRD_FAILPOINT=<name>:hold=<path>` instead
holds every pass through that point until the file `<path>` exists, so that a test can act while, say, a
block validation is in progress, however fast the machine. Unset, a failpoint costs one comparison.
"""

from __future__ import annotations

import os
import time

_ARMED, _, _ACTION = os.environ.get("MIMIRD_FAILPOINT", "").partition(":")


def failpoint(name: str) -> None:
    """Die here, or wait for the release file, if this failpoint is armed."""
    if _ARMED == name:
        if _ACTION.startswith("hold="):
            while not os.path.exists(_ACTION[len("hold="):]):
                time.sleep(0.01)
            return
        os._exit(137)
