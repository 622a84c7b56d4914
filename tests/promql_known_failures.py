"""Corpus cases our engine does not pass yet, by ``file:line``, with the reason.

Each is run as ``xfail(strict=True)``, so a fix shows up as an unexpected pass.
"""

KNOWN_FAILURES: dict[str, str] = {}
